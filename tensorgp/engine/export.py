"""Expression trees out of tensorgp: sympy, LaTeX and standalone Python source.

Every exporter dispatches on the function *name* (``primitives.function(op).name``), never on an
opcode number, so a new primitive needs one entry per table here and nothing else moves.
``node_to_sympy`` gives plain mathematical forms by default (``protected=True``: the exact
protected semantics as ``Piecewise``); ``node_to_python`` always keeps the protected semantics
of ``primitives`` (EPS, EXP_MAX clamp) and float32 arithmetic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .expression import Node, _fmt_const
from .primitives import CONST, EPS, EXP_MAX, FIRST_VAR, POW_MAX, function


def _exponent(e):
    """An integral float exponent as a sympy Integer, so ``|x|^2.0`` reads as ``x^2``."""
    import sympy as sp

    return sp.Integer(int(e)) if isinstance(e, sp.Float) and float(e) == int(e) and abs(float(e)) < 1e6 else e


def _protected_functions(sp):
    """sympy functions ``pdiv``, ``pinv``, ``plog``, ``ppow`` that stay unevaluated (sympy would otherwise
    fold ``1/Piecewise`` into branches that divide by 0) and carry their numpy implementation,
    so ``sympy.lambdify`` evaluates them with the protected semantics."""
    import numpy as np
    from sympy.utilities.lambdify import implemented_function

    def _div(a, b):
        a, b = np.asarray(a), np.asarray(b)
        safe = ~(np.abs(b) <= EPS)  # NaN stays NaN, as in the engine
        with np.errstate(all="ignore"):
            return np.where(safe, a / np.where(safe, b, 1), np.where(np.isnan(a), a, 1))

    def _inv(a):
        a = np.asarray(a)
        safe = ~(np.abs(a) <= EPS)
        with np.errstate(all="ignore"):
            return np.where(safe, 1 / np.where(safe, a, 1), 0)

    def _log(a):
        m = np.abs(np.asarray(a))
        safe = ~(m <= EPS)
        with np.errstate(all="ignore"):
            return np.where(safe, np.log(np.where(safe, m, 1)), 0)

    def _pow(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        with np.errstate(all="ignore"):
            r = np.minimum(np.power(np.abs(a), b), POW_MAX)
        return np.where(np.isnan(a) | np.isnan(b), np.nan, r)  # IEEE pow(1, nan) = 1: the program's is NaN

    return (implemented_function("pdiv", _div), implemented_function("pinv", _inv),
            implemented_function("plog", _log), implemented_function("ppow", _pow))


def node_to_sympy(node: Node, symbols: list, a: float = 0.0, b: float = 1.0, protected: bool = False):
    """sympy expression of ``a + b * node``.

    ``protected=False``: protected operators become their plain forms (``log|x|``, ``sqrt|x|``,
    ``x / y``, ``1 / x``, ``exp`` without its clamp); they agree with the program wherever no
    protection threshold (|x| <= 1e-6, exp argument > 80) is hit. ``protected=True``: ``div``,
    ``inv`` and ``log`` become the functions ``pdiv``, ``pinv``, ``plog`` (whose ``lambdify``
    implementation is the protected one) and ``exp`` clamps its argument at EXP_MAX, so the
    expression equals the program everywhere. ``pow`` is ``|x|^y``; ``protected``: the function
    ``ppow`` (its 1e30 ceiling, and NaN where an argument is NaN); user
    functions use their ``sympy`` form, or an undefined ``sympy.Function`` of their name."""
    import sympy as sp  # optional dependency

    pdiv, pinv, plog, ppow = _protected_functions(sp) if protected else (None, None, None, None)

    def conv(n: Node):
        if n.op == CONST:  # protected: the float32 constant exactly (what the program computes with)
            return sp.Float(float(np.float32(n.value)), 17) if protected else sp.Float(n.value, 9)
        if n.op >= FIRST_VAR:
            return symbols[n.op - FIRST_VAR]
        f = function(n.op)
        name = f.name
        c = [conv(k) for k in n.children]
        if not f.builtin:
            return f.sympy(*c) if f.sympy is not None else sp.Function(name)(*c)
        table = {
            "add": lambda: c[0] + c[1], "sub": lambda: c[0] - c[1], "mul": lambda: c[0] * c[1],
            "div": lambda: pdiv(c[0], c[1]) if protected else c[0] / c[1], "neg": lambda: -c[0],
            "log": lambda: plog(c[0]) if protected else sp.log(sp.Abs(c[0])),
            "sqrt": lambda: sp.sqrt(sp.Abs(c[0])), "abs": lambda: sp.Abs(c[0]), "square": lambda: c[0] ** 2,
            "inv": lambda: pinv(c[0]) if protected else 1 / c[0],
            "exp": lambda: sp.exp(sp.Min(c[0], sp.Float(EXP_MAX)) if protected else c[0]),
            "tanh": lambda: sp.tanh(c[0]), "min": lambda: sp.Min(c[0], c[1]), "max": lambda: sp.Max(c[0], c[1]),
            "pow": lambda: ppow(c[0], c[1]) if protected else sp.Abs(c[0]) ** _exponent(c[1]), "sin": lambda: sp.sin(c[0]), "cos": lambda: sp.cos(c[0]),
        }
        if name not in table:
            raise NotImplementedError(f"no sympy form for function {name!r}; add it to export.node_to_sympy")
        return table[name]()

    if protected:  # unevaluated: sympy's automatic rewriting (|c*x| -> |c|*|x|, folding constants) would
        # change the floating-point operations, so lambdify would round differently than the program
        with sp.evaluate(False):
            out = conv(node)
    else:
        out = conv(node)
    if b != 1.0:
        out = sp.Float(b, 15) * out
    if a != 0.0:
        out = out + sp.Float(a, 15)
    return out


# ----------------------------------------------------------------------------- LaTeX

_LATEX_NAME = {"log": r"\log", "tanh": r"\tanh", "exp": r"\exp", "sin": r"\sin", "cos": r"\cos"}
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 3, "neg": 3}  # div is a \frac: its parts need no brackets


def latex_name(variable: str) -> str:
    r"""``grad_norm`` -> ``\mathrm{grad\_norm}``."""
    return r"\mathrm{" + variable.replace("_", r"\_") + "}"


def node_to_latex(node: Node, variables: Sequence[str]) -> str:
    """LaTeX of the tree, read as mathematics: protected operators print as their plain forms
    (``\\log|x|``, ``\\sqrt{|x|}``, fractions), as ``to_infix`` does; the Python export keeps
    the protection."""

    def prec(n: Node) -> int:
        return 4 if n.op >= CONST else _PREC.get(function(n.op).name, 4)

    def wrap(n: Node, need: int) -> str:
        s = conv(n)
        return rf"\left({s}\right)" if prec(n) < need else s

    def conv(n: Node) -> str:
        if n.op == CONST:
            s = _fmt_const(n.value)
            if "e" in s and "inf" not in s:
                m, e = s.split("e")
                s = rf"{m} \cdot 10^{{{int(e)}}}"
            return rf"\left({s}\right)" if s.startswith("-") else s
        if n.op >= FIRST_VAR:
            return latex_name(variables[n.op - FIRST_VAR])
        name = function(n.op).name
        k = n.children
        table = {
            "add": lambda: f"{wrap(k[0], 1)} + {wrap(k[1], 1)}",
            "sub": lambda: f"{wrap(k[0], 1)} - {wrap(k[1], 2)}",
            "mul": lambda: rf"{wrap(k[0], 2)} \cdot {wrap(k[1], 2)}",
            "div": lambda: rf"\frac{{{conv(k[0])}}}{{{conv(k[1])}}}",
            "inv": lambda: rf"\frac{{1}}{{{conv(k[0])}}}",
            "neg": lambda: f"-{wrap(k[0], 3)}",
            "sqrt": lambda: rf"\sqrt{{\left|{conv(k[0])}\right|}}",
            "abs": lambda: rf"\left|{conv(k[0])}\right|",
            "square": lambda: rf"\left({conv(k[0])}\right)^{{2}}",
            "log": lambda: rf"\log\left|{conv(k[0])}\right|",
            "min": lambda: rf"\min\left({conv(k[0])}, {conv(k[1])}\right)",
            "max": lambda: rf"\max\left({conv(k[0])}, {conv(k[1])}\right)",
            "pow": lambda: rf"\left|{conv(k[0])}\right|^{{{conv(k[1])}}}",
        }
        if name in table:
            return table[name]()
        head = _LATEX_NAME.get(name, r"\operatorname{" + name + "}")  # tanh, exp, and functions added later
        return head + rf"\left({', '.join(conv(c) for c in k)}\right)"

    return conv(node)


# ----------------------------------------------------------------------------- Python source

# numpy forms (in the module's DTYPE) of the protected semantics of ``primitives`` (the torch reference there)
_PY_HELPERS = {
    "add": ("", "({0} + {1})"), "sub": ("", "({0} - {1})"), "mul": ("", "({0} * {1})"), "neg": ("", "(-{0})"),
    "abs": ("", "np.abs({0})"), "square": ("", "({0} * {0})"), "tanh": ("", "np.tanh({0})"),
    "min": ("", "np.minimum({0}, {1})"), "max": ("", "np.maximum({0}, {1})"),
    "sqrt": ("", "np.sqrt(np.abs({0}))"),
    "exp": ("", "np.exp(np.minimum({0}, EXP_MAX))"),
    "sin": ("", "np.sin({0})"), "cos": ("", "np.cos({0})"),
    "pow": ("def _pow(a, b):\n"
            "    with np.errstate(all='ignore'):\n"
            "        r = np.minimum(np.power(np.abs(a), b), POW_MAX)\n"
            "    return np.where(np.isnan(a) | np.isnan(b), NAN, r)\n", "_pow({0}, {1})"),
    "div": ("def _div(a, b):\n"
            "    safe = ~(np.abs(b) <= EPS)\n"
            "    return np.where(safe, a / np.where(safe, b, ONE), np.where(np.isnan(a), a, ONE))\n", "_div({0}, {1})"),
    "inv": ("def _inv(a):\n"
            "    safe = ~(np.abs(a) <= EPS)\n"
            "    return np.where(safe, ONE / np.where(safe, a, ONE), ZERO)\n", "_inv({0})"),
    "log": ("def _log(a):\n"
            "    m = np.abs(a)\n"
            "    safe = ~(m <= EPS)\n"
            "    return np.where(safe, np.log(np.where(safe, m, ONE)), ZERO)\n", "_log({0})"),
}


def python_identifier(variable: str, taken: set[str]) -> str:
    """A valid, unused Python parameter name for a variable."""
    import keyword

    s = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in variable) or "x"
    # the module's own names: numpy, its constants, the protected helpers and the generated functions
    if s[0].isdigit() or keyword.iskeyword(s) or s.startswith(("_", "formula")) or \
            s in ("np", "DTYPE", "EPS", "EXP_MAX", "POW_MAX", "ONE", "ZERO", "NAN"):
        s = "v_" + s
    base, i = s, 1
    while s in taken:
        s, i = f"{base}_{i}", i + 1
    taken.add(s)
    return s


PYTHON_DTYPES = ("float64", "float32")


def python_constant(value: float, dtype: str = "float64") -> str:
    """Source of a program constant: float64 holds the float32 constant exactly (17 digits, the
    value the engine's float64 path computes with); float32 uses its 9-digit round-trip form."""
    text = _fmt_const(value)
    if text in ("nan", "inf", "-inf"):
        return f"np.{dtype}({text!r})"
    if dtype == "float64":
        return f"np.float64({float(np.float32(value))!r})"
    return f"np.float32({text})"


def node_to_python(nodes: Node | Sequence[Node], variables: Sequence[str], name: str = "proxy",
                   doc: str = "", dtype: str = "float64") -> str:
    """Source of a standalone module defining ``name(**arrays)``: the tree (or, for several trees,
    a function per tree, ``name_0``, ``name_1``, ...) evaluated elementwise with the protected
    semantics of ``primitives`` (EPS, EXP_MAX, POW_MAX). Needs numpy only. Parameters are the
    variables the trees read, in the order of ``variables``.

    ``dtype="float64"`` (default): inputs, constants (the float32 constants, held exactly) and
    every operation in float64, as the engine's torch interpreter computes a float64 ``X``; the
    thresholds are then the float64 values of EPS and POW_MAX, as there. ``"float32"``: the
    arithmetic of evolution's fitness (float32 throughout). Transcendental functions (exp, log,
    tanh, sin, cos, sqrt, pow) of numpy and torch differ by an ulp or so in either precision; in
    float64 that is ~1e-16 relative, far below any difference between distinct inputs, so the
    ranking agrees with the engine's float64 scores (tests/test_proxy.py)."""
    if dtype not in PYTHON_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(PYTHON_DTYPES)}")
    trees = [nodes] if isinstance(nodes, Node) else list(nodes)
    used_ops: set[str] = set()
    used_vars: set[int] = set()

    def walk(n: Node) -> None:
        if n.op >= FIRST_VAR:
            used_vars.add(n.op - FIRST_VAR)
        elif n.op != CONST:
            if function(n.op).name not in _PY_HELPERS:
                raise NotImplementedError(f"no Python form for function {function(n.op).name!r}; "
                                          f"add it to export._PY_HELPERS")
            used_ops.add(function(n.op).name)
        for c in n.children:
            walk(c)

    for t in trees:
        walk(t)
    taken: set[str] = set()
    ident = {i: python_identifier(variables[i], taken) for i in sorted(used_vars)}

    def conv(n: Node) -> str:
        if n.op == CONST:
            return python_constant(n.value, dtype)
        if n.op >= FIRST_VAR:
            return ident[n.op - FIRST_VAR]
        fmt = _PY_HELPERS[function(n.op).name][1]  # names checked by walk
        return fmt.format(*[conv(c) for c in n.children])

    params = ", ".join(ident[i] for i in sorted(used_vars))
    lines = ['"""' + (doc or "An evolved formula exported by tensorgp.") + '"""',
             "import numpy as np", "",
             f"DTYPE = np.{dtype}  # every input, constant and operation",
             f"EPS = DTYPE({EPS!r})  # protected div/inv/log treat |x| <= EPS as zero",
             f"EXP_MAX = DTYPE({EXP_MAX!r})  # exp's argument is clamped here",
             f"POW_MAX = DTYPE({POW_MAX!r})  # pow's ceiling",
             "ONE = DTYPE(1.0)", "ZERO = DTYPE(0.0)", "NAN = DTYPE('nan')", ""]
    for op in sorted(used_ops):
        helper = _PY_HELPERS[op][0]
        if helper:
            lines += [helper]
    conv_in = "\n".join(f"    {v} = np.asarray({v}, dtype=DTYPE)" for v in (ident[i] for i in sorted(used_vars)))
    names = [name] if len(trees) == 1 else [f"{name}_{k}" for k in range(len(trees))]
    for fname, t in zip(names, trees):
        lines += [f"def {fname}({params}):",
                  f'    """{dtype} elementwise; inputs: {", ".join(variables[i] for i in sorted(used_vars)) or "none"}."""']
        if conv_in:
            lines.append(conv_in)
        lines += ["    with np.errstate(all='ignore'):",
                  f"        return np.asarray({conv(t)}, dtype=DTYPE)", ""]
    return "\n".join(lines) + "\n"
