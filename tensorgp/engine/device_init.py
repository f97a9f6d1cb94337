"""Initialisation for the device path: ``population.init_population`` fed by counter-based draws.

The same ramped half-and-half trees, but every random number comes from one
``counter_rng.random_bits`` call keyed by (seed, generation 0), and all ``max_len`` steps run
(no early exit), so nothing waits for the host. A one-off cost of ``max_len`` short steps.
"""
from __future__ import annotations

import torch

from .counter_rng import below, uniform
from .device_random import random_bits
from .population import Population, init_population, make_terminals
from .primitives import PrimitiveSet

STREAM_INIT = 0


def init_device(n: int, pset: PrimitiveSet, key: torch.Tensor, max_len: int = 64,
                depth_range: tuple[int, int] = (2, 6), const_prob: float = 0.1, method: str = "half") -> Population:
    """``n`` programs of width ``max_len`` on ``key``'s device (``key: int64[2]``, see ``counter_rng``)."""
    bits = random_bits(key, STREAM_INIT, (max_len, 5, n))
    n_fn = len(pset.functions)

    def draws(t: int):
        b = bits[t]
        term, c = make_terminals(below(b[2], pset.n_vars), uniform(b[3]), uniform(b[4]), pset, const_prob)
        return below(b[0], n_fn), uniform(b[1]), term, c

    return init_population(n, pset, None, max_len=max_len, depth_range=depth_range, const_prob=const_prob,
                           device=key.device, method=method, draws=draws)
