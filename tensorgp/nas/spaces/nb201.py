"""NAS-Bench-201: the cell space (6 edges, 5 operations) and NASLib's macro skeleton.

Encoding: a 6-tuple of operation indices over the cell's edges in NASLib's order
``EDGES = (1->2, 1->3, 1->4, 2->3, 2->4, 3->4)`` (nodes 1..4, 1 the input, 4 the output) with
NASLib's operation numbering ``OPS`` (0 skip, 1 none, 2 conv3x3, 3 conv1x1, 4 avgpool3x3): the
keys of the Suite-Zero NB201 tables (verified: this space's ``params`` equals the table's for
all 9,445 architectures of ``nb201-final``, which fixes the conv indices; of the 125 cells
whose output node has only index-1 inputs, that table keeps 1, against 96 for any other index,
so 1 is ``none``).
The string form ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|`` is NAS-Bench-201's own.

Skeleton (NASLib ``NasBench201SearchSpace``): stem conv3x3 + BN, three stages of ``cells``
cells at ``C, 2C, 4C`` channels (default 5 cells, C = 16) separated by residual reduction blocks
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, shortcut avgpool2 + conv1x1), then BN, ReLU, global
average pooling and a linear head. Cell convolutions are ReLU-conv-BN with affine,
stat-tracking BN (NASLib makes the chosen operation's BN affine).
"""
from __future__ import annotations

import itertools
import re
from typing import Sequence

import torch
from torch import nn

from .base import SearchSpace, SpaceError
from .nb201_cell import AVG, CONV3, EDGES, NONE, OPS, SKIP, STR_ORDER, arch_seed, draw_init
from .nb201_packed import PackedNB201

_INTS = re.compile(r"-?\d+")


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _op(i: int, c: int) -> nn.Module:
    if i == SKIP:
        return nn.Identity()
    if i == NONE:
        return Zero()
    if i == AVG:
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    return ReLUConvBN(c, c, 3 if i == CONV3 else 1)


class Cell(nn.Module):
    """Node j = sum over i < j of op_ij(node i); the output is node 4."""

    def __init__(self, arch: Sequence[int], c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_op(i, c) for i in arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {1: x}
        for j in (2, 3, 4):
            nodes[j] = sum(self.edges[e](nodes[i]) for e, (i, jj) in enumerate(EDGES) if jj == j)
        return nodes[4]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """One NB201 architecture as a plain module (``forward``: float[N, 3, H, W] -> float[N, classes])."""

    def __init__(self, arch: Sequence[int], channels: int = 16, cells: int = 5, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        for s in range(3):
            if s:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [Cell(arch, c) for _ in range(cells)]
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))


def init_module_(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise ``model``'s Conv2d/Linear/BatchNorm parameters in module order from one
    seeded generator with ``draw_init`` (the order the batched subject follows too)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(draw_init("conv", m.weight.shape, g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(draw_init("linear_w", m.weight.shape, g))
                if m.bias is not None:
                    m.bias.copy_(draw_init(f"linear_b:{m.in_features}", m.bias.shape, g))
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model


class NB201(SearchSpace):
    """NAS-Bench-201 (15,625 cells). ``channels``/``cells``: the skeleton's width and cells per
    stage (16 and 5 in the benchmark; smaller for tests)."""

    name = "nb201"

    def check_inputs(self, inputs: torch.Tensor) -> None:
        C, H, W = inputs.shape[1:]
        if C != 3:
            raise SpaceError(f"nb201: images have {C} channel(s) (shape {tuple(inputs.shape)}); the networks take "
                             f"3 (RGB in [N, C, H, W] order: an [N, H, W, C] batch needs a transpose)")
        if H % 4 or W % 4:
            raise SpaceError(f"nb201: images of {H}x{W}; the two stride-2 reductions need sides divisible by 4")

    def __init__(self, channels: int = 16, cells: int = 5) -> None:
        if channels < 1 or cells < 1:
            raise SpaceError(f"nb201: channels and cells must be >= 1 (got {channels}, {cells})")
        self.channels, self.cells = int(channels), int(cells)

    def enumerate(self) -> torch.Tensor:
        return torch.tensor(list(itertools.product(range(5), repeat=6)), dtype=torch.int64)

    def decode(self, key) -> tuple[int, ...]:
        if isinstance(key, str) and "~" in key:
            return self._from_string(key)
        if isinstance(key, str):
            vals = [int(v) for v in _INTS.findall(key)]
            if not re.fullmatch(r"[\s\d,()\[\]]*", key):
                raise SpaceError(f"nb201: cannot read architecture key {key!r} (expected a 6-tuple of operation "
                                 f"indices 0-4 like '(0, 2, 3, 2, 3, 1)' or a string like '|nor_conv_3x3~0|+|...|')")
        else:
            try:
                vals = [int(v) for v in key]
            except (TypeError, ValueError):
                raise SpaceError(f"nb201: cannot read architecture key {key!r}") from None
        if len(vals) != 6 or any(v < 0 or v > 4 for v in vals):
            raise SpaceError(f"nb201: architecture key {key!r} is not 6 operation indices in 0-4 "
                             f"(0 skip, 1 none, 2 conv3x3, 3 conv1x1, 4 avgpool3x3)")
        return tuple(vals)

    def _from_string(self, s: str) -> tuple[int, ...]:
        parts = [p for p in s.strip().strip("|").replace("|+|", "+").split("+")]
        nodes = [p.strip("|").split("|") for p in parts]
        if [len(n) for n in nodes] != [1, 2, 3]:
            raise SpaceError(f"nb201: cannot read architecture string {s!r} (expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|')")
        arch = [0] * 6
        for j, node in enumerate(nodes, start=2):
            seen = set()
            for tok in node:
                op, _, src = tok.partition("~")
                if op not in OPS or not src.isdigit() or int(src) > j - 2 or int(src) in seen:
                    raise SpaceError(f"nb201: bad edge {tok!r} in architecture string {s!r} (node {j - 1} needs one "
                                     f"edge from each earlier node); operations: {', '.join(OPS)}")
                seen.add(int(src))
                arch[EDGES.index((int(src) + 1, j))] = OPS.index(op)
        return tuple(arch)

    def encode(self, arch: Sequence[int]) -> str:
        return "(" + ", ".join(str(int(a)) for a in self.decode(arch)) + ")"

    def to_string(self, arch: Sequence[int]) -> str:
        """NAS-Bench-201's string form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        a = self.decode(arch)
        toks = [f"{OPS[a[e]]}~{EDGES[e][0] - 1}" for e in STR_ORDER]
        return f"|{toks[0]}|+|{toks[1]}|{toks[2]}|+|{toks[3]}|{toks[4]}|{toks[5]}|"

    def build(self, arch: Sequence[int], seed: int = 0, num_classes: int = 10) -> nn.Module:
        a = self.decode(arch)
        net = NB201Network(a, self.channels, self.cells, num_classes)
        return init_module_(net, arch_seed(seed, a))

    def build_many(self, archs, seed: int = 0, num_classes: int = 10):
        return PackedNB201([self.decode(a) for a in archs], self.channels, self.cells, num_classes, seed=seed)
