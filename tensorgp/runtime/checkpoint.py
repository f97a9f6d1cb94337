"""Checkpoints: one file per process holding everything a run needs to continue bit-for-bit.

A checkpoint is a ``torch.save`` dict written atomically (temporary file in the same directory,
fsync, ``os.replace``, directory fsync), so a crash or SIGKILL at any moment leaves the previous
file intact. It holds

    state:    the ``EvolutionState`` tensors (pop, fitness, hall of fame), generation, history,
              stale counter and the ``torch.Generator`` state of the run device
    run:      the run spec (data paths, task globs, proxies, config...), island and checkpoint
              settings, so ``tensorgp run --resume DIR`` alone continues the run
    progress: elapsed seconds, migrations so far, the proxies and training tasks the run used

Files in DIR: ``checkpoint.pt`` (rank 0; the only one of a single-process run) and
``checkpoint.rankR.pt`` for the other ranks of an island run, each with a ``.prev.pt`` copy of
the checkpoint before it, so the ranks of an island run can agree on a generation they all
have even if one was killed between its two writes.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..engine.evolve import EvolutionConfig, EvolutionState, GenStats, HallOfFame
from ..engine.population import Population, is_valid
from ..engine.primitives import LAYOUT_V1, PrimitiveSet, opcode_layout, remap_opcodes
from .results import write_atomic

FORMAT = "tensorgp-checkpoint"
VERSION = 1
# settings a resumed run may change; every other explicitly given flag must equal the saved value
MUTABLE = frozenset({"spec.config.generations", "spec.config.patience", "spec.config.target", "spec.backend",
                     "every", "spec.config.sync_every"})  # sync_every: when progress is read, not what runs


class CheckpointError(ValueError):
    pass


class CheckpointWarning(UserWarning):
    """The newest checkpoint file was unreadable and an older one is used."""


def file_name(rank: int = 0, prev: bool = False) -> str:
    stem = "checkpoint" if rank == 0 else f"checkpoint.rank{rank}"
    return f"{stem}.prev.pt" if prev else f"{stem}.pt"


# ---------------------------------------------------------------- (de)serialisation
def _pop_dict(p: Population) -> dict:
    return {"ops": p.ops.cpu(), "consts": p.consts.cpu(), "length": p.length.cpu(), "opcodes": opcode_layout()}


def _pop_from(d: Mapping, device: torch.device) -> Population:
    """Programs in this process's opcode layout: files without ``opcodes`` are layout version 1."""
    ops = remap_opcodes(d["ops"], d.get("opcodes"))
    return Population(ops.to(device), d["consts"].to(device), d["length"].to(device))


def state_to_dict(st: EvolutionState, rng_state: torch.Tensor | None = None) -> dict:
    """Plain dict of CPU tensors and numbers (loadable with ``weights_only=True``)."""
    return {"pop": _pop_dict(st.pop), "fitness": st.fitness.cpu(),
            "hof": {**_pop_dict(st.hof.pop), "fitness": st.hof.fitness.cpu(), "size": st.hof.size},
            "generation": st.generation, "history": [h.to_dict() for h in st.history], "stale": st.stale,
            "rng_state": (st.rng_state if rng_state is None else rng_state).cpu()}


def state_from_dict(d: Mapping, device: str | torch.device = "cpu") -> EvolutionState:
    dev = torch.device(device)
    h = d["hof"]
    hof = HallOfFame(_pop_from(h, dev), h["fitness"].to(dev), int(h["size"]))
    return EvolutionState(_pop_from(d["pop"], dev), d["fitness"].to(dev), hof, int(d["generation"]),
                          [GenStats(**g) for g in d["history"]], int(d["stale"]), d["rng_state"].cpu())


