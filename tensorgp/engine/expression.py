"""One program as a formula: infix printing, parsing, and semantics-preserving simplification.

These work on one program at a time (results and the CLI), never on the hot path. A tree is
``Node(op, value, children)``; the postfix row of a tree lists children left to right, then
the node, which is the order the evaluators use (first pushed = left argument).
"""
from __future__ import annotations

import math
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps

import numpy as np
import torch

from .primitives import CONST, FIRST_VAR, OPCODE, PAD, PrimitiveSet, function

_BINARY_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


class ParseError(ValueError):
    pass


# Formulas are printed, parsed and simplified by recursion over the tree. These limits keep that
# recursion well inside a raised (guarded) interpreter limit: a formula nested deeper, or a tree
# deeper, is a ParseError rather than a RecursionError.
MAX_NESTING = 500  # parentheses, calls and unary minus inside one another
MAX_DEPTH = 1000  # tree depth (a flat sum of k terms has depth k - 1)
_RECURSION_LIMIT = 8 * MAX_DEPTH + 2000


@contextmanager
def _deep_recursion():
    """Raise the interpreter's recursion limit for the block (never lower it)."""
    old = sys.getrecursionlimit()
    if old < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _guarded(fn):
    """Run a recursive tree function under ``_deep_recursion``."""
    @wraps(fn)
    def run(*args, **kwargs):
        with _deep_recursion():
            return fn(*args, **kwargs)
    return run


@dataclass(frozen=True)
class Node:
    op: int
    value: float = 0.0
    children: tuple["Node", ...] = field(default_factory=tuple)


def from_postfix(ops: list[int], consts: list[float]) -> Node:
    stack: list[Node] = []
    for op, c in zip(ops, consts):
        if op == PAD:
            break
        if op >= CONST:
            stack.append(Node(op, float(c) if op == CONST else 0.0))
        else:
            a = function(op).arity
            if len(stack) < a:
                raise ValueError("invalid postfix program: stack underflow")
            kids = tuple(stack[len(stack) - a :])
            del stack[len(stack) - a :]
            stack.append(Node(op, 0.0, kids))
    if len(stack) != 1:
        raise ValueError(f"invalid postfix program: {len(stack)} values left on the stack")
    return stack[0]


@_guarded
def to_postfix(node: Node) -> tuple[list[int], list[float]]:
    ops: list[int] = []
    consts: list[float] = []

    def walk(n: Node) -> None:
        for ch in n.children:
            walk(ch)
        ops.append(n.op)
        consts.append(n.value if n.op == CONST else 0.0)

    walk(node)
    return ops, consts


def row(pop_ops: torch.Tensor, pop_consts: torch.Tensor, length: torch.Tensor, i: int) -> Node:
    """Tree of individual i of a population."""
    n = int(length[i])
    return from_postfix(pop_ops[i, :n].tolist(), pop_consts[i, :n].tolist())


def _f32(v: float) -> float:
    return float(np.float32(v))


