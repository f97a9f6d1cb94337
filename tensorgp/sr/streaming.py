"""Fitting on data that does not fit in memory: a numpy memmap, or an iterator of chunks.

    X = np.memmap("/data/X.f32", np.float32, "r", shape=(N, m)); y = np.memmap("/data/y.f32", np.float32, "r")
    est = SymbolicRegressor(random_state=0).fit(X, y)            # or fit(ChunkSource(make_chunks))
    est.stream_stats_                                           # rows, seconds per phase, R^2 on all rows

A fit on a row source runs in two phases:

1. Evolution on a uniform sample of ``sample_rows`` rows (default ``SAMPLE_ROWS``), held in
   memory: every generation, the constant optimisation and the final polish run on it, exactly
   as an in-memory fit of that sample. Early generations only need to rank programs, and a
   100,000-row sample ranks them as the full data would while costing a fraction of a pass.
2. One full-data pass: every Pareto-front program of phase 1 is evaluated on every row, chunk
   by chunk (``chunk_rows`` of the estimator), accumulating float64 sufficient statistics
   (``losses.Moments``); linear scaling, losses and the model choice are then recomputed on all
   rows, so the reported model, its ``intercept_``/``slope_`` and ``loss_`` are full-data ones.

Memory holds one chunk of X, the front's predictions on it and the sample, never the data. Rows
of a memmap whose file is known are read with ``os.pread``, not through the mapping, so the
pages read count against the page cache, not the process's resident memory. On CUDA the sample
lives on the device and each chunk is copied there in turn.

A ``ChunkSource`` wraps a callable returning a fresh iterator of ``(X_chunk, y_chunk)`` each
time (a pass counts rows, one draws the sample, one scores the front); a one-shot iterator is
refused, since it cannot be read three times. Supported losses: mse, r2, pearson (the ones with
sufficient statistics); others raise.
"""
from __future__ import annotations

import math
import mmap
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..engine import expression as E
from ..engine.evaluate import evaluate
from ..engine.population import Population
from .inputs import seed_from
from .losses import Moments, loss_unit, y_unit
from .pareto import ParetoFront, select

SAMPLE_ROWS = 100_000
STREAM_LOSSES = ("mse", "r2", "pearson")
_SAMPLE_BLOCK = 64  # rows per sampled block of a memmap: one pread each


class RowSource:
    """Rows of ``(X float32[n, m], y float64[n])`` read in chunks; ``n_rows`` and ``n_features`` known."""

    n_rows: int
    n_features: int

    def chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ArraySource(RowSource):
    """An array-like X ``[n, m]`` and y ``[n]`` (numpy arrays or memmaps)."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError(f"X must be [n, m] and y [n] with n > 0, got X {X.shape} and y {y.shape}")
        self.X, self.y = X, y
        self.n_rows, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.reads: list[int] = []  # rows per read, kept for tests of the memory bound

    def _rows(self, a: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``a[lo:hi]`` as a fresh array; read from the file when ``a`` is a C-contiguous memmap."""
        fname = getattr(a, "filename", None)
        # only an original memmap (its base is the mapping): a view's ``offset`` is its parent's
        if isinstance(a, np.memmap) and fname and a.flags.c_contiguous and isinstance(a.base, mmap.mmap):
            row = a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
            out = np.empty((hi - lo,) + a.shape[1:], a.dtype)
            buf = memoryview(out.reshape(-1).view(np.uint8))
            with open(fname, "rb", buffering=0) as f:
                off, done = a.offset + lo * row, 0
                while done < len(buf):
                    n = os.preadv(f.fileno(), [buf[done:]], off + done)
                    if n <= 0:
                        raise OSError(f"short read from {fname} at byte {off + done}")
                    done += n
            return out
        return np.array(a[lo:hi])

    def chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for lo in range(0, self.n_rows, rows):
            hi = min(self.n_rows, lo + rows)
            self.reads.append(hi - lo)
            yield self._rows(self.X, lo, hi), self._rows(self.y, lo, hi)

    def sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``k`` rows from random blocks of ``_SAMPLE_BLOCK`` consecutive rows (all rows if n <= k)."""
        if self.n_rows <= k:
            return next(self.chunks(self.n_rows))
        nb = -(-self.n_rows // _SAMPLE_BLOCK)
        picks = np.sort(rng.choice(nb, size=min(nb, -(-k // _SAMPLE_BLOCK)), replace=False))
        xs, ys = [], []
        for b in picks:
            lo, hi = int(b) * _SAMPLE_BLOCK, min(self.n_rows, (int(b) + 1) * _SAMPLE_BLOCK)
            self.reads.append(hi - lo)
            xs.append(self._rows(self.X, lo, hi))
            ys.append(self._rows(self.y, lo, hi))
        return np.concatenate(xs)[:k], np.concatenate(ys)[:k]


class ChunkSource(RowSource):
    """Chunks from ``make_chunks()``: a callable returning a fresh iterable of ``(X_chunk [n_i, m],
    y_chunk [n_i])`` pairs on every call (for example a generator function reading files)."""

    def __init__(self, make_chunks: Callable[[], Iterable[tuple[Any, Any]]]):
        if not callable(make_chunks):
            raise TypeError("ChunkSource needs a callable returning a fresh iterator of (X, y) chunks, "
                            f"got {type(make_chunks).__name__}; wrap a generator as ChunkSource(lambda: gen(...))")
        self.make_chunks = make_chunks
        n, m = 0, None
        for X, y in self._iter():
            n += X.shape[0]
            m = X.shape[1]
        if n == 0:
            raise ValueError("the chunk source yielded no rows")
        self.n_rows, self.n_features = n, int(m)

    def _iter(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        m = getattr(self, "n_features", None)
        for i, (X, y) in enumerate(self.make_chunks()):
            X = np.asarray(X, dtype=np.float32)
            y = np.asarray(y, dtype=np.float64).reshape(-1)
            if X.ndim != 2 or X.shape[0] != y.shape[0] or (m is not None and X.shape[1] != m):
                raise ValueError(f"chunk {i}: X must be [n, m] with the same m in every chunk and y [n]; "
                                 f"got X {X.shape} and y {y.shape}")
            m = X.shape[1]
            yield X, y

    def chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in self._iter():  # the source's own chunking; split ones larger than ``rows``
            for lo in range(0, X.shape[0], rows):
                yield X[lo:lo + rows], y[lo:lo + rows]

    def sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Each row kept with probability k / n (one pass), then at most k of them."""
        p = min(1.0, k / self.n_rows)
        xs, ys = [], []
        for X, y in self._iter():
            keep = rng.random(X.shape[0]) < p
            xs.append(X[keep])
            ys.append(y[keep])
        return np.concatenate(xs)[:k], np.concatenate(ys)[:k]


