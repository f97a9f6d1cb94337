"""Pruning negligible weighted terms: simpler models at (almost) the same loss.

LM with weighted leaves (``leaf_weights``) leaves coefficients it could not drive to exactly 0
or 1: ``1e-7 * x0`` (a term that does nothing) or ``0.988 * x1`` fitted to the noise where the
truth has ``x1``. Both cost readability and exact recovery. For every coefficient term
``mul(c, t)`` / ``mul(t, c)`` of a program, ``candidates`` proposes two edits: drop the term
(``t`` becomes 0, propagated through ``+ - * /``) and unweight it (``c * t`` becomes ``t``);
every other constant may be set to 0 as well (offsets such as ``2e-6 + x``, or the pair
``2.5 + ... - 2.5`` that linear scaling makes redundant).
The regressor re-fits the remaining constants of every candidate with LM and keeps, greedily,
the best edit whose loss is within a small relative tolerance of the original program's loss
(``accept``), until no edit is acceptable.

Programs are ``engine.expression.Node`` trees here; the population form is rebuilt with
``to_population``.
"""
from __future__ import annotations

import torch

from ..engine import expression as E
from ..engine.population import Population
from ..engine.primitives import CONST, OPCODE

_ZERO = E.Node(CONST, 0.0)


def _is_zero(n: E.Node) -> bool:
    return n.op == CONST and n.value == 0.0


def _drop_zeros(node: E.Node) -> E.Node | None:
    """``node`` with a 0 propagated through add, sub, mul and div (``0 - t`` becomes ``-1 * t``,
    ``0 - c * u`` becomes ``(-c) * u``);
    None when the whole program becomes 0. Unary functions of a constant are folded by
    ``E.simplify`` afterwards."""
    kids = tuple(_drop_zeros(c) for c in node.children)
    if not kids:
        return node
    kids = tuple(_ZERO if k is None else k for k in kids)
    op = node.op
    if op == OPCODE.get("mul") and (_is_zero(kids[0]) or _is_zero(kids[1])):
        return None
    if op == OPCODE.get("div") and _is_zero(kids[0]):
        return None
    if op == OPCODE.get("add"):
        if _is_zero(kids[0]):
            return kids[1]
        if _is_zero(kids[1]):
            return kids[0]
    if op == OPCODE.get("sub"):
        if _is_zero(kids[1]):
            return kids[0]
        if _is_zero(kids[0]):
            t = kids[1]
            if t.op == OPCODE.get("mul") and t.children[0].op == CONST:  # 0 - c u -> (-c) u
                return E.Node(t.op, 0.0, (E.Node(CONST, -t.children[0].value), t.children[1]))
            return E.Node(OPCODE["mul"], 0.0, (E.Node(CONST, -1.0), t))
    return E.Node(op, node.value, kids)


def _paths(node: E.Node, path: tuple[int, ...] = ()):
    yield path, node
    for i, c in enumerate(node.children):
        yield from _paths(c, path + (i,))


def _replace(node: E.Node, path: tuple[int, ...], new: E.Node) -> E.Node:
    if not path:
        return new
    kids = list(node.children)
    kids[path[0]] = _replace(kids[path[0]], path[1:], new)
    return E.Node(node.op, node.value, tuple(kids))


def candidates(node: E.Node, unit_band: float = 0.1) -> list[E.Node]:
    """Every one-edit simplification of ``node``: each constant set to 0 (an offset removed; 0
    propagated); for each ``mul`` with a constant child c, the program without that term (0
    propagated; skipped when nothing is left) and, when c is
    within ``unit_band`` of 1, the program with the bare term (c removed). A weight far from 1
    is not a candidate for removal: the others would have to absorb its scale, which a local
    re-fit rarely finds and which leaves large, arbitrary constants where it does. Each
    candidate is simplified and distinct."""
    mul = OPCODE.get("mul")
    out: list[E.Node] = []
    seen = {node}
    for path, n in _paths(node):
        edits = []
        if n.op == CONST and path:  # an offset (or any other constant) set to 0
            edits.append(_drop_zeros(_replace(node, path, _ZERO)))
        if n.op == mul and any(c.op == CONST for c in n.children):
            k = 0 if n.children[0].op == CONST else 1
            term, c0 = n.children[1 - k], n.children[k].value
            edits.append(_drop_zeros(_replace(node, path, _ZERO)))
            if abs(c0 - 1.0) <= unit_band:
                edits.append(_replace(node, path, term))
        for c in edits:
            if c is None:
                continue
            c = E.simplify(c)
            if c.op == CONST or c in seen:  # a constant model is not a pruned model
                continue
            seen.add(c)
            out.append(c)
    return out


def accept(loss: torch.Tensor, reference: float, rtol: float, atol: float) -> torch.Tensor:
    """``bool[K]``: candidate losses within ``rtol`` (relative) plus ``atol`` of ``reference``."""
    return torch.isfinite(loss) & (loss <= reference * (1.0 + rtol) + atol)


def to_population(nodes: list[E.Node], device: torch.device | str = "cpu") -> Population:
    """Postfix ``Population`` of ``nodes`` (at least one; padded to the longest)."""
    return Population.from_rows([E.to_postfix(n) for n in nodes], device)
