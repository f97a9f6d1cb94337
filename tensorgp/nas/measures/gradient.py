"""Loss-gradient proxies (NASLib / Abdelfattah et al. 2021 definitions), per architecture:

* ``grad_norm``: sum over conv/linear layers of ||dL/dW||_2;
* ``snip``: sum of |W * dL/dW|;  ``plain``: sum of W * dL/dW;
* ``fisher``: per output channel 0.5 * mean over the batch of (sum over space of activation x
  dL/dactivation)^2, broadcast to the channel's weights (times the layer's fan-in) and summed;
* ``grasp``: sum of -W * (H g), H the Hessian of the loss, g its gradient.

One forward and backward pass gives the first four; grasp adds one double-backward pass (its
two gradient passes on the same batch give the same gradient in train mode, so one is reused).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .slices import layer_slice, per_arch


def total_loss(out: torch.Tensor, targets: torch.Tensor, loss: Callable | None) -> torch.Tensor:
    """Sum over architectures of each one's loss (``out [N, K, classes]``): the architectures are
    independent, so one backward pass gives every architecture its own gradient."""
    if loss is None:
        K = out.shape[1]
        # class labels [N], or class distributions [N, classes] (cross-entropy takes both)
        t = targets[:, None].expand(-1, K) if targets.dim() == 1 else targets[:, :, None].expand(-1, -1, K)
        return F.cross_entropy(out.permute(0, 2, 1), t, reduction="none").mean(0).sum()
    return sum(loss(out[:, k], targets) for k in range(out.shape[1]))


class _FisherObserver:
    def __init__(self, layers, K: int) -> None:
        self.layers, self.K = layers, K
        self.values: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def relu(self, x, archs) -> None:
        pass

    def layer_out(self, j: int, y: torch.Tensor, archs, split) -> None:
        if not y.requires_grad:
            return
        act = y.detach()
        w, a = self.layers[j]
        fan_in = layer_slice(w, a)[0, 0].numel()

        def hook(g, act=act, a=a, fan_in=fan_in, split=split):
            # detached: with create_graph (grasp) g carries a graph that would hold this hook (a leak)
            ag = split(act) * split(g.detach())  # [N, k, C, ...]
            g_nk = ag.flatten(3).sum(3) if ag.dim() > 3 else ag
            self.values.append((0.5 * g_nk.double().pow(2).mean(0).abs().sum(1) * fan_in, a))

        y.register_hook(hook)


def _grads(params, loss, **kw):
    gs = torch.autograd.grad(loss, params, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def gradient_pass(subject, inputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str],
                  loss: Callable | None = None) -> dict[str, torch.Tensor]:
    """``{name: float64[K]}`` for the requested ones of grad_norm, snip, plain, fisher, grasp."""
    layers = subject.layers()
    params = [w for w, _ in layers]
    K = subject.archs
    obs = _FisherObserver(layers, K)
    if "fisher" in names:
        with subject.observe(obs):
            out = subject.forward_archs(inputs)
    else:
        out = subject.forward_archs(inputs)
    need_graph = "grasp" in names
    g = _grads(params, total_loss(out, targets, loss), create_graph=need_graph)
    res: dict[str, torch.Tensor] = {}
    dev = params[0].device
    ws = [layer_slice(w.detach(), a) for w, a in layers]
    gs = [layer_slice(x.detach(), a) for x, (_, a) in zip(g, layers)]
    archs = [a for _, a in layers]
    if "grad_norm" in names:
        res["grad_norm"] = per_arch([(x.flatten(1).double().norm(dim=1), a) for x, a in zip(gs, archs)], K, dev)
    if "snip" in names:
        res["snip"] = per_arch([((w * x).abs().flatten(1).double().sum(1), a) for w, x, a in zip(ws, gs, archs)], K, dev)
    if "plain" in names:
        res["plain"] = per_arch([((w * x).flatten(1).double().sum(1), a) for w, x, a in zip(ws, gs, archs)], K, dev)
    if "fisher" in names:
        res["fisher"] = per_arch(obs.values, K, dev)
    if need_graph:
        z = sum((x.detach() * y).sum() for x, y in zip(g, g) if y.requires_grad)
        hg = _grads(params, z) if isinstance(z, torch.Tensor) else [torch.zeros_like(p) for p in params]
        res["grasp"] = per_arch([((-w * layer_slice(h, a)).flatten(1).double().sum(1), a)
                                 for w, h, a in zip(ws, hg, archs)], K, dev)
    return res
