"""Regression losses of a whole population, computed over row chunks in bounded memory.

``RegressionObjective(X, y, loss)`` is a ``FitnessFunction`` for ``Evolver``: ``pop -> float32[P]``
(higher is better, NaN = invalid). Rows are streamed in chunks of ``chunk_rows``; programs in
chunks such that one prediction block ``[programs, rows]`` holds at most ``chunk_elements``
values, so memory does not grow with N.

Decomposable losses (``mse``, ``r2``, ``pearson``, ``mae``) accumulate float64 sufficient
statistics per program over the chunks: with ``d = f - K`` (``K`` a per-program shift, the
first prediction, against cancellation) and ``yc = y - mean(y)``, the sums ``n, sum d,
sum d^2, sum d*yc`` give the mean and variance of f and its covariance with y, hence the
least-squares linear scaling ``a + b f`` (Keijzer 2003) and its error in closed form.
Raw (unscaled) squared and absolute errors, and absolute errors after scaling, are summed
directly from the residuals instead (``mae`` with scaling makes a second pass over the rows
once the scaling is known, unless all rows fit in one chunk).

Non-decomposable losses (``spearman``, ``kendall``, a callable) see every row at once, so they
use a fixed random subsample of at most ``chunk_rows`` rows (all rows when N is smaller).

Loss definitions (lower is better; ``p`` is the prediction, scaled when ``linear_scaling``):

    mse       mean (p - y)^2
    mae       mean |p - y|      (scaling: the least-squares a, b, not the L1-optimal ones)
    r2        1 - R^2 = sum (p - y)^2 / sum (y - mean y)^2
    pearson   1 - |pearson r(f, y)|         (scale-free)
    spearman  1 - |spearman rho(f, y)|      (scale-free; NaN where f is non-finite)
    kendall   1 - |kendall tau-b(f, y)|     (scale-free)
    callable  fn(p: float32[P, n], y: float32[n]) -> float[P]

Every loss is NaN for a program with a non-finite prediction on any row it sees. Fitness is
``-loss / scale`` with ``scale`` the loss of the best constant model for ``mse`` (var y) and
``mae`` (mean |y - median y|), else 1, so the parsimony pressure and ``tol`` mean the same thing
on every data set.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import torch

from ..engine.evaluate import evaluate, resolve_backend
from ..engine.fitness import prepare_target, rank_correlations
from ..engine.population import Population

try:  # numba is optional: the torch reductions below compute the same sums
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False

if _HAVE_NUMBA:
    @njit(parallel=True, cache=True, nogil=True, error_model="numpy")
    def _nb_moments(f, K, yc, s1, s2, sy):
        """One fused pass over ``f: float32[P, n]``: float64 sums of d, d^2, d * yc (d = f - K)."""
        P, n = f.shape
        for p in prange(P):
            k = K[p]
            a = 0.0
            b = 0.0
            c = 0.0
            for i in range(n):
                d = np.float64(f[p, i]) - k
                a += d
                b += d * d
                c += d * yc[i]
            s1[p] += a
            s2[p] += b
            sy[p] += c

    @njit(parallel=True, cache=True, nogil=True, error_model="numpy")
    def _nb_residuals(f, a, b, y, power, out):
        """``out[p] += sum_i |a[p] + b[p] f[p, i] - y[i]|^power`` (power 1 or 2), in float64."""
        P, n = f.shape
        for p in prange(P):
            acc = 0.0
            for i in range(n):
                r = a[p] + b[p] * np.float64(f[p, i]) - y[i]
                acc += r * r if power == 2 else abs(r)
            out[p] += acc


def _use_numba(t: torch.Tensor) -> bool:
    return _HAVE_NUMBA and t.device.type == "cpu"


def _numba_call(kernel, *args) -> None:
    """Run a parallel kernel on ``torch.get_num_threads()`` threads, as the evaluator does."""
    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(prev)

LOSSES = ("mse", "mae", "r2", "pearson", "spearman", "kendall")
DECOMPOSABLE = ("mse", "mae", "r2", "pearson")
SCALE_FREE = ("pearson", "spearman", "kendall")  # predictions always get least-squares scaling
LossSpec = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def check_loss(loss: LossSpec) -> LossSpec:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)} or pass a callable (pred[P, n], y[n]) -> loss[P]")
    return loss


@dataclass
class Moments:
    """Per-program float64 sums over rows: ``n``, ``K`` (shift), ``s1 = sum d``, ``s2 = sum d^2``,
    ``sy = sum d * yc``, plus the target's ``sum yc`` and ``sum yc^2`` (d = f - K, yc = y - ybar)."""

    n: int
    K: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor
    sy: torch.Tensor
    syc: float
    syy: float
    ybar: float

    def _centred(self):
        """Means, variance of f, covariance with y, variance of y, the flat and non-finite masks."""
        n = self.n
        md = self.s1 / n
        var_f = (self.s2 / n - md * md).clamp(min=0)
        myc = self.syc / n
        cov = self.sy / n - md * myc
        vy = max(self.syy / n - myc * myc, 0.0)
        # f constant up to float32 resolution: b = 0 (the mean), never a huge slope on rounding noise
        flat = var_f <= 1e-13 * (self.K + md) ** 2 + 1e-300
        bad = ~(torch.isfinite(self.s1) & torch.isfinite(self.s2) & torch.isfinite(self.sy))
        return md, myc, var_f, cov, vy, flat, bad

    def fit(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a, b, sse)``: least-squares ``a + b f`` per program and its sum of squared errors."""
        md, myc, var_f, cov, vy, flat, bad = self._centred()
        safe_var = torch.where(flat, torch.ones_like(var_f), var_f)
        b = torch.where(flat, torch.zeros_like(cov), cov / safe_var)
        a = self.ybar + myc - b * (self.K + md)
        mse = torch.where(flat, torch.full_like(var_f, vy), (vy - cov * cov / safe_var).clamp(min=0))
        nan = torch.full_like(a, float("nan"))
        return torch.where(bad, nan, a), torch.where(bad, nan, b), torch.where(bad, nan, mse * self.n)

    def pearson(self) -> torch.Tensor:
        _, _, var_f, cov, vy, flat, bad = self._centred()
        r = torch.where(flat | (vy <= 0), torch.zeros_like(cov), cov / (var_f.sqrt() * vy ** 0.5 + 1e-300))
        return torch.where(bad, torch.full_like(r, float("nan")), r.clamp(-1, 1))


class RegressionObjective:
    """Loss of every program of a population on ``(X, y)``, in row chunks.

    ``X: float32[N, m]`` (CPU or ``device``; chunks are moved to ``device`` as they are used),
    ``y: float64[N]`` (any device). ``loss``: a name from ``LOSSES`` or a callable.
    ``__call__(pop) -> float32[P]`` is the fitness ``-loss / scale``; ``losses(pop) -> float64[P]``
    the raw loss; ``scaling(pop) -> (a, b)`` the linear map applied to each program's output.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, loss: LossSpec = "mse", linear_scaling: bool = True,
                 backend: str = "auto", device: str | torch.device = "cpu", chunk_rows: int = 1 << 17,
                 chunk_elements: int = 1 << 23, generator: torch.Generator | None = None):
        self.loss = check_loss(loss)
        self.device = torch.device(device)
        self.backend = resolve_backend(backend, self.device)
        if chunk_rows < 1 or chunk_elements < 1:
            raise ValueError("chunk_rows and chunk_elements must be >= 1")
        N = X.shape[0]
        if X.dim() != 2 or y.shape != (N,) or N == 0:
            raise ValueError(f"X must be [N, m] and y [N] with N > 0, got {tuple(X.shape)} and {tuple(y.shape)}")
        # small data lives on the device once; large data streams chunk by chunk
        self.X = X.to(self.device) if X.numel() * 4 <= (1 << 30) else X
        self.y = y.to(torch.float64)
        self.N = N
        self.chunk_rows = int(chunk_rows)
        self.chunk_elements = int(chunk_elements)
        self.linear_scaling = bool(linear_scaling) or self.loss in SCALE_FREE
        ycpu = self.y.cpu()
        self.ybar = float(ycpu.mean())
        yc = ycpu - self.ybar
        self.syc, self.syy = float(yc.sum()), float((yc * yc).sum())
        if self.loss == "mse":
            self.scale = self.syy / N
        elif self.loss == "mae":
            self.scale = float((ycpu - ycpu.median()).abs().mean())
        else:
            self.scale = 1.0
        self.scale = self.scale if self.scale > 0 else 1.0
        self.last_split = (0.0, 0.0)
        self.sub_idx: torch.Tensor | None = None
        if not self._decomposable:  # a fixed subsample for the losses that need all rows at once
            if N > self.chunk_rows:
                g = generator if generator is not None else torch.Generator().manual_seed(0)
                self.sub_idx = torch.randperm(N, generator=g, device=g.device)[: self.chunk_rows].sort().values.cpu()
            rows = self.sub_idx if self.sub_idx is not None else slice(None)
            self.Xs = self.X[rows].to(self.device)
            self.ys = ycpu[rows].to(self.device)
            if self.loss in ("spearman", "kendall"):
                self.rank_target = prepare_target(self.ys.float().cpu(), torch.tensor([0, len(self.ys)]))

    @property
    def _decomposable(self) -> bool:
        return isinstance(self.loss, str) and self.loss in DECOMPOSABLE

    # ------------------------------------------------------------------ chunk iteration
    def _row_chunks(self):
        for lo in range(0, self.N, self.chunk_rows):
            hi = min(self.N, lo + self.chunk_rows)
            yield lo, hi, self.X[lo:hi].to(self.device, non_blocking=True), self.y[lo:hi].to(self.device)

    def _prog_step(self, rows: int) -> int:
        return max(1, self.chunk_elements // max(rows, 1))

    def predict(self, pop: Population, X: torch.Tensor | None = None) -> torch.Tensor:
        """``float32[P, N]`` raw outputs (only for small N or P: the whole matrix is returned)."""
        X = self.X if X is None else X
        return evaluate(pop.to(self.device), X.to(self.device), self.backend)

    def moments(self, pop: Population) -> Moments:
        """Sufficient statistics of every program over all rows (one streamed pass)."""
        P = pop.size
        pop = pop.to(self.device)
        dd = torch.float64
        K = torch.zeros(P, dtype=dd, device=self.device)
        s1, s2, sy = K.clone(), K.clone(), K.clone()
        first = True
        for lo, hi, Xc, yc in self._row_chunks():
            ycc = yc - self.ybar
            step = self._prog_step(hi - lo)
            for p0 in range(0, P, step):
                sl = slice(p0, p0 + step)
                f = evaluate(pop[sl], Xc, self.backend)
                if first:
                    K[sl] = torch.nan_to_num(f[:, 0].to(dd), nan=0.0, posinf=0.0, neginf=0.0)
                if _use_numba(f):
                    _numba_call(_nb_moments, f.contiguous().numpy(), K[sl].numpy(), ycc.numpy(), s1[sl].numpy(), s2[sl].numpy(), sy[sl].numpy())
                else:
                    d = f.to(dd) - K[sl, None]
                    s1[sl] += d.sum(1)
                    s2[sl] += torch.linalg.vecdot(d, d)
                    sy[sl] += d @ ycc
            first = False
        return Moments(self.N, K, s1, s2, sy, self.syc, self.syy, self.ybar)

    def _residual_sums(self, pop: Population, a: torch.Tensor, b: torch.Tensor, power: int) -> torch.Tensor:
        """``float64[P]``: sum over rows of ``|a + b f - y|^power`` (one streamed pass)."""
        P = pop.size
        pop = pop.to(self.device)
        out = torch.zeros(P, dtype=torch.float64, device=self.device)
        for lo, hi, Xc, yc in self._row_chunks():
            step = self._prog_step(hi - lo)
            for p0 in range(0, P, step):
                sl = slice(p0, p0 + step)
                f = evaluate(pop[sl], Xc, self.backend)
                if _use_numba(f):
                    _numba_call(_nb_residuals, f.contiguous().numpy(), a[sl].contiguous().numpy(), b[sl].contiguous().numpy(),
                                  yc.contiguous().numpy(), power, out[sl].numpy())
                    continue
                r = (a[sl, None] + b[sl, None] * f.to(torch.float64)) - yc
                out[sl] += (r * r).sum(1) if power == 2 else r.abs().sum(1)
        return out

    # ------------------------------------------------------------------ public
    def scaling(self, pop: Population) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b) float64[P]``: the map ``a + b f`` applied to each program (identity without scaling)."""
        if not self.linear_scaling:
            one = torch.ones(pop.size, dtype=torch.float64, device=self.device)
            return torch.zeros_like(one), one
        if self._decomposable:
            a, b, _ = self.moments(pop).fit()
            return a, b
        return self._sub_scaling(self._sub_pred(pop))[:2]

    def _sub_pred(self, pop: Population) -> torch.Tensor:
        return evaluate(pop.to(self.device), self.Xs, self.backend)

    def _sub_scaling(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = f.to(torch.float64)
        K = torch.nan_to_num(f[:, 0], nan=0.0, posinf=0.0, neginf=0.0)
        d = f - K[:, None]
        yc = self.ys - self.ybar
        m = Moments(len(self.ys), K, d.sum(1), torch.linalg.vecdot(d, d), d @ yc, float(yc.sum()), float((yc * yc).sum()), self.ybar)
        a, b, _ = m.fit()
        return a, b, m.pearson()

    def losses(self, pop: Population) -> torch.Tensor:
        """``float64[P]``: the loss of every program (NaN where its output is non-finite)."""
        if pop.size == 0:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        if self._decomposable:
            return self._decomposable_losses(pop)
        out = []
        step = self._prog_step(len(self.ys))
        for p0 in range(0, pop.size, step):
            out.append(self._subsample_losses(pop[p0:p0 + step]))
        return torch.cat(out)

    def _decomposable_losses(self, pop: Population) -> torch.Tensor:
        loss, N = self.loss, self.N
        one_chunk = N <= self.chunk_rows and pop.size * N <= self.chunk_elements
        if not self.linear_scaling and loss in ("mse", "r2", "mae"):
            z = torch.zeros(pop.size, dtype=torch.float64, device=self.device)
            s = self._residual_sums(pop, z, z + 1, 1 if loss == "mae" else 2)
            return s / N if loss != "r2" else s / max(self.syy, 1e-300)
        if loss == "mae" and one_chunk:  # one evaluation: moments and residuals from the same block
            f = evaluate(pop.to(self.device), self.X, self.backend).to(torch.float64)
            K = torch.nan_to_num(f[:, 0], nan=0.0, posinf=0.0, neginf=0.0)
            d = f - K[:, None]
            yc = self.y.to(self.device) - self.ybar
            a, b, _ = Moments(N, K, d.sum(1), torch.linalg.vecdot(d, d), d @ yc, self.syc, self.syy, self.ybar).fit()
            return ((a[:, None] + b[:, None] * f) - self.y.to(self.device)).abs().mean(1)
        m = self.moments(pop)
        if loss == "pearson":
            return 1 - m.pearson().abs()
        a, b, sse = m.fit()
        if loss == "mse":
            return sse / N
        if loss == "r2":
            return sse / max(self.syy, 1e-300)
        return self._residual_sums(pop, torch.nan_to_num(a), torch.nan_to_num(b), 1) / N + (a - a)  # mae, 2 passes

    def _subsample_losses(self, pop: Population) -> torch.Tensor:
        f = self._sub_pred(pop)
        bad = ~torch.isfinite(f).all(1)
        if self.loss in ("spearman", "kendall"):
            tau, rho = rank_correlations(f, self.rank_target, tau=self.loss == "kendall", rho=self.loss == "spearman")
            c = (tau if self.loss == "kendall" else rho)[:, 0].to(torch.float64).to(f.device)
            loss = 1 - c.abs()
        else:
            a, b, _ = self._sub_scaling(f) if self.linear_scaling else (None, None, None)
            p = f if a is None else (a[:, None] + b[:, None] * f.to(torch.float64)).float()
            loss = torch.as_tensor(self.loss(p, self.ys.float()))
            if loss.shape != (pop.size,):
                raise ValueError(f"the loss callable must return one value per program, shape ({pop.size},); got {tuple(loss.shape)}")
            loss = loss.to(torch.float64).to(f.device)
        return torch.where(bad, torch.full_like(loss, float("nan")), loss)

    def losses_at(self, pop: Population, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``float64[P]``: the loss of the fixed maps ``a + b f`` (``a, b: float64[P]``, e.g.
        fitted on other rows) on this objective's rows, without refitting the scaling."""
        if pop.size == 0 or self.loss in SCALE_FREE:  # invariant under a + b f
            return self.losses(pop)
        a, b = a.to(self.device, torch.float64), b.to(self.device, torch.float64)
        if self.loss in ("mse", "r2", "mae"):
            s = self._residual_sums(pop, a, b, 1 if self.loss == "mae" else 2)
            return s / self.N if self.loss != "r2" else s / max(self.syy, 1e-300)
        f = self._sub_pred(pop).to(torch.float64)
        loss = torch.as_tensor(self.loss((a[:, None] + b[:, None] * f).float(), self.ys.float())).to(torch.float64)
        return torch.where(torch.isfinite(f).all(1), loss.to(f.device), torch.full_like(loss, float("nan")))

    def normalized(self, loss: torch.Tensor) -> torch.Tensor:
        return loss / self.scale

    def __call__(self, pop: Population) -> torch.Tensor:
        t0 = time.perf_counter()
        loss = self.losses(pop)
        self.last_split = (time.perf_counter() - t0, 0.0)
        fit = -self.normalized(loss)
        return torch.where(torch.isfinite(fit), fit, torch.full_like(fit, float("nan"))).to(torch.float32)


# ------------------------------------------------------------------------------- target units


def loss_unit(loss: Any, unit: float) -> float:
    """Factor from losses on ``y / unit`` to losses on y (mse: unit^2, mae: unit, others 1)."""
    k = {"mse": 2, "mae": 1}.get(loss, 0) if isinstance(loss, str) else 0
    return unit ** k if k * abs(math.log2(unit)) < 1000 else (math.inf if unit > 1 else 0.0)  # beyond float64: inf


def y_unit(y: torch.Tensor) -> float:
    """A power of two that brings a target far outside float32's comfortable range (max |y|
    above 1e30 or below 1e-30) to magnitude ~1; 1.0 for every other target. The fit runs on
    ``y / unit`` and the model's intercept and slope are scaled back."""
    top = float(y.abs().max())
    if top == 0 or 1e-30 <= top <= 1e30:
        return 1.0
    return 2.0 ** round(math.log2(top))