def _fmt_const(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = "%.9g" % float(np.float32(v))  # 9 significant digits round-trip any float32
    return s


@_guarded
def to_infix(node: Node, variables: tuple[str, ...] | list[str]) -> str:
    if node.op == CONST:
        return _fmt_const(node.value)
    if node.op >= FIRST_VAR:
        return variables[node.op - FIRST_VAR]
    f = function(node.op)
    args = [to_infix(c, variables) for c in node.children]
    if f.name == "neg":
        inner = args[0]
        # "-2.5" would read back as a negative constant, so a negated constant keeps its parentheses
        return f"-({inner})" if node.children[0].op == CONST else f"(-{inner})"
    if f.name in _BINARY_INFIX:
        return f"({args[0]} {_BINARY_INFIX[f.name]} {args[1]})"
    if not f.builtin:  # the user's printed form (call syntax reads back with ``parse``)
        return f.infix.format(*args)
    return f"{f.name}({', '.join(args)})"


def _walk(node: Node):
    """``(node, depth)`` of every node, iteratively (any depth)."""
    stack = [(node, 0)]
    while stack:
        n, d = stack.pop()
        yield n, d
        stack.extend((c, d + 1) for c in n.children)


def size(node: Node) -> int:
    return sum(1 for _ in _walk(node))


def depth(node: Node) -> int:
    return max(d for _, d in _walk(node))


def variables_used(node: Node) -> set[int]:
    """Feature indices the tree reads."""
    return {n.op - FIRST_VAR for n, _ in _walk(node) if n.op >= FIRST_VAR}


# ---------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan\b|inf\b)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>[-+*/(),]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"cannot read the formula at character {pos + 1}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
    return toks


def parse(text: str, variables: tuple[str, ...] | list[str]) -> Node:
    """Infix formula -> tree. Names are proxies/variables or functions (``log(x)``, ``min(a, b)``).

    Grammar: expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
    unary := '-' NUMBER (a negative constant) | '-' unary (neg) | atom;
    atom := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'.
    Up to ``MAX_NESTING`` levels of nesting and a tree depth of ``MAX_DEPTH``; deeper is a ParseError.
    """
    with _deep_recursion():
        node = _parse(text, variables)
    d = depth(node)
    if d > MAX_DEPTH:
        raise ParseError(f"the formula's tree is {d} levels deep; at most {MAX_DEPTH} are supported "
                         f"(a sum of k terms is k - 1 deep)")
    return node


def _parse(text: str, variables: tuple[str, ...] | list[str]) -> Node:
    toks = _tokenize(text)
    var_index = {v: i for i, v in enumerate(variables)}
    i = 0
    level = 0  # current nesting (parentheses, calls, unary minus)

    def nest() -> None:
        nonlocal level
        level += 1
        if level > MAX_NESTING:
            raise ParseError(f"the formula nests parentheses, calls or unary minus more than {MAX_NESTING} "
                             f"levels deep (at token {i + 1})")

    def unnest() -> None:
        nonlocal level
        level -= 1

    def peek() -> tuple[str, str] | None:
        return toks[i] if i < len(toks) else None

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise ParseError(f"unexpected end of formula{'' if expected is None else f', expected {expected!r}'}")
        t = toks[i]
        if expected is not None and t[1] != expected:
            raise ParseError(f"expected {expected!r} but found {t[1]!r} (token {i + 1})")
        i += 1
        return t

    def binop(name: str, a: Node, b: Node) -> Node:
        return Node(OPCODE[name], 0.0, (a, b))

    def expr() -> Node:
        node = term()
        while peek() is not None and peek()[1] in "+-" and peek()[0] == "sym":
            op = take()[1]
            node = binop("add" if op == "+" else "sub", node, term())
        return node

    def term() -> Node:
        node = unary()
        while peek() is not None and peek()[1] in "*/" and peek()[0] == "sym":
            op = take()[1]
            node = binop("mul" if op == "*" else "div", node, unary())
        return node

    def unary() -> Node:
        t = peek()
        if t is not None and t == ("sym", "-"):
            take()
            nxt = peek()
            if nxt is not None and nxt[0] == "num":
                return Node(CONST, -number(take()[1]))
            nest()
            node = Node(OPCODE["neg"], 0.0, (unary(),))
            unnest()
            return node
        if t is not None and t == ("sym", "+"):
            take()
            nest()
            node = unary()
            unnest()
            return node
        return atom()

    def number(text: str) -> float:
        with np.errstate(over="ignore"):
            v = _f32(float(text))
        if math.isinf(v) and text != "inf":  # 1e400, or 1e39 past float32: say so, not a silent inf
            raise ParseError(f"the number {text} is beyond float32's range (about 3.4e38); write inf if you mean it")
        return v

    def atom() -> Node:
        kind, val = take()
        if kind == "num":
            return Node(CONST, number(val))
        if kind == "sym":
            if val == "(":
                nest()
                node = expr()
                take(")")
                unnest()
                return node
            raise ParseError(f"unexpected {val!r} (token {i})")
        # a name: function call or variable
        nxt = peek()
        if nxt == ("sym", "("):
            if val not in OPCODE:
                raise ParseError(f"unknown function {val!r}; known: {', '.join(OPCODE)}")
            take("(")
            nest()
            args = [expr()]
            while peek() == ("sym", ","):
                take()
                args.append(expr())
            take(")")
            unnest()
            f = function(OPCODE[val])
            if len(args) != f.arity:
                raise ParseError(f"{val} takes {f.arity} argument(s), got {len(args)}")
            return Node(OPCODE[val], 0.0, tuple(args))
        if val not in var_index:
            raise ParseError(f"unknown variable {val!r}; available: {', '.join(variables)}")
        return Node(FIRST_VAR + var_index[val])

    node = expr()
    if i != len(toks):
        raise ParseError(f"unexpected {toks[i][1]!r} after a complete formula (token {i + 1})")
    return node


def names_in(text: str) -> list[str]:
    """Variable names a formula mentions (anything name-like that is not a function call)."""
    toks = _tokenize(text)
    out = []
    for k, (kind, val) in enumerate(toks):
        if kind == "name" and not (k + 1 < len(toks) and toks[k + 1] == ("sym", "(")):
            out.append(val)
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- simplification


def _fold(op: int, values: list[float]) -> float:
    args = [torch.tensor([v], dtype=torch.float32) for v in values]
    return float(function(op).fn(*args)[0])


def _is_const(n: Node, v: float | None = None) -> bool:
    return n.op == CONST and (v is None or n.value == v)


def _is_zero(n: Node, negative: bool) -> bool:
    """A constant zero of the given sign: ``x + -0`` and ``x - +0`` are x for every x, but
    ``x + +0`` is +0 at x = -0."""
    return _is_const(n, 0.0) and (math.copysign(1.0, n.value) < 0) == negative


def _same(a: Node, b: Node) -> bool:
    """Identical trees, constants compared bit for bit (Node equality takes -0 == +0)."""
    if a.op != b.op or len(a.children) != len(b.children):
        return False
    if a.op == CONST and float(a.value).hex() != float(b.value).hex():
        return False
    return all(_same(x, y) for x, y in zip(a.children, b.children))


@_guarded
def simplify(node: Node) -> Node:
    """Constant folding and identities that keep the value bit-for-bit on every input,
    NaN, inf and signed zeros included (so ``x * 0`` is kept: it is NaN where x is), under the
    engine's float32 arithmetic: constants fold in float32 as programs compute them (a float64
    evaluation of the unfolded program may differ in the folded constant's last float32 bit)."""
    kids = tuple(simplify(c) for c in node.children)
    node = Node(node.op, node.value, kids)
    if not kids:
        return node
    name = function(node.op).name
    if all(_is_const(c) for c in kids):
        return Node(CONST, _f32(_fold(node.op, [c.value for c in kids])))
    if (name == "add" and _is_zero(kids[1], negative=True)) or (name == "sub" and _is_zero(kids[1], negative=False)):
        return kids[0]
    if name == "add" and _is_zero(kids[0], negative=True):
        return kids[1]
    if name in ("mul", "div") and _is_const(kids[1], 1.0):
        return kids[0]
    if name == "mul" and _is_const(kids[0], 1.0):
        return kids[1]
    if name == "neg" and kids[0].op == OPCODE["neg"]:
        return kids[0].children[0]
    if name == "sub" and kids[1].op == OPCODE["neg"]:
        return Node(OPCODE["add"], 0.0, (kids[0], kids[1].children[0]))
    if name == "add" and kids[1].op == OPCODE["neg"]:
        return Node(OPCODE["sub"], 0.0, (kids[0], kids[1].children[0]))
    if name in ("abs", "sqrt") and kids[0].op == OPCODE["abs"]:
        return Node(node.op, 0.0, kids[0].children)
    if name == "abs" and kids[0].op in (OPCODE["abs"], OPCODE["sqrt"], OPCODE["square"]):
        return kids[0]
    if name in ("min", "max") and _same(kids[0], kids[1]):
        return kids[0]
    return node


def formula(node: Node, pset: PrimitiveSet) -> str:
    return to_infix(node, pset.variables)
