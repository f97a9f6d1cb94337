"""The evolution loop: R independent runs of P programs held as one population of R*P rows.

Run r owns rows ``r*P .. (r+1)*P``; selection, elitism and the hall of fame stay inside a run,
while initialisation, variation and evaluation are single batched calls over all runs. The
whole state (``EvolutionState``) is a handful of tensors plus the RNG state, which is what a
checkpoint saves.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import torch

from .counter_rng import key_tensor
from .device_graph import GraphedBreed, GraphedFunction
from .device_init import init_device
from .device_selection import elite_rows, hall_of_fame_update
from .device_variation import breed_device
from .population import Population, first_of_groups, init_population, pad_to, program_keys
from .primitives import CONST, PrimitiveSet
from .variation import Limits, VariationRates, breed

VARIATIONS = ("auto", "compiled", "device")


class FitnessFunction(Protocol):
    """Optionally also ``begin_generation(g: int | None) -> bool``: called before generation g's
    evaluation (0 = the initial population; None = after evolution); True when a program's
    fitness depends on g (a resampled objective), so the evolver re-scores what it carries over
    (elites, hall of fame). It must depend only on g, never on call counts, so a resumed run
    sees the same objective."""

    def __call__(self, pop: Population) -> torch.Tensor:  # float32[P], higher is better, NaN = invalid
        ...


@dataclass
class EvolutionConfig:
    population: int = 1000
    generations: int = 50
    runs: int = 1
    tournament_size: int = 7
    elitism: int = 2  # copied unchanged into the next generation, per run
    rates: VariationRates = field(default_factory=VariationRates)
    max_len: int = 64
    max_depth: int = 8
    init_depth: tuple[int, int] = (2, 5)
    const_prob: float = 0.05  # share of terminals that are ephemeral constants
    parsimony: float = 0.0  # selection fitness = fitness - parsimony * length
    hall_of_fame: int = 10
    patience: int = 0  # stop after this many generations without improvement (0 = never)
    target: float | None = None  # stop once every run's best reaches this fitness
    seed: int = 0
    # compiled: per-operator batches (numba structure pass on the CPU); device: fixed-shape,
    # counter-seeded generation without host syncs (``device_variation``); auto: device on CUDA
    variation: str = "auto"
    # device path: generations between host reads of the progress statistics (stats, patience,
    # target). The K generations in between run without a host sync; their statistics are kept
    # on the device and fetched together; a stop that falls inside a block freezes the state at
    # that generation, so the result is the same for every K. The compiled path ignores it.
    sync_every: int = 1
    # device path on CUDA: each generation (breeding, evaluation, fitness, elitism, hall of fame)
    # replayed from one captured CUDA graph, for a fitness function that declares
    # ``capturable = True`` (e.g. ``RankObjective(sync_free=True)`` with Triton evaluation). The
    # eval/fitness/variation split of a replayed generation is not observable: its host time is
    # reported as variation_s. Same results as without it; off CUDA it has no effect.
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError("population must be at least 2")
        if self.generations < 0:
            raise ValueError("generations must be >= 0")
        if self.runs < 1:
            raise ValueError("runs must be >= 1")
        if not 0 <= self.elitism < self.population:
            raise ValueError("elitism must be in [0, population)")
        if self.tournament_size < 1:
            raise ValueError("tournament_size must be >= 1")
        if self.tournament_size > self.population:
            raise ValueError(f"tournament size {self.tournament_size} (--tournament) exceeds the population "
                             f"{self.population} (--pop): a tournament draws from one run's population")
        if not (isinstance(self.parsimony, (int, float)) and math.isfinite(self.parsimony) and self.parsimony >= 0):
            raise ValueError(f"parsimony {self.parsimony} (--parsimony) must be a finite number >= 0 "
                             f"(the fitness penalty per program node)")
        if self.patience < 0:
            raise ValueError(f"patience {self.patience} (--patience) must be >= 0 (0: never stop early)")
        if self.max_depth < 1 or self.max_len < 3:
            raise ValueError("max_depth must be >= 1 and max_len >= 3")
        lo, hi = self.init_depth
        if not 0 <= lo <= hi <= self.max_depth:
            raise ValueError(f"init_depth {self.init_depth} must lie within [0, max_depth={self.max_depth}]")
        if self.variation not in VARIATIONS:
            raise ValueError(f"variation must be one of {', '.join(VARIATIONS)}, got {self.variation!r}")
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f"cuda_graph must be True or False, got {self.cuda_graph!r}")
        if not isinstance(self.sync_every, int) or self.sync_every < 1:
            raise ValueError(f"sync_every {self.sync_every!r} (--sync-every) must be an integer >= 1 "
                             f"(generations between host reads of the progress statistics)")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_len, self.max_depth)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["init_depth"] = list(self.init_depth)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvolutionConfig":
        d = dict(d)
        d["rates"] = VariationRates(**d["rates"])
        d["init_depth"] = tuple(d["init_depth"])
        return cls(**d)


@dataclass
class HallOfFame:
    """Best distinct programs seen so far, per run: ``pop`` rows ``r*H .. (r+1)*H``."""

    pop: Population
    fitness: torch.Tensor  # float32[R*H], -inf for empty slots
    size: int

    def best(self, run: int = 0) -> tuple[Population, float]:
        i = run * self.size
        return self.pop[i], float(self.fitness[i])


@dataclass
class GenStats:
    generation: int
    best: float  # best raw fitness, max over runs
    mean: float  # mean finite fitness
    mean_size: float
    eval_s: float
    fitness_s: float
    variation_s: float
    nodes: int  # node-evaluations this generation (program nodes x rows)
    programs: int  # programs evaluated this generation
    best_per_run: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.eval_s + self.fitness_s + self.variation_s

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvolutionState:
    pop: Population
    fitness: torch.Tensor
    hof: HallOfFame
    generation: int
    history: list[GenStats]
    stale: int  # generations since the best improved
    rng_state: torch.Tensor


def _update_hof(hof: HallOfFame | None, pop: Population, fit: torch.Tensor, runs: int, H: int, L: int) -> HallOfFame:
    P = pop.size // runs
    f = torch.nan_to_num(fit, nan=-float("inf"))
    parts_pop, parts_fit = [], []
    for r in range(runs):  # a loop over runs, not individuals
        seg = slice(r * P, (r + 1) * P)
        k = min(H * 2, P)
        top = torch.topk(f[seg], k).indices + r * P
        cand = pop[top]
        cf = f[top]
        if hof is not None:
            hs = slice(r * H, (r + 1) * H)
            cand = Population.cat([hof.pop[hs], cand])
            cf = torch.cat([hof.fitness[hs], cf])
        keys = program_keys(Population(pad_to(cand.ops, L), pad_to(cand.consts, L), cand.length))
        order = torch.argsort(cf, descending=True, stable=True)
        keys_sorted = keys[order]
        # keep the first (best) of each distinct program
        uniq, inverse = torch.unique(keys_sorted, return_inverse=True)
        keep = order[torch.sort(first_of_groups(inverse, len(uniq))).values][:H]
        sel = cand[keep]
        sf = cf[keep]
        if len(keep) < H:  # pad with empty slots
            pad = H - len(keep)
            sel = Population.cat([sel, Population(torch.zeros(pad, 1, dtype=torch.int32, device=f.device),
                                                  torch.zeros(pad, 1, device=f.device),
                                                  torch.zeros(pad, dtype=torch.int32, device=f.device))])
            sf = torch.cat([sf, torch.full((pad,), -float("inf"), device=f.device)])
        parts_pop.append(Population(pad_to(sel.ops, L), pad_to(sel.consts, L), sel.length))
        parts_fit.append(sf)
    return HallOfFame(Population.cat(parts_pop), torch.cat(parts_fit), H)


class Evolver:
    """Steps the evolution of ``config.runs`` independent runs over one fitness function."""

    def __init__(self, config: EvolutionConfig, pset: PrimitiveSet, fitness: FitnessFunction,
                 device: str | torch.device = "cpu", count_rows: int = 1):
        self.config = config
        self.pset = pset
        self.fitness_fn = fitness
        self.device = torch.device(device)
        self.count_rows = count_rows  # rows each program is evaluated on (for node-evaluation counts)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.state: EvolutionState | None = None
        self.device_path = resolve_variation(config.variation, self.device) == "device"
        self._keys: torch.Tensor | None = None  # device path: int64[G + 1, 2] per-generation keys
        self._graphed = GraphedBreed(self._breed_device)  # CUDA: breeding replayed from a graph
        self._graph_gen = GraphedFunction(self._generation)  # cuda_graph: the whole generation

    def _key(self, generation: int) -> torch.Tensor:
        """``int64[2]`` key of ``generation`` (device path): a function of the run generator's
        seed (restored with its state by ``restore``; the device path never draws from it) and
        the generation, from a table uploaded once, so a generation reads its key without a
        host-to-device copy."""
        if self._keys is None or generation >= len(self._keys):
            n = max(self.config.generations, generation) + 1
            seed = self.generator.initial_seed()
            self._keys = torch.stack([key_tensor(seed, g, "cpu") for g in range(n)]).to(self.device)
        return self._keys[generation]

    def _breed_device(self, pop: Population, sel_fit: torch.Tensor, key: torch.Tensor) -> Population:
        c = self.config
        return breed_device(pop, sel_fit, key, c.runs * (c.population - c.elitism), self.pset, c.limits, c.rates,
                            c.tournament_size, c.const_prob, groups=c.runs, group_size=c.population)

    def _update_hof(self, hof: HallOfFame | None, pop: Population, fit: torch.Tensor) -> HallOfFame:
        c = self.config
        if not self.device_path:
            return _update_hof(hof, pop, fit, c.runs, c.hall_of_fame, c.max_len)
        hp, hf = hall_of_fame_update(None if hof is None else hof.pop, None if hof is None else hof.fitness,
                                     Population(pad_to(pop.ops, c.max_len), pad_to(pop.consts, c.max_len), pop.length),
                                     fit, c.runs, c.hall_of_fame)
        return HallOfFame(hp, hf, c.hall_of_fame)

    # -------------------------------------------------------------- steps
    def _evaluate(self, pop: Population) -> tuple[torch.Tensor, float, float]:
        t0 = time.perf_counter()
        fit = self.fitness_fn(pop)
        dt = time.perf_counter() - t0
        split = getattr(self.fitness_fn, "last_split", None)  # (eval_s, fitness_s) when the function knows
        if split is not None:
            return fit, split[0], split[1]
        return fit, dt, 0.0

    def _begin_generation(self, generation: int | None) -> bool:
        hook = getattr(self.fitness_fn, "begin_generation", None)
        return bool(hook(generation)) if hook is not None else False

    def rescore_hall_of_fame(self, generation: int | None = None) -> None:
        """Re-score and re-sort every run's hall of fame under the objective of ``generation``
        (None: the objective outside evolution), for objectives that change with the generation."""
        st, c = self.state, self.config
        if st is None or not self._begin_generation(generation):
            return
        hof = st.hof
        empty = hof.pop.length == 0  # unfilled slots: scored as a constant (evaluators reject empty programs), then -inf
        ops = hof.pop.ops.clone()
        ops[empty, 0] = CONST
        probe = Population(ops, torch.where(empty[:, None], 0.0, hof.pop.consts), torch.where(empty, 1, hof.pop.length))
        fresh = torch.nan_to_num(self.fitness_fn(probe), nan=-float("inf"))
        fit = torch.where(torch.isfinite(hof.fitness) & ~empty, fresh, -float("inf")).view(c.runs, -1)
        order = torch.argsort(fit, dim=1, descending=True, stable=True)
        rows = (order + torch.arange(c.runs, device=fit.device)[:, None] * hof.size).reshape(-1)
        st.hof = HallOfFame(hof.pop[rows], fit.reshape(-1)[rows], hof.size)

    def _selection_fitness(self, pop: Population, fit: torch.Tensor) -> torch.Tensor:
        if self.config.parsimony:
            return fit - self.config.parsimony * pop.length.float()
        return fit

    def initialize(self) -> EvolutionState:
        c = self.config
        R, P = c.runs, c.population
        t0 = time.perf_counter()
        if self.device_path:
            pop = init_device(R * P, self.pset, self._key(0), max_len=c.max_len, depth_range=c.init_depth,
                              const_prob=c.const_prob)
        else:
            pop = init_population(R * P, self.pset, self.generator, max_len=c.max_len, depth_range=c.init_depth,
                                  const_prob=c.const_prob, device=self.device)
        tv = time.perf_counter() - t0
        self._begin_generation(0)
        fit, te, tf = self._evaluate(pop)
        hof = self._update_hof(None, pop, fit)
        st = EvolutionState(pop, fit, hof, 0, [], 0, self.generator.get_state())
        st.history.append(self._stats(st, te, tf, tv))
        self.state = st
        return st

    def step(self) -> GenStats:
        """One generation for every run, then the progress bookkeeping (which reads results on
        the host)."""
        if self.state is None:
            self.initialize()
            return self.state.history[-1]
        if self.device_path:
            done = self.steps(1)
            if not done:
                raise RuntimeError(f"the run is at its last generation ({self.state.generation} of "
                                   f"{self.config.generations}, or stopped by patience/target): nothing to step")
            return done[0]
        st = self.state
        R = self.config.runs
        prev_hof = st.hof.fitness  # replaced, never written in place, by advance()
        kids, new_fit_kids, te, tf, tv = self.advance()
        prev_best = float(torch.nan_to_num(prev_hof.view(R, -1)[:, 0], nan=-float("inf")).max())
        best = float(st.hof.fitness.view(R, -1)[:, 0].max())
        st.stale = 0 if best > prev_best + 1e-9 else st.stale + 1
        st.rng_state = self.generator.get_state()
        stats = self._stats(st, te, tf, tv, evaluated=kids)
        st.history.append(stats)
        return stats

    def steps(self, n: int, early_stop: bool = True) -> list[GenStats]:
        """Up to ``n`` generations (not past ``config.generations``, nor past a patience/target
        stop), then their statistics, appended to the history and returned.

        Device path: the n generations run without a host sync; each one's statistics and the
        stop test are tensors on the device, read in one transfer at the end. Once a stop
        condition holds, the remaining generations of the block are computed but not applied
        (``advance(frozen=...)`` keeps the state), so the run ends where a run of single steps
        would: the same state, history and ``generation`` for every n. ``early_stop=False``: run
        all n generations whatever patience and target say (islands that stop together only
        at agreed points). Compiled path: n steps."""
        if n < 1:
            raise ValueError(f"steps(n) needs n >= 1, got {n}")
        if self.state is None:
            return [self.step()]
        c, st = self.config, self.state
        n = min(n, c.generations - st.generation)
        if n <= 0:
            return []
        if not self.device_path:
            out = []
            for _ in range(n):
                out.append(self.step())
                if early_stop and self.done():
                    break
            return out
        R = c.runs
        g0 = st.generation
        stopping = bool(c.patience) or c.target is not None  # stale is tracked on the device
        dev = st.fitness.device
        stale = torch.full((), st.stale, dtype=torch.int64, device=dev) if stopping else None
        frozen = torch.zeros((), dtype=torch.bool, device=dev) if stopping else None
        freeze = stopping and early_stop
        rows, times, programs = [], [], []
        for _ in range(n):
            prev_best = torch.nan_to_num(st.hof.fitness.view(R, -1)[:, 0], nan=-float("inf")).max().double()
            kids, _, te, tf, tv = self.advance(frozen if freeze else None)
            best_run = st.hof.fitness.view(R, -1)[:, 0]
            vec = [self._stats_tensor(st, kids)]
            if stopping:
                fresh = torch.where(best_run.max().double() > prev_best + 1e-9, 0, stale + 1)
                stale = torch.where(frozen, stale, fresh)
                vec.append(torch.stack([stale, frozen]).double())
                stop = torch.zeros((), dtype=torch.bool, device=dev)
                if c.patience:
                    stop = stop | (stale >= c.patience)
                if c.target is not None:
                    stop = stop | (best_run >= c.target).all()
                if freeze:
                    frozen = frozen | stop
            rows.append(torch.cat(vec))
            times.append((te, tf, tv))
            programs.append(kids.size)
        host = torch.stack(rows).to("cpu", copy=True).tolist()  # the block's one host read
        out = []
        for g, (row, (te, tf, tv), k) in enumerate(zip(host, times, programs)):
            if stopping and row[-1]:  # computed after the stop: not part of the run
                break
            out.append(self._stats_from(g0 + g + 1, row, te, tf, tv, k))
            if stopping:
                st.stale = int(row[-2])
        st.generation = g0 + len(out)
        st.rng_state = self.generator.get_state()
        st.history.extend(out)
        return out

    def advance(self, frozen: torch.Tensor | None = None) -> tuple[Population, torch.Tensor, float, float, float]:
        """The generation's tensor work: breed, evaluate, elitism, hall of fame; ``generation``
        += 1. On the device path nothing here waits for the host (given a fitness function that
        does not). ``frozen: bool[]`` (device path): when true, the new population, fitness and
        hall of fame are computed but the old ones kept (a stop inside a block of ``steps``).
        Returns ``(children, their fitness, eval_s, fitness_s, variation_s)``."""
        c = self.config
        st = self.state
        if self.device_path and c.cuda_graph and getattr(self.fitness_fn, "capturable", False):
            if not self._begin_generation(st.generation + 1):  # (a changing objective runs eagerly)
                return self._advance_graphed(frozen)
        old = (st.pop, st.fitness, st.hof)
        R, P = c.runs, c.population
        t0 = time.perf_counter()
        sel_fit = self._selection_fitness(st.pop, st.fitness)
        n_child = P - c.elitism
        with _single_thread(self.device):
            if self.device_path:
                kids = self._graphed(st.pop, sel_fit, self._key(st.generation + 1))
            else:
                kids = breed_runs(st.pop, sel_fit, R, n_child, self.pset, self.generator, c)
        e_idx = elite_rows(sel_fit, R, c.elitism) if c.elitism else None
        tv = time.perf_counter() - t0
        changed = self._begin_generation(st.generation + 1)
        if changed:  # a resampled objective: the hall of fame competes under this generation's
            self.rescore_hall_of_fame(st.generation + 1)
        new_fit_kids, te, tf = self._evaluate(kids)
        if c.elitism:
            elite_pop = st.pop[e_idx]
            elite_fit = self._evaluate(elite_pop)[0] if changed else st.fitness[e_idx]
            # interleave per run: [elites of run r, children of run r]
            new_pop = _interleave(elite_pop, kids, R, c.max_len)
            new_fit = torch.cat([elite_fit.view(R, -1), new_fit_kids.view(R, -1)], 1).reshape(-1)
        else:
            new_pop, new_fit = kids, new_fit_kids
        with _single_thread(self.device):
            st.hof = self._update_hof(st.hof, kids, new_fit_kids)
        st.pop, st.fitness = new_pop, new_fit
        if frozen is not None:
            st.pop, st.fitness, st.hof = _keep_if(frozen, old, (st.pop, st.fitness, st.hof), c.max_len)
        st.generation += 1
        return kids, new_fit_kids, te, tf, tv

    def _advance_graphed(self, frozen: torch.Tensor | None) -> tuple[Population, torch.Tensor, float, float, float]:
        """``advance`` as one replay of the captured ``_generation`` (CUDA; eager elsewhere)."""
        c, st = self.config, self.state
        t0 = time.perf_counter()
        L = c.max_len
        if frozen is None:
            frozen = torch.zeros((), dtype=torch.bool, device=st.fitness.device)
        h = st.hof
        out = self._graph_gen(pad_to(st.pop.ops, L), pad_to(st.pop.consts, L), st.pop.length, st.fitness,
                              h.pop.ops, h.pop.consts, h.pop.length, h.fitness, self._key(st.generation + 1), frozen)
        st.pop, st.fitness = Population(*out[0:3]), out[3]
        st.hof = HallOfFame(Population(*out[4:7]), out[7], c.hall_of_fame)
        st.generation += 1
        return Population(*out[8:11]), out[11], 0.0, 0.0, time.perf_counter() - t0

    def _generation(self, ops: torch.Tensor, consts: torch.Tensor, length: torch.Tensor, fit: torch.Tensor,
                    hops: torch.Tensor, hconsts: torch.Tensor, hlength: torch.Tensor, hfit: torch.Tensor,
                    key: torch.Tensor, frozen: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One device generation as a function of tensors only (what ``cuda_graph`` captures):
        the eager ``advance`` with a fitness that does not change with the generation. Returns
        the new population (ops, consts, length, fitness), hall of fame (the same four) and the
        children with their fitness."""
        c = self.config
        R, L = c.runs, c.max_len
        pop, hof = Population(ops, consts, length), HallOfFame(Population(hops, hconsts, hlength), hfit, c.hall_of_fame)
        sel_fit = self._selection_fitness(pop, fit)
        kids = self._breed_device(pop, sel_fit, key)
        kid_fit = self.fitness_fn(kids)
        if c.elitism:
            e_idx = elite_rows(sel_fit, R, c.elitism)
            new_pop = _interleave(pop[e_idx], kids, R, L)
            new_fit = torch.cat([fit[e_idx].view(R, -1), kid_fit.view(R, -1)], 1).reshape(-1)
        else:
            new_pop, new_fit = kids, kid_fit
        new_hof = self._update_hof(hof, kids, kid_fit)
        new_pop, new_fit, new_hof = _keep_if(frozen, (pop, fit, hof), (new_pop, new_fit, new_hof), L)
        return (new_pop.ops, new_pop.consts, new_pop.length, new_fit, new_hof.pop.ops, new_hof.pop.consts,
                new_hof.pop.length, new_hof.fitness, pad_to(kids.ops, L), pad_to(kids.consts, L), kids.length, kid_fit)

    def replace(self, rows: torch.Tensor, programs: Population, fitness: torch.Tensor) -> None:
        """Write ``programs`` with their ``fitness: float32[k]`` over the individuals at
        ``rows: int64[k]`` of the current population, for a local search between generations
        (e.g. the regressor's constant optimisation: Lamarckian, the next generation breeds from
        the improved programs). They enter the hall of fame too; the random stream is untouched."""
        st = self.state
        if st is None:
            raise RuntimeError("replace() needs an initialised evolution (call initialize() or step() first)")
        rows = rows.to(st.pop.device)
        if programs.size != len(rows) or fitness.shape != (len(rows),):
            raise ValueError(f"replace: {len(rows)} rows, {programs.size} programs, fitness {tuple(fitness.shape)}")
        L = st.pop.max_len
        if programs.max_len > L:
            raise ValueError(f"replace: programs of {programs.max_len} slots exceed the population's {L}")
        st.pop.ops[rows] = pad_to(programs.ops, L)
        st.pop.consts[rows] = pad_to(programs.consts, L)
        st.pop.length[rows] = programs.length
        st.fitness[rows] = fitness.to(st.fitness)
        st.hof = self._update_hof(st.hof, st.pop, st.fitness)

    def done(self) -> bool:
        c, st = self.config, self.state
        if st is None:
            return False
        if st.generation >= c.generations:
            return True
        if c.patience and st.stale >= c.patience:
            return True
        if c.target is not None and bool((st.hof.fitness.view(c.runs, -1)[:, 0] >= c.target).all()):
            return True
        return False

    def run(self, callback: Callable[[GenStats], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> EvolutionState:
        if self.state is None:
            self.initialize()
            if callback:
                callback(self.state.history[-1])
        K = self.config.sync_every if self.device_path else 1
        while not self.done():
            if should_stop is not None and should_stop():
                break
            for stats in (self.steps(K) if K > 1 else [self.step()]):
                if callback:
                    callback(stats)
        return self.state

    def _stats(self, st: EvolutionState, te: float, tf: float, tv: float, evaluated: Population | None = None) -> GenStats:
        R = self.config.runs
        f = st.fitness
        finite = torch.isfinite(f)
        per_run = st.hof.fitness.view(R, -1)[:, 0].tolist()
        ev = evaluated if evaluated is not None else st.pop
        return GenStats(
            generation=st.generation,
            best=max(per_run),
            mean=float(f[finite].mean()) if bool(finite.any()) else float("nan"),
            mean_size=float(st.pop.length.float().mean()),
            eval_s=te,
            fitness_s=tf,
            variation_s=tv,
            nodes=int(ev.length.sum()) * self.count_rows,
            programs=ev.size,
            best_per_run=per_run,
        )

    def _stats_tensor(self, st: EvolutionState, evaluated: Population) -> torch.Tensor:
        """``float64[4 + R]`` on the device: (mean finite fitness, mean size, nodes of
        ``evaluated``, 0, best per run), what ``_stats_from`` turns into a ``GenStats``."""
        R = self.config.runs
        f = st.fitness
        finite = torch.isfinite(f)
        mean = torch.where(finite, f, 0.0).double().sum() / finite.sum()  # 0 / 0: NaN, as no finite value
        head = torch.stack([mean, st.pop.length.double().mean(), evaluated.length.double().sum(),
                            torch.zeros((), dtype=torch.float64, device=f.device)])
        return torch.cat([head, st.hof.fitness.view(R, -1)[:, 0].double()])

    def _stats_from(self, generation: int, row: list[float], te: float, tf: float, tv: float,
                    programs: int) -> GenStats:
        per_run = row[4:4 + self.config.runs]
        return GenStats(generation=generation, best=max(per_run), mean=row[0], mean_size=row[1], eval_s=te,
                        fitness_s=tf, variation_s=tv, nodes=int(row[2]) * self.count_rows, programs=programs,
                        best_per_run=per_run)

    # -------------------------------------------------------------- state io (checkpoints)
    def restore(self, state: EvolutionState) -> None:
        self.state = state
        self.generator.set_state(state.rng_state)
        self._keys = None  # the device path's keys follow the restored generator's seed


def resolve_variation(variation: str, device: torch.device | str) -> str:
    """``compiled`` or ``device``: what ``EvolutionConfig.variation`` means on ``device``."""
    if variation not in VARIATIONS:
        raise ValueError(f"variation must be one of {', '.join(VARIATIONS)}, got {variation!r}")
    if variation == "auto":
        return "device" if torch.device(device).type == "cuda" else "compiled"
    return variation


@contextmanager
def _single_thread(device: torch.device):
    """Variation is many small tensor ops: on the CPU, torch's thread pool costs more than it
    saves there (and much more when the cores are shared), so it runs on one thread."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _keep_if(frozen: torch.Tensor, old: tuple, new: tuple, L: int) -> tuple:
    """``old`` where ``frozen: bool[]`` else ``new``, for (pop, fitness, hall of fame) triples,
    without a host read."""
    (op, of, oh), (np_, nf, nh) = old, new

    def pick(a: Population, b: Population) -> Population:
        return Population(torch.where(frozen, pad_to(a.ops, L), pad_to(b.ops, L)),
                          torch.where(frozen, pad_to(a.consts, L), pad_to(b.consts, L)),
                          torch.where(frozen, a.length, b.length))

    return (pick(op, np_), torch.where(frozen, of, nf),
            HallOfFame(pick(oh.pop, nh.pop), torch.where(frozen, oh.fitness, nh.fitness), nh.size))


def _interleave(elite: Population, kids: Population, runs: int, L: int) -> Population:
    E = elite.size // runs
    K = kids.size // runs

    def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a.view(runs, E, *a.shape[1:]), b.view(runs, K, *b.shape[1:])], 1).reshape(runs * (E + K), *a.shape[1:])

    return Population(merge(pad_to(elite.ops, L), pad_to(kids.ops, L)),
                      merge(pad_to(elite.consts, L), pad_to(kids.consts, L)),
                      merge(elite.length, kids.length))


def breed_runs(pop: Population, sel_fit: torch.Tensor, runs: int, n_child: int, pset: PrimitiveSet,
               generator: torch.Generator, c: EvolutionConfig) -> Population:
    """``n_child`` children per run, parents drawn only from their own run; one batched call."""
    P = pop.size // runs
    return breed(pop, sel_fit, runs * n_child, pset, generator, c.limits, c.rates, c.tournament_size,
                 c.const_prob, groups=runs, group_size=P)
