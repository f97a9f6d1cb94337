"""Load NAS-Bench-Suite-Zero ``zc_*.json`` files into tasks, select them, and batch them.

A *task* is one (search space, dataset) pair: architectures (rows) x zero-cost proxies
(columns) plus each architecture's ``val_accuracy``. Accepted layouts (all seen in the wild):

    {task: {arch_key: record}}                       tasks at the top level
    {space: {task: {arch_key: record}}}              under a search-space key (or deeper)
    {arch_key: record}                               the file itself is one task

    record = {"idx": ..., "arch": ..., PROXY: {"score": x, "time": t} | x, ..., "val_accuracy": a}

A dict is a task when more than half of its values are dicts holding ``val_accuracy``; any
other dict is searched recursively. Task names are the file stem without ``zc_`` followed by
the key path, dropping a key equal to the stem (``zc_nasbench201.json`` / ``cifar10`` ->
``nasbench201/cifar10``). Failed proxy values (<= -1e7, +-inf, NaN, null) become NaN; a string,
bool, list or object where a proxy score belongs is a ``DataError``, as are duplicate keys in an
object (JSON would let the last one win silently). Values are kept in float64 until after
preprocessing, so proxies beyond the float32 range (1e300) and accuracies closer than float32
resolution keep their order.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

FAILED_BELOW = -1e7  # NASLib writes -1e8 for a proxy that failed on an architecture
PREPROCESS_MODES = ("raw", "signed-log", "rank", "zscore")

# Keys of a record that are never proxies (labels, bookkeeping, training costs).
NON_PROXY_KEYS = frozenset({
    "idx", "arch", "arch_str", "arch_hash", "hash", "spec", "genotype", "epochs", "val_accuracy",
    "test_accuracy", "train_accuracy", "valid_accuracy", "val_acc", "test_acc", "train_acc",
    "valid_acc", "train_time", "eval_time", "runtime", "train_loss", "val_loss", "test_loss",
})
NON_PROXY_SUFFIXES = ("_accuracy", "_acc", "_loss", "_time")
# The hand-made zero-cost proxies: such a key is a proxy even when none of its values is a number
KNOWN_PROXIES = frozenset({"synflow", "nwot", "snip", "jacov", "grad_norm", "fisher", "grasp", "l2_norm", "plain",
                           "epe_nas", "zen", "flops", "params"})
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DataError(ValueError):
    """Malformed or inconsistent benchmark data; the message names the file or task."""


class DataWarning(UserWarning):
    """Architectures dropped while loading (no or non-finite val_accuracy), degenerate tasks, raw
    values beyond float32."""


@dataclass
class Task:
    """One task: ``features: float64[n, m]`` (columns ``proxies``, NaN = failed/missing), ``accuracy: float64[n]``.

    float64 on purpose: ranks are taken before any float32 cast (see ``make_batch``)."""

    name: str
    source: str
    keys: list[str] = field(repr=False)
    proxies: list[str]
    features: torch.Tensor = field(repr=False)
    accuracy: torch.Tensor = field(repr=False)

    def __post_init__(self) -> None:
        n, m = len(self.keys), len(self.proxies)
        if tuple(self.features.shape) != (n, m) or tuple(self.accuracy.shape) != (n,):
            raise DataError(
                f"task {self.name}: features {tuple(self.features.shape)} / accuracy "
                f"{tuple(self.accuracy.shape)} do not match {n} keys x {m} proxies"
            )

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labelled(self) -> bool:
        """True when some architecture has a finite accuracy (``load(..., labels=False)`` may give none)."""
        return bool(torch.isfinite(self.accuracy).any())

    def present(self, proxy: str) -> bool:
        """True when ``proxy`` is a column and more than half of its values are finite."""
        if proxy not in self.proxies:
            return False
        col = self.features[:, self.proxies.index(proxy)]
        return 2 * int(torch.isfinite(col).sum()) > len(self)

    def undefined(self) -> str | None:
        """Why a rank correlation with this task's accuracies is undefined (None when it is defined)."""
        if len(self) < 2:
            return f"{len(self)} architecture(s): a rank correlation needs at least 2"
        if bool((self.accuracy == self.accuracy[0]).all()):
            return f"all {len(self)} accuracies are equal ({float(self.accuracy[0]):g})"
        return None

    def column(self, proxy: str) -> torch.Tensor:
        """``float64[n]``: the proxy's values, all NaN if it is not a column."""
        if proxy not in self.proxies:
            return torch.full((len(self),), float("nan"), dtype=self.features.dtype)
        return self.features[:, self.proxies.index(proxy)]

    def subset(self, idx: torch.Tensor) -> "Task":
        """Rows ``idx`` (``int64[k]`` indices or ``bool[n]`` mask), same name and columns."""
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise DataError(f"task {self.name}: mask of shape {tuple(idx.shape)} for {len(self)} rows")
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten().cpu()
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise DataError(f"task {self.name}: row index out of range for {len(self)} rows")
        return Task(
            self.name, self.source, [self.keys[i] for i in idx.tolist()], list(self.proxies),
            self.features[idx], self.accuracy[idx],
        )


