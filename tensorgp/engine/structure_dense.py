"""Subtree spans, depths and heights in a fixed number of tensor operations (the device path).

``population.structure`` walks positions (2L steps, or a compiled loop on the CPU); here every
query is one masked reduction over ``[P, L, L]`` pairs of positions, so the number of launches
depends neither on P nor on the programs, and nothing waits for the host. With ``E`` the stack
height before each node and ``C`` the one after it (prefix sums of ``1 - arity``):

* ``start[i]`` = the last ``j <= i`` with ``E[j] <= C[i] - 1`` (going back from i the height
  drops by at most one per node, so the first such j closes the subtree rooted at i);
* ``depth[i]`` = the nodes ``j > i`` whose subtree holds i (``start[j] <= i``);
* ``height[i]`` = the deepest node of ``start[i] .. i``, minus ``depth[i]``.

On CUDA the Triton kernel ``tensorgp.kernels.structure_kernel`` computes the same per row with
the ``[L, L]`` tile in registers; the torch form is its reference and the CPU device path.
"""
from __future__ import annotations

import torch

from .population import Structure, arity_of

# torch form: rows per chunk keep the [rows, L, L] masks within this many elements (int16 and
# bool, ~1 GB at most); chunks only appear past 65,536 rows of 64 nodes (the op count is flat below)
CHUNK_ELEMENTS = 1 << 28


def structure_dense(ops: torch.Tensor, length: torch.Tensor, backend: str = "auto") -> Structure:
    """``Structure`` of ``ops: int32[P, L]`` at full width L (``int64[P, L]`` each; past
    ``length``: start = position, depth = height = 0). ``backend``: auto | torch | triton
    (auto: triton on CUDA when it imports)."""
    return Structure(*structure_table(ops, length, backend).unbind(-1))


def structure_table(ops: torch.Tensor, length: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``int64[P, L, 3]``: start, depth and height of every node (see ``structure_dense``), as
    one tensor so that picking rows of all three is one gather."""
    if backend == "auto":
        backend = "triton" if ops.device.type == "cuda" and ops.shape[1] <= 1024 and _triton_ok() else "torch"
    if backend == "triton":
        from ..kernels.structure_kernel import structure_triton

        return structure_triton(ops, length)
    P, L = ops.shape
    step = max(1, CHUNK_ELEMENTS // max(1, L * L))
    if P <= step:
        return structure_dense_torch(ops, length)
    return torch.cat([structure_dense_torch(ops[a:a + step], length[a:a + step]) for a in range(0, P, step)])


def _triton_ok() -> bool:
    try:
        from ..kernels import structure_kernel  # noqa: F401
    except Exception:
        return False
    return True


def structure_dense_torch(ops: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``int64[P, L, 3]`` (start, depth, height) by masked reductions over ``[P, L, L]``."""
    P, L = ops.shape
    dev = ops.device
    pos = torch.arange(L, device=dev, dtype=torch.int16 if L < 2**15 else torch.int32)
    valid = pos[None, :] < length[:, None]
    eff = torch.where(valid, 1 - arity_of(ops), 0).to(torch.int16)
    after = eff.cumsum(1, dtype=torch.int16)  # C: stack height after each node
    before = after - eff  # E
    i_, j_ = pos[:, None], pos[None, :]  # [L(i), 1], [1, L(j)]
    lower = j_ <= i_
    # start: last j <= i with E[j] <= C[i] - 1
    m = (before[:, None, :] < after[:, :, None]) & lower
    start = torch.where(m, j_, -1).amax(-1)
    start = torch.where(valid, start, pos)
    # depth: subtrees of later nodes j that hold i
    m = (start[:, None, :] <= i_) & ~lower & valid[:, None, :]
    depth = m.sum(-1, dtype=torch.int16)
    # height: deepest node of the span start[i] .. i
    m = (j_ >= start[:, :, None]) & lower
    height = torch.where(m, depth[:, None, :], 0).amax(-1) - depth
    height = torch.where(valid, height, 0)
    return torch.stack([start, depth, height], -1).long()
