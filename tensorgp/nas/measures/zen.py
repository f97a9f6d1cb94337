"""``zen`` (Zen-NAS, Lin et al. 2021; NASLib's variant): Gaussian re-initialisation (conv and
linear weights N(0, 1), BN weight 1 and bias 0), two Gaussian inputs x and x + 0.01 e of the
batch's shape; the score is log(mean over samples of sum |f(x) - f(x + 0.01 e)|), f the
features entering global pooling, plus sum over BN layers of log sqrt(mean running variance)
(after those two train-mode forward passes). Data-free: only the batch's shape is used."""
from __future__ import annotations

import torch


def zen(subject, inputs: torch.Tensor, seed: int = 0, **_) -> torch.Tensor:
    """``float64[K]``; re-initialises the subject (the caller restores it)."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    subject.gaussian_init_(seed=int(seed))
    x = torch.randn(inputs.shape, generator=g).to(inputs.device, inputs.dtype)
    e = torch.randn(inputs.shape, generator=g).to(inputs.device, inputs.dtype)
    with torch.no_grad():
        f1 = subject.features(x)
        f2 = subject.features(x + 0.01 * e)
        d = (f1 - f2).abs().flatten(2).sum(2).double().mean(0)  # [K]
    return torch.log(d) + subject.bn_log_scale().to(d.device)