# ----------------------------------------------------------------------------- loading


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int  # bool is not a number here


def _is_score(v: Any) -> bool:
    return type(v) is dict and "score" in v


def _looks_like_record(v: Any) -> bool:
    """An architecture record, with or without val_accuracy."""
    if type(v) is not dict:
        return False
    if "val_accuracy" in v or "arch" in v or "idx" in v:
        return True
    return any(_is_score(x) or _is_number(x) for x in v.values())


def _is_proxy_key(k: str) -> bool:
    return k in KNOWN_PROXIES or (k not in NON_PROXY_KEYS and not k.endswith(NON_PROXY_SUFFIXES))


def _float(x: float | int) -> float:
    """A JSON number as float64: an integer beyond its range is +-inf, as 1e400 already parses."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _to_float(v: Any) -> float:
    if type(v) is dict:
        v = v.get("score")
    if type(v) is float or type(v) is int:
        return _float(v)
    return math.nan


_NUMBER_TYPES = frozenset({float, int})


def _score(v: Any, src: Path, task: str, arch: str, proxy: str) -> float:
    """A proxy value: a number (or ``{"score": number}``); null or absent is a failed value (NaN);
    anything else is a ``DataError`` naming where it is."""
    x = v.get("score") if type(v) is dict else v
    if x is None:
        return math.nan
    if type(x) is float or type(x) is int:
        return _float(x)
    raise DataError(f"{src}: task {task}: architecture {arch}: proxy {proxy} has a {type(x).__name__} score "
                    f"{x!r}; expected a number (null or -1e8 for a failed value)")


def _find_tasks(node: dict, path: list[str], src: Path, labels: bool = True) -> Iterator[tuple[list[str], dict]]:
    """Yield ``(key path, task dict)`` for every task below ``node`` (depth first, file order).
    ``labels=False``: a dict mostly of architecture records is a task with or without accuracies."""
    where = "/".join(path) or "top level"
    if not node:
        raise DataError(f"{src}: {where} is empty (no architectures)")
    n = len(node)
    with_acc = sum(1 for v in node.values() if type(v) is dict and "val_accuracy" in v)
    if 2 * with_acc > n:
        yield path, node
        return
    records = sum(1 for v in node.values() if _looks_like_record(v))
    if 2 * records > n and not labels:
        yield path, node
        return
    if 2 * records > n:
        missing = [k for k, v in node.items() if not (type(v) is dict and "val_accuracy" in v)]
        raise DataError(
            f"{src}: task {where}: {len(missing)} of {n} architecture records lack val_accuracy "
            f"(e.g. {missing[0]!r})"
        )
    for k, v in node.items():
        if type(v) is dict:
            yield from _find_tasks(v, path + [str(k)], src, labels)


def _build_task(name: str, src: Path, node: dict, labels: bool = True) -> Task:
    keys, recs, dropped = [], [], []
    for k, r in node.items():
        if type(r) is dict and ("val_accuracy" in r or (not labels and _looks_like_record(r))):
            keys.append(str(k))
            recs.append(r)
        else:
            dropped.append(str(k))
    if dropped:
        warnings.warn(
            f"{src}: task {name}: dropped {len(dropped)} entries without val_accuracy "
            f"(e.g. {dropped[:3]})", DataWarning, stacklevel=3,
        )
    acc = np.array([_to_float(r.get("val_accuracy")) for r in recs], dtype=np.float64)
    ok = np.isfinite(acc)
    if not labels:  # scoring only: an architecture without accuracy is kept (accuracy NaN)
        ok[:] = True
    if not ok.all():
        bad = [keys[i] for i in np.flatnonzero(~ok)[:3]]
        if not ok.any():
            raise DataError(f"{src}: task {name}: no architecture has a finite numeric val_accuracy")
        warnings.warn(
            f"{src}: task {name}: dropped {int((~ok).sum())} architectures with non-finite or "
            f"non-numeric val_accuracy (e.g. {bad})", DataWarning, stacklevel=3,
        )
        keep = np.flatnonzero(ok)
        keys = [keys[i] for i in keep]
        recs = [recs[i] for i in keep]
        acc = acc[keep]

    seen: dict[str, None] = {}
    for r in recs:
        seen.update(dict.fromkeys(r))
    proxies = []
    for p in seen:
        if not isinstance(p, str) or not _is_proxy_key(p):
            continue
        if p in KNOWN_PROXIES or any(_is_score(v) or _is_number(v) for v in (r.get(p) for r in recs)):
            proxies.append(p)
    proxies.sort()

    feats = np.empty((len(recs), len(proxies)), dtype=np.float64)
    for j, p in enumerate(proxies):
        col = [r.get(p) for r in recs]
        xs = [v.get("score") if type(v) is dict else v for v in col]
        try:
            if not set(map(type, xs)) <= _NUMBER_TYPES:
                raise TypeError
            feats[:, j] = xs  # the common case, checked in bulk
        except (TypeError, OverflowError):  # a non-number (named) or an integer beyond float64
            feats[:, j] = [_score(v, src, name, k, p) for k, v in zip(keys, col)]
    with np.errstate(invalid="ignore"):
        feats[~np.isfinite(feats) | (feats <= FAILED_BELOW)] = np.nan
    return Task(name, str(src), keys, proxies, torch.from_numpy(feats), torch.from_numpy(acc))


def check_regular_file(src: Path) -> None:
    """``DataError`` unless ``src`` is a regular file: checked by ``stat`` before any open, since
    opening a FIFO or a device blocks or reads forever."""
    try:
        st = os.stat(src)
    except FileNotFoundError:
        raise DataError(f"{src}: no such file") from None
    except OSError as e:
        raise DataError(f"{src}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise DataError(f"{src}: is {kind}, not a regular file; give a zc_*.json file")


def _parse_json(raw: bytes, src: Path) -> Any:
    """JSON with every object checked for duplicate keys (``DataError`` naming the key path)."""
    dups: dict[int, str] = {}  # id of an object holding a duplicate key -> the first such key

    def pairs(items: list[tuple[str, Any]]) -> dict:
        d = dict(items)
        if len(d) < len(items):
            seen: set[str] = set()
            dups[id(d)] = next(k for k, _ in items if k in seen or seen.add(k))
        return d

    try:
        obj = json.loads(raw, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise DataError(f"{src}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{src}: not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except RecursionError:
        raise DataError(f"{src}: JSON nested too deeply to read (Suite-Zero files nest a few levels)") from None
    if dups:
        stack: list[tuple[Any, list[str]]] = [(obj, [])]
        while stack:  # iterative: the nesting depth is the file's to choose
            node, path = stack.pop()
            if isinstance(node, dict):
                if id(node) in dups:
                    where = f"in object {'/'.join(path)}" if path else "at the top level"
                    raise DataError(f"{src}: duplicate key {dups[id(node)]!r} {where} (keys must be unique; "
                                    f"JSON readers would silently keep the last one)")
                stack.extend((v, path + [str(k)]) for k, v in node.items())
            elif isinstance(node, list):
                stack.extend((v, path + [str(i)]) for i, v in enumerate(node))
    return obj


def load_file(path: str | Path, labels: bool = True) -> list[Task]:
    """Tasks of one ``zc_*.json`` file, in file order. ``labels=False``: records need no
    ``val_accuracy`` (scoring only); a missing one is NaN."""
    src = Path(path)
    check_regular_file(src)
    try:
        with open(src, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{src}: no such file") from None
    except OSError as e:
        raise DataError(f"{src}: cannot read ({e.strerror or e})") from None
    obj = _parse_json(raw, src)
    if not isinstance(obj, dict):
        raise DataError(f"{src}: top level is a JSON {type(obj).__name__}, expected an object")
    stem = src.stem[3:] if src.stem.startswith("zc_") else src.stem
    try:
        tasks = [
            _build_task("/".join([stem] + [k for k in keypath if k != stem]), src, node, labels)
            for keypath, node in _find_tasks(obj, [], src, labels)
        ]
    except RecursionError:
        raise DataError(f"{src}: objects nested too deeply to search for tasks") from None
    if not tasks:
        raise DataError(f"no task with {'val_accuracy' if labels else 'architecture records'} found in {src}")
    return tasks


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("zc_*.json"))
            if not found:
                raise DataError(f"{p}: directory holds no zc_*.json file")
            for f in found:
                check_regular_file(f)
            files.extend(found)
        elif p.exists():
            check_regular_file(p)
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    unique: dict[Path, Path] = {}
    for f in files:  # the same file reached twice (a dir and a file in it) is loaded once
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def load(paths: str | Path | Sequence[str | Path], labels: bool = True) -> list[Task]:
    """Tasks from files and directories (a directory contributes its ``zc_*.json``, sorted).
    ``labels=False`` for paths that only score: accuracies become optional (NaN when absent)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError("no data paths given")
    tasks: list[Task] = []
    where: dict[str, str] = {}
    for f in _expand(paths):
        for t in load_file(f, labels):
            if t.name in where:
                raise DataError(f"duplicate task {t.name}: in {where[t.name]} and in {t.source}")
            where[t.name] = t.source
            tasks.append(t)
    return tasks


