"""Triton fast paths (CUDA; CPU only under TRITON_INTERPRET=1, for tests). Installed as ``tensorgp.kernels``.

    eval_kernel.evaluate_triton(ops, consts, length, X)   -> float32[P, N]   program evaluation
    kendall_kernel.kendall_tau_b_triton(pred, target, offsets) -> float32[P, T]   per-task Kendall tau-b (all pairs)
    rank_kernel.wavelet_sums_triton(s, nz_m1, bits) -> int64[P, T]   Kendall's discordant pairs, fused passes

Submodules are imported on first use, so importing this package does not import triton.
"""
from __future__ import annotations

import importlib

__all__ = ["evaluate_triton", "kendall_tau_b_triton"]
_WHERE = {"evaluate_triton": "eval_kernel", "kendall_tau_b_triton": "kendall_kernel"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
