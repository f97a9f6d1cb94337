"""The primitive set: opcodes, arities, protected semantics and printed forms.

Opcode layout (global and fixed, so a program tensor means the same thing in every run):

    0               PAD     (no-op, fills a row after its program ends)
    1 .. 14         functions, in the order of ``FUNCTIONS``
    15              CONST   (value in ``consts`` at the same position)
    16 + i          feature i (a proxy, or a column of X)

Every function is total on float32: no exception, and no NaN from finite inputs
except where overflow makes an intermediate +-inf (for example ``add`` of two
values near float32 max, then ``sub`` of two infinities). NaN inputs propagate,
which is how a failed proxy value makes the architecture rank last.
The protected forms follow gplearn's conventions with a smaller threshold.
All backends (torch reference, numba CPU, Triton) implement exactly these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

PAD = 0
CONST = 15
FIRST_VAR = 16
EPS = 1e-6  # protected div/inv/log treat |x| <= EPS as zero
EXP_MAX = 80.0  # exp(80) ~ 5.5e34 stays finite in float32


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    safe = b.abs() > EPS
    return torch.where(safe, a / torch.where(safe, b, torch.ones_like(b)), torch.ones_like(a))


def _log(a: torch.Tensor) -> torch.Tensor:
    m = a.abs()
    safe = m > EPS
    return torch.where(safe, torch.log(torch.where(safe, m, torch.ones_like(m))), torch.zeros_like(a))


def _inv(a: torch.Tensor) -> torch.Tensor:
    safe = a.abs() > EPS
    return torch.where(safe, 1.0 / torch.where(safe, a, torch.ones_like(a)), torch.zeros_like(a))


@dataclass(frozen=True)
class Function:
    name: str
    arity: int
    fn: Callable[..., torch.Tensor]
    infix: str  # format string; binary operators as "({0} + {1})", calls as "log({0})"
    doc: str


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
)
OPCODE: dict[str, int] = {f.name: i + 1 for i, f in enumerate(FUNCTIONS)}
N_FUNCTIONS = len(FUNCTIONS)
assert CONST == N_FUNCTIONS + 1 and FIRST_VAR == CONST + 1

DEFAULT_FUNCTIONS = ("add", "sub", "mul", "div", "neg", "log", "sqrt", "abs", "square", "inv", "exp", "tanh", "min", "max")


def arity_table() -> torch.Tensor:
    """``int32[FIRST_VAR]``: arity per opcode below FIRST_VAR (PAD, CONST: 0). Features have arity 0."""
    t = torch.zeros(FIRST_VAR, dtype=torch.int32)
    for i, f in enumerate(FUNCTIONS):
        t[i + 1] = f.arity
    return t


def function(op: int) -> Function:
    return FUNCTIONS[op - 1]


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
        ops = [OPCODE[f] for f in self.functions if arity is None or FUNCTIONS[OPCODE[f] - 1].arity == arity]
        return torch.tensor(ops, dtype=torch.int32)

    def terminal_ops(self) -> torch.Tensor:
        """``int32[k]``: feature opcodes (CONST is drawn separately, see ``const_prob``)."""
        return torch.arange(FIRST_VAR, FIRST_VAR + self.n_vars, dtype=torch.int32)

    @property
    def max_arity(self) -> int:
        return max(FUNCTIONS[OPCODE[f] - 1].arity for f in self.functions)

    def opcode_names(self) -> list[str]:
        """Printable name of each opcode up to the last feature."""
        return ["<pad>"] + [f.name for f in FUNCTIONS] + ["<const>"] + list(self.variables)

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
