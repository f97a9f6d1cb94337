"""``random_bits`` for the device path: one Triton launch on CUDA, the torch form elsewhere.

Both give the same bits (``counter_rng`` defines them; ``tensorgp.kernels.rng_kernel`` is the
twin). A module of its own so that ``counter_rng`` and the kernel, which reads its constants,
import each other in one direction only.
"""
from __future__ import annotations

import torch

from .counter_rng import random_bits_torch


def random_bits(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``int64[shape]`` of uniform 32-bit values for ``key: int64[2]`` and ``stream`` (0..15),
    all distinct within a call. Needs ``stream * 2**28 + prod(shape) <= 2**32``. On CUDA one
    Triton launch (``tensorgp.kernels.rng_kernel``, the same bits), else ``random_bits_torch``."""
    if key.device.type == "cuda":
        try:
            from ..kernels.rng_kernel import random_bits_triton
        except Exception:  # no triton: the torch form gives the same bits
            return random_bits_torch(key, stream, shape)
        return random_bits_triton(key, stream, shape)
    return random_bits_torch(key, stream, shape)
