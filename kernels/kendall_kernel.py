"""Triton Kendall tau-b of every prediction row against the target, per task (tiled pair counts).

For one (program p, task t) the pairs i < j of the task's rows are split into square tiles of
BLOCK x BLOCK; kernel instance (p, t, bi) counts the tiles (bi, bj >= bi) of one tile row, so
the work is spread over P * T * n_blocks instances and the triangle is counted once. Per pair,
sign(dx) * sign(dy) and whether dx, dy are nonzero are accumulated elementwise over the tiles
in int32 (no reduction inside the loop), then summed in int64; the partials ``[P, T, n_blocks, 3]`` are summed on the host (deterministic,
no atomics). With  S = sum sign(dx) sign(dy) = C - D,  Ux = pairs with dx != 0 = n0 - n1,
Uy = pairs with dy != 0 = n0 - n2:   tau_b = S / sqrt(Ux * Uy)  (0 when Ux or Uy is 0).

O(n^2) per (p, t) on purpose: branch-free, no sort per program; NB201-sized tasks (~10^4 rows)
are ~5e7 pairs each.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

DEFAULT_BLOCK = 64
_INF = tl.constexpr(float("inf"))


@triton.jit
def _kendall_kernel(
    pred_ptr, target_ptr, off_ptr, part_ptr, N, NB,
    BLOCK: tl.constexpr, NONFINITE_HIGH: tl.constexpr,
):
    """pred: [P, N]; target: [N]; off: int64[T + 1]; part: int64[P, T, NB, 3]."""
    p = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    bi = tl.program_id(2)
    T = tl.num_programs(1)
    lo = tl.load(off_ptr + t)
    n = tl.load(off_ptr + t + 1) - lo
    # non-finite values compare equal to each other and above (or below) every finite value
    if NONFINITE_HIGH:
        big = _INF
    else:
        big = -_INF
    ii = bi * BLOCK + tl.arange(0, BLOCK)
    imask = ii < n
    xi = tl.load(pred_ptr + p * N + lo + ii, mask=imask, other=0.0)
    yi = tl.load(target_ptr + lo + ii, mask=imask, other=0.0)
    xi = tl.where((xi == xi) & (tl.abs(xi) != _INF), xi, big)
    yi = tl.where((yi == yi) & (tl.abs(yi) != _INF), yi, big)
    # elementwise int32 accumulators (+-1 per tile, at most n / BLOCK tiles): no reduction per tile
    s_acc = tl.full([BLOCK, BLOCK], 0, tl.int32)
    ux_acc = tl.full([BLOCK, BLOCK], 0, tl.int32)
    uy_acc = tl.full([BLOCK, BLOCK], 0, tl.int32)
    nbt = ((n + BLOCK - 1) // BLOCK).to(tl.int32)
    for bj in range(bi, nbt):
        jj = bj * BLOCK + tl.arange(0, BLOCK)
        jmask = jj < n
        xj = tl.load(pred_ptr + p * N + lo + jj, mask=jmask, other=0.0)
        yj = tl.load(target_ptr + lo + jj, mask=jmask, other=0.0)
        xj = tl.where((xj == xj) & (tl.abs(xj) != _INF), xj, big)
        yj = tl.where((yj == yj) & (tl.abs(yj) != _INF), yj, big)
        pair = imask[:, None] & jmask[None, :] & (ii[:, None] < jj[None, :])
        # comparisons, not subtraction: inf - inf would be NaN
        sx = (xj[None, :] > xi[:, None]).to(tl.int32) - (xj[None, :] < xi[:, None]).to(tl.int32)
        sy = (yj[None, :] > yi[:, None]).to(tl.int32) - (yj[None, :] < yi[:, None]).to(tl.int32)
        sx = tl.where(pair, sx, 0)
        sy = tl.where(pair, sy, 0)
        s_acc += sx * sy
        ux_acc += sx * sx
        uy_acc += sy * sy
    s_tot = tl.sum(s_acc.to(tl.int64))
    ux_tot = tl.sum(ux_acc.to(tl.int64))
    uy_tot = tl.sum(uy_acc.to(tl.int64))
    base = ((p * T + t) * NB + bi) * 3
    tl.store(part_ptr + base, s_tot)
    tl.store(part_ptr + base + 1, ux_tot)
    tl.store(part_ptr + base + 2, uy_tot)


GRID_Y = 65535  # CUDA's limit on a launch grid's second dimension


def kendall_counts_triton(
    pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, *, block: int = DEFAULT_BLOCK,
    nonfinite_high: bool = False, max_rows: int | None = None,
) -> torch.Tensor:
    """``int64[P, T, 3]``: (C - D, pairs untied in pred, pairs untied in target) per program and task.
    ``max_rows``: the longest task's rows when the caller knows it (else read from ``offsets``:
    one host sync)."""
    if pred.dim() != 2 or target.dim() != 1 or pred.shape[1] != target.shape[0] or offsets.dim() != 1:
        raise ValueError(f"shapes: pred {tuple(pred.shape)} target {tuple(target.shape)} offsets {tuple(offsets.shape)}")
    P, N = pred.shape
    T = offsets.shape[0] - 1
    off = offsets.to(device=pred.device, dtype=torch.int64).contiguous()
    if P == 0 or T <= 0:
        return torch.zeros(P, max(T, 0), 3, dtype=torch.int64, device=pred.device)
    max_n = int((off[1:] - off[:-1]).max().item()) if max_rows is None else int(max_rows)
    if T > GRID_Y:  # tasks ride grid.y, which CUDA caps: launch them in slices (offsets are absolute)
        return torch.cat([kendall_counts_triton(pred, target, off[a:min(T, a + GRID_Y) + 1], block=block,
                                                nonfinite_high=nonfinite_high, max_rows=max_n)
                          for a in range(0, T, GRID_Y)], 1)
    NB = max(1, triton.cdiv(max_n, block))
    part = torch.empty(P, T, NB, 3, dtype=torch.int64, device=pred.device)
    _kendall_kernel[(P, T, NB)](
        pred.to(torch.float32).contiguous(), target.to(device=pred.device, dtype=torch.float32).contiguous(),
        off, part, N, NB, BLOCK=block, NONFINITE_HIGH=nonfinite_high,
    )
    return part.sum(2)


def kendall_tau_b_triton(
    pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, *, block: int = DEFAULT_BLOCK,
    nonfinite_high: bool = False,
) -> torch.Tensor:
    """Kendall tau-b per program and task.

    pred: float32[P, N], target: float32[N], offsets: int64[T + 1] (task t is rows
    offsets[t]:offsets[t+1]) -> float32[P, T]. Same semantics as ``tensorgp.engine.fitness.kendall_tau_b``
    (= scipy ``kendalltau(variant="b")``): non-finite values (NaN, +-inf) tie with each other and
    rank below every finite value, so a failing formula ranks the architecture worst
    (``nonfinite_high=True``: above instead). Applied to the target too (fitness rejects a
    non-finite target). A constant pred or target on a task (no untied pair) gives 0, as does a
    task of < 2 rows. Exact counts (int64); the final ratio in float64.
    """
    c = kendall_counts_triton(pred, target, offsets, block=block, nonfinite_high=nonfinite_high).double()
    denom = torch.sqrt(c[..., 1] * c[..., 2])
    tau = torch.where(denom > 0, c[..., 0] / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    return tau.float()