def as_source(X: Any, y: Any = None) -> RowSource | None:
    """The row source ``fit`` should stream from, or None for in-memory data."""
    if isinstance(X, RowSource):
        if y is not None:
            raise ValueError("y must be None when X is a row source (the source yields the targets)")
        return X
    if isinstance(X, np.memmap):
        if y is None:
            raise ValueError("y is required with a memmap X")
        return ArraySource(X, np.asarray(y) if not isinstance(y, np.memmap) else y)
    if isinstance(X, Iterator):
        raise TypeError("a one-shot iterator cannot be streamed (the data is read three times); "
                        "pass ChunkSource(callable returning a fresh iterator) instead")
    return None


@dataclass
class FrontMoments:
    """Full-data statistics of the front: ``moments`` of every program and the target's sums."""

    moments: Moments
    rows: int


_F32_MAX = float(np.finfo(np.float32).max)


def check_finite(X: np.ndarray, y: np.ndarray, first_row: int = 0) -> None:
    """ValueError naming the first row (of the whole data: ``first_row`` is this chunk's first)
    whose X or y is NaN or inf, or whose X is beyond the float32 range the programs run in."""
    X, y = np.asarray(X), np.asarray(y)
    with np.errstate(invalid="ignore"):
        bad_x = ~np.isfinite(X) | (np.abs(X) > _F32_MAX)
    bad_y = ~np.isfinite(y)
    for what, bad in (("X", bad_x), ("y", bad_y)):
        if bad.any():
            pos = np.argwhere(bad)[0].tolist()
            col = f", column {pos[1]}" if len(pos) > 1 else ""
            raise ValueError(f"{what} contains a non-finite value (NaN or inf"
                             f"{', or beyond the float32 range' if what == 'X' else ''}) at row "
                             f"{first_row + pos[0]}{col} of the data; remove or impute it")


def front_moments(programs: Population, src: RowSource, chunk_rows: int, device: torch.device, backend: str,
                  ybar: float, unit: float = 1.0) -> FrontMoments:
    """One pass over every row (each checked for non-finite values): float64 sums of the programs'
    outputs against ``y / unit - ybar`` (``unit``: the regressor's ``y_unit`` of the sample)."""
    P = programs.size
    progs = programs.to(device)
    dd = torch.float64
    K = torch.zeros(P, dtype=dd)
    s1, s2, sy = K.clone(), K.clone(), K.clone()
    syc = syy = 0.0
    n = 0
    for X, y in src.chunks(chunk_rows):
        check_finite(X, y, n)
        f = evaluate(progs, torch.from_numpy(np.require(X, np.float32, ["C", "W"])).to(device), backend)
        f = f.to("cpu", dd)
        if n == 0:  # the first row's outputs as the shift, against cancellation
            K = torch.nan_to_num(f[:, 0], nan=0.0, posinf=0.0, neginf=0.0)
        yc = torch.from_numpy(np.asarray(y, dtype=np.float64) / unit) - ybar
        d = f - K[:, None]
        s1 += d.sum(1)
        s2 += torch.linalg.vecdot(d, d)
        sy += d @ yc
        syc += float(yc.sum())
        syy += float((yc * yc).sum())
        n += X.shape[0]
    return FrontMoments(Moments(n, K, s1, s2, sy, syc, syy, ybar), n)


