"""Triton twin of ``tensorgp.engine.counter_rng``: the same bits, in one launch.

``random_bits_triton(key, stream, shape)`` equals ``counter_rng.random_bits_torch`` bit for bit (the
same int64 arithmetic); ``mix32`` is a ``triton.jit`` function other kernels can inline.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensorgp.engine.counter_rng import MASK32, MUL1, MUL2, counter_range

_MASK32 = tl.constexpr(MASK32)
_MUL1 = tl.constexpr(MUL1)
_MUL2 = tl.constexpr(MUL2)
BLOCK = 1024


@triton.jit
def mix32(x):
    """``counter_rng.mix32`` on int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK32
    return x ^ (x >> 16)


@triton.jit
def _bits_kernel(key_ptr, out_ptr, n, start, BLOCK: tl.constexpr):
    """out: int64[n]; key: int64[2]; counters start at ``start``."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    c = i + start
    tl.store(out_ptr + i, mix32((c * tl.load(key_ptr) + tl.load(key_ptr + 1)) & _MASK32), mask=i < n)


def random_bits_triton(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``int64[shape]``: ``counter_rng.random_bits_torch(key, stream, shape)`` in one kernel."""
    start, n = counter_range(stream, shape)
    out = torch.empty(shape, dtype=torch.int64, device=key.device)
    if n:
        _bits_kernel[(triton.cdiv(n, BLOCK),)](key.contiguous(), out, n, start, BLOCK=BLOCK)
    return out
