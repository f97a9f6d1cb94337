"""Smaller formulas: rewrites that keep a formula's *ranking* of inputs, and the smaller trees
(subtrees, prunings) a search for a compact formula starts from.

A ranking is all a rank-correlation fitness sees, so beyond ``expression.simplify`` (which keeps
every value bit for bit) two kinds of rewrite are sound here:

* inside the tree, rewrites that keep every value bit for bit: ``x + x -> 2 * x`` (exact in
  floating point) besides ``expression.simplify``'s;
* at the root, ``inv(inv(x)) -> x`` where no value of ``x`` falls in the protected band
  ``0 < |x| <= EPS`` nor beyond ``1 / EPS`` (the protected ``inv`` maps those to 0; elsewhere
  ``1/(1/x)`` is ``x`` up to rounding, which inside a tree could reorder near-equal values), and
  dropping a wrapper that is strictly increasing on its argument's (finite) range, and stays
  so in float32: ``tanh`` (|argument| < 8, where float32 tanh still separates values), ``exp``
  (argument in (-87, EXP_MAX]: no clamp, no underflow), ``sqrt``/``abs`` of a non-negative
  argument, ``square`` of one below 1e19 (no overflow; values below ~1e-22 underflow, the
  rounding caveat below), ``log`` of
  an argument above EPS, ``+ c``/``- c`` with ``|c|`` at most 16 times the argument's magnitude
  (a larger constant swallows the argument's differences), ``c * x`` and ``x / c`` with ``c`` in
  [EPS, 1/EPS].

Ranges come from interval arithmetic over ``var_bounds`` (per variable ``(lo, hi, gap)``, where
``gap`` says no value lies in ``0 < |x| <= EPS``: true of rank quantiles, which are 0 or at least
1/(2(n-1))). NaN passes through every rewrite as it passes through the operators, so a failed
input still ranks last. Floating-point rounding can tie two inputs a wrapper's mathematics keeps
apart; callers that must be exact re-score (``nas.pareto`` does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from .expression import Node, simplify
from .primitives import CONST, EPS, EXP_MAX, FIRST_VAR, OPCODE, function

INF = math.inf
FINITE = 1e30  # a range inside +-FINITE cannot reach float32 overflow
TANH_DISTINCT = 8.0  # float32 tanh is 1.0 (ties) for arguments above ~9
EXP_NORMAL = -87.0  # float32 exp leaves the normal range (then 0) below ~-87
SQUARE_MAX = 1e19  # float32 square overflows above ~1.8e19
SHIFT_RATIO = 16.0  # x + c with |c| <= 16 max|x| moves x's spacing by at most a few ulps
SCALE_MIN, SCALE_MAX = EPS, 1.0 / EPS


@dataclass(frozen=True)
class Range:
    """Values of a subtree lie in ``[lo, hi]`` (NaN aside); ``gap``: none in ``0 < |x| <= EPS``."""

    lo: float = -INF
    hi: float = INF
    gap: bool = False


UNKNOWN = Range()
UNIT_RANK = Range(0.0, 1.0, True)  # per-task rank quantiles


def _safe(f, *a) -> float:
    try:
        v = f(*a)
    except (OverflowError, ValueError, ZeroDivisionError):
        return INF
    return INF if math.isnan(v) else v


def _span(vals: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in vals if not math.isnan(v)]
    return (min(vals), max(vals)) if vals else (-INF, INF)


def value_range(node: Node, var_bounds: Sequence[Range]) -> Range:
    """Interval of the tree's values given each variable's ``Range`` (conservative)."""
    if node.op == CONST:
        v = node.value
        return Range(v, v, v == 0.0 or abs(v) > EPS) if math.isfinite(v) else UNKNOWN
    if node.op >= FIRST_VAR:
        i = node.op - FIRST_VAR
        return var_bounds[i] if i < len(var_bounds) else UNKNOWN
    name = function(node.op).name
    rs = [value_range(c, var_bounds) for c in node.children]
    a = rs[0]
    if name in ("add", "sub", "mul", "div", "min", "max"):
        b = rs[1]
        if name == "add":
            return Range(a.lo + b.lo, a.hi + b.hi) if all(map(math.isfinite, (a.lo, b.lo, a.hi, b.hi))) else UNKNOWN
        if name == "sub":
            return Range(a.lo - b.hi, a.hi - b.lo) if all(map(math.isfinite, (a.lo, b.lo, a.hi, b.hi))) else UNKNOWN
        if name == "mul":
            if not all(map(math.isfinite, (a.lo, b.lo, a.hi, b.hi))):
                return UNKNOWN
            return Range(*_span([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]))
        if name == "div":  # protected: 1 where |b| <= EPS
            if b.lo > EPS or b.hi < -EPS:
                if not all(map(math.isfinite, (a.lo, a.hi, b.lo, b.hi))):
                    return UNKNOWN
                return Range(*_span([a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi]))
            return UNKNOWN
        lo = min(a.lo, b.lo) if name == "min" else max(a.lo, b.lo)
        hi = min(a.hi, b.hi) if name == "min" else max(a.hi, b.hi)
        return Range(lo, hi, a.gap and b.gap)
    if name == "neg":
        return Range(-a.hi, -a.lo, a.gap)
    if name == "abs":
        lo = 0.0 if a.lo <= 0.0 <= a.hi else min(abs(a.lo), abs(a.hi))
        return Range(lo, max(abs(a.lo), abs(a.hi)), a.gap)
    if name == "square":
        m = max(abs(a.lo), abs(a.hi))
        lo = 0.0 if a.lo <= 0.0 <= a.hi else min(abs(a.lo), abs(a.hi)) ** 2
        return Range(lo, m * m if math.isfinite(m) else INF)
    if name == "sqrt":
        ab = value_range(Node(OPCODE["abs"], 0.0, node.children), var_bounds)
        return Range(math.sqrt(ab.lo), math.sqrt(ab.hi) if math.isfinite(ab.hi) else INF)
    if name == "tanh":
        return Range(math.tanh(a.lo), math.tanh(a.hi))
    if name == "exp":
        lo = math.exp(min(a.lo, EXP_MAX)) if a.lo > -INF else 0.0
        return Range(lo, math.exp(min(a.hi, EXP_MAX)), lo > EPS)
    if name == "inv":
        if a.lo > EPS or a.hi < -EPS:
            return Range(*_span([1 / a.lo if a.lo else INF, 1 / a.hi if a.hi else INF]))
        return UNKNOWN
    if name == "log":
        ab = value_range(Node(OPCODE["abs"], 0.0, node.children), var_bounds)
        if ab.lo > EPS:
            return Range(math.log(ab.lo), _safe(math.log, ab.hi))
        return Range(-INF, _safe(math.log, max(ab.hi, 1.0)))
    return UNKNOWN


def _inv_is_identity_twice(r: Range) -> bool:
    """``inv(inv(x)) == x`` for every x in r: x is 0 or EPS < |x| < 1/EPS."""
    return r.gap and max(abs(r.lo), abs(r.hi)) < 1.0 / EPS


def _rewrite_inner(node: Node, var_bounds: Sequence[Range]) -> Node:
    kids = tuple(_rewrite_inner(c, var_bounds) for c in node.children)
    node = simplify(Node(node.op, node.value, kids))
    if not node.children:
        return node
    name = function(node.op).name
    k = node.children
    if name == "add" and k[0] == k[1]:
        return Node(OPCODE["mul"], 0.0, (Node(CONST, 2.0), k[0]))
    return node


def _drop_root(node: Node, var_bounds: Sequence[Range]) -> Node | None:
    """The argument of a root wrapper that is strictly increasing on its range, else None. The
    argument's range must be finite: a wrapper maps +inf to a finite value (tanh) where the bare
    argument would rank an infinite value last."""
    if not node.children or node.op == CONST:
        return None
    name = function(node.op).name
    k = node.children
    if name == "inv" and k[0].op == OPCODE["inv"] and _inv_is_identity_twice(value_range(k[0].children[0], var_bounds)):
        return k[0].children[0]
    r = value_range(k[-1] if name in ("add", "mul") and k[0].op == CONST else k[0], var_bounds)
    if not (-FINITE < r.lo and r.hi < FINITE):
        return None
    # float32 margins: where a wrapper saturates, underflows or swallows its argument it ties
    # whole ranges of values (tanh is 1.0 above ~9, exp is 0 below ~-104, x + 1e8 is 1e8), which is
    # more than the last-bit rounding the module doc allows for
    mag = max(abs(r.lo), abs(r.hi))
    if name == "tanh" and mag < TANH_DISTINCT:
        return k[0]
    if name == "exp" and EXP_NORMAL < r.lo and r.hi <= EXP_MAX:
        return k[0]
    if name in ("sqrt", "abs") and r.lo >= 0.0:
        return k[0]
    if name == "square" and r.lo >= 0.0 and r.hi < SQUARE_MAX:
        return k[0]
    if name == "log" and r.lo > EPS:
        return k[0]

    def shift_ok(c: Node) -> bool:  # x + c keeps x's spacing only where c is not much larger than x
        return math.isfinite(c.value) and abs(c.value) <= SHIFT_RATIO * mag

    def scale_ok(c: Node) -> bool:  # c * x neither underflows nor overflows on a finite range
        return math.isfinite(c.value) and SCALE_MIN <= c.value <= SCALE_MAX
    if name in ("add", "sub") and k[1].op == CONST and shift_ok(k[1]):
        return k[0]
    if name == "add" and k[0].op == CONST and shift_ok(k[0]):
        return k[1]
    if name == "mul" and k[0].op == CONST and scale_ok(k[0]):
        return k[1]
    if name in ("mul", "div") and k[1].op == CONST and scale_ok(k[1]):
        return k[0]
    return None


def rank_simplify(node: Node, var_bounds: Sequence[Range] = ()) -> Node:
    """A tree that ranks every input as ``node`` does (see the module doc), no larger."""
    cur = _rewrite_inner(node, var_bounds)
    while True:
        nxt = _drop_root(cur, var_bounds)
        if nxt is None:
            return cur
        cur = _rewrite_inner(nxt, var_bounds)


# ----------------------------------------------------------------------------- smaller trees


def subtrees(node: Node) -> Iterator[Node]:
    """Every subtree, the tree itself first (pre-order)."""
    yield node
    for c in node.children:
        yield from subtrees(c)


def prunings(node: Node) -> list[Node]:
    """Every tree made by replacing one function node by one of its children (a hoist in place)."""
    out: list[Node] = []

    def walk(n: Node, rebuild) -> None:
        for c in n.children:
            out.append(rebuild(c))
        for j, c in enumerate(n.children):
            walk(c, lambda new, n=n, j=j, rebuild=rebuild: rebuild(
                Node(n.op, n.value, n.children[:j] + (new,) + n.children[j + 1:])))

    walk(node, lambda new: new)
    return out