def fit_source(est: Any, src: RowSource, describe: Callable[..., str], sample_rows: int = SAMPLE_ROWS) -> Any:
    """Fit ``est`` (a ``SymbolicRegressor``) on ``src`` in the two phases of the module docstring.

    ``describe(node, a, b, names, y_scale=..., y_spread=...)`` renders a scaled program (the regressor's
    ``model_expression``). Returns ``est`` with full-data ``pareto_front_``, model and
    ``stream_stats_`` (rows, sample rows, seconds per phase, R^2 of the model on all rows)."""
    if est.loss not in STREAM_LOSSES:
        raise ValueError(f"loss {est.loss!r} cannot be streamed; use one of {', '.join(STREAM_LOSSES)}")
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
    t0 = time.perf_counter()
    seed = seed_from(est.random_state)
    Xs, ys = src.sample(int(sample_rows), np.random.default_rng(seed))
    try:
        check_finite(Xs, ys)
    except ValueError:  # name the row of the data, not of the sample
        n = 0
        for X, y in src.chunks(int(est.chunk_rows)):
            check_finite(X, y, n)
            n += X.shape[0]
        raise
    t1 = time.perf_counter()
    est._fit(Xs, ys)
    t2 = time.perf_counter()
    entries = list(est.pareto_front_)
    if not hasattr(est, "_device"):  # a constant sample target: nothing to score
        return est
    progs = Population.cat([e.program for e in entries])
    # the sample's power-of-two unit, as the in-memory fit rescales extreme targets: the sums stay in range
    unit = y_unit(torch.from_numpy(np.asarray(ys, dtype=np.float64)))
    fm = front_moments(progs, src, int(est.chunk_rows), est._device, est._backend, float(np.mean(ys)) / unit, unit)
    m = fm.moments
    N = fm.rows
    a, b, sse = m.fit()
    if not est.linear_scaling and est.loss != "pearson":  # the raw program: a = 0, b = 1
        shift = m.K - m.ybar  # f - y = d - yc + shift
        sse = m.s2 + N * shift ** 2 + m.syy + 2 * shift * m.s1 - 2 * m.sy - 2 * shift * m.syc
        a, b = torch.zeros_like(a), torch.ones_like(b)
    vy = max(m.syy / N - (m.syc / N) ** 2, 0.0)
    lu = loss_unit(est.loss, unit)  # losses are judged in the fit's units (finite there), reported in y's
    if est.loss == "mse":
        loss = sse / N
    elif est.loss == "r2":
        loss = sse / max(vy * N, 1e-300)
    else:
        loss = 1 - m.pearson().abs()
    a, b = a * unit, b * unit  # back to y's units
    y_spread = math.sqrt(vy) * unit
    y_scale = abs(m.ybar + m.syc / N) * unit + y_spread
    names = est.variable_names_
    new = []
    for i, e in enumerate(entries):
        node = E.row(e.program.ops, e.program.consts, e.program.length, 0)
        li = float(loss[i]) if math.isfinite(float(loss[i])) else math.inf
        new.append(replace(e, loss=li * lu if li < math.inf else li, intercept=float(a[i]), slope=float(b[i]), _sympy=None,
                           expression=describe(node, float(a[i]), float(b[i]), names, y_scale=y_scale,
                                               y_spread=y_spread)))
    # the estimator's own rule, on full-data losses (a validation loss, if any, is the sample's)
    judged = [float(loss[i]) if math.isfinite(float(loss[i])) else math.inf for i in range(len(new))]
    if any(e.val_loss is not None for e in new):
        judged = [e.val_loss / lu if 0 < lu < math.inf else e.val_loss for e in new]
    k = select(judged, [e.complexity for e in new], est.model_selection, float(est.selection_tolerance))
    est.pareto_front_ = ParetoFront(new, k, est.model_selection)
    est._set_model(new[k])
    t3 = time.perf_counter()
    est.stream_stats_ = {"rows": N, "sample_rows": int(len(ys)), "sample_s": t1 - t0, "evolve_s": t2 - t1,
                         "full_pass_s": t3 - t2, "front_size": len(new),
                         "r2_all_rows": 1.0 - float(sse[k]) / max(vy * N, 1e-300)}
    est.fit_time_ = t3 - t0
    return est
