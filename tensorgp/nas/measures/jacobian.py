"""Input-Jacobian proxies and NWOT, from one forward/backward pass per batch:

* ``jacov`` (Mellor et al., NASLib's variant): J the per-sample gradient of the summed outputs
  with respect to the input; the eigenvalues v of corrcoef(J) give -sum(log(v + k) + 1/(v + k)),
  k = 1e-5;
* ``epe_nas``: per class c, s_c = sum of log(|corrcoef(J_c)| + k); the score is sum_c |s_c|
  (100 classes or fewer) or the mean over class pairs of |s_c - s_c'| (more);
* ``nwot``: log|det| of sum over ReLUs of (c c^T + (1-c)(1-c)^T), c the binary codes of the
  ReLU inputs of each sample.
"""
from __future__ import annotations

from typing import Sequence

import torch

_K = 1e-5


def _corrcoef(j: torch.Tensor) -> torch.Tensor:
    """``[K, n, D] -> [K, n, n]`` row correlation (numpy's corrcoef, batched; float64)."""
    c = j - j.mean(2, keepdim=True)
    cov = c @ c.transpose(1, 2)
    d = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
    return (cov / d[:, :, None] / d[:, None, :]).clamp(-1, 1)


def jacov_score(jac: torch.Tensor) -> torch.Tensor:
    """``jac float[K, N, D] -> float64[K]``."""
    v = torch.linalg.eigvalsh(_corrcoef(jac.double()))
    return -(torch.log(v + _K) + 1.0 / (v + _K)).sum(1)


def epe_score(jac: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``jac float[K, N, D]``, ``labels int64[N]`` -> ``float64[K]``."""
    j = jac.double()
    per = []
    for c in torch.unique(labels).tolist():
        rows = j[:, labels == c]
        if n_classes > 100 and rows.shape[1] < 2:  # NASLib's per-class mean fails there: the class is skipped
            continue
        s = torch.log(_corrcoef(rows).abs() + _K).flatten(1).sum(1)
        if n_classes > 100:
            s = s / rows.shape[1]
        per.append(s)
    if not per:
        raise ValueError("epe_nas needs a class with at least 2 samples in the batch")
    s = torch.stack(per, 1)  # [K, classes present]
    if n_classes <= 100:
        return s.abs().sum(1)
    return (s[:, :, None] - s[:, None, :]).abs().sum((1, 2)) / s.shape[1]


class _CodeObserver:
    def __init__(self, K: int, N: int, device) -> None:
        self.kernel = torch.zeros(K, N, N, dtype=torch.float64, device=device)

    def relu(self, x: torch.Tensor, archs: torch.Tensor) -> None:
        c = (x.detach() > 0).float().transpose(0, 1)  # [k, N, F]
        km = c @ c.transpose(1, 2) + (1 - c) @ (1 - c).transpose(1, 2)
        self.kernel.index_add_(0, archs.to(self.kernel.device), km.double())

    def layer_out(self, *a) -> None:
        pass


def jacobian_pass(subject, inputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> dict:
    """``{name: float64[K]}`` for the requested ones of jacov, epe_nas, nwot. Where the output does
    not depend on the input (a cell whose output node has only ``none`` inputs) jacov and epe_nas
    are undefined: they are left out, with the reason under ``"_why"``, and nwot is still given."""
    K, N = subject.archs, inputs.shape[0]
    want_jac = "jacov" in names or "epe_nas" in names
    obs = _CodeObserver(K, N, inputs.device) if "nwot" in names else None
    x = inputs.unsqueeze(1).expand(-1, K, *inputs.shape[1:]).clone().requires_grad_(want_jac)
    with torch.set_grad_enabled(want_jac):
        if obs is not None:
            with subject.observe(obs):
                out = subject.forward_archs(x)
        else:
            out = subject.forward_archs(x)
    res: dict[str, torch.Tensor] = {}
    (jx,) = torch.autograd.grad(out.sum(), x, allow_unused=True) if want_jac else (None,)
    if want_jac and jx is None:
        why = "the output does not depend on the input (no path from it), so the Jacobian is undefined"
        res["_why"] = {n: why for n in ("jacov", "epe_nas") if n in names}
    elif want_jac:
        jac = jx.transpose(0, 1).reshape(K, N, -1)
        if "jacov" in names:
            res["jacov"] = jacov_score(jac)
        if "epe_nas" in names:
            lab = targets.argmax(1) if targets.dim() == 2 else targets
            res["epe_nas"] = epe_score(jac, lab, out.shape[-1])
    if obs is not None:
        res["nwot"] = torch.linalg.slogdet(obs.kernel)[1]
    return res
