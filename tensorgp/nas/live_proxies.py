"""Proxies of many architectures of a search space, computed on the device in packs: the
library behind ``tensorgp proxies`` and the live search.

``compute_archs`` builds ``pack`` architectures at a time as one batched subject
(``space.build_many``, e.g. ``PackedNB201``; one model at a time for a space without one),
measures them, and

* on out-of-memory halves the pack and retries (one architecture that still does not fit is
  recorded as failed: "out of memory");
* when a proxy raises on a pack, recomputes that proxy one architecture at a time, so only
  the architectures it fails on are recorded as failed;
* records a non-finite value as a failure of that proxy on that architecture.

Values do not depend on the pack: every architecture is initialised from its own seed.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..runtime.output import check_out_file
from ..runtime.results import write_json
from .measures import MeasureError, ModuleSubject, check_batch, measure, parse_names
from .data import load
from .search import cpu_threads, pick_task
from .spaces import SearchSpace, get_space

FAILED = -1e8  # Suite-Zero's marker of a failed proxy
GPU_PACK = 32  # architectures per pass on CUDA (halved on out-of-memory)


@dataclass
class ProxyTable:
    """``values float64[n, m]`` (NaN: failed) for ``archs`` (encodings) x ``names``; ``failures``
    lists ``(arch key, proxy, reason)``; ``seconds`` sums each pass's wall time."""

    keys: list[str]
    names: list[str]
    values: torch.Tensor
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def _subject(space: SearchSpace, archs, seed: int, num_classes: int, device):
    s = space.build_many(archs, seed=seed, num_classes=num_classes)
    if s is None:
        if len(archs) != 1:
            return None
        s = ModuleSubject(space.build(archs[0], seed=seed, num_classes=num_classes))
    return s.to(device)


def _measure_one_at_a_time(space, archs, inputs, targets, names, loss, seed, num_classes, device, seconds):
    """``float64[k, m]`` and errors per (row, proxy): each architecture its own subject."""
    rows, errs = [], {}
    for i, a in enumerate(archs):
        try:
            m = measure(_subject(space, [a], seed, num_classes, device), inputs, targets, names, loss, seed)
        except torch.OutOfMemoryError:
            if inputs.is_cuda:
                torch.cuda.empty_cache()
            rows.append(torch.full((len(names),), math.nan, dtype=torch.float64))
            errs.update({(i, n): "out of memory" for n in names})
            continue
        for k, v in m.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
        rows.append(torch.stack([m.values[n][0] for n in names]))
        errs.update({(i, n): msg for n, msg in m.errors.items()})
    return torch.stack(rows), errs


def compute_archs(space: SearchSpace, archs: Sequence[Sequence[int]], inputs: torch.Tensor, targets: torch.Tensor,
                  names: str | Sequence[str] | None = None, pack: int | None = None, seed: int = 0,
                  loss: Callable | None = None, num_classes: int | None = None, device: str | torch.device = "cpu",
                  progress: Callable[[int, int], None] | None = None) -> ProxyTable:
    """The proxies ``names`` of every architecture of ``archs`` (encodings of ``space``) on one
    batch ``inputs float[N, C, H, W]``, ``targets int64[N]``, computed ``pack`` at a time on
    ``device``. ``progress(done, total)`` after each pack. ``pack`` default: 1 on the CPU (packs
    of 8-16 measured 0.66-0.85x the speed of one at a time there, ``bench/zc_throughput.py``),
    ``GPU_PACK`` on CUDA."""
    check_batch(inputs, targets)
    space.check_inputs(inputs)
    names = parse_names(names)
    device = torch.device(device)
    if pack is None:
        pack = 1 if device.type == "cpu" else GPU_PACK
    if pack < 1:
        raise MeasureError(f"pack must be >= 1 (got {pack})")
    archs = [space.decode(a) for a in archs]
    keys = [space.encode(a) for a in archs]
    inputs, targets = inputs.to(device), targets.to(device)
    if num_classes is None:
        num_classes = int(targets.max()) + 1 if targets.dim() == 1 else int(targets.shape[1])
    t0 = time.perf_counter()
    vals = torch.full((len(archs), len(names)), math.nan, dtype=torch.float64)
    errors: dict[tuple[int, str], str] = {}
    seconds: dict[str, float] = {}
    todo = [(i, min(i + pack, len(archs))) for i in range(0, len(archs), pack)]
    done = 0
    while todo:
        lo, hi = todo.pop(0)
        chunk = archs[lo:hi]
        subj = None
        try:
            subj = _subject(space, chunk, seed, num_classes, device)
            if subj is None:  # no batched builder: one model at a time
                v, e = _measure_one_at_a_time(space, chunk, inputs, targets, names, loss, seed, num_classes, device, seconds)
                vals[lo:hi] = v
                errors.update({(lo + i, n): msg for (i, n), msg in e.items()})
            else:
                m = measure(subj, inputs, targets, names, loss, seed)
                for k, v in m.seconds.items():
                    seconds[k] = seconds.get(k, 0.0) + v
                for j, n in enumerate(names):
                    vals[lo:hi, j] = m.values[n]
                failed = [n for n in names if n in m.errors]
                if failed and hi - lo > 1:  # isolate the architectures the proxy fails on
                    v, e = _measure_one_at_a_time(space, chunk, inputs, targets, failed, loss, seed, num_classes,
                                                  device, seconds)
                    for j, n in enumerate(failed):
                        vals[lo:hi, names.index(n)] = v[:, j]
                    errors.update({(lo + i, n): msg for (i, n), msg in e.items()})
                else:
                    errors.update({(lo + i, n): m.errors[n] for n in failed for i in range(hi - lo)})
        except torch.OutOfMemoryError:
            del subj
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if hi - lo > 1:  # split the pack and retry both halves first
                mid = (lo + hi) // 2
                todo[:0] = [(lo, mid), (mid, hi)]
                continue
            errors.update({(lo, n): "out of memory" for n in names})
        done += hi - lo
        if progress is not None:
            progress(done, len(archs))
    failures = [(keys[i], n, msg) for (i, n), msg in sorted(errors.items())]
    bad = ~torch.isfinite(vals)
    for i, j in bad.nonzero().tolist():
        if (i, names[j]) not in errors:
            failures.append((keys[i], names[j], f"non-finite value {float(vals[i, j])}"))
    vals[bad] = math.nan
    return ProxyTable(keys, names, vals, failures, seconds, time.perf_counter() - t0)


