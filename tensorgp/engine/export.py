"""Expression trees out of tensorgp: sympy (and, through it, LaTeX). Protected operators map to
their plain mathematical forms; where that matters is said per function."""
from __future__ import annotations

from .expression import Node
from .primitives import CONST, FIRST_VAR, function


def _exponent(e):
    """An integral float exponent as a sympy Integer, so ``|x|^2.0`` reads as ``x^2``."""
    import sympy as sp

    return sp.Integer(int(e)) if isinstance(e, sp.Float) and float(e) == int(e) and abs(float(e)) < 1e6 else e


def node_to_sympy(node: Node, symbols: list, a: float = 0.0, b: float = 1.0):
    """sympy expression of ``a + b * node``. Protected operators become their plain forms
    (``log|x|``, ``sqrt|x|``, ``x / y``, ``1 / x``, ``exp`` without its clamp, ``|x|^y`` without
    its 1e30 ceiling): they agree with the program wherever no protection threshold (|x| <= 1e-6,
    exp argument > 80, a power over 1e30) is hit. User functions use their ``sympy`` form, or an
    undefined ``sympy.Function`` of their name."""
    import sympy as sp  # optional dependency

    def conv(n: Node):
        if n.op == CONST:
            return sp.Float(n.value, 9)
        if n.op >= FIRST_VAR:
            return symbols[n.op - FIRST_VAR]
        f = function(n.op)
        name = f.name
        c = [conv(k) for k in n.children]
        if not f.builtin:
            return f.sympy(*c) if f.sympy is not None else sp.Function(name)(*c)
        table = {
            "add": lambda: c[0] + c[1], "sub": lambda: c[0] - c[1], "mul": lambda: c[0] * c[1],
            "div": lambda: c[0] / c[1], "neg": lambda: -c[0], "log": lambda: sp.log(sp.Abs(c[0])),
            "sqrt": lambda: sp.sqrt(sp.Abs(c[0])), "abs": lambda: sp.Abs(c[0]), "square": lambda: c[0] ** 2,
            "inv": lambda: 1 / c[0], "exp": lambda: sp.exp(c[0]), "tanh": lambda: sp.tanh(c[0]),
            "min": lambda: sp.Min(c[0], c[1]), "max": lambda: sp.Max(c[0], c[1]),
            "pow": lambda: sp.Abs(c[0]) ** _exponent(c[1]), "sin": lambda: sp.sin(c[0]), "cos": lambda: sp.cos(c[0]),
        }
        return table[name]()

    out = conv(node)
    if b != 1.0:
        out = sp.Float(b, 15) * out
    if a != 0.0:
        out = out + sp.Float(a, 15)
    return out
