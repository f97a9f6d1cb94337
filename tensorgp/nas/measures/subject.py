"""What the proxies measure: a *subject*, K >= 1 architectures evaluated together.

A subject has ``archs`` (K) and the methods the measures call:
``forward_archs(x [N, K, C, H, W] or [N, C, H, W]) -> [N, K, classes]``, ``features`` (the input
of global pooling, ``[N, K, ...]``), ``layers()`` (conv/linear weights as ``(parameter [K?, ...],
archs)``: ``parameter[archs]`` or, for a plain module, ``parameter[None]`` are per-architecture
slices), ``observe(observer)``, ``batchnorm(enabled)``, ``bn_log_scale() -> float64[K]``,
``gaussian_init_()``, ``param_counts() -> int64[K]``, ``flops(input_shape) -> float64[K]``,
``state_dict``/``load_state_dict`` and ``to``. ``spaces.nb201_packed.PackedNB201`` is the
batched one; ``ModuleSubject`` adapts any ``torch.nn.Module`` (K = 1).
"""
from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn

from .size import count_flops


class MeasureError(ValueError):
    """Input the proxies cannot use: the message names the model, the batch or the proxy."""


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _identity(self, x):
    return x


class ModuleSubject:
    """A plain ``nn.Module`` (``forward: [N, ...] -> [N, classes]``) as a K = 1 subject. Layers
    are its ``nn.Conv2d``/``nn.Linear`` modules (as NASLib's measures), ReLUs its ``nn.ReLU``
    modules, features the input of its last ``nn.AdaptiveAvgPool2d``."""

    archs = 1

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise MeasureError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if not self.weighted:
            raise MeasureError(f"model {type(model).__name__} has no Conv2d or Linear layer: the zero-cost proxies "
                               f"measure those layers' weights")
        self.all = torch.zeros(1, dtype=torch.int64)

    def __getattr__(self, name):  # state_dict, load_state_dict, parameters, train, ...
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def to(self, *a, **kw) -> "ModuleSubject":
        self.model.to(*a, **kw)
        return self

    def forward_archs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 2 and x.shape[1] == 1 and x.dim() == 5:
            x = x[:, 0]
        y = self.model(x)
        if not isinstance(y, torch.Tensor):
            raise MeasureError(f"model {type(self.model).__name__} returned {type(y).__name__}, not a tensor")
        return y.reshape(y.shape[0], 1, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pools = [m for m in self.model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if not pools:
            raise MeasureError(f"model {type(self.model).__name__} has no AdaptiveAvgPool2d: zen measures the "
                               f"features entering global pooling")
        got = []
        h = pools[-1].register_forward_hook(lambda m, i, o: got.append(i[0]))
        try:
            self.forward_archs(x)
        finally:
            h.remove()
        return got[-1].unsqueeze(1)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(m.weight, None) for m in self.weighted]

    @contextmanager
    def observe(self, observer):
        hooks = []
        for m in self.model.modules():
            if isinstance(m, nn.ReLU):
                hooks.append(m.register_forward_hook(
                    lambda mod, i, o: observer.relu(i[0].reshape(i[0].shape[0], 1, -1), self.all)))
        for j, m in enumerate(self.weighted):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, j=j: observer.layer_out(j, o, self.all, lambda t: t.unsqueeze(1))))
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()

    @contextmanager
    def batchnorm(self, enabled: bool):
        bns = [] if enabled else [m for m in self.model.modules() if isinstance(m, _BN)]
        for m in bns:
            m.forward = types.MethodType(_identity, m)
        try:
            yield self
        finally:
            for m in bns:
                del m.forward

    def bn_log_scale(self) -> torch.Tensor:
        s = torch.zeros(1, dtype=torch.float64)
        for m in self.model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
                s += torch.log(torch.sqrt(m.running_var.double().mean()))
        return s

    @torch.no_grad()
    def gaussian_init_(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(int(seed))
        for m in self.model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()

    def param_counts(self) -> torch.Tensor:
        return torch.tensor([sum(p.numel() for p in self.model.parameters())], dtype=torch.int64)

    def flops(self, input_shape: Sequence[int]) -> torch.Tensor:
        p = next(self.model.parameters(), None)
        x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None else torch.float32)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()  # a one-sample probe: train-mode BatchNorm1d refuses it (and would move statistics)
        try:
            return torch.tensor([count_flops(self.model, x)], dtype=torch.float64)
        finally:
            for m, t in modes.items():
                m.train(t)


def as_subject(model):
    """A subject as is (it has ``forward_archs``), a plain module wrapped in ``ModuleSubject``."""
    return model if hasattr(model, "forward_archs") else ModuleSubject(model)