def suite_zero(table: ProxyTable, task: str = "cifar10", accuracy: dict[str, float] | None = None,
               space: SearchSpace | None = None) -> dict:
    """The Suite-Zero layout ``{task: {key: {"idx", "arch", proxy: {"score", "time"}, "val_accuracy"?}}}``;
    failed values are written as -1e8 like NASLib's; ``val_accuracy`` only where ``accuracy`` has it."""
    per_arch_s = {n: 0.0 for n in table.names}
    for k, s in table.seconds.items():  # a pass's time split evenly over its proxies and architectures
        ps = [p for p in k.split(",") if p in per_arch_s]
        for p in ps:
            per_arch_s[p] = s / len(ps) / max(1, len(table.keys))
    rows = {}
    for i, key in enumerate(table.keys):
        r: dict = {"idx": str(i), "arch": space.to_string(space.decode(key)) if hasattr(space, "to_string") else key}
        for j, n in enumerate(table.names):
            v = float(table.values[i, j])
            r[n] = {"score": v if math.isfinite(v) else FAILED, "time": per_arch_s[n]}
        if accuracy is not None and key in accuracy:
            r["val_accuracy"] = float(accuracy[key])
        rows[key] = r
    return {task: rows}


def write_suite_zero(path: str | Path, table: ProxyTable, task: str = "cifar10",
                     accuracy: dict[str, float] | None = None, space: SearchSpace | None = None) -> Path:
    return write_json(path, suite_zero(table, task, accuracy, space))


def load_batch(path: str | Path, labels: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs float32[N, C, H, W], targets int64[N])`` from ``.npz`` (arrays ``x``/``inputs`` and
    ``y``/``targets``), ``.pt`` (a dict with those keys or an ``(x, y)`` pair) or ``.npy`` (inputs;
    labels from ``labels``, a ``.npy`` of N integers). Errors name the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise MeasureError(f"batch file {p} " + ("is not a regular file" if p.exists() else "does not exist"))
    x = y = None
    try:
        if p.suffix == ".npz":
            z = np.load(p)
            x = z["x"] if "x" in z else z.get("inputs")
            y = z["y"] if "y" in z else z.get("targets")
        elif p.suffix == ".pt":
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                x, y = obj.get("x", obj.get("inputs")), obj.get("y", obj.get("targets"))
            elif isinstance(obj, (tuple, list)) and len(obj) == 2:
                x, y = obj
            else:
                x = obj
        elif p.suffix == ".npy":
            x = np.load(p)
        else:
            raise MeasureError(f"batch file {p}: unknown format {p.suffix!r}; use .npy, .npz or .pt")
    except (OSError, ValueError, RuntimeError) as e:
        raise MeasureError(f"batch file {p}: cannot read it ({e})") from None
    if x is None:
        raise MeasureError(f"batch file {p}: no inputs (an array 'x' or 'inputs')")
    if labels is not None:
        lp = Path(labels)
        if not lp.is_file():
            raise MeasureError(f"labels file {lp} " + ("is not a regular file" if lp.exists() else "does not exist"))
        y = np.load(lp)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not x.is_floating_point():
        raise MeasureError(f"batch file {p}: inputs have dtype {x.dtype}; expected floating images [N, C, H, W]")
    x = x.float()
    if y is None:
        raise MeasureError(f"batch file {p}: no labels; store 'y' in the .npz/.pt or pass --labels FILE.npy")
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.dim() == 2 and y.shape[1] == 1:  # a column of labels
        y = y[:, 0]
    if y.dim() == 2 and not y.is_floating_point():
        raise MeasureError(f"batch file {p}: labels of shape {tuple(y.shape)}; expected N class labels, "
                           f"or [N, classes] float target distributions")
    if y.is_floating_point() and y.dim() == 1:
        if not bool((y == y.round()).all()):
            raise MeasureError(f"batch file {p}: labels are not integers")
        y = y.long()
    check_batch(x, y, where=f"batch file {p}")
    return x, y.long() if y.dim() == 1 else y


