"""Triton subtree spans, depths and heights: one kernel instance per program, ``[L, L]`` tile.

The same masked reductions as ``tensorgp.engine.structure_dense.structure_dense_torch`` (its
reference; the module docstring there derives them), with the stack heights from ``tl.cumsum``
and the pair masks in registers, so the whole structure pass of a population is one launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensorgp.engine.primitives import FIRST_VAR, arity_table, table_version

_FIRST_VAR = tl.constexpr(FIRST_VAR)
_TABLES: dict[tuple[torch.device, int], torch.Tensor] = {}  # a registered user function makes a table stale
MAX_L = 1024  # the [L, L] tile must stay within Triton's 2^20 elements per tensor


@triton.jit
def _structure_kernel(ops_ptr, len_ptr, arity_ptr, out_ptr, L, BLOCK_L: tl.constexpr):
    """ops: int32[P, L]; arity: int32[FIRST_VAR + 1] (the last entry, 0, for every feature);
    out: int64[P, L, 3] (start, depth, height)."""
    p = tl.program_id(0).to(tl.int64)
    pos = tl.arange(0, BLOCK_L)
    inside = pos < L
    n = tl.load(len_ptr + p)
    valid = pos < n
    op = tl.load(ops_ptr + p * L + pos, mask=inside, other=0)
    a = tl.load(arity_ptr + tl.minimum(op, _FIRST_VAR))
    eff = tl.where(valid, 1 - a, 0)
    after = tl.cumsum(eff, 0)
    before = after - eff
    i_ = pos[:, None]
    j_ = pos[None, :]
    lower = j_ <= i_
    m = (before[None, :] < after[:, None]) & lower
    start = tl.max(tl.where(m, j_, -1), 1)
    start = tl.where(valid, start, pos)
    m = (start[None, :] <= i_) & (j_ > i_) & valid[None, :]
    depth = tl.sum(m.to(tl.int32), 1)
    m = (j_ >= start[:, None]) & lower
    height = tl.max(tl.where(m, depth[None, :], 0), 1) - depth
    height = tl.where(valid, height, 0)
    base = (p * L + pos) * 3
    tl.store(out_ptr + base, start.to(tl.int64), mask=inside)
    tl.store(out_ptr + base + 1, depth.to(tl.int64), mask=inside)
    tl.store(out_ptr + base + 2, height.to(tl.int64), mask=inside)


def structure_triton(ops: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``int64[P, L, 3]`` (start, depth, height) for ``ops: int32[P, L]`` and ``length: int32[P]``;
    equal to ``structure_dense_torch``."""
    P, L = ops.shape
    if triton.next_power_of_2(L) > MAX_L:
        raise ValueError(f"structure_triton handles programs of at most {MAX_L} positions, got {L}; "
                         f"use structure_dense_torch (structure_table's auto does)")
    dev = ops.device
    key = (dev, table_version())
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = torch.cat([arity_table(), torch.zeros(1, dtype=torch.int32)]).to(dev)
    out = torch.empty(P, L, 3, dtype=torch.int64, device=dev)
    if P and L:
        _structure_kernel[(P,)](ops.to(torch.int32).contiguous(), length.to(torch.int32).contiguous(), table,
                                out, L, BLOCK_L=triton.next_power_of_2(L))
    return out
