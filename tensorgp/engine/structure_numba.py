"""CPU fast path for ``population.structure``: one compiled pass per program instead of 2L
batched tensor steps (variation calls it on every generation's parents)."""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except Exception:  # numba is optional; population.structure falls back to torch
    numba = None


def available() -> bool:
    return numba is not None


if numba is not None:

    @numba.njit(cache=True, nogil=True)  # serial: ~L steps per program, threads cost more
    def _structure(ops, length, arity, first_var, start, depth, height):  # pragma: no cover - compiled
        P, L = ops.shape
        for p in range(P):
            n = length[p]
            stack = np.empty(L + 1, dtype=np.int64)  # positions of the nodes on the stack
            parent = np.full(L, -1, dtype=np.int64)
            sp = 0
            for t in range(n):
                op = ops[p, t]
                a = arity[op] if op < first_var else 0
                if a == 0:
                    start[p, t] = t
                    height[p, t] = 0
                else:
                    first = sp - a
                    start[p, t] = start[p, stack[first]]
                    h = 0
                    for j in range(a):
                        c = stack[first + j]
                        parent[c] = t
                        if height[p, c] + 1 > h:
                            h = height[p, c] + 1
                    height[p, t] = h
                    sp = first
                stack[sp] = t
                sp += 1
            for t in range(n - 1, -1, -1):
                depth[p, t] = 0 if parent[t] < 0 else depth[p, parent[t]] + 1
            for t in range(n, L):
                start[p, t] = t
                depth[p, t] = 0
                height[p, t] = 0


def structure_numba(ops: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(start, depth, height)``, each ``int64[P, L']`` (L' = longest program), for CPU tensors."""
    from .primitives import FIRST_VAR, arity_table

    P = ops.shape[0]
    L = int(length.max().item()) if P else 1
    o = np.ascontiguousarray(ops[:, :L].numpy())
    ln = length.numpy().astype(np.int64)
    start = np.empty((P, L), dtype=np.int64)
    depth = np.empty((P, L), dtype=np.int64)
    height = np.empty((P, L), dtype=np.int64)
    _structure(o, ln, arity_table().numpy().astype(np.int64), FIRST_VAR, start, depth, height)
    return torch.from_numpy(start), torch.from_numpy(depth), torch.from_numpy(height)