def spec_to_dict(spec) -> dict:
    """A ``RunSpec`` as plain data (every field, so fields added later are carried too); data
    paths absolute, the function set spelled out."""
    out = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name in ("data", "target") and v is not None:  # files: absolute, so a resume finds them
            v = [str(Path(p).resolve()) for p in v]
        elif f.name == "functions":
            v = list(PrimitiveSet.parse_functions(v))
        elif f.name == "config":
            v = v.to_dict()
        elif f.name == "device":
            v = str(v)
        elif isinstance(v, Path):
            v = str(v)
        elif isinstance(v, (tuple, list)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        out[f.name] = v
    return out


def spec_from_dict(d: Mapping, spec_type: type):
    """The application's run spec (a dataclass with an ``EvolutionConfig`` field ``config``) back
    from ``spec_to_dict``."""
    known = {f.name for f in dataclasses.fields(spec_type)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"the checkpoint's run spec has fields this tensorgp lacks: {', '.join(unknown)}")
    d = dict(d)
    d["config"] = EvolutionConfig.from_dict(d["config"])
    return spec_type(**d)


@dataclass
class Checkpoint:
    spec: Any  # the application's run spec (a dict unless ``load`` was given its type)
    state: EvolutionState
    run: dict  # {"spec": spec dict, "islands": {"every", "migrants"} | None, "every": K, "world_size": W}
    progress: dict = field(default_factory=dict)  # elapsed_s, migrations, migration_s, proxies, train_tasks
    path: Path | None = None
    rank: int = 0
    fallback: str | None = None  # why the newest file of a directory was passed over, if it was

    @property
    def generation(self) -> int:
        return self.state.generation


# ---------------------------------------------------------------- files
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(directory: str | Path, spec, state: EvolutionState, *, rng_state: torch.Tensor | None = None,
         rank: int = 0, world_size: int = 1, every: int = 0, islands: Mapping | None = None,
         progress: Mapping | None = None) -> Path:
    """Write ``DIR/checkpoint[.rankR].pt`` atomically; the file it replaces becomes ``.prev.pt``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "version": VERSION, "rank": rank,
           "run": {"spec": spec_to_dict(spec), "islands": dict(islands) if islands else None, "every": every,
                   "world_size": world_size},
           "state": state_to_dict(state, rng_state), "progress": dict(progress or {})}
    buf = io.BytesIO()
    torch.save(obj, buf)
    cur, prev = d / file_name(rank), d / file_name(rank, prev=True)
    write_atomic(cur, buf.getbuffer(), backup=prev)
    _fsync_dir(d)
    return cur


def _read(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tensorgp checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {obj.get('version')}, this tensorgp reads {VERSION}")
    validate(obj, path)
    return obj


def _need(d: Any, key: str, kind: type | tuple, path: Path, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise CheckpointError(f"checkpoint {path}: field {where}{key} is missing")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise CheckpointError(f"checkpoint {path}: field {where}{key} is a {type(v).__name__}, expected "
                              f"{kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)}")
    return v


def _tensor(d: Mapping, key: str, dtypes: tuple, ndim: int, path: Path, where: str) -> torch.Tensor:
    t = _need(d, key, torch.Tensor, path, where)
    if t.dtype not in dtypes or t.dim() != ndim:
        raise CheckpointError(f"checkpoint {path}: field {where}{key} is {t.dtype} with shape {tuple(t.shape)}, "
                              f"expected a {ndim}-D {' or '.join(map(str, dtypes))} tensor")
    return t


_INT = (torch.int32, torch.int16, torch.int64)


def _check_programs(d: Mapping, path: Path, where: str, n_vars: int | None) -> int:
    """Shapes, dtypes, opcode range, lengths and postfix well-formedness of a program block;
    returns its row count. Runs before anything reaches the compiled structure pass, which
    trusts its input."""
    ops = _tensor(d, "ops", _INT, 2, path, where)
    consts = _tensor(d, "consts", (torch.float32,), 2, path, where)
    length = _tensor(d, "length", _INT, 1, path, where)
    P, L = ops.shape
    if tuple(consts.shape) != (P, L) or tuple(length.shape) != (P,):
        raise CheckpointError(f"checkpoint {path}: {where}ops {tuple(ops.shape)}, {where}consts "
                              f"{tuple(consts.shape)} and {where}length {tuple(length.shape)} do not match")
    if P == 0:
        return 0
    saved = d.get("opcodes")  # the layout the programs were written under (absent: version 1)
    try:
        first = int((LAYOUT_V1 if saved is None else saved)["first_var"])
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"checkpoint {path}: field {where}opcodes is not an opcode layout") from None
    # range-checked under the saved layout before remapping: the remap's lookup would wrap a
    # negative opcode to a valid one
    top = first + (n_vars if n_vars is not None else max(int(ops.max()) - first + 1, 1))
    bad = (ops < 0) | (ops >= top)
    if bool(bad.any()):
        r, c = (int(x) for x in bad.nonzero()[0])
        raise CheckpointError(f"checkpoint {path}: field {where}ops holds opcode {int(ops[r, c])} (row {r}, "
                              f"position {c}); valid opcodes are 0..{top - 1}"
                              + (f" for {n_vars} terminal(s)" if n_vars is not None else ""))
    try:
        ops = remap_opcodes(ops, saved)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: field {where}opcodes: {e}") from None
    out = (length < 1) | (length > L)
    if bool(out.any()):
        r = int(out.nonzero()[0, 0])
        raise CheckpointError(f"checkpoint {path}: field {where}length holds {int(length[r])} (row {r}); "
                              f"lengths must lie in 1..{L}")
    ok = is_valid(ops.to(torch.int32), length.to(torch.int32), top - first)
    if not bool(ok.all()):
        r = int((~ok).nonzero()[0, 0])
        raise CheckpointError(f"checkpoint {path}: field {where}ops row {r} is not a well-formed postfix program "
                              f"(the stack underflows, does not end at exactly one value, or is not padded)")
    return P


def validate(obj: Mapping, path: Path) -> None:
    """Every field ``load`` and the engine use, with ``CheckpointError`` naming the file and field:
    required keys, tensor dtypes and shapes, opcode range, lengths in 1..L, well-formed postfix."""
    run = _need(obj, "run", dict, path, "")
    spec = _need(run, "spec", dict, path, "run.")
    cfg = _need(spec, "config", dict, path, "run.spec.")
    state = _need(obj, "state", dict, path, "")
    progress = obj.get("progress", {})
    if not isinstance(progress, dict):
        raise CheckpointError(f"checkpoint {path}: field progress is a {type(progress).__name__}, expected dict")
    n_vars = progress.get("terminals")
    if n_vars is None and isinstance(progress.get("proxies"), list):
        n_vars = len(progress["proxies"])
    if n_vars is not None and (not isinstance(n_vars, int) or n_vars < 1):
        raise CheckpointError(f"checkpoint {path}: field progress.terminals is {n_vars!r}, expected an int >= 1")
    P = _check_programs(_need(state, "pop", dict, path, "state."), path, "state.pop.", n_vars)
    fit = _tensor(state, "fitness", (torch.float32,), 1, path, "state.")
    if fit.shape[0] != P:
        raise CheckpointError(f"checkpoint {path}: field state.fitness has {fit.shape[0]} values for {P} programs")
    hof = _need(state, "hof", dict, path, "state.")
    H = _check_programs(hof, path, "state.hof.", n_vars)
    hfit = _tensor(hof, "fitness", (torch.float32,), 1, path, "state.hof.")
    size = _need(hof, "size", int, path, "state.hof.")
    if hfit.shape[0] != H or size < 1 or H % size:
        raise CheckpointError(f"checkpoint {path}: field state.hof holds {H} programs, {hfit.shape[0]} fitness "
                              f"values and size {size}; expected runs x size of each")
    runs, pop = cfg.get("runs"), cfg.get("population")
    if isinstance(runs, int) and isinstance(pop, int) and P != runs * pop:
        raise CheckpointError(f"checkpoint {path}: field state.pop has {P} programs; run.spec.config says "
                              f"{runs} run(s) x population {pop}")
    for key in ("generation", "stale"):
        if _need(state, key, int, path, "state.") < 0:
            raise CheckpointError(f"checkpoint {path}: field state.{key} is negative")
    hist = _need(state, "history", list, path, "state.")
    stat_fields = {f.name for f in dataclasses.fields(GenStats)}
    required = {f.name for f in dataclasses.fields(GenStats)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not all(isinstance(h, dict) and required <= set(h) <= stat_fields for h in hist):
        raise CheckpointError(f"checkpoint {path}: field state.history holds an entry that is not a generation's "
                              f"statistics (keys of {', '.join(sorted(stat_fields))})")
    if state["generation"] > 0 and not hist:
        raise CheckpointError(f"checkpoint {path}: field state.history is empty at generation {state['generation']}")
    rng = _tensor(state, "rng_state", (torch.uint8,), 1, path, "state.")
    if rng.numel() != torch.Generator().get_state().numel():
        raise CheckpointError(f"checkpoint {path}: field state.rng_state has {rng.numel()} bytes, expected "
                              f"{torch.Generator().get_state().numel()}")
    try:
        EvolutionConfig.from_dict(cfg)  # its __post_init__ checks the values
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: field run.spec.config is not a valid configuration ({e})") from None
    for key, cast in (("world_size", int),):
        if key in run and not isinstance(run[key], cast):
            raise CheckpointError(f"checkpoint {path}: field run.{key} is {run[key]!r}, expected an int")
    elapsed = progress.get("elapsed_s", 0.0)
    if not isinstance(elapsed, (int, float)) or not math.isfinite(elapsed):
        raise CheckpointError(f"checkpoint {path}: field progress.elapsed_s is {elapsed!r}, expected a number")


def candidates(directory: str | Path, rank: int = 0) -> list[Path]:
    """Existing checkpoint files of ``rank`` in ``directory``, newest first."""
    d = Path(directory)
    return [p for p in (d / file_name(rank), d / file_name(rank, prev=True)) if p.exists()]


def scan(directory: str | Path, rank: int = 0) -> tuple[dict[int, Path], dict[Path, str]]:
    """``({generation: path} of the readable checkpoints of rank, {path: why} of unreadable ones)``."""
    out: dict[int, Path] = {}
    bad: dict[Path, str] = {}
    for p in reversed(candidates(directory, rank)):
        try:
            out[int(_read(p)["state"]["generation"])] = p
        except CheckpointError as e:
            bad[p] = str(e)
    return out, bad


def generations(directory: str | Path, rank: int = 0) -> dict[int, Path]:
    """``{generation: path}`` of the readable checkpoints of ``rank`` (unreadable ones skipped)."""
    return scan(directory, rank)[0]


def fallback_note(directory: str | Path, used: Path, rank: int = 0) -> str | None:
    """A note (also issued as a ``CheckpointWarning``) when ``used`` is not the newest checkpoint
    file of ``rank`` because that one is unreadable (a torn or truncated file); None otherwise."""
    newest = Path(directory) / file_name(rank)
    if Path(used) == newest or not newest.exists():
        return None
    why = scan(directory, rank)[1].get(newest)
    if why is None:
        return None
    note = f"{newest} is unreadable ({why}); resuming from {Path(used).name} instead"
    warnings.warn(note, CheckpointWarning, stacklevel=2)
    return note


def load(path: str | Path, rank: int = 0, device: str | torch.device = "cpu",
         spec_type: type | None = None) -> Checkpoint:
    """A checkpoint file, or the newest readable one of ``rank`` in a directory. ``spec_type``:
    the application's run-spec class to rebuild ``Checkpoint.spec`` with (else it stays a dict)."""
    p = Path(path)
    if p.is_dir():
        files = candidates(p, rank)
        if not files:
            raise CheckpointError(f"no checkpoint of rank {rank} in {p} (expected {p / file_name(rank)})")
        errors = []
        for f in files:
            try:
                ck = load(f, rank, device, spec_type)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            if errors:
                ck.fallback = f"{files[0]} is unreadable ({errors[0]}); using {f.name} instead"
            return ck
        raise CheckpointError("; ".join(errors))
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    obj = _read(p)
    spec = obj["run"]["spec"]
    if spec_type:
        try:
            spec = spec_from_dict(spec, spec_type)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {p}: {e}") from None
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {p}: field run.spec is not a valid run spec ({e})") from None
    return Checkpoint(spec, state_from_dict(obj["state"], device),
                      obj["run"],
                      obj.get("progress", {}), p, int(obj.get("rank", rank)))


# ---------------------------------------------------------------- resume precedence
def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        node = out
        *head, last = key.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out


def run_settings(spec, islands: Mapping | None, every: int, world_size: int = 1) -> dict:
    return {"spec": spec_to_dict(spec), "islands": dict(islands) if islands else None, "every": every,
            "world_size": world_size}


# `tensorgp run` options -> the run-settings key they set (see ``run_settings``)
FLAG_KEYS = {"data": "spec.data", "train": "spec.train", "test": "spec.test", "proxies": "spec.proxies",
             "preprocess": "spec.preprocess", "functions": "spec.functions", "constants": "spec.constants",
             "metric": "spec.metric", "aggregation": "spec.aggregation", "device": "spec.device",
             "backend": "spec.backend", "sync_every": "spec.config.sync_every", "pop": "spec.config.population", "gens": "spec.config.generations",
             "runs": "spec.config.runs", "islands": "spec.config.runs", "seed": "spec.config.seed",
             "parsimony": "spec.config.parsimony", "tournament": "spec.config.tournament_size",
             "elitism": "spec.config.elitism", "max_depth": "spec.config.max_depth",
             "max_len": "spec.config.max_len", "patience": "spec.config.patience",
             "migrate_every": "islands.every", "migrants": "islands.migrants", "every": "every"}
# options that never touch the run settings
OPERATIONAL = frozenset({"ctx", "out_dir", "as_json", "quiet", "checkpoint", "resume", "protocol"})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def merge_resume(saved: Mapping, given: Mapping, explicit: Iterable[str]) -> dict:
    """Resume precedence: the checkpoint's settings win over defaults; an option the user gave
    explicitly (``explicit``: ``tensorgp run`` parameter names) may change a key of ``MUTABLE``
    and must otherwise equal the saved value, else a ``CheckpointError`` names every
    contradicting option. An explicit option of unknown meaning (not in ``FLAG_KEYS``)
    contradicts when the given settings differ from the saved ones in a key no known option
    sets. ``saved``/``given``: ``run_settings`` dicts; returns the merged one."""
    s, g = _flatten(saved), _flatten(given)
    explicit = set(explicit) - OPERATIONAL
    keys = dict(FLAG_KEYS)
    for name in explicit - set(keys):  # an option named like a RunSpec or config field sets that field
        for key in (f"spec.{name}", f"spec.config.{name}"):
            if key in s or key in g:
                keys[name] = key
                break
    conflicts = []
    for name in sorted(explicit & set(keys)):
        key, flag = keys[name], _flag(name)
        gv = g.get(key)
        if key in MUTABLE:
            s[key] = gv
            continue
        if key.startswith("islands.") and saved.get("islands") is None:
            conflicts.append(f"{flag} (the checkpoint was written by a run without islands)")
            continue
        if not _same(key, gv, s.get(key)):
            conflicts.append(f"{flag} {_show(gv)} (checkpoint: {_show(s.get(key))})")
    unmapped = sorted(explicit - set(keys))
    if unmapped:
        covered = set(keys.values()) | MUTABLE | {"world_size", "islands"}
        diff = [k for k in sorted(set(s) | set(g)) if k not in covered and not _same(k, g.get(k), s.get(k))]
        if diff:
            conflicts.append(f"{', '.join(map(_flag, unmapped))} (the given settings differ from the checkpoint in "
                             + ", ".join(f"{k.removeprefix('spec.')} {_show(g.get(k))} vs {_show(s.get(k))}"
                                         for k in diff) + ")")
    if conflicts:
        raise CheckpointError("these options contradict the checkpoint: " + "; ".join(conflicts)
                              + ". Drop them to continue the saved run, or start a new run without --resume "
                              "(on resume only --gens, --patience, --backend, --every and --sync-every may change)")
    return _unflatten(s)


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "spec.device" and a is not None and b is not None:
        da, db = torch.device(a), torch.device(b)  # "cuda" matches any "cuda:N"
        return da.type == db.type and (da.index is None or db.index is None or da.index == db.index)
    return a == b


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)
