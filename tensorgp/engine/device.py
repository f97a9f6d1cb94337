"""Which torch device a user may ask for: one this machine has, or a clear error before any work."""
from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices usable here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(spec: str | torch.device) -> torch.device:
    """``spec`` as a torch device this machine can compute on, else ``ValueError`` naming it and
    the available devices (torch itself fails late, with an assertion, on a missing CUDA)."""
    have = available_devices()
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {str(spec)!r} ({e}); available: {', '.join(have)}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(spec)!r} requested but torch sees no CUDA device "
                             f"(torch {torch.__version__}); available: {', '.join(have)}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(spec)!r} requested but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s); available: {', '.join(have)}")
        return dev
    if dev.type == "mps" and "mps" in have:
        return dev
    raise ValueError(f"device {str(spec)!r} is not available for computation here; available: {', '.join(have)}")
