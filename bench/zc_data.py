"""A real-image batch for the live-proxy benchmarks: scikit-learn's digits (8x8 grey, 10
classes) upsampled to 32x32 and repeated over 3 channels, standardised. CIFAR-10 cannot be
downloaded on these machines; the data-dependent proxies' values therefore differ from the
tables', which used CIFAR-10."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def digits_batch(n: int = 16, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(float32[n, 3, size, size], int64[n])``: ``n`` digits drawn with ``seed``, classes balanced."""
    from sklearn.datasets import load_digits  # the bench extra

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None]  # [1797, 1, 8, 8]
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    per = [torch.nonzero(y == c).squeeze(1) for c in range(10)]
    pick = torch.cat([p[torch.randperm(len(p), generator=g)[: (n + 9) // 10]] for p in per])
    pick = pick[torch.randperm(len(pick), generator=g)][:n]
    xb = F.interpolate(x[pick], size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    xb = (xb - xb.mean()) / xb.std()
    return xb, y[pick]
