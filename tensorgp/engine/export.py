"""Expression trees out of tensorgp: sympy (and, through it, LaTeX). Protected operators map to
their plain mathematical forms; where that matters is said per function."""
from __future__ import annotations

from .expression import Node
from .primitives import CONST, FIRST_VAR, function


def node_to_sympy(node: Node, symbols: list, a: float = 0.0, b: float = 1.0):
    """sympy expression of ``a + b * node``. Protected operators become their plain forms
    (``log|x|``, ``sqrt|x|``, ``x / y``, ``1 / x``, ``exp`` without its clamp): they agree with
    the program wherever no protection threshold (|x| <= 1e-6, exp argument > 80) is hit."""
    import sympy as sp  # optional dependency

    def conv(n: Node):
        if n.op == CONST:
            return sp.Float(n.value, 9)
        if n.op >= FIRST_VAR:
            return symbols[n.op - FIRST_VAR]
        name = function(n.op).name
        c = [conv(k) for k in n.children]
        table = {
            "add": lambda: c[0] + c[1], "sub": lambda: c[0] - c[1], "mul": lambda: c[0] * c[1],
            "div": lambda: c[0] / c[1], "neg": lambda: -c[0], "log": lambda: sp.log(sp.Abs(c[0])),
            "sqrt": lambda: sp.sqrt(sp.Abs(c[0])), "abs": lambda: sp.Abs(c[0]), "square": lambda: c[0] ** 2,
            "inv": lambda: 1 / c[0], "exp": lambda: sp.exp(c[0]), "tanh": lambda: sp.tanh(c[0]),
            "min": lambda: sp.Min(c[0], c[1]), "max": lambda: sp.Max(c[0], c[1]),
        }
        return table[name]()

    out = conv(node)
    if b != 1.0:
        out = sp.Float(b, 15) * out
    if a != 0.0:
        out = out + sp.Float(a, 15)
    return out
