"""Triton wavelet-matrix pass sums: the discordant-pair count of Kendall tau-b in one launch.

``tensorgp.engine.fitness`` counts the discordant pairs of an (individual, task) as the strict
inversions of ``s``, the task's dense target ranks in prediction order (one batched segmented
``torch.sort`` gives it). The inversions are read off a wavelet matrix: for each bit b of s, from
the top, the inclusive cumsum of the bit summed over the row, then a stable partition of the row
by that bit (zeros first). Minus the same sum for the sorted sequence (a per-task constant) it is
the inversion count; the torch path (``fitness._wavelet_sums``) does it with ~8 launches per bit
over the whole ``[P, T, W]`` array. Here one program keeps one row in registers for all the
passes: per pass a ``tl.cumsum``, a sum, and the partition as a scatter into a per-program
scratch row in global memory (L1/L2-resident) read back after a barrier. Work O(W log W) per
row, one launch for the whole batch; rows beyond the grid are taken in turn by the programs
(a persistent grid), so the scratch is ``grid x 2 x BLOCK`` int32 whatever P is.

Exact: int32 cumsums (W < 2**31), int64 row sums; the same numbers as the torch passes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCK = 1 << 16  # longest task row kept in registers (the NB201 tables have < 16k rows)
GRID_CAP = 2048  # programs at most: bounds the scratch (2048 x 2 x 16384 x 4 B = 256 MiB at W = 16k)


@triton.jit
def _wavelet_kernel(s_ptr, nz_ptr, out_ptr, scratch_ptr, R, T, W, n_prog,
                    BITS: tl.constexpr, BLOCK: tl.constexpr):
    """s: int[R, W] (row r = p * T + t); nz: int32[BITS, T] zeros of bit b in task t minus 1;
    out: int64[R]; scratch: int32[n_prog, 2, BLOCK]."""
    pid = tl.program_id(0).to(tl.int64)
    idx = tl.arange(0, BLOCK)
    mask = idx < W
    buf0 = scratch_ptr + pid * (2 * BLOCK)
    for i in range(0, tl.cdiv(R - pid, n_prog)):  # persistent grid: rows pid, pid + n_prog, ...
        r = pid + i * n_prog  # int64: r * W may pass 2**31
        tl.debug_barrier()  # the previous row's last reads of the scratch are done
        t = r % T
        v = tl.load(s_ptr + r * W + idx, mask=mask, other=0).to(tl.int32)
        acc = tl.zeros([], dtype=tl.int64)
        for k in tl.static_range(BITS):
            b: tl.constexpr = BITS - 1 - k
            bit = tl.where(mask, (v >> b) & 1, 0)
            ones = tl.cumsum(bit, 0)  # ones up to and including each position
            acc += tl.sum(tl.where(mask, ones, 0).to(tl.int64), 0)
            if b > 0:
                # stable partition, zeros first: one -> nz + ones - 1, zero -> position - ones
                nzm1 = tl.load(nz_ptr + b * T + t)
                dest = tl.where(bit == 1, nzm1 + ones, idx - ones)
                buf = buf0 + (k % 2) * BLOCK  # alternate buffers: one barrier per pass suffices
                tl.store(buf + dest, v, mask=mask)
                tl.debug_barrier()
                v = tl.load(buf + idx, mask=mask, other=0, cache_modifier=".cg")  # never the non-coherent path
        tl.store(out_ptr + r, acc)


def wavelet_sums_triton(s: torch.Tensor, nz_m1: torch.Tensor, bits: int) -> torch.Tensor:
    """``int64[P, T]``: per row of ``s: int16|int32[P, T, W]`` the sum over bit passes (top bit
    first) of the inclusive cumsum of the bit in wavelet-matrix order; ``nz_m1: int[bits, T, 1]``
    (or ``[bits, T]``): zeros of bit b in task t's sequence, minus 1. Equals
    ``fitness._wavelet_sums``. CUDA tensors, or CPU ones under ``TRITON_INTERPRET=1``."""
    if s.dim() != 3 or s.dtype not in (torch.int16, torch.int32):
        raise ValueError(f"s must be int16/int32[P, T, W], got {s.dtype} {tuple(s.shape)}")
    P, T, W = s.shape
    if nz_m1.numel() != bits * T:
        raise ValueError(f"nz_m1 must hold bits x T = {bits} x {T} values, got {tuple(nz_m1.shape)}")
    if not 1 <= bits <= 31:
        raise ValueError(f"bits must be in [1, 31], got {bits}")
    R = P * T
    out = torch.zeros(R, dtype=torch.int64, device=s.device)
    if R == 0 or W == 0:
        return out.view(P, T)
    BLOCK = max(16, triton.next_power_of_2(W))
    if BLOCK > MAX_BLOCK:
        raise ValueError(f"task rows W={W} exceed the kernel's {MAX_BLOCK}")
    n_prog = min(R, GRID_CAP)
    scratch = torch.empty(n_prog, 2, BLOCK, dtype=torch.int32, device=s.device)
    nz = nz_m1.reshape(bits, T).to(device=s.device, dtype=torch.int32).contiguous()
    num_warps = min(32, max(4, BLOCK // 512))
    _wavelet_kernel[(n_prog,)](s.contiguous(), nz, out, scratch, R, T, W, n_prog, BITS=bits, BLOCK=BLOCK,
                               num_warps=num_warps)
    return out.view(P, T)
