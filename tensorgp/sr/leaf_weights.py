"""Weighted leaves: a coefficient on every variable terminal, tuned by the constant optimiser.

Operon-style regression gives every variable leaf ``x`` a weight ``w * x``. Here the weight is
implicit while a program is stored: ``add_weights`` rewrites each variable leaf into the postfix
``CONST(1) VAR MUL`` (``mul(1, x)``, the same outputs), so Levenberg-Marquardt
(``constants.optimize_constants``) tunes the weights together with the program's own constants.
``drop_unit_weights`` then removes the weights that stayed at 1 (within a relative ``tol``), so
a weight is materialised only where the optimiser moved it; the caller keeps the weighted
program only if it is worth its extra nodes (the regressor compares selection fitness, loss
plus parsimony). This lets a structure like ``sin(y) + x^2`` reach ``sin(y) + 0.05 x^2`` without
evolution having to discover the constant, and gives LM something to tune in programs that have
no ephemeral constants at all. A leaf that already carries a coefficient (``c x *`` or
``x c *`` in postfix) gets no second one.

Shapes: ``ops: int32[K, L]``, ``consts: float32[K, L]``, ``length: int32[K]``; ``is_w: bool[K, L']``
marks the weight constants of the rewritten programs.
"""
from __future__ import annotations

import torch

from ..engine.population import Population
from ..engine.primitives import CONST, FIRST_VAR, OPCODE


def _valid(ops: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    return torch.arange(ops.shape[1], device=ops.device)[None, :] < length[:, None]


def add_weights(pop: Population) -> tuple[Population, torch.Tensor]:
    """Every variable leaf ``x`` of ``pop`` rewritten as ``mul(1, x)``: ``(weighted, is_w bool[K, L'])``
    with ``L' = max(length + 2 * #variables)``; the outputs are unchanged."""
    ops, consts, length = pop.ops, pop.consts, pop.length
    K, L = ops.shape
    dev = ops.device
    valid = _valid(ops, length)
    isv = (ops >= FIRST_VAR) & valid
    # a leaf that already has a coefficient (``c x *`` or ``x c *``) gets no second one
    mul, c = ops == OPCODE["mul"], ops == CONST
    had = torch.zeros_like(isv)
    had[:, 1:-1] |= c[:, :-2] & mul[:, 2:]
    had[:, :-2] |= c[:, 1:-1] & mul[:, 2:]
    isv &= ~had
    nv = isv.long().cumsum(1)
    pos = torch.arange(L, device=dev)[None, :] + 2 * (nv - isv.long())  # where each node lands
    new_len = (length.long() + 2 * isv.sum(1)).to(torch.int32)
    L2 = max(1, int(new_len.max())) if K else 1
    new_ops = torch.zeros(K, L2, dtype=ops.dtype, device=dev)
    new_c = torch.zeros(K, L2, dtype=consts.dtype, device=dev)
    is_w = torch.zeros(K, L2, dtype=torch.bool, device=dev)
    rows = torch.arange(K, device=dev)[:, None].expand(K, L)
    keep = valid & ~isv
    new_ops[rows[keep], pos[keep]] = ops[keep]
    new_c[rows[keep], pos[keep]] = consts[keep]
    r, p = rows[isv], pos[isv]
    new_ops[r, p] = CONST
    new_c[r, p] = 1.0
    is_w[r, p] = True
    new_ops[r, p + 1] = ops[isv]
    new_ops[r, p + 2] = OPCODE["mul"]
    return Population(new_ops, new_c, new_len), is_w


def drop_unit_weights(pop: Population, is_w: torch.Tensor, tol: float = 1e-4) -> Population:
    """``pop`` (as ``add_weights`` made it, constants tuned) without the weights within ``tol``
    (relative) of 1: their ``CONST`` and the ``MUL`` two places later are removed, leaving the
    bare variable. Rows are trimmed to the longest remaining program."""
    ops, consts, length = pop.ops, pop.consts, pop.length
    K, L = ops.shape
    unit = is_w & ((consts - 1).abs() <= tol)
    drop = unit.clone()
    drop[:, 2:] |= unit[:, :-2]  # the MUL of ``CONST VAR MUL``
    keep = _valid(ops, length) & ~drop
    pos = keep.long().cumsum(1) - 1
    new_len = keep.sum(1).to(torch.int32)
    L2 = max(1, int(new_len.max())) if K else 1
    new_ops = torch.zeros(K, L2, dtype=ops.dtype, device=ops.device)
    new_c = torch.zeros(K, L2, dtype=consts.dtype, device=ops.device)
    rows = torch.arange(K, device=ops.device)[:, None].expand(K, L)
    new_ops[rows[keep], pos[keep]] = ops[keep]
    new_c[rows[keep], pos[keep]] = consts[keep]
    return Population(new_ops, new_c, new_len)
