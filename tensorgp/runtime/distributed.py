"""Island evolution across processes, devices and machines, and the checkpointing run loop.

Every process (a ``torchrun`` worker, or the only process) evolves ``config.runs`` islands as one
batched population on its own device; process ``rank`` seeds its generator with ``seed + rank``.
Every ``migrate_every`` generations all islands exchange migrants:

* each island offers its ``migrants`` best programs; one ``all_gather`` of a packed int32 tensor
  (ops | constant bits | length | fitness bits, programs padded to ``max_len``) gives every
  process the offers of all ``world_size * runs`` islands (``gloo`` on CPU, ``nccl`` on CUDA);
* topology: a ring over the global island index ``g = rank * runs + r``: island ``g`` replaces
  its ``migrants`` worst programs by the offer of island ``g - 1`` (mod the island count).
  Migrants carry their fitness (every process scores the same training tasks), so nothing is
  re-evaluated, and no random numbers are drawn, so a resumed run stays bit-identical.

Stopping is collective: all processes stop at the generation limit; patience/target stops
(when every process is done) and Ctrl-C (when any process saw it) are agreed at migration
points, so no process leaves a collective behind. Rank 0 gathers every island's hall of fame and
builds the result; other ranks return None. Without torchrun the world has one process and the
same code runs a single island (or ``runs`` batched islands with ``--islands``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt
from .lock import DirLock
from .output import check_out_dir
from ..engine.evolve import Evolver, GenStats, HallOfFame
from ..engine.population import Population, pad_to


@dataclass(frozen=True)
class Islands:
    migrate_every: int = 5  # generations between migrations
    migrants: int = 2  # programs each island sends (and the number of worst programs each replaces)

    def __post_init__(self) -> None:
        if self.migrate_every < 1 or self.migrants < 0:
            raise ValueError("migrate_every must be >= 1 and migrants >= 0")

    def to_dict(self) -> dict:
        return {"every": self.migrate_every, "migrants": self.migrants}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Islands | None":
        return None if d is None else cls(int(d["every"]), int(d["migrants"]))


@dataclass
class World:
    """This process's place among the processes of a run; ``size == 1`` without torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # torch.distributed backend, None for a single process

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t[n, ...]`` of every rank, concatenated in rank order: ``[size * n, ...]``."""
        if self.size == 1:
            return t
        import torch.distributed as dist

        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def agree(self, any_flag: bool, all_flag: bool) -> tuple[bool, bool]:
        """(any rank's ``any_flag``, every rank's ``all_flag``)."""
        if self.size == 1:
            return any_flag, all_flag
        import torch.distributed as dist

        t = torch.tensor([int(any_flag), int(not all_flag)], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0]), not bool(t[1])

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_world(device: str = "cpu") -> World:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or a one-process world without it. On CUDA each
    process uses ``cuda:LOCAL_RANK`` (any index in ``device`` is ignored) and ``nccl``; on the
    CPU ``gloo``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if size <= 1:
        return World(device=dev)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://")
        dist.barrier()  # connect now, so the first migration does not pay for it
    return World(rank, size, local, dev, backend)


# ---------------------------------------------------------------- migration
def pack(pop: Population, fitness: torch.Tensor, L: int) -> torch.Tensor:
    """``int32[n, 2L+2]``: ops | consts bits | length | fitness bits (one tensor, one collective)."""
    return torch.cat([pad_to(pop.ops, L).to(torch.int32),
                      pad_to(pop.consts, L).to(torch.float32).contiguous().view(torch.int32),
                      pop.length.to(torch.int32)[:, None],
                      fitness.to(torch.float32).contiguous().view(torch.int32)[:, None]], 1)


def unpack(t: torch.Tensor, L: int) -> tuple[Population, torch.Tensor]:
    """Inverse of ``pack``: ``(Population with width L, fitness float32[n])``."""
    return (Population(t[:, :L].contiguous(), t[:, L:2 * L].contiguous().view(torch.float32),
                       t[:, 2 * L].contiguous()),
            t[:, 2 * L + 1].contiguous().view(torch.float32))


def migrate(pop: Population, fitness: torch.Tensor, runs: int, k: int, world: World,
            L: int) -> tuple[Population, torch.Tensor]:
    """Ring migration: each of the ``runs`` local islands (rows ``r*P .. (r+1)*P``) replaces its
    ``k`` worst programs by the ``k`` best of the previous island in global order.
    ``pop: [R*P, L']``, ``fitness: float32[R*P]`` -> the new ``(pop [R*P, L], fitness)``."""
    R = runs
    P = pop.size // R
    n_islands = world.size * R
    k = min(k, P // 2)  # an island never sends rows it also overwrites
    if n_islands < 2 or k == 0:
        return pop, fitness
    dev = fitness.device
    f = torch.nan_to_num(fitness, nan=-float("inf")).view(R, P)
    base = torch.arange(R, device=dev)[:, None] * P
    best = (torch.topk(f, k, dim=1).indices + base).reshape(-1)
    offers = world.all_gather(pack(pop[best], fitness[best], L)).view(n_islands, k, -1)  # island-major
    src = (world.rank * R + torch.arange(R, device=dev) - 1) % n_islands
    incoming, in_fit = unpack(offers[src].reshape(R * k, -1), L)
    worst = (torch.topk(-f, k, dim=1).indices + base).reshape(-1)  # NaN (-inf) rows go first
    ops, consts, length = pad_to(pop.ops, L).clone(), pad_to(pop.consts, L).clone(), pop.length.clone()
    new_fit = fitness.clone()
    ops[worst], consts[worst], length[worst], new_fit[worst] = incoming.ops, incoming.consts, incoming.length, in_fit
    return Population(ops, consts, length), new_fit


# ---------------------------------------------------------------- the run loop
@dataclass
class LoopInfo:
    migrations: int = 0
    migration_s: float = 0.0
    loop_s: float = 0.0
    loop_cpu_s: float = 0.0  # CPU seconds of this process in the loop (all its threads)
    interrupted: bool = False
    resumed_from: int | None = None
    checkpoints: int = 0


class Checkpointer:
    """Writes this rank's checkpoint every ``every`` generations (and at the end)."""

    def __init__(self, directory: str | Path, every: int, spec, world: World, islands: Islands | None,
                 elapsed0: float = 0.0, extra: dict | None = None):
        self.dir = Path(directory)
        self.every = every
        self.spec = spec
        self.world = world
        self.islands = islands
        self.t0 = time.perf_counter() - elapsed0
        self.extra = extra or {}
        self.last: int | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self, evolver: Evolver, info: LoopInfo) -> None:
        st = evolver.state
        ckpt.save(self.dir, self.spec, st, rng_state=evolver.generator.get_state(), rank=self.world.rank,
                  world_size=self.world.size, every=self.every,
                  islands=self.islands.to_dict() if self.islands else None,
                  progress={"elapsed_s": self.elapsed(), "migrations": info.migrations,
                            "migration_s": info.migration_s, "terminals": evolver.pset.n_vars, **self.extra})
        self.last = st.generation
        info.checkpoints += 1

    def maybe_save(self, evolver: Evolver, info: LoopInfo, force: bool = False) -> None:
        g = evolver.state.generation
        if g == self.last:
            return
        if force or (self.every > 0 and g % self.every == 0):
            self.save(evolver, info)


def run_loop(evolver: Evolver, world: World | None = None, islands: Islands | None = None,
             saver: Checkpointer | None = None, callback: Callable[[GenStats], None] | None = None,
             should_stop: Callable[[], bool] | None = None, info: LoopInfo | None = None) -> LoopInfo:
    """Evolve until done or stopped, migrating and checkpointing on the way; ends with a checkpoint.

    Per generation: step -> migrate (every ``migrate_every``) -> checkpoint (every ``every``) ->
    stop check. A checkpoint therefore holds the post-migration population, and a resumed run
    continues with exactly the steps the uninterrupted run would take. On the device path the
    generations go in blocks of ``config.sync_every`` (``Evolver.steps``: one host read per
    block), cut at migration and checkpoint generations, so both happen where they would with
    single steps; ``should_stop`` is asked once per block."""
    world = world or World(device=evolver.device)
    info = info or LoopInfo()
    c = evolver.config
    t0, c0 = time.perf_counter(), time.process_time()
    if evolver.state is None:
        evolver.initialize()
        if callback:
            callback(evolver.state.history[-1])
        if saver:
            saver.maybe_save(evolver, info)
    M = islands.migrate_every if islands else 0
    K = c.sync_every if evolver.device_path else 1
    collective = world.size > 1
    while True:
        g = evolver.state.generation
        if g >= c.generations:
            break
        if not collective:
            if evolver.done():
                break
            if should_stop is not None and should_stop():
                info.interrupted = True
                break
        elif g % (M or 1) == 0:  # stop decisions are taken together, at migration points only
            stop, done = world.agree(bool(should_stop and should_stop()), evolver.done())
            if stop or done:
                info.interrupted = stop and not done
                break
        n = _block(g, K, c.generations, M, saver.every if saver else 0)
        block = evolver.steps(n, early_stop=not collective) if n > 1 else [evolver.step()]
        st = evolver.state
        if M and st.generation % M == 0:
            tm = time.perf_counter()
            st.pop, st.fitness = migrate(st.pop, st.fitness, c.runs, islands.migrants, world, c.max_len)
            info.migration_s += time.perf_counter() - tm
            info.migrations += 1
        if callback:
            for stats in block:
                callback(stats)
        if saver:
            saver.maybe_save(evolver, info)
    info.loop_s += time.perf_counter() - t0
    info.loop_cpu_s += time.process_time() - c0
    if saver:
        saver.maybe_save(evolver, info, force=True)
    return info


def _block(g: int, k: int, generations: int, migrate_every: int, every: int) -> int:
    """Generations to step from ``g`` at once: at most ``k``, ending at the last generation or
    at the next migration or checkpoint generation, whichever comes first."""
    n = min(k, generations - g)
    for m in (migrate_every, every):
        if m > 0:
            n = min(n, m - g % m)
    return max(n, 1)


# ---------------------------------------------------------------- whole runs
def gather_hall_of_fame(hof: HallOfFame, world: World, L: int) -> HallOfFame:
    """Every rank's hall of fame in rank order (rank r's run i becomes island ``r*runs + i``)."""
    if world.size == 1:
        return hof
    pop, fit = unpack(world.all_gather(pack(hof.pop, hof.fitness, L)), L)
    return HallOfFame(pop, fit, hof.size)


@dataclass
class ManagedRun:
    """What rank 0 gets back from ``evolve_managed``: every island's hall of fame, loop figures and
    the ``islands``/``checkpoint`` blocks an application adds to its result."""

    hof: HallOfFame
    info: LoopInfo
    islands: int  # islands over all ranks (world size x runs)
    elapsed0: float  # seconds spent before a resume
    timing: dict  # loop_s, loop_cpu_s: max over ranks
    blocks: dict  # {"islands": {...}, "checkpoint": {...}} where they apply


def evolve_managed(evolver: Evolver, spec, *, world: World, islands: Islands | None = None,
                   checkpoint: str | Path | None = None, every: int = 0, resume: str | Path | None = None,
                   problem: dict | None = None, digest=None, callback: Callable[[GenStats], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> ManagedRun | None:
    """Drive ``evolver`` (built by the application, seeded ``seed + world.rank``) with islands,
    checkpoints and resume. ``spec``: the application's run spec (a dataclass, saved in
    checkpoints). ``problem``: a JSON-able description of the terminals and training data; ranks
    must agree on it, and a resumed checkpoint must have been written for the same one. Returns
    a ``ManagedRun`` on rank 0 and None elsewhere. ``digest``: further JSON-able settings every
    rank must share (checked with ``problem`` before the first generation)."""
    problem = dict(problem or {})
    if world.size > 1 and islands is None:
        islands = Islands()
    cfg = evolver.config
    active = islands if islands is not None and world.size * cfg.runs > 1 else None
    if active is not None and 2 * active.migrants > cfg.population:
        raise ValueError(f"--migrants {active.migrants} must be at most half the island population "
                         f"({cfg.population})")
    _check_same_problem(world, [problem, digest, dataclasses.replace(cfg, seed=0).to_dict()])  # seeds differ by design
    info = LoopInfo()
    elapsed0 = 0.0
    if resume is not None:
        ck = load_agreed(resume, world, evolver.device)
        _check_resumable(ck, problem, world)
        check_generations(cfg.generations, ck.generation)
        evolver.restore(ck.state)
        info.migrations = int(ck.progress.get("migrations", 0))
        info.migration_s = float(ck.progress.get("migration_s", 0.0))
        info.resumed_from = ck.generation
        elapsed0 = float(ck.progress.get("elapsed_s", 0.0))
    saver = None
    lock = DirLock(checkpoint, world.rank) if checkpoint is not None else None
    if checkpoint is not None:
        lock.acquire()  # before the first write: two runs must never mix their files
        saver = Checkpointer(checkpoint, every, spec, world, islands, elapsed0, problem)
        if resume is not None and Path(resume).resolve() == Path(checkpoint).resolve():
            saver.last = info.resumed_from  # that checkpoint is on disk already
    if resume is not None and callback:
        callback(evolver.state.history[-1])
    try:
        run_loop(evolver, world, active, saver, callback, should_stop, info)
    finally:
        if lock is not None:
            lock.release()
    evolver.rescore_hall_of_fame(None)  # as evolve_proxy: a resampled objective's final pick sees every space
    hof = gather_hall_of_fame(evolver.state.hof, world, cfg.max_len)
    per_rank = world.all_gather(torch.tensor([[info.loop_s, info.migration_s,
                                               sum(h.seconds for h in evolver.state.history), info.loop_cpu_s]],
                                             dtype=torch.float64, device=world.device)).cpu()
    if world.rank != 0:
        return None
    loop_max = float(per_rank[:, 0].max())
    blocks: dict = {}
    if active is not None or world.size > 1:
        blocks["islands"] = {
            "processes": world.size, "per_process": cfg.runs, "total": world.size * cfg.runs,
            "backend": world.backend, "topology": "ring" if active else None,
            "migrate_every": active.migrate_every if active else None,
            "migrants": active.migrants if active else None,
            # max: includes waiting for the slowest island; min (the last rank to arrive waits for
            # nobody): the exchange itself
            "migrations": info.migrations, "migration_s": float(per_rank[:, 1].max()),
            "migration_s_min": float(per_rank[:, 1].min()),
            "loop_s": loop_max, "migration_share": float(per_rank[:, 1].max()) / loop_max if loop_max > 0 else 0.0,
            "per_rank": [{"rank": r, "loop_s": float(v[0]), "migration_s": float(v[1]),
                          "generation_s": float(v[2]), "loop_cpu_s": float(v[3])}
                         for r, v in enumerate(per_rank)],
        }
    if checkpoint is not None or resume is not None:
        blocks["checkpoint"] = {"dir": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
                                "every": every, "resumed_from": info.resumed_from, "written": info.checkpoints,
                                # the newest checkpoint file was unreadable and an older one was resumed
                                "fallback": ck.fallback if resume is not None else None,
                                "lock_note": lock.note if lock is not None else None}
    # this session's evolution loop (all ranks): wall and CPU seconds, max over ranks
    timing = {"loop_s": loop_max, "loop_cpu_s": float(per_rank[:, 3].max())}
    return ManagedRun(hof, info, world.size * cfg.runs, elapsed0, timing, blocks)


def load_agreed(directory: str | Path, world: World, device) -> ckpt.Checkpoint:
    """This rank's checkpoint at the newest generation every rank holds (a kill between a
    rank's two renames may leave ranks one checkpoint apart; ``.prev`` files bridge that)."""
    have, bad = ckpt.scan(directory, world.rank)
    if world.size == 1:
        if not have:
            raise ckpt.CheckpointError(f"no readable checkpoint in {directory}"
                                       + (": " + "; ".join(bad.values()) if bad else ""))
        ck = ckpt.load(have[max(have)], world.rank, device)
        ck.fallback = ckpt.fallback_note(directory, have[max(have)], world.rank)
        return ck
    gens = torch.full((1, 2), -1, dtype=torch.int64, device=world.device)
    for i, g in enumerate(sorted(have, reverse=True)[:2]):
        gens[0, i] = g
    allg = world.all_gather(gens).cpu().tolist()
    common = set(allg[0]) - {-1}
    for row in allg[1:]:
        common &= set(row)
    if not common:
        raise ckpt.CheckpointError(f"the {world.size} ranks hold no checkpoint of a common generation in {directory} "
                                   f"(generations per rank: {allg})")
    ck = ckpt.load(have[max(common)], world.rank, device)
    ck.fallback = ckpt.fallback_note(directory, have[max(common)], world.rank)
    return ck


def check_generations(target: int, done: int) -> None:
    """A resumed run cannot end before the generation its checkpoint already holds."""
    if target < done:
        raise ckpt.CheckpointError(f"--gens {target} is below the {done} generations the checkpoint already holds; "
                                   f"give --gens {done} or more (or leave it out)")


def _check_same_problem(world: World, desc) -> None:
    """Migrants are only meaningful if every process evolves over the same terminals, training
    rows and settings: compare a digest of them across ranks before the first generation."""
    if world.size == 1:
        return
    text = json.dumps(desc, sort_keys=True, default=str)
    mine = torch.tensor([[zlib.crc32(text.encode())]], dtype=torch.int64, device=world.device)
    every = world.all_gather(mine).cpu().view(-1).tolist()
    if len(set(every)) > 1:
        raise ValueError(f"the {world.size} processes do not evolve the same problem (terminals, training data, "
                         f"functions or settings differ; digests per rank: {every}); give every process the same "
                         f"data and options")


def _check_resumable(ck: ckpt.Checkpoint, problem: dict, world: World) -> None:
    ws = int(ck.run.get("world_size", 1))
    if ws != world.size:
        raise ckpt.CheckpointError(f"the checkpoint was written by {ws} process(es); resume it with the same number "
                                   f"(torchrun --nproc-per-node ..., now {world.size})")
    for key, now in problem.items():
        was = ck.progress.get(key)
        if was is not None and was != now and key.endswith("sha256"):
            raise ckpt.CheckpointError(f"the data's contents changed since the checkpoint was written ({key} {now[:12]}..., "
                                       f"checkpoint {str(was)[:12]}...: same task names, other values); resume with "
                                       f"the data it was made with, or start a new run without --resume")
        if was is not None and was != now:
            raise ckpt.CheckpointError(f"the data gives {key.replace('_', ' ')} {now}, the checkpoint was made "
                                       f"with {was}")


# ---------------------------------------------------------------- planning a `tensorgp run`
@dataclass
class RunPlan:
    """What ``tensorgp run`` does, after resume precedence and the world are settled."""

    spec: object  # the application's run spec, its device this process's device
    world: World
    islands: Islands | None
    checkpoint: Path | None
    every: int
    resume: Path | None

    def evolve_kwargs(self) -> dict:
        """Keyword arguments for the application's evolve call (empty for a plain run)."""
        if self.world.size == 1 and self.islands is None and self.checkpoint is None and self.resume is None:
            return {}
        return {"world": self.world, "islands": self.islands, "checkpoint": self.checkpoint, "every": self.every,
                "resume": self.resume}


def plan_run(spec, *, islands: int = 1, migrate_every: int = 5, migrants: int = 2,
             checkpoint: str | Path | None = None, every: int = 10, resume: str | Path | None = None,
             explicit: set[str] | frozenset[str] = frozenset()) -> RunPlan:
    """Settle a run: ``islands > 1`` batches that many migrating islands in this process (as
    ``config.runs``); under torchrun every process's runs are islands. With ``resume`` the
    checkpoint's settings win over defaults (``checkpoint.merge_resume``; ``explicit``: the
    option names the user gave) and checkpoints keep going to the same directory unless
    ``checkpoint`` says otherwise. Then joins the process group (``init_world``)."""
    if islands < 1:
        raise ValueError("--islands must be >= 1")
    if islands > 1:
        if spec.config.runs > 1 and "runs" in explicit:
            raise ValueError("give either --runs (independent runs) or --islands (migrating islands), not both")
        spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, runs=islands))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    isl = Islands(migrate_every, migrants) if islands > 1 or distributed else None
    if every < 0:
        raise ValueError("--every must be >= 0")
    rank = int(os.environ.get("RANK", "0"))
    if resume is not None and Path(resume).is_file():
        raise ValueError(f"--resume {resume}: give the checkpoint folder ({Path(resume).parent}), not a file in it")
    if checkpoint is not None:
        check_out_dir(checkpoint, "--checkpoint")  # before the run: an existing file or no permission fails now
        if resume is None and ckpt.candidates(checkpoint, rank):
            # a fresh run would overwrite both of its files: never lose a resumable run silently
            raise ValueError(f"--checkpoint {checkpoint}: holds another run's checkpoint; continue it with "
                             f"--resume {checkpoint}, or give an empty folder")
    if resume is not None:
        resume = Path(resume)
        saved = ckpt.load(resume, rank)  # this rank's own file: ranks on other machines see only theirs
        ws, now = int(saved.run.get("world_size", 1)), int(os.environ.get("WORLD_SIZE", "1"))
        if ws != now:
            raise ckpt.CheckpointError(f"the checkpoint was written by {ws} process(es); resume it with the same "
                                       f"number (torchrun --nproc-per-node ..., now {now})")
        merged = ckpt.merge_resume(saved.run, ckpt.run_settings(spec, isl.to_dict() if isl else None, every),
                                   explicit)
        spec = ckpt.spec_from_dict(merged["spec"], type(spec))
        check_generations(spec.config.generations, saved.generation)
        isl = Islands.from_dict(merged["islands"])
        every = int(merged["every"])
        checkpoint = Path(checkpoint) if checkpoint is not None else resume
    world = init_world(str(spec.device))
    spec = dataclasses.replace(spec, device=str(world.device))
    if world.size > 1 and isl is None:
        isl = Islands(migrate_every, migrants)
    return RunPlan(spec, world, isl, Path(checkpoint) if checkpoint is not None else None, every, resume)
