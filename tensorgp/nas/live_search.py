"""Live NAS search: regularized evolution over a search space whose candidates' proxies are
computed on the device as the search goes (``tensorgp search --live``).

The evolution is ``search.regularized_evolution`` (the table-driven search's loop) with a
``LiveObjective``: each step the R runs' new children are measured together in one batched
pass (architectures already measured by any run come from a cache), and the objective is the
formula over the proxies.

Preprocessing when the candidate set grows: the formula was evolved on per-task preprocessed
proxies (``rank``: average-rank quantiles within the task, ``zscore``, ...). A search has no
fixed task: here each run's *task is every architecture the run has scored so far*. At every
step the run's scored proxies are preprocessed together and the formula re-evaluated, so a
population member's objective can change as the run scores more (its rank among the others
moves); tournaments compare current values, and the reported best is the architecture with
the highest objective over the whole run at the end. ``raw`` and ``signed-log`` are
per-value, so for them nothing changes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..engine import expression as E
from .data import Task
from .live_proxies import compute_archs
from .measures import MeasureError, check_batch
from .search import (DEFAULT_POPULATION, DEFAULT_SAMPLE_SIZE, SearchError, accuracy_percentile, cpu_threads,
                     formula_values, neighbour_table, regularized_evolution, search_table, _median)
from .spaces import SearchSpace, get_space

PER_VALUE = ("raw", "signed-log")


class LiveObjective:
    """The formula over proxies computed on demand for ``archs int64[n, D]`` (space encodings);
    proxies of an architecture are computed once (``proxies float64[n, m]``, NaN = not yet)."""

    def __init__(self, space: SearchSpace, archs: torch.Tensor, expr: str, preprocess: str, runs: int,
                 measure: Callable[[list[tuple[int, ...]]], torch.Tensor]) -> None:
        self.space, self.archs, self.expr, self.preprocess = space, archs, expr, preprocess
        self.names = E.names_in(expr)
        if not self.names:
            raise SearchError(f"formula {expr!r} uses no proxy")
        E.parse(expr, self.names)  # a bad formula fails before any proxy is computed
        n = archs.shape[0]
        self.measure = measure
        self.proxies = torch.full((n, len(self.names)), math.nan, dtype=torch.float64)
        self.known = torch.zeros(n, dtype=torch.bool)
        self.fixed = torch.full((n,), -math.inf, dtype=torch.float64)  # per-value modes: the formula once
        self.scored = torch.zeros(runs, n, dtype=torch.bool)
        self.measured = 0
        self.measure_s = 0.0
        self.formula_s = 0.0

    def observe(self, idx: torch.Tensor) -> None:
        idx = idx.cpu()
        new = torch.unique(idx.flatten())
        new = new[~self.known[new]]
        if new.numel():
            t0 = time.perf_counter()
            vals = self.measure([tuple(r) for r in self.archs[new].tolist()])  # [k, m]
            self.measure_s += time.perf_counter() - t0
            self.proxies[new] = vals
            self.known[new] = True
            self.measured += new.numel()
            if self.preprocess in PER_VALUE:
                self.fixed[new] = self._formula(vals).double()
        self.scored.scatter_(1, idx, True)

    def _formula(self, X: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        # preprocessed to float32 like the tables the formula was evolved on, the formula in float64
        # (formula_values, as Proxy.score); failed proxies (NaN) score -inf
        v = formula_values(self.expr, self.names, X.float(), self.preprocess)
        self.formula_s += time.perf_counter() - t0
        return v

    def values(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.cpu()
        if self.preprocess in PER_VALUE:
            return self.fixed[idx]
        out = torch.full(idx.shape, -math.inf, dtype=torch.float64)
        for r in range(idx.shape[0]):  # each run's task: everything it has scored so far
            S = self.scored[r].nonzero().squeeze(1)
            f = torch.full((self.archs.shape[0],), -math.inf, dtype=torch.float64)
            f[S] = self._formula(self.proxies[S]).double()
            out[r] = f[idx[r]]
        return out


def run_live_search(space: str | SearchSpace, expr: str, inputs: torch.Tensor, targets: torch.Tensor,
                    preprocess: str = "raw", budget: int = 200, runs: int = 5, seed: int = 0,
                    data: Sequence[str | Path] | None = None, task: str | None = None,
                    population: int = DEFAULT_POPULATION, sample_size: int = DEFAULT_SAMPLE_SIZE,
                    pack: int | None = None, device: str = "cpu", threads: int | None = 1,
                    progress: Callable[[int], None] | None = None) -> dict:
    """``runs`` batched regularized-evolution searches of ``space`` maximising ``expr`` over proxies
    computed live on the batch. With ``data``/``task`` (a table such as nb201-final), the
    candidates are the table's architectures and each found one's accuracy and percentile are
    reported (a table without accuracies only gives the candidates: no accuracy figures);
    without, the candidates are the whole space. ``threads``: torch CPU threads meanwhile
    (1: on a shared CPU more threads spin and slow every pass; None: unchanged)."""
    with cpu_threads(threads):
        return _run(space, expr, inputs, targets, preprocess, budget, runs, seed, data, task, population,
                    sample_size, pack, device, progress)


def _candidates(sp: SearchSpace, data, task) -> tuple[torch.Tensor, Task | None]:
    if not data:
        if task:
            raise SearchError(f"task {task!r} names a table, but no data was given to read it from")
        return sp.enumerate(), None
    t = search_table(data, task or "*")
    try:
        enc = torch.tensor([sp.decode(k) for k in t.keys], dtype=torch.int64)
    except ValueError as e:
        raise SearchError(f"task {t.name}: its architecture keys are not {sp.name} architectures ({e})") from None
    return enc, t


def _run(space, expr, inputs, targets, preprocess, budget, runs, seed, data, task, population, sample_size, pack,
         device, progress) -> dict:
    t0 = time.perf_counter()
    sp = get_space(space)
    check_batch(inputs, targets)
    sp.check_inputs(inputs)
    if budget < 1 or runs < 1:
        raise SearchError(f"budget and runs must be >= 1 (got budget {budget}, runs {runs})")
    if population < 1 or sample_size < 1 or sample_size > population:
        raise SearchError(f"the tournament needs 1 <= sample size <= population (got population {population}, "
                          f"sample size {sample_size})")
    enc, table = _candidates(sp, data, task)
    nb = neighbour_table(enc)
    t_prep = time.perf_counter() - t0
    failures: list = []

    def measure(archs):
        tab = compute_archs(sp, archs, inputs, targets, obj.names, pack=pack, seed=seed, device=device)
        failures.extend(tab.failures)
        if progress is not None:
            progress(obj.measured + len(archs))
        return tab.values

    obj = LiveObjective(sp, enc, expr, preprocess, runs, measure)
    t1 = time.perf_counter()
    tr = regularized_evolution(None, enc, budget, runs, seed, population, sample_size, nb, objective=obj)
    t_search = time.perf_counter() - t1
    final = obj.values(tr.best[:, None].cpu().expand(runs, 1))[:, 0]
    labelled = table is not None and table.labelled
    pct = accuracy_percentile(table.accuracy) if labelled else None
    per_run = []
    for r, i in enumerate(tr.best.tolist()):
        row = {"run": r, "arch": sp.encode(enc[i].tolist()), "score": float(final[r]),
               "proxies": {n: float(v) for n, v in zip(obj.names, obj.proxies[i].tolist())},
               "evaluations": int(tr.evaluations[r])}
        if labelled:
            row.update(accuracy=float(table.accuracy[i]), percentile=float(pct[i]))
        per_run.append(row)
    res = {
        "space": sp.name, "expression": expr, "preprocess": preprocess, "live": True,
        "budget": min(budget, enc.shape[0]), "runs": runs, "seed": seed, "population": population,
        "sample_size": sample_size, "candidates": enc.shape[0], "pack": pack, "device": str(device),
        "batch": {"shape": list(inputs.shape)}, "proxies_computed": obj.names,
        "task": table.name if table is not None else None,
        "labelled": labelled,
        "per_run": per_run,
        "median": {"score": _median([r["score"] for r in per_run])},
        "architectures_measured": obj.measured,
        "failures": [{"arch": a, "proxy": p, "reason": m} for a, p, m in failures],
        "timing": {"prepare_s": t_prep, "proxies_s": obj.measure_s, "formula_s": obj.formula_s,
                   "search_loop_s": t_search - obj.measure_s - obj.formula_s, "search_s": t_search,
                   "total_s": time.perf_counter() - t0},
        "rank_growth": "each run ranks against every candidate it has scored so far" if preprocess not in PER_VALUE
        else "per-value preprocessing: objective fixed once measured",
    }
    if labelled:
        res["median"].update(accuracy=_median([r["accuracy"] for r in per_run]),
                             percentile=_median([r["percentile"] for r in per_run]))
        res["table_best_accuracy"] = float(table.accuracy.max())
    return res