def _suite_dir(p: Path) -> Path:
    """A data root holding ``suite-zero/`` stands for that folder; any other path for itself."""
    if p.is_dir() and not any(p.glob("zc_*.json")) and (p / "suite-zero").is_dir():
        return p / "suite-zero"
    return p


def data_dir_candidates() -> list[Path]:
    """Where the default data is looked for, in order: ``$TENSORGP_DATA`` (the Suite-Zero folder
    or a data root holding ``suite-zero/``) if set, else ``./shared/data/suite-zero`` and
    ``../shared/data/suite-zero`` relative to the working directory (so a non-editable install
    finds the data too), then the same beside a source checkout."""
    env = os.environ.get("TENSORGP_DATA")
    if env:
        return [_suite_dir(Path(env))]
    rel = Path("shared") / "data" / "suite-zero"
    checkout = Path(__file__).resolve().parents[3] / rel
    return list(dict.fromkeys([Path.cwd() / rel, Path.cwd().parent / rel, checkout]))


def find_data_dir() -> Path:
    """The first existing folder of ``data_dir_candidates()``; a ``DataError`` listing every
    path tried when none exists."""
    tried = data_dir_candidates()
    for p in tried:
        if p.is_dir():
            return p
    raise DataError("no --data given and no default data folder found; tried "
                    + ", ".join(map(str, tried)) + " ($TENSORGP_DATA"
                    + (")" if os.environ.get("TENSORGP_DATA") else " is not set)")
                    + "; pass --data PATH or set TENSORGP_DATA")


