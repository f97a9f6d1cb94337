"""The fitted regressor's Pareto front: one small table of the best program per complexity, and
the rules that pick the model from it.

``ParetoFront`` is a sequence of ``FittedProgram`` rows (complexity up, training loss strictly
down) that prints as a table, like PySR's equations table:

    >>> print(est.pareto_front_)
      #  complexity  loss         val_loss     expression
      0           1  0.781        0.802        x2
      3           5  0.00412      0.00398      (x0 * x1) + x2     <- selected
    >>> est.pareto_front_.to_pandas()     # pandas optional; to_dicts() without it

Selection rules (``SymbolicRegressor(model_selection=...)``), on the validation loss when the
fit held rows out (``validation_fraction``), else on the training loss:

* ``"accuracy"`` (default): the simplest entry whose loss is within ``tolerance`` (relative)
  of the lowest loss on the front.
* ``"knee"``: PySR's "best": among entries with loss <= 1.5 x the lowest, the one with the
  steepest drop of log-loss per unit of complexity from the previous entry.
* ``"best"``: the lowest loss.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from ..engine import expression as E
from ..engine.export import node_to_sympy
from ..engine.population import Population

SELECTIONS = ("accuracy", "knee", "best")


@dataclass
class FittedProgram:
    """One hall-of-fame entry: the model ``intercept + slope * program``."""

    complexity: int  # nodes of the program (without the scaling)
    loss: float  # training loss, in the loss's units
    expression: str
    intercept: float
    slope: float
    program: Population  # one program, on the CPU
    pareto: bool
    variables: tuple[str, ...] = ()
    val_loss: float | None = None  # on the held-out rows (validation_fraction), same units
    _sympy: Any = field(default=None, repr=False, compare=False)

    def to_sympy(self):
        """The model as a sympy expression over ``variables`` (needs sympy; cached)."""
        if self._sympy is None:
            try:
                import sympy as sp
            except ImportError as e:  # pragma: no cover - sympy is optional
                raise ImportError("to_sympy() needs sympy (pip install sympy)") from e
            if self.slope == 0:
                self._sympy = sp.Float(self.intercept, 15)
            else:
                node = E.row(self.program.ops, self.program.consts, self.program.length, 0)
                self._sympy = node_to_sympy(node, [sp.Symbol(n) for n in self.variables], self.intercept, self.slope)
        return self._sympy

    def to_latex(self) -> str:
        import sympy as sp

        return sp.latex(self.to_sympy())

    def to_dict(self) -> dict:
        return {"complexity": self.complexity, "loss": self.loss, "val_loss": self.val_loss,
                "expression": self.expression, "intercept": self.intercept, "slope": self.slope, "pareto": self.pareto}


def select(losses: list[float], complexities: list[int], rule: str = "accuracy", tolerance: float = 0.01) -> int:
    """Index of the model on a front given its ``losses`` (lower is better; NaN/inf never
    chosen unless all are) and ``complexities`` (increasing). See the module docstring."""
    if rule not in SELECTIONS:
        raise ValueError(f"model_selection={rule!r}; choose from {', '.join(SELECTIONS)}")
    if not losses:
        raise ValueError("an empty Pareto front has no model to select")
    ok = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if not ok:
        return len(losses) - 1
    best = min(losses[i] for i in ok)
    if rule == "best":
        return next(i for i in ok if losses[i] == best)
    if rule == "accuracy":
        limit = best + tolerance * abs(best)
        return next(i for i in ok if losses[i] <= limit)
    floor = 1e-300 + 1e-15 * abs(best)  # a loss of 0 would make every log-ratio infinite
    score, pick, prev = -math.inf, ok[0], None
    for i in ok:
        if prev is not None and losses[i] <= 1.5 * best + floor:
            s = -(math.log(max(losses[i], floor)) - math.log(max(losses[prev], floor))) / max(complexities[i] - complexities[prev], 1)
            if s > score:
                score, pick = s, i
        prev = i
    if score == -math.inf:  # one entry within 1.5x the best: it is the knee
        pick = next(i for i in ok if losses[i] <= 1.5 * best + floor)
    return pick


class ParetoFront(Sequence):
    """The front, simplest first; ``selected`` is the index of the estimator's model."""

    def __init__(self, entries: list[FittedProgram], selected: int, rule: str):
        self.entries = list(entries)
        self.selected = int(selected)
        self.rule = rule

    @overload
    def __getitem__(self, k: int) -> FittedProgram: ...
    @overload
    def __getitem__(self, k: slice) -> list[FittedProgram]: ...

    def __getitem__(self, k):
        return self.entries[k]

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, index: int | None) -> FittedProgram:
        """The entry at ``index`` (negative counts from the end); None: the selected one."""
        if index is None:
            return self.entries[self.selected]
        if not isinstance(index, int) or isinstance(index, bool) or not -len(self) <= index < len(self):
            raise IndexError(f"index={index!r}: the Pareto front has {len(self)} entries (0..{len(self) - 1})")
        return self.entries[index]

    def to_dicts(self, sympy: bool = False) -> list[dict]:
        """One dict per entry (``sympy=True`` adds the sympy expression)."""
        out = []
        for i, e in enumerate(self.entries):
            d = {"index": i, **e.to_dict(), "selected": i == self.selected}
            if sympy:
                d["sympy"] = e.to_sympy()
            out.append(d)
        return out

    def to_pandas(self, sympy: bool = True):
        """A DataFrame (needs pandas): complexity, loss, val_loss, expression, sympy, selected."""
        import pandas as pd

        rows = self.to_dicts(sympy=sympy)
        cols = ["complexity", "loss", "val_loss", "expression"] + (["sympy"] if sympy else []) + ["selected"]
        return pd.DataFrame(rows, columns=["index", *cols]).set_index("index")

    def __str__(self) -> str:
        val = any(e.val_loss is not None for e in self.entries)
        head = f"{'#':>3}  {'complexity':>10}  {'loss':<11}" + (f"  {'val_loss':<11}" if val else "") + "  expression"
        lines = [head]
        for i, e in enumerate(self.entries):
            s = f"{i:>3}  {e.complexity:>10}  {e.loss:<11.4g}"
            if val:
                s += f"  {(e.val_loss if e.val_loss is not None else math.nan):<11.4g}"
            s += f"  {e.expression}" + ("   <- selected" if i == self.selected else "")
            lines.append(s)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ParetoFront({len(self)} entries, selected {self.selected} by {self.rule!r})\n{self}"
