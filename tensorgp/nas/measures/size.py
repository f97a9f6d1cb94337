"""Size proxies: ``params`` and ``flops`` (millions, as the Suite-Zero tables) and ``l2_norm``."""
from __future__ import annotations

import torch
from torch import nn

from .slices import layer_slice, per_arch


def count_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of ``model(x)`` for one input (``x`` has batch 1), counted per module as the
    Suite-Zero tables' counter does (NASLib's model statistics): conv and linear
    multiply-accumulates, 2 per element of an affine BatchNorm (1 if not affine), 1 per ReLU
    element, kernel area x outputs per Avg/MaxPool2d, inputs of an adaptive pool. On
    NAS-Bench-201 this is the table's value minus 1,088 FLOPs for every architecture (a
    constant of the reference counter on that skeleton's head; checked on all 9,445)."""
    total = [0.0]

    def hook(m, inp, out):
        i = inp[0]
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total[0] += out.numel() * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total[0] += i.numel() // i.shape[-1] * m.in_features * m.out_features
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            total[0] += out.numel() * (2 if m.affine else 1)
        elif isinstance(m, nn.ReLU):
            total[0] += out.numel()
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            k = m.kernel_size
            ks = k * k if isinstance(k, int) else k[0] * k[1]
            total[0] += out.numel() * ks
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            total[0] += i.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def params(subject, **_) -> torch.Tensor:
    """``float64[K]``: parameters in millions."""
    return subject.param_counts().double() / 1e6


def flops(subject, inputs: torch.Tensor, **_) -> torch.Tensor:
    """``float64[K]``: MFLOPs for one input of the batch's shape."""
    return subject.flops(tuple(inputs.shape[1:])) / 1e6


def l2_norm(subject, **_) -> torch.Tensor:
    """``float64[K]``: sum over conv/linear layers of the weight's L2 norm."""
    vals = [(layer_slice(w.detach(), a).flatten(1).norm(dim=1), a) for w, a in subject.layers()]
    return per_arch(vals, subject.archs, vals[0][0].device)