# ----------------------------------------------------------------------------- selection


def _split_globs(globs: str | Sequence[str]) -> list[str]:
    items = [globs] if isinstance(globs, str) else list(globs)
    return [g.strip() for s in items for g in s.split(",") if g.strip()]


def select(tasks: list[Task], globs: str | Sequence[str]) -> list[Task]:
    """Tasks matching any comma-separated fnmatch glob (case-sensitive), in the order of ``tasks``.
    A pattern equal to a task's name matches that task alone, whatever glob characters it holds
    (``cifar[10]``), so the protocols can pass task names back in."""
    pats = _split_globs(globs)
    names = [t.name for t in tasks]
    if not pats:
        raise DataError(f"empty task selection; available tasks: {', '.join(names)}")
    literal = set(names)

    def hit(n: str, g: str) -> bool:
        return n == g if g in literal else fnmatch.fnmatchcase(n, g)

    for g in pats:
        if not any(hit(n, g) for n in names):
            raise DataError(f"task glob {g!r} matches no task; available tasks: {', '.join(names)}")
    return [t for t in tasks if any(hit(t.name, g) for g in pats)]


def common_proxies(tasks: list[Task], candidates: Sequence[str] | None = None) -> list[str]:
    """Proxies present (see ``Task.present``) on every task.

    Without ``candidates``: all of them, sorted. With ``candidates``: checks each is present on
    every task (DataError naming the proxy and the tasks otherwise) and returns them in order.
    """
    if not tasks:
        raise DataError("no tasks selected")
    if candidates is None:
        return sorted(p for p in tasks[0].proxies if all(t.present(p) for t in tasks))
    cands = _split_globs(candidates) if isinstance(candidates, str) else list(candidates)
    dup = sorted({p for p in cands if cands.count(p) > 1})
    if dup:
        raise DataError(f"proxies listed more than once: {', '.join(dup)}")
    known = sorted({p for t in tasks for p in t.proxies})
    for p in cands:
        if p not in known:
            raise DataError(f"unknown proxy {p!r}; proxies in the selected tasks: {', '.join(known)}")
        absent = [t.name for t in tasks if not t.present(p)]
        if absent:
            raise DataError(
                f"proxy {p!r} is missing or mostly failed (<= 50% finite values) on task(s): {', '.join(absent)}"
            )
    return cands


