"""Is a model's residual at the noise floor? A nearest-neighbour whiteness test.

A model that misses part of the signal leaves a residual that is a smooth function of X: two
rows that are close in X get similar residuals. A model at the noise floor leaves only the
noise, which is independent from row to row. So the Pearson correlation between each row's
residual and that of its nearest neighbour (in standardised X) is ~0 at the floor and positive
otherwise; under independence it is about normal with standard deviation ``1/sqrt(n)``, so
``z = corr * sqrt(n)`` above a few standard deviations says "there is structure left to fit".

The correlation itself is an effect size: it estimates the share of the residual's variance
that is structure (and so the most a better model could still remove). The regressor uses it
to skip the (expensive) memetic restart when that share is at most ``restart_noise_share``
(default 0.25): the best model already fits everything but noise, up to a part the restart
could only shave a little off. Without noise a model short of ``tol`` leaves a smooth residual
(correlation near 1) and the restart runs; a residual of float32 rounding is white, correctly.
On the Feynman problems at noise 0.01 the plain run's best model leaves 0.07 to 0.13 where it
is at the floor and 0.56 to 0.96 where it is not; at noise 0, 0.86 to 1.

Shapes: ``X: float[n, m]``, ``r: float[n]``.
"""
from __future__ import annotations

import math

import torch


def nearest_neighbours(X: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """``int64[n]``: for each row of ``X float[n, m]`` the index of its nearest other row in
    standardised coordinates (each column scaled to unit variance; constant columns ignored)."""
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"X must be [n >= 2, m], got {tuple(X.shape)}")
    Z = X.to(torch.float64)
    sd = Z.std(0)
    Z = (Z - Z.mean(0)) / torch.where(sd > 0, sd, torch.ones_like(sd))
    sq = (Z * Z).sum(1)
    out = torch.empty(Z.shape[0], dtype=torch.long, device=Z.device)
    for lo in range(0, Z.shape[0], block):  # bounded memory: block x n distances at a time
        d = sq[lo:lo + block, None] + sq[None, :] - 2.0 * Z[lo:lo + block] @ Z.T
        i = torch.arange(lo, min(lo + block, Z.shape[0]), device=Z.device)
        d[i - lo, i] = math.inf  # not itself
        out[lo:lo + block] = d.argmin(1)
    return out


def neighbour_correlation(X: torch.Tensor, r: torch.Tensor) -> float:
    """``corr(r, r[nn])`` of the residual ``r float[n]`` with its nearest neighbour's in
    ``X float[n, m]``: ~0 (within ``1/sqrt(n)``) for independent noise; for a residual
    ``s(X) + noise`` about ``var(s) / var(r)`` times the neighbours' similarity in s, i.e.
    the share of the residual that a better model could still remove. A constant residual gives
    0 (nothing left); a non-finite one gives 1."""
    if r.ndim != 1 or r.shape[0] != X.shape[0]:
        raise ValueError(f"r must be [n] with n = X.shape[0] = {X.shape[0]}, got {tuple(r.shape)}")
    r = r.to(torch.float64)
    if not bool(torch.isfinite(r).all()):
        return 1.0
    nn = nearest_neighbours(X)
    a = r - r.mean()
    b = a[nn]
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return 0.0 if den == 0 else float((a * b).sum()) / den


def residual_whiteness_z(X: torch.Tensor, r: torch.Tensor) -> float:
    """``neighbour_correlation * sqrt(n)``: about N(0, 1) when ``r`` is independent noise."""
    return neighbour_correlation(X, r) * math.sqrt(r.shape[0])
