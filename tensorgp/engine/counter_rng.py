"""Counter-based random numbers for the device generation: a pure function of (key, counter).

A generation draws all its random numbers in one call: ``random_bits(key, stream, shape)``
returns 32-bit values (held in int64) where element ``c`` (its flat index) is

    mix32(mix32(c ^ k1) ^ ((k2 + stream) & 0xFFFFFFFF))

with ``(k1, k2) = generation_key(seed, generation)``. Nothing depends on how many numbers were
drawn before, so a resumed run (seed and generation restored) redraws the same numbers, and
the device never has to hand state back to the host. The arithmetic is int64 with every
product kept below 2**63 (a multiplier >= 2**31 is used as its negative twin modulo 2**32), so
torch on any device and the Triton twin in ``tensorgp.kernels.rng_kernel`` give identical bits.

``mix32`` is Wellons' "lowbias32" integer hash.
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
    """``(k1, k2)``, both in [0, 2**32): the key of one generation of a run seeded ``seed``."""
    k1 = mix32_int(mix32_int(seed & MASK32) ^ mix32_int((seed >> 32) + GOLDEN * (generation + 1)))
    k2 = mix32_int(k1 ^ mix32_int(generation & MASK32) ^ GOLDEN)
    return k1, k2


def key_tensor(seed: int, generation: int, device: torch.device | str) -> torch.Tensor:
    """``int64[2]`` on ``device``: the key as a tensor, so a captured CUDA graph reads it."""
    return torch.tensor(generation_key(seed, generation), dtype=torch.int64, device=device)


def random_bits(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``int64[shape]`` of independent uniform 32-bit values for ``key: int64[2]`` and ``stream``.

    Counters are flat indices, so ``prod(shape)`` must stay below 2**32."""
    n = 1
    for s in shape:
        n *= s
    if n >= 1 << 32:
        raise ValueError(f"random_bits: {n} values exceed the 2**32 counters of one stream")
    c = torch.arange(n, dtype=torch.int64, device=key.device).view(shape)
    k2 = (key[1] + stream) & MASK32
    return mix32(mix32(c ^ key[0]) ^ k2)


def uniform(bits: torch.Tensor) -> torch.Tensor:
    """``float32`` in [0, 1) from 32-bit values (the top 24 bits: exact in float32)."""
    return (bits >> 8).to(torch.float32) * INV_2_24


def below(bits: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """``int64`` uniform in [0, n) from 32-bit values (``n`` < 2**31): the top of ``bits * n``."""
    return (bits * n) >> 32