# ----------------------------------------------------------------------------- preprocessing


def _rank_column(v: torch.Tensor) -> torch.Tensor:
    """``float64[n]`` -> average-rank quantile in [0, 1] over finite entries, NaN elsewhere."""
    out = torch.full_like(v, float("nan"))
    fin = torch.isfinite(v)
    vals = v[fin]
    k = vals.numel()
    if k == 0:
        return out
    s, order = torch.sort(vals)
    _, group, counts = torch.unique_consecutive(s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(v.dtype)  # 1-based rank of each tie group's last member
    avg = ends - (counts.to(v.dtype) - 1) / 2  # average 1-based rank of the group
    ranks_sorted = avg[group]  # a gather: repeat_interleave is slow on small CPU tensors
    q = (ranks_sorted - 1) / (k - 1) if counts.numel() > 1 else torch.full_like(ranks_sorted, 0.5)
    r = torch.empty_like(vals)
    r[order] = q
    out[fin] = r
    return out


def preprocess(x: torch.Tensor, mode: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-column transform of one task's ``x: float[n, m]`` -> ``float32[n, m]`` (or ``dtype``),
    computed in float64 (give float64 input: a float32 cast first would merge close values and
    overflow 1e300).

    raw: unchanged. signed-log: sign(x) * log1p(|x|). rank: average-rank quantile (rank-1)/(k-1)
    over the k finite values, ties averaged, constant column -> 0.5. zscore: (x - mean) / std over
    finite values (population std; std 0 -> 0). NaN stays NaN; rank and zscore also map +-inf to NaN.
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; modes: {', '.join(PREPROCESS_MODES)}")
    if x.dim() != 2:
        raise ValueError(f"preprocess expects x: float[n, m], got shape {tuple(x.shape)}")
    if mode == "raw":
        return x.to(dtype)
    xd = x.to(torch.float64)
    if mode == "signed-log":
        y = torch.sign(xd) * torch.log1p(xd.abs())  # sign(NaN) is 0 in torch, log1p(NaN) keeps it NaN
    elif mode == "rank":
        y = torch.stack([_rank_column(xd[:, j]) for j in range(xd.shape[1])], 1) if xd.shape[1] else xd
    else:  # zscore
        fin = torch.isfinite(xd)
        cnt = fin.sum(0).clamp(min=1).to(xd.dtype)
        # z-scores do not depend on scale: divide by the largest magnitude first so that squares
        # of values near the float64 limit (1e300) stay finite
        big = torch.where(fin, xd.abs(), torch.zeros_like(xd)).amax(0)
        xd = xd / torch.where(big > 0, big, torch.ones_like(big))
        z = torch.where(fin, xd, torch.zeros_like(xd))
        mean = z.sum(0) / cnt
        dev = torch.where(fin, xd - mean, torch.zeros_like(xd))
        std = torch.sqrt((dev * dev).sum(0) / cnt)
        scaled = dev / torch.where(std > 0, std, torch.ones_like(std))  # std 0: dev is 0 already
        y = torch.where(fin, scaled, torch.full_like(xd, float("nan")))
    return y.to(dtype)


# ----------------------------------------------------------------------------- batching


@dataclass
class Batch:
    """All selected tasks' rows concatenated: task t is rows ``offsets[t]:offsets[t+1]``."""

    names: list[str]
    proxies: list[str]
    X: torch.Tensor = field(repr=False)  # float32[N, m], preprocessed per task (in float64, then cast)
    accuracy: torch.Tensor = field(repr=False)  # float64[N]: ranked as is, no float32 merging of close values
    offsets: torch.Tensor = field(repr=False)  # int64[T+1]
    preprocess: str = "raw"

    @property
    def n_tasks(self) -> int:
        return len(self.names)

    def task_slice(self, t: int) -> slice:
        return slice(int(self.offsets[t]), int(self.offsets[t + 1]))

    def task_index(self) -> torch.Tensor:
        """``int64[N]``: the task of each row (same device as X)."""
        sizes = (self.offsets[1:] - self.offsets[:-1]).to(self.X.device)
        return torch.repeat_interleave(torch.arange(self.n_tasks, device=self.X.device), sizes)


def _warn_beyond_float32(task: Task, x: torch.Tensor, proxies: Sequence[str]) -> None:
    """Raw values beyond float32 become inf in the evaluators (ranked like a failed value): say so."""
    big = (x.abs() > FLOAT32_MAX) & torch.isfinite(x)
    if bool(big.any()):
        cols = [p for j, p in enumerate(proxies) if bool(big[:, j].any())]
        warnings.warn(f"task {task.name}: proxy {', '.join(cols)} has {int(big.sum())} value(s) beyond the float32 "
                      f"range, which --preprocess raw turns into inf (ranked as failed); rank, signed-log or zscore "
                      f"keep their order", DataWarning, stacklevel=3)


def make_batch(
    tasks: list[Task], proxies: Sequence[str], mode: str = "raw", device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """Stack ``proxies`` columns of every task (preprocessed per task with ``mode``) on ``device``;
    ``X`` in ``dtype`` (float64: exact raw values, evaluated by the torch interpreter)."""
    if not tasks:
        raise DataError("make_batch: no tasks")
    proxies = list(proxies)
    if len(set(proxies)) != len(proxies):
        raise DataError(f"make_batch: duplicate proxies in {proxies}")
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; modes: {', '.join(PREPROCESS_MODES)}")
    xs, accs = [], []
    for t in tasks:
        missing = [p for p in proxies if p not in t.proxies]
        if missing:
            raise DataError(f"task {t.name}: no column for proxies {missing}")
        cols = [t.proxies.index(p) for p in proxies]
        x = t.features[:, cols]
        if mode == "raw" and dtype == torch.float32:
            _warn_beyond_float32(t, x, proxies)
        xs.append(preprocess(x, mode, dtype))
        accs.append(t.accuracy)
    sizes = torch.tensor([0] + [len(t) for t in tasks], dtype=torch.int64)
    return Batch(
        names=[t.name for t in tasks],
        proxies=proxies,
        X=torch.cat(xs).to(device),
        accuracy=torch.cat(accs).to(device),
        offsets=torch.cumsum(sizes, 0).to(device),
        preprocess=mode,
    )