def read_arch_file(space: SearchSpace, path: str | Path) -> list[tuple[int, ...]]:
    """Architectures of ``space`` listed in a file: one key a line (``(0, 2, 3, 2, 3, 1)`` or the
    space's string form; blank lines and ``#`` comments skipped) or a JSON list of keys."""
    p = Path(path)
    if not p.is_file():
        raise MeasureError(f"architecture file {p} " + ("is not a regular file" if p.exists() else "does not exist"))
    text = p.read_text()
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError
        if items and all(isinstance(v, int) for v in items):  # one key written as a JSON list
            items = [items]
    except ValueError:
        items = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not items:
        raise MeasureError(f"architecture file {p} lists no architecture")
    out = []
    for i, k in enumerate(items):
        try:
            out.append(space.decode(k))
        except ValueError as e:
            raise MeasureError(f"architecture file {p}, entry {i + 1}: {e}") from None
    return out


def select_archs(space: SearchSpace, archs_file: str | Path | None = None, sample: int | None = None,
                 all_archs: bool = False, seed: int = 0) -> list[tuple[int, ...]]:
    """Exactly one of a file of keys, ``sample`` architectures drawn uniformly with ``seed``, or all."""
    given = sum([archs_file is not None, sample is not None, bool(all_archs)])
    if given != 1:
        raise MeasureError("give exactly one of --archs FILE, --sample N and --all")
    if archs_file is not None:
        return read_arch_file(space, archs_file)
    if sample is not None:
        if sample < 1:
            raise MeasureError(f"--sample must be >= 1 (got {sample})")
        return [tuple(r) for r in space.sample(sample, torch.Generator().manual_seed(int(seed))).tolist()]
    return [tuple(r) for r in space.enumerate().tolist()]


def run_proxies(space: str | SearchSpace, out: str | Path, batch: str | Path, labels: str | Path | None = None,
                archs_file: str | Path | None = None, sample: int | None = None, all_archs: bool = False,
                names: str | Sequence[str] | None = "all", task: str = "cifar10",
                accuracy: Sequence[str | Path] | None = None, accuracy_task: str | None = None, pack: int | None = None,
                seed: int = 0, device: str = "cpu", num_classes: int | None = None, threads: int | None = 1,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """``tensorgp proxies``: select architectures, load the batch, compute, join accuracies from a
    Suite-Zero table if given, write the Suite-Zero file (atomically); returns a summary. Every
    input is checked before the first architecture is measured. ``num_classes``: the head's
    outputs (default: the labels' maximum + 1). ``threads``: torch CPU threads meanwhile."""
    sp = get_space(space)
    try:
        check_out_file(out)  # before the measuring: its result must have somewhere to go
    except ValueError as e:
        raise MeasureError(str(e)) from None
    archs = select_archs(sp, archs_file, sample, all_archs, seed)
    names = parse_names(names)
    x, y = load_batch(batch, labels)
    acc = None
    if accuracy:
        t = pick_task(load(accuracy), accuracy_task or f"*{task}")
        acc = {}
        for k, a in zip(t.keys, t.accuracy.tolist()):
            try:
                acc[sp.encode(sp.decode(k))] = a
            except ValueError:
                raise MeasureError(f"--accuracy task {t.name}: key {k!r} is not a {sp.name} architecture") from None
    if num_classes is not None and num_classes <= int(y.max()):
        raise MeasureError(f"--classes {num_classes} but the labels go up to {int(y.max())}")
    with cpu_threads(threads):
        tab = compute_archs(sp, archs, x, y, names, pack=pack, seed=seed, device=device, num_classes=num_classes,
                            progress=progress)
    path = write_suite_zero(out, tab, task, acc, sp)
    return {"space": sp.name, "architectures": len(archs), "proxies": names, "batch_shape": list(x.shape),
            "task": task, "out": str(path), "with_accuracy": sum(k in acc for k in tab.keys) if acc else 0,
            "wall_s": tab.wall_s, "per_second": len(archs) / max(tab.wall_s, 1e-9), "seconds_per_pass": tab.seconds,
            "failures": [{"arch": a, "proxy": p, "reason": m} for a, p, m in tab.failures]}
