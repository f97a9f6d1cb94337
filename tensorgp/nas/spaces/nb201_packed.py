"""K NAS-Bench-201 architectures as one tensor program: the batched proxy subject.

Every architecture has its own weights (parameters carry a leading architecture dimension
``[K, ...]``); activations are ``[N, K, C, H, W]``. A convolution used by a subset of the
architectures runs once as a grouped convolution over that subset (``groups = k``), so each
edge costs what its chosen operations cost, summed over the batch, never the whole supernet.
Initialisation follows ``nb201_cell.draw_init`` per architecture in the plain module's order
from ``arch_seed``, so every value equals the one-architecture ``NB201Network``'s (tested).

The subject interface the measures use (``measures.subject``): ``forward_archs``, ``features``,
``layers``, ``observe``, ``batchnorm``, ``bn_log_scale``, ``gaussian_init_``, ``param_counts``,
``flops``, ``archs``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .nb201_cell import AVG, CONV1, CONV3, EDGES, NONE, SKIP, arch_seed, draw_init


class PackedNB201(nn.Module):
    """``archs``: K encodings. ``forward(x float[N, 3, H, W]) -> float[N, K, classes]``."""

    def __init__(self, archs: Sequence[Sequence[int]], channels: int = 16, cells: int = 5, num_classes: int = 10,
                 in_channels: int = 3, seed: int = 0, init: bool = True) -> None:
        super().__init__()
        self.arch_list = [tuple(int(v) for v in a) for a in archs]
        K = len(self.arch_list)
        if K == 0:
            raise ValueError("PackedNB201 needs at least one architecture")
        self.archs = K
        self.num_classes = num_classes
        self.in_channels = in_channels
        codes = torch.tensor(self.arch_list, dtype=torch.int64, device="cpu")  # [K, 6] (index tensors stay on the CPU)
        # archs using each operation on each edge: int64[k'] (cells share the genotype)
        self.edge_archs = [{op: (codes[:, e] == op).nonzero().squeeze(1) for op in range(5)} for e in range(6)]
        self.all = torch.arange(K, device="cpu")
        self.bn_on = True
        self._dev: dict = {}
        self._observer = None
        # plan: (name, kind, per-arch shape, archs) in the plain module's parameter order
        self.plan: list[tuple[str, str, tuple, torch.Tensor]] = []
        self.bns: list[tuple[str, torch.Tensor]] = []  # (BN name, archs)
        self.blocks: list[tuple] = []
        c = channels
        self._conv("stem", in_channels, c, 3, self.all)
        self._bn("stem.bn", c, self.all)
        for s in range(3):
            if s:
                self._conv(f"r{s}.a", c, 2 * c, 3, self.all)
                self._bn(f"r{s}.a.bn", 2 * c, self.all)
                self._conv(f"r{s}.b", 2 * c, 2 * c, 3, self.all)
                self._bn(f"r{s}.b.bn", 2 * c, self.all)
                self._conv(f"r{s}.down", c, 2 * c, 1, self.all)
                self.blocks.append(("res", s, c))
                c *= 2
            for i in range(cells):
                for e in range(6):
                    for op, k in ((CONV3, 3), (CONV1, 1)):
                        a = self.edge_archs[e][op]
                        if a.numel():
                            self._conv(f"c{s}_{i}.e{e}.op{op}", c, c, k, a)
                            self._bn(f"c{s}_{i}.e{e}.op{op}.bn", c, a)
                self.blocks.append(("cell", s, i, c))
        self._bn("head.bn", c, self.all)
        self._param("head.w", "linear_w", (num_classes, c), self.all)
        self._param("head.b", f"linear_b:{c}", (num_classes,), self.all)
        self.channels_out = c
        if init:  # init=False (e.g. on the meta device): structure only, for param_counts and flops
            self.reset_parameters(seed)

    # ------------------------------------------------------------------ construction
    def _key(self, name: str) -> str:
        return name.replace(".", "_")

    def _param(self, name: str, kind: str, shape: tuple, archs: torch.Tensor) -> None:
        self.register_parameter(self._key(name), nn.Parameter(torch.zeros(self.archs, *shape)))
        self.plan.append((name, kind, tuple(shape), archs))

    def _conv(self, name: str, c_in: int, c_out: int, k: int, archs: torch.Tensor) -> None:
        self._param(name, "conv", (c_out, c_in, k, k), archs)

    def _bn(self, name: str, c: int, archs: torch.Tensor) -> None:
        self._param(name + ".w", "bn_w", (c,), archs)
        self._param(name + ".b", "bn_b", (c,), archs)
        self.register_buffer(self._key(name) + "_mean", torch.zeros(self.archs, c))
        self.register_buffer(self._key(name) + "_var", torch.ones(self.archs, c))
        self.bns.append((name, archs))

    def p(self, name: str) -> torch.Tensor:
        return getattr(self, self._key(name))

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Per architecture, the plain module's initialisation (``nb201.init_module_``)."""
        for k, arch in enumerate(self.arch_list):
            g = torch.Generator().manual_seed(arch_seed(seed, arch))
            for name, kind, shape, archs in self.plan:  # the plain module's parameter order
                if kind.startswith("bn"):
                    continue  # BN constants: drawn from nothing
                if archs.numel() == self.archs or bool((archs == k).any()):
                    self.p(name)[k].copy_(draw_init(kind, shape, g))
            for name, _ in self.bns:
                self.p(name + ".w")[k].fill_(1.0)
                self.p(name + ".b")[k].zero_()
                getattr(self, self._key(name) + "_mean")[k].zero_()
                getattr(self, self._key(name) + "_var")[k].fill_(1.0)

    # ------------------------------------------------------------------ operations
    def _on(self, archs: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``archs`` on ``device`` (index tensors stay on the CPU; their device copies are cached)."""
        if archs.device == device:
            return archs
        key = (id(archs), device)
        if key not in self._dev:
            self._dev[key] = archs.to(device)
        return self._dev[key]

    def _sel(self, t: torch.Tensor, archs: torch.Tensor) -> torch.Tensor:
        return t if archs.numel() == self.archs else t.index_select(0, self._on(archs, t.device))

    def _relu(self, x: torch.Tensor, archs: torch.Tensor) -> torch.Tensor:
        if self._observer is not None:
            self._observer.relu(x.reshape(x.shape[0], x.shape[1], -1), archs)
        return F.relu(x)

    def _conv_apply(self, x: torch.Tensor, name: str, archs: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """``x [N, k, C_in, H, W]`` of the archs ``archs`` -> ``[N, k, C_out, H', W']``."""
        w = self._sel(self.p(name), archs)  # [k, C_out, C_in, kh, kw]
        N, k, ci, H, W = x.shape
        co, kh = w.shape[1], w.shape[3]
        y = F.conv2d(x.reshape(N, k * ci, H, W), w.reshape(k * co, ci, kh, kh), None, stride, kh // 2, 1, k)
        if self._observer is not None:
            self._observer.layer_out(self._layer_index[name], y, archs, lambda t, N=N, k=k: t.view(N, k, co, *t.shape[2:]))
        return y.view(N, k, co, *y.shape[2:])

    def _bn_apply(self, x: torch.Tensor, name: str, archs: torch.Tensor) -> torch.Tensor:
        if not self.bn_on:
            return x
        N, k, c = x.shape[:3]
        rm = getattr(self, self._key(name) + "_mean")
        rv = getattr(self, self._key(name) + "_var")
        full = archs.numel() == self.archs
        ad = self._on(archs, x.device)
        m, v = (rm.view(-1), rv.view(-1)) if full else (rm.index_select(0, ad).view(-1), rv.index_select(0, ad).view(-1))
        y = F.batch_norm(x.reshape(N, k * c, *x.shape[3:]), m, v, self._sel(self.p(name + ".w"), archs).reshape(-1),
                         self._sel(self.p(name + ".b"), archs).reshape(-1), self.training, 0.1, 1e-5)
        if not full and self.training:  # running statistics of a subset: write the updated copies back
            rm.index_copy_(0, ad, m.view(k, c))
            rv.index_copy_(0, ad, v.view(k, c))
        return y.view(x.shape)

    def _rcb(self, x, name, archs, stride=1):
        return self._bn_apply(self._conv_apply(self._relu(x, archs), name, archs, stride), name + ".bn", archs)

    def _cell(self, x: torch.Tensor, s: int, i: int) -> torch.Tensor:
        nodes = {1: x}
        for j in (2, 3, 4):
            acc = None
            for e, (src, dst) in enumerate(EDGES):
                if dst != j:
                    continue
                h = nodes[src]
                for op in (SKIP, CONV3, CONV1, AVG):
                    a = self.edge_archs[e][op]
                    if a.numel() == 0:
                        continue
                    ad = self._on(a, h.device)
                    hs = h if a.numel() == self.archs else h.index_select(1, ad)
                    if op == SKIP:
                        out = hs
                    elif op == AVG:
                        N, k = hs.shape[:2]
                        out = F.avg_pool2d(hs.reshape(N, -1, *hs.shape[3:]), 3, 1, 1, count_include_pad=False).view(hs.shape)
                    else:
                        out = self._rcb(hs, f"c{s}_{i}.e{e}.op{op}", a)
                    if acc is None:
                        acc = torch.zeros_like(h)  # a node with only `none` inputs stays zero
                    acc = acc + out if a.numel() == self.archs else acc.index_add(1, ad, out)
            nodes[j] = acc if acc is not None else torch.zeros_like(h)
        return nodes[4]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x float[N, K, C, H, W]`` (or ``[N, C, H, W]``, shared) -> the head's input to global
        pooling ``[N, K, C', H', W']``."""
        if x.dim() == 4:
            x = x.unsqueeze(1).expand(-1, self.archs, -1, -1, -1)
        h = self._bn_apply(self._conv_apply(x, "stem", self.all), "stem.bn", self.all)
        for blk in self.blocks:
            if blk[0] == "res":
                s = blk[1]
                N, K, c, H, W = h.shape
                down = F.avg_pool2d(h.reshape(N, K * c, H, W), 2, 2).view(N, K, c, H // 2, W // 2)
                h = self._conv_apply(down, f"r{s}.down", self.all) + self._rcb(self._rcb(h, f"r{s}.a", self.all, 2),
                                                                              f"r{s}.b", self.all)
            else:
                h = self._cell(h, blk[1], blk[2])
        return self._relu(self._bn_apply(h, "head.bn", self.all), self.all)

    def forward_archs(self, x: torch.Tensor) -> torch.Tensor:
        """``x float[N, K, C, H, W]`` (per-architecture inputs) or ``[N, C, H, W]`` -> ``[N, K, classes]``."""
        f = self.features(x).mean((3, 4))  # [N, K, C]
        y = torch.einsum("nkc,koc->nko", f, self.p("head.w")) + self.p("head.b")
        if self._observer is not None:
            self._observer.layer_out(self._layer_index["head.w"], y, self.all, lambda t: t)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_archs(x)

    # ------------------------------------------------------------------ subject interface
    @property
    def _layer_index(self) -> dict[str, int]:
        if not hasattr(self, "_li"):
            names = [n for n, kind, _, _ in self.plan if kind in ("conv", "linear_w")]
            self._li = {n: i for i, n in enumerate(names)}
        return self._li

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Conv and linear weights as ``(parameter [K, ...], archs int64[k'])``: the slices
        ``parameter[archs]`` are the architectures' own layers."""
        return [(self.p(n), a) for n, kind, _, a in self.plan if kind in ("conv", "linear_w")]

    @contextmanager
    def observe(self, observer):
        """Calls ``observer.relu(x [N, k, F], archs)`` on every ReLU input and
        ``observer.layer_out(layer, y, archs, split)`` on every conv/linear output meanwhile."""
        old, self._observer = self._observer, observer
        try:
            yield self
        finally:
            self._observer = old

    @contextmanager
    def batchnorm(self, enabled: bool):
        old, self.bn_on = self.bn_on, enabled
        try:
            yield self
        finally:
            self.bn_on = old

    def bn_log_scale(self) -> torch.Tensor:
        """``float64[K]``: sum over each architecture's BN layers of log sqrt(mean running var)."""
        out = torch.zeros(self.archs, dtype=torch.float64)
        for name, archs in self.bns:
            rv = self._sel(getattr(self, self._key(name) + "_var"), archs).double().cpu()
            out.index_add_(0, archs, torch.log(torch.sqrt(rv.mean(1))))
        return out

    @torch.no_grad()
    def gaussian_init_(self, seed: int = 0) -> None:
        """Zen-NAS's re-initialisation: conv and linear weights N(0, 1) drawn per architecture
        (from its own seed, in plan order), linear bias 0, BN weight 1, bias 0."""
        for name, kind, _, _ in self.plan:
            if kind == "bn_w":
                self.p(name).fill_(1.0)
            elif kind not in ("conv", "linear_w"):
                self.p(name).zero_()
        for k, arch in enumerate(self.arch_list):
            g = torch.Generator().manual_seed(arch_seed(seed, arch) + 7)
            for name, kind, shape, archs in self.plan:
                if kind in ("conv", "linear_w") and (archs.numel() == self.archs or bool((archs == k).any())):
                    self.p(name)[k].copy_(torch.randn(shape, generator=g))

    def param_counts(self) -> torch.Tensor:
        """``int64[K]``: each architecture's parameter count (the plain module's)."""
        out = torch.zeros(self.archs, dtype=torch.int64, device="cpu")
        for _, _, shape, archs in self.plan:
            n = 1
            for s in shape:
                n *= s
            out.index_add_(0, archs, torch.full((archs.numel(),), n, dtype=torch.int64, device="cpu"))
        return out

    def flops(self, input_shape: Sequence[int]) -> torch.Tensor:
        """``float64[K]``: each architecture's FLOPs for one input of ``input_shape`` (C, H, W),
        counted as ``measures.size.count_flops`` counts the plain module: conv and linear
        multiply-accumulates, 2 per affine-BN element, 1 per ReLU element, kernel area x outputs
        per pooling, the global pool's input."""
        _, H, W = (int(v) for v in input_shape[-3:])
        out = torch.zeros(self.archs, dtype=torch.float64, device="cpu")
        hw = H * W
        c = self.plan[0][2][0]
        cin = self.in_channels
        out += c * hw * cin * 9 + 2 * c * hw  # stem conv + BN
        for blk in self.blocks:
            if blk[0] == "res":
                h2 = hw // 4
                out += c * hw  # ReLU before conv_a
                out += 2 * c * h2 * c * 9 + 2 * 2 * c * h2  # conv_a + BN
                out += 2 * c * h2 + 2 * c * h2 * 2 * c * 9 + 2 * 2 * c * h2  # ReLU, conv_b, BN
                out += 4 * c * h2 + 2 * c * h2 * c  # avgpool 2x2, 1x1 conv
                c, hw = 2 * c, h2
            else:
                for e in range(6):
                    for op, k2 in ((CONV3, 9), (CONV1, 1)):
                        a = self.edge_archs[e][op]
                        out.index_add_(0, a, torch.full((a.numel(),), float(c * hw + c * hw * c * k2 + 2 * c * hw),
                                                        dtype=torch.float64, device="cpu"))
                    a = self.edge_archs[e][AVG]
                    out.index_add_(0, a, torch.full((a.numel(),), float(9 * c * hw), dtype=torch.float64, device="cpu"))
        out += 2 * c * hw + c * hw + c * hw + c * self.num_classes  # head BN, ReLU, global pool, linear
        return out
