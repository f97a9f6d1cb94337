"""Per-architecture slices of layer tensors and per-architecture sums (shared by the measures)."""
from __future__ import annotations

from typing import Sequence

import torch


def layer_slice(t: torch.Tensor, archs: torch.Tensor | None) -> torch.Tensor:
    """``[k', ...]``: per-architecture slices of a layer tensor (a weight or its gradient)."""
    if archs is None:
        return t.unsqueeze(0)
    # archs are sorted and distinct (subjects build them so): all of them is the whole tensor
    return t if archs.numel() == t.shape[0] else t.index_select(0, archs.to(t.device))


def per_arch(values: Sequence[tuple[torch.Tensor, torch.Tensor | None]], K: int, device) -> torch.Tensor:
    """``float64[K]``: per-layer ``(value [k'], archs)`` summed per architecture."""
    out = torch.zeros(K, dtype=torch.float64, device=device)
    for v, archs in values:
        idx = torch.zeros(1, dtype=torch.int64, device=device) if archs is None else archs.to(device)
        out.index_add_(0, idx, v.double())
    return out
