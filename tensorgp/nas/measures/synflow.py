"""``synflow`` (Tanaka et al. 2020; NASLib's variant): BatchNorm off, float64, every parameter
replaced by its absolute value, an all-ones input of one sample, R = sum of the outputs; the
score is sum over conv/linear layers of |W * dR/dW|, stored as log(score) like the Suite-Zero
tables (-log(-s) for a negative s, 0 stays 0)."""
from __future__ import annotations

import torch

from .slices import layer_slice, per_arch


def synflow(subject, inputs: torch.Tensor, **_) -> torch.Tensor:
    """``float64[K]``; changes the subject's parameters and dtype (the caller restores them)."""
    subject.to(torch.float64)
    with torch.no_grad():
        for t in subject.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    layers = subject.layers()
    params = [w for w, _ in layers]
    x = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
    with subject.batchnorm(False):
        out = subject.forward_archs(x)
    gs = torch.autograd.grad(out.sum(), params, allow_unused=True)
    vals = [((layer_slice(w.detach(), a) * layer_slice(g, a)).abs().flatten(1).sum(1), a)
            for (w, a), g in zip(layers, gs) if g is not None]
    s = per_arch(vals, subject.archs, inputs.device)
    return torch.where(s > 0, torch.log(s.clamp(min=1e-300)), torch.where(s < 0, -torch.log((-s).clamp(min=1e-300)), s))
