"""NB201 cell constants and the seeded initialisation both NB201 builders share (NASLib's
operation numbering and edge order: see ``nb201``)."""
from __future__ import annotations

from typing import Sequence

import torch

OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
SKIP, NONE, CONV3, CONV1, AVG = range(5)
EDGES = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
STR_ORDER = sorted(range(6), key=lambda e: (EDGES[e][1], EDGES[e][0]))  # edges in the string form's order


def arch_seed(seed: int, arch: Sequence[int]) -> int:
    """The initialisation seed of one architecture: depends on the run seed and the architecture
    only, so a value is the same whichever batch the architecture is computed in."""
    code = 0
    for a in arch:
        code = code * 5 + int(a)
    return int(seed) * 1_000_003 + code


def draw_init(kind: str, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """PyTorch's default initialisation of one tensor from ``g``: conv and linear weights (and
    linear biases) U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BN weight 1, bias 0. ``kind`` is
    ``conv``, ``linear_w``, ``linear_b:<fan_in>``, ``bn_w`` or ``bn_b``."""
    if kind == "bn_w":
        return torch.ones(shape)
    if kind == "bn_b":
        return torch.zeros(shape)
    if kind.startswith("linear_b:"):
        fan_in = int(kind.split(":")[1])
    else:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= int(s)
    bound = 1.0 / fan_in ** 0.5
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound).float()
