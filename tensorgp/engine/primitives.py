"""The primitive set: opcodes, arities, protected semantics and printed forms.

Opcode layout (version 2; global and fixed, so a program tensor means the same thing in every run):

    0               PAD     (no-op, fills a row after its program ends)
    1 .. 17         built-in functions, in the order of ``FUNCTIONS``
    18 .. 63        user-registered functions (``register_function``), in registration order
    64              CONST   (value in ``consts`` at the same position)
    65 + i          feature i (a proxy, or a column of X)

Version 1 (before sin, cos, pow and user functions) had functions 1..14, CONST 15 and features
16+. Built-ins keep their opcodes when appended, and the reserved user block means registering a
function never moves CONST or the features again. Saved programs carry ``opcode_layout()``
(names of the functions they may use, CONST, FIRST_VAR); ``remap_opcodes`` maps them onto this
process's layout, and a program saved without it is read as version 1.

Every function is total on float32: no exception, and no NaN from finite inputs
except where overflow makes an intermediate +-inf (for example ``add`` of two
values near float32 max, then ``sub`` of two infinities), or ``sin``/``cos`` of an
infinity. NaN inputs propagate (``pow`` included, unlike IEEE ``pow(1, nan) = 1``),
which is how a failed proxy value makes the architecture rank last.
The protected forms follow gplearn's conventions with a smaller threshold.
``pow(a, b) = min(|a|^b, 1e30)``: the base's sign is dropped (a real result for any exponent),
``0^b`` for b < 0 and overflows give 1e30, so the result is finite for every non-NaN input, and
a product of two such values is still at most 1e60, an infinity as with ``exp``.
All backends (torch reference, numba CPU, Triton) implement exactly these; user-registered
functions run on the torch interpreter, and on numba when registered with a scalar form (see
``register_function``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

PAD = 0
N_BUILTIN = 17
MAX_FUNCTION = 63  # last opcode a function may have: 18..63 are left for user functions
CONST = 64
FIRST_VAR = 65
LAYOUT_VERSION = 2
EPS = 1e-6  # protected div/inv/log/pow treat |x| <= EPS as zero
EXP_MAX = 80.0  # exp(80) ~ 5.5e34 stays finite in float32
POW_MAX = 1e30  # pow's ceiling (float32 1.00000002e30)


# ``~(|x| <= EPS)``, not ``|x| > EPS``: NaN is "safe", so it reaches the real operation and stays NaN
def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    safe = ~(b.abs() <= EPS)
    one = torch.where(torch.isnan(a), a, torch.ones_like(a))  # a NaN numerator stays NaN over a protected 0
    return torch.where(safe, a / torch.where(safe, b, torch.ones_like(b)), one)


def _log(a: torch.Tensor) -> torch.Tensor:
    m = a.abs()
    safe = ~(m <= EPS)
    return torch.where(safe, torch.log(torch.where(safe, m, torch.ones_like(m))), torch.zeros_like(a))


def _inv(a: torch.Tensor) -> torch.Tensor:
    safe = ~(a.abs() <= EPS)
    return torch.where(safe, 1.0 / torch.where(safe, a, torch.ones_like(a)), torch.zeros_like(a))


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # in float64, then rounded: torch's float32 pow takes a vectorised path (within 1 ulp) for blocks
    # of 32 values and a scalar one for the rest, so a row's value depended on its position
    wide = torch.promote_types(a.dtype, torch.float64)
    r = torch.clamp(torch.pow(a.abs().to(wide), b.to(wide)), max=POW_MAX).to(a.dtype)
    # IEEE pow(1, nan) and pow(nan, 0) are 1: a failed input must stay NaN here
    return torch.where(torch.isnan(a) | torch.isnan(b), torch.full_like(r, float("nan")), r)


@dataclass(frozen=True)
class Function:
    name: str
    arity: int
    fn: Callable[..., torch.Tensor]
    infix: str  # format string; binary operators as "({0} + {1})", calls as "log({0})"
    doc: str
    sympy: Callable[..., Any] | None = None  # user functions: sympy args -> sympy expression
    builtin: bool = True
    scalar: Callable[..., Any] | None = None  # user functions: numba-compilable scalar form (eval_numba_user)


FUNCTIONS: tuple[Function, ...] = (
    Function("add", 2, torch.add, "({0} + {1})", "a + b"),
    Function("sub", 2, torch.sub, "({0} - {1})", "a - b"),
    Function("mul", 2, torch.mul, "({0} * {1})", "a * b"),
    Function("div", 2, _div, "({0} / {1})", "a / b, or 1 where |b| <= 1e-6"),
    Function("neg", 1, torch.neg, "(-{0})", "-a"),
    Function("log", 1, _log, "log({0})", "log|a|, or 0 where |a| <= 1e-6"),
    Function("sqrt", 1, lambda a: torch.sqrt(a.abs()), "sqrt({0})", "sqrt|a|"),
    Function("abs", 1, torch.abs, "abs({0})", "|a|"),
    Function("square", 1, lambda a: a * a, "square({0})", "a * a"),
    Function("inv", 1, _inv, "inv({0})", "1 / a, or 0 where |a| <= 1e-6"),
    Function("exp", 1, lambda a: torch.exp(torch.clamp(a, max=EXP_MAX)), "exp({0})", "exp(min(a, 80))"),
    Function("tanh", 1, torch.tanh, "tanh({0})", "tanh(a)"),
    Function("min", 2, torch.minimum, "min({0}, {1})", "min(a, b)"),
    Function("max", 2, torch.maximum, "max({0}, {1})", "max(a, b)"),
    Function("pow", 2, _pow, "pow({0}, {1})", "min(|a|^b, 1e30); NaN if a or b is NaN"),
    Function("sin", 1, torch.sin, "sin({0})", "sin(a)"),
    Function("cos", 1, torch.cos, "cos({0})", "cos(a)"),
)
assert len(FUNCTIONS) == N_BUILTIN
# OPCODE and _TABLE grow (in place, so importers see it) when a user function is registered
OPCODE: dict[str, int] = {f.name: i + 1 for i, f in enumerate(FUNCTIONS)}
_TABLE: dict[int, Function] = {i + 1: f for i, f in enumerate(FUNCTIONS)}
N_FUNCTIONS = len(FUNCTIONS)
FIRST_USER = N_BUILTIN + 1
_VERSION = [0]  # bumped by every registration, so cached arity tables know they are stale

DEFAULT_FUNCTIONS = ("add", "sub", "mul", "div", "neg", "log", "sqrt", "abs", "square", "inv", "exp", "tanh", "min", "max")
# opcode layout version 1 (programs saved before sin/cos/pow): functions 1..14, CONST 15, features 16+
LAYOUT_V1: dict = {"version": 1, "functions": {n: i + 1 for i, n in enumerate(DEFAULT_FUNCTIONS)},
                   "const": 15, "first_var": 16}


def register_function(name: str, arity: int, fn: Callable[..., torch.Tensor], infix: str | None = None,
                      sympy: Callable[..., Any] | None = None, doc: str = "",
                      numba: Callable[..., Any] | None = None) -> int:
    """Add a user function to the global table and return its opcode (18..63, in order of registration).

    ``fn``: elementwise torch function of ``arity`` (1 or 2) float32 tensors of one shape, total
    like the built-ins (guard its domain: a NaN or inf output makes a program invalid).
    ``infix``: printed form, a format string over the arguments (default ``"name({0})"`` or
    ``"name({0}, {1})"``), which the parser reads back as a call to ``name``.
    ``sympy``: ``(*sympy_args) -> sympy expression`` for export (``None``: an undefined sympy
    Function of that name). Names are unique; registering the same name again raises.

    ``numba``: the same function on float32 scalars, in Python that numba's nopython mode
    compiles (arithmetic, comparisons, ``math``/``np`` scalar functions), e.g.
    ``lambda a: math.log1p(math.exp(-abs(a))) + max(a, 0.0)`` for softplus. With it the numba
    backend runs the function in generated code (``eval_numba_user``); it must agree with ``fn``
    (the tests of such a function should compare the two on edge inputs).

    Backends: user functions run on the torch interpreter on any device, and on the numba
    backend when they have a ``numba`` form. A population that uses one without it is evaluated
    with the torch interpreter when the numba backend was asked for, and every population using
    a user function is when Triton was asked for, with a ``UserWarning`` naming the functions
    (no Triton code is generated); the constant optimiser differentiates them with torch autograd.
    """
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in ("nan", "inf"):
        raise ValueError(f"function name {name!r} must be an identifier other than nan and inf (the parser "
                         f"reads those as numbers)")
    if name in OPCODE:
        raise ValueError(f"a function named {name!r} already exists (opcode {OPCODE[name]})")
    if arity not in (1, 2):
        raise ValueError(f"arity {arity!r} of {name!r} must be 1 or 2")
    if not callable(fn):
        raise TypeError(f"fn of {name!r} must be callable, got {type(fn).__name__}")
    op = max(_TABLE) + 1
    if op > MAX_FUNCTION:
        raise ValueError(f"no opcode left for {name!r}: at most {MAX_FUNCTION - N_BUILTIN} user functions")
    probe = fn(*[torch.tensor([0.5, -2.0], dtype=torch.float32) for _ in range(arity)])
    if not isinstance(probe, torch.Tensor) or probe.shape != (2,):
        raise ValueError(f"fn of {name!r} must map float32[n] argument(s) to float32[n] elementwise")
    if numba is not None and not callable(numba):
        raise TypeError(f"numba form of {name!r} must be callable, got {type(numba).__name__}")
    if infix is None:
        infix = f"{name}({{0}})" if arity == 1 else f"{name}({{0}}, {{1}})"
    _TABLE[op] = Function(name, arity, fn, infix, doc or f"user function {name}", sympy, builtin=False, scalar=numba)
    OPCODE[name] = op
    _VERSION[0] += 1
    return op


def unregister_function(name: str) -> None:
    """Remove the most recently registered user function (tests; opcodes of others never move)."""
    op = OPCODE.get(name)
    if op is None or _TABLE[op].builtin:
        raise ValueError(f"{name!r} is not a registered user function")
    if op != max(_TABLE):
        raise ValueError(f"only the last registered user function can be removed, not {name!r}")
    del _TABLE[op], OPCODE[name]
    _VERSION[0] += 1


def table_version() -> int:
    return _VERSION[0]


def user_opcodes() -> list[int]:
    return [op for op, f in _TABLE.items() if not f.builtin]


def arity_table() -> torch.Tensor:
    """``int32[FIRST_VAR]``: arity per opcode below FIRST_VAR (PAD, CONST, free slots: 0). Features have arity 0."""
    t = torch.zeros(FIRST_VAR, dtype=torch.int32)
    for op, f in _TABLE.items():
        t[op] = f.arity
    return t


def function(op: int) -> Function:
    f = _TABLE.get(int(op))
    if f is None:
        raise ValueError(f"opcode {op} is not a function (functions: 1..{max(_TABLE)})")
    return f


def opcode_layout() -> dict:
    """The layout saved with programs: ``{"version", "functions": {name: opcode}, "const", "first_var"}``."""
    return {"version": LAYOUT_VERSION, "functions": dict(OPCODE), "const": CONST, "first_var": FIRST_VAR}


def remap_opcodes(ops: torch.Tensor, saved: Mapping | None) -> torch.Tensor:
    """``ops: int[P, L]`` written under the ``saved`` layout (``None``: version 1) -> this layout.

    Functions are matched by name, so programs survive new built-ins and user functions
    registered in another order; a saved function this process does not know raises."""
    saved = LAYOUT_V1 if saved is None else saved
    s_const, s_first = int(saved["const"]), int(saved["first_var"])
    if s_const == CONST and s_first == FIRST_VAR and all(OPCODE.get(n) == o for n, o in saved["functions"].items()):
        return ops
    lut = torch.zeros(s_first, dtype=torch.int64)
    lut[s_const] = CONST
    used = set(torch.unique(ops[(ops > 0) & (ops < s_first)]).tolist()) if ops.numel() else set()
    for name, o in saved["functions"].items():
        if name not in OPCODE:
            if int(o) in used:
                raise ValueError(f"saved programs use function {name!r}, unknown here: register it first "
                                 f"(tensorgp.engine.primitives.register_function)")
            continue
        lut[int(o)] = OPCODE[name]
    o = ops.long()
    mapped = torch.where(o >= s_first, o - s_first + FIRST_VAR, lut.to(ops.device)[o.clamp(max=s_first - 1)])
    return mapped.to(ops.dtype)


@dataclass(frozen=True)
class PrimitiveSet:
    """Which functions and terminals a run may use.

    ``variables`` names the features (the columns of X, in order): feature i is opcode FIRST_VAR + i.
    ``functions`` are names from FUNCTIONS; ``constants`` enables ephemeral random constants
    drawn uniformly from ``const_range``.
    """

    variables: tuple[str, ...]
    functions: tuple[str, ...] = DEFAULT_FUNCTIONS
    constants: bool = True
    const_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        unknown = [f for f in self.functions if f not in OPCODE]
        if unknown:
            raise ValueError(f"unknown function(s) {unknown}; known: {sorted(OPCODE)}")
        if not self.functions:
            raise ValueError("the function set is empty")
        if not self.variables:
            raise ValueError("no terminals: the primitive set needs at least one variable")
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"duplicate variable names in {self.variables}")
        if {"nan", "inf"} & set(self.variables):
            raise ValueError(f"variables named nan or inf would print as numbers: rename them ({self.variables})")

    @staticmethod
    def parse_functions(spec: str | Sequence[str] | None) -> tuple[str, ...]:
        """``"add,sub,mul"`` or a sequence of names -> validated tuple (None -> the default set)."""
        if spec is None:
            return DEFAULT_FUNCTIONS
        names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
        names = [n for n in names if n]
        unknown = [n for n in names if n not in OPCODE]
        if unknown:
            raise ValueError(f"unknown function(s) {unknown}; known: {', '.join(OPCODE)}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:  # a repeat would not weigh the draw: say so rather than drop it silently
            raise ValueError(f"function(s) listed more than once: {', '.join(dup)}")
        return tuple(names)

    @property
    def n_vars(self) -> int:
        return len(self.variables)

    def function_ops(self, arity: int | None = None) -> torch.Tensor:
        """``int32[k]``: opcodes of the enabled functions (of one arity if given)."""
        ops = [OPCODE[f] for f in self.functions if arity is None or function(OPCODE[f]).arity == arity]
        return torch.tensor(ops, dtype=torch.int32)

    def terminal_ops(self) -> torch.Tensor:
        """``int32[k]``: feature opcodes (CONST is drawn separately, see ``const_prob``)."""
        return torch.arange(FIRST_VAR, FIRST_VAR + self.n_vars, dtype=torch.int32)

    @property
    def max_arity(self) -> int:
        return max(function(OPCODE[f]).arity for f in self.functions)

    def opcode_names(self) -> list[str]:
        """Printable name of each opcode up to the last feature."""
        names = ["<unused>"] * FIRST_VAR
        names[PAD], names[CONST] = "<pad>", "<const>"
        for op, f in _TABLE.items():
            names[op] = f.name
        return names + list(self.variables)

    def to_dict(self) -> dict:
        return {
            "variables": list(self.variables),
            "functions": list(self.functions),
            "constants": self.constants,
            "const_range": list(self.const_range),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PrimitiveSet":
        return cls(tuple(d["variables"]), tuple(d["functions"]), bool(d["constants"]), tuple(d["const_range"]))
