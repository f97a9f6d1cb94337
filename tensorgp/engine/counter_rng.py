"""Counter-based random numbers for the device generation: a pure function of (key, counter).

A generation draws all its random numbers in one call: ``random_bits(key, stream, shape)``
(``device_random``: the Triton twin on CUDA, ``random_bits_torch`` here elsewhere)
returns 32-bit values (held in int64) where element ``c`` (its flat index) is

    mix32(((c + stream * 2**28) * k1 + k2) mod 2**32)

with ``(k1, k2) = generation_key(seed, generation)`` (``k1`` odd, so distinct counters give
distinct values within a key). Nothing depends on how many numbers were drawn before, so a
resumed run (seed and generation restored) redraws the same numbers, and the device never hands
state back to the host. The arithmetic is int64 with every product below 2**63 (a multiplier
>= 2**31 is used as its negative twin modulo 2**32), so torch on any device and the Triton twin
in ``tensorgp.kernels.rng_kernel`` give identical bits.

``mix32`` is Wellons' "lowbias32" integer hash (a bijection of 32-bit values).
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B - (1 << 32)  # the same product modulo 2**32, with |value| < 2**31
GOLDEN = 0x9E3779B9
INV_2_24 = 1.0 / (1 << 24)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit hash of ``x: int64[...]`` holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def mix32_int(x: int) -> int:
    """``mix32`` on a Python int (host side: keys are derived without touching the device)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def generation_key(seed: int, generation: int) -> tuple[int, int]:
    """``(k1, k2)``: the key of one generation of a run seeded ``seed``; ``k1`` odd and below
    2**31 (a multiplier whose products stay below 2**63), ``k2`` in [0, 2**32)."""
    h = mix32_int(mix32_int(seed & MASK32) ^ mix32_int((seed >> 32) + GOLDEN * (generation + 1)))
    k2 = mix32_int(h ^ mix32_int(generation & MASK32) ^ GOLDEN)
    return (h & 0x7FFFFFFF) | 1, k2


def key_tensor(seed: int, generation: int, device: torch.device | str) -> torch.Tensor:
    """``int64[2]`` on ``device``: the key as a tensor, so a captured CUDA graph reads it."""
    return torch.tensor(generation_key(seed, generation), dtype=torch.int64, device=device)


STREAM_SHIFT = 28  # stream s owns counters [s * 2**28, (s + 1) * 2**28) ... up to 2**32


def counter_range(stream: int, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(first counter, number of values)`` of a ``random_bits`` call; errors past 2**32."""
    n = 1
    for s in shape:
        n *= s
    start = stream << STREAM_SHIFT
    if start + n > 1 << 32:
        raise ValueError(f"random_bits: {n} values in stream {stream} exceed the 2**32 counters")
    return start, n


def random_bits_torch(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``random_bits`` in torch operations (any device; the reference of the Triton twin)."""
    start, n = counter_range(stream, shape)
    c = torch.arange(start, start + n, dtype=torch.int64, device=key.device).view(shape)
    return mix32((c * key[0] + key[1]) & MASK32)


def uniform(bits: torch.Tensor) -> torch.Tensor:
    """``float32`` in [0, 1) from 32-bit values (the top 24 bits: exact in float32)."""
    return (bits >> 8).to(torch.float32) * INV_2_24


def below(bits: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """``int64`` uniform in [0, n) from 32-bit values (``n`` < 2**31): the top of ``bits * n``."""
    return (bits * n) >> 32
