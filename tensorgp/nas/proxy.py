"""An evolved zero-cost proxy a user can hold: one formula (or an ensemble of formulas), the
proxies it reads, its preprocessing, an optional reference set, and where it came from.

``Proxy.score`` turns proxy values of architectures into scores (higher = predicted better): a
dict of arrays, a pandas DataFrame, an array or tensor ``[n, m]`` with column names, or a
Suite-Zero file (with or without accuracies; one score array per task).

**Scores depend on the candidate set** when the preprocessing is per-set (``rank``, ``zscore``)
or the proxy is an ensemble (mean per-set rank of its formulas): as in evolution, each call
preprocesses the architectures it is given *as one set*, so an architecture's score changes
with the company it is scored in (its *ranking* within the set is what the proxy was evolved
for). For a score that does not move, pass ``reference=``: ``"train"`` (the training
architectures saved with the proxy) or explicit architectures (any input ``score`` takes). Each
value is then placed against the reference (rank: the mid-rank quantile ``(#below + #equal/2) /
k`` among the reference's finite values; zscore: the reference's mean and deviation; an
ensemble member's prediction: its quantile among the member's predictions on the reference), so
scoring a set at once or one architecture at a time gives the same scores.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..engine import expression as E
from ..engine.evaluate import evaluate
from ..engine.export import node_to_latex, node_to_python, node_to_sympy, python_identifier
from ..engine.population import Population
from ..runtime.results import write_json
from .baselines import task_ranks
from .data import FAILED_BELOW, PREPROCESS_MODES, DataError, Task, load, preprocess as preprocess_columns

PROXY_FORMAT = 1
SET_DEPENDENT = ("rank", "zscore")  # preprocessing computed over the scored set
SCORE_DTYPES = ("float64", "float32")  # the formula's arithmetic in Proxy.score


@dataclass
class TaskScores:
    """Scores of one task's architectures: ``scores float[n]`` (NaN: a needed proxy failed)."""

    task: str
    keys: list[str]
    scores: np.ndarray
    accuracy: np.ndarray | None = None  # float32[n] when the file had accuracies

    def order(self) -> np.ndarray:
        """``int64[n]``: indices best first (NaN last; ties keep file order)."""
        s = np.where(np.isfinite(self.scores), self.scores.astype(np.float64), -np.inf)
        return np.argsort(-s, kind="stable")

    def rank(self) -> np.ndarray:
        """``int64[n]``: 1 for the best score."""
        r = np.empty(len(self.keys), dtype=np.int64)
        r[self.order()] = np.arange(1, len(self.keys) + 1)
        return r

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        return [(self.keys[i], float(self.scores[i])) for i in self.order()[:k]]


def _ecdf(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mid-rank quantile of each x among the finite reference values; NaN stays NaN."""
    r = np.sort(ref[np.isfinite(ref)])
    if r.size == 0:
        raise DataError("the reference set has no finite value for a proxy the formula needs")
    lo = np.searchsorted(r, x, side="left")
    hi = np.searchsorted(r, x, side="right")
    return np.where(np.isnan(x), np.nan, (lo + hi) / (2.0 * r.size))


@dataclass
class Proxy:
    """A formula (one expression) or an ensemble (several; scored as their mean per-set rank).

    ``expressions``: infix formulas over ``variables`` (the proxies they read, in parameter order);
    ``preprocess``: per-set column transform applied before the formula (see the module doc);
    ``reference``: ``float64[k, len(variables)]`` raw values of reference architectures, or None;
    ``provenance``: where the proxy came from (run settings, selection, training tasks);
    ``weights``: an ensemble's weight per formula (None: equal), positive; the score divides by
    their sum (integer weights keep the weighted rank sums exact, so exact ties stay ties)."""

    expressions: list[str]
    variables: list[str]
    preprocess: str = "rank"
    reference: np.ndarray | None = field(default=None, repr=False, compare=False)
    provenance: dict = field(default_factory=dict, repr=False)
    result: dict | None = field(default=None, repr=False, compare=False)  # the run's result, when just evolved
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        if not self.expressions:
            raise ValueError("a proxy needs at least one formula")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess mode {self.preprocess!r}; modes: {', '.join(PREPROCESS_MODES)}")
        self.variables = list(self.variables)
        self.nodes = [E.parse(e, self.variables) for e in self.expressions]
        if self.weights is not None:
            w = [float(x) for x in self.weights]
            if len(w) != len(self.expressions) or not all(math.isfinite(x) and x > 0 for x in w):
                raise ValueError(f"ensemble weights {self.weights!r}: need one positive weight per formula "
                                 f"({len(self.expressions)})")
            self.weights = w
        if self.reference is not None:
            ref = np.array(self.reference, dtype=np.float64).reshape(-1, len(self.variables))
            with np.errstate(invalid="ignore"):
                ref[~np.isfinite(ref) | (ref <= FAILED_BELOW)] = np.nan  # failed values, as everywhere
            self.reference = ref

    # ------------------------------------------------------------------ description

    @property
    def is_ensemble(self) -> bool:
        return len(self.expressions) > 1

    @property
    def set_dependent(self) -> bool:
        """True when a score (not only a ranking) depends on the other architectures of the call."""
        return self.preprocess in SET_DEPENDENT or self.is_ensemble

    @property
    def size(self) -> int:
        return sum(E.size(n) for n in self.nodes)

    def __str__(self) -> str:
        body = self.expressions[0] if not self.is_ensemble else \
            "mean per-set rank of " + "; ".join(self.expressions) if self.weights is None else \
            "weighted mean per-set rank of " + "; ".join(f"{w / sum(self.weights):.4g} x {e}"
                                                         for w, e in zip(self.weights, self.expressions))
        note = (f"; scores depend on the scored set ({self.preprocess} preprocessing"
                f"{', ensemble' if self.is_ensemble else ''}) unless reference= is given") if self.set_dependent else ""
        return f"Proxy({body}; preprocess {self.preprocess}{note})"

    # ------------------------------------------------------------------ inputs

    def _columns(self, features: Any, names: Sequence[str] | None = None, what: str = "features") -> np.ndarray:
        """``float64[n, len(variables)]`` from a dict of arrays, a DataFrame, or an array/tensor with
        names: raw values, as a file's tasks hold them (the preprocessing runs in float64 as in
        evolution, so close values that float32 would merge keep their order)."""
        if hasattr(features, "columns") and hasattr(features, "to_numpy"):  # pandas without importing it
            features = {str(c): features[c].to_numpy() for c in features.columns}
        if isinstance(features, Mapping):
            missing = [v for v in self.variables if v not in features]
            if missing:
                raise DataError(f"{what}: no column for proxy {', '.join(map(repr, missing))} that the formula "
                                f"needs; columns given: {', '.join(map(str, features)) or 'none'}")
            cols = [np.asarray(features[v], dtype=np.float64).reshape(-1) for v in self.variables]
            n = {c.size for c in cols}
            if len(n) > 1:
                raise DataError(f"{what}: columns of different lengths {sorted(n)}")
            n_rows = len(np.asarray(next(iter(features.values()))).reshape(-1)) if features else 0
            x = np.stack(cols, 1) if cols else np.zeros((n_rows, 0))  # a formula of constants still scores every row
        else:
            arr = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
            if arr.ndim != 2:
                raise DataError(f"{what}: expected a [n, m] array with names=, got shape {arr.shape}")
            if names is None:
                if arr.shape[1] != len(self.variables):
                    raise DataError(f"{what}: an array without names= must have the proxy's {len(self.variables)} "
                                    f"columns ({', '.join(self.variables)}), got {arr.shape[1]}")
                names = self.variables
            if len(names) != arr.shape[1]:
                raise DataError(f"{what}: {len(names)} names for {arr.shape[1]} columns")
            return self._columns(dict(zip(names, arr.T)), what=what)
        x = x.astype(np.float64)
        with np.errstate(invalid="ignore"):
            x[~np.isfinite(x) | (x <= FAILED_BELOW)] = np.nan  # a failed value, as the loader treats it
        return x

    def _reference(self, reference: Any) -> np.ndarray | None:
        if reference is None:
            return None
        if isinstance(reference, str) and reference == "train":
            if self.reference is None:
                raise DataError("this proxy holds no reference set (reference='train'); pass explicit architectures")
            return self.reference
        if isinstance(reference, (str, Path)):
            tasks = load(reference, labels=False)
            return np.concatenate([self._task_columns(t) for t in tasks])
        return self._columns(reference, what="reference")

    def _task_columns(self, t: Task) -> np.ndarray:
        missing = [v for v in self.variables if v not in t.proxies]
        if missing:
            raise DataError(f"{t.source}: task {t.name} has no values of proxy {', '.join(map(repr, missing))} "
                            f"that the formula needs; its proxies: {', '.join(t.proxies)}")
        x = t.features[:, [t.proxies.index(v) for v in self.variables]].numpy()
        with np.errstate(invalid="ignore"):
            dead = [v for j, v in enumerate(self.variables)
                    if len(x) and not (np.isfinite(x[:, j]) & (x[:, j] > FAILED_BELOW)).any()]
        if dead:  # the scores would all be NaN: say why instead of printing a silent table of blanks
            warnings.warn(f"{t.source}: task {t.name}: proxy {', '.join(map(repr, dead))} failed (NaN, inf or "
                          f"-1e8) on every architecture, so every score is NaN", stacklevel=3)
        return x

    # ------------------------------------------------------------------ scoring

    def _inputs(self, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        """The formula's inputs ``float32[n, m]``: the preprocessing over the set, or against ``ref``."""
        if ref is None or self.preprocess not in SET_DEPENDENT:
            return preprocess_columns(torch.from_numpy(x), self.preprocess).numpy()
        xd, rd = x.astype(np.float64), ref.astype(np.float64)
        if self.preprocess == "rank":
            cols = [_ecdf(rd[:, j], xd[:, j]) for j in range(x.shape[1])]
        else:
            cols = []
            for j in range(x.shape[1]):
                r = rd[np.isfinite(rd[:, j]), j]
                mu, sd = (r.mean(), r.std()) if r.size else (0.0, 0.0)
                cols.append((xd[:, j] - mu) / (sd if sd > 0 else 1.0))
        return np.stack(cols, 1).astype(np.float32) if cols else x

    def _predict(self, inputs: np.ndarray, backend: str, dtype: str = "float64") -> torch.Tensor:
        """``float[K, n]``: every formula on the inputs (the float32 values evolution saw), by the
        engine. ``dtype="float64"``: the torch interpreter in float64 (``evaluate`` takes a float64
        ``X`` there whatever ``backend`` says), the semantics ``to_python`` and
        ``to_sympy(protected=True)`` export; ``"float32"``: evolution's arithmetic, on ``backend``."""
        if dtype not in SCORE_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(SCORE_DTYPES)}")
        pop = Population.from_rows([E.to_postfix(n) for n in self.nodes])
        X = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).reshape(len(inputs), len(self.variables))
        if not self.variables:  # a formula of constants reads no column; the interpreter indexes one
            X = torch.zeros(len(inputs), 1)
        return evaluate(pop, X.double() if dtype == "float64" else X, backend)

    def _score_matrix(self, x: np.ndarray, ref: np.ndarray | None, backend: str, dtype: str) -> np.ndarray:
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        pred = self._predict(self._inputs(x, ref), backend, dtype)
        if not self.is_ensemble:
            return pred[0].numpy()
        w = torch.tensor(self._weights(), dtype=torch.float64)
        if ref is None:  # (weighted) mean per-set rank quantile, as selection's ensembles rank within a task
            r = (task_ranks(pred, torch.tensor([0, n]), quantile=False) * w[:, None]).sum(0)
            return (r / (float(w.sum()) * max(n - 1, 1))).numpy()
        rp = self._predict(self._inputs(ref, ref), backend, dtype).double()
        pd = pred.double()
        lowest = lambda p: torch.where(torch.isfinite(p), p, torch.full_like(p, -math.inf)).numpy()
        qs = [_ecdf(np.where(np.isnan(lowest(rp[k])), -np.inf, lowest(rp[k])), lowest(pd[k]))
              for k in range(len(self.nodes))]
        return np.tensordot(w.numpy(), np.stack(qs), 1) / float(w.sum())

    def _weights(self) -> list[float]:
        """Each formula's weight (unnormalized; equal when ``weights`` is None)."""
        return self.weights if self.weights is not None else [1.0] * len(self.nodes)

    def score(self, features: Any, names: Sequence[str] | None = None, reference: Any = None,
              backend: str = "torch", dtype: str = "float64") -> np.ndarray | dict[str, TaskScores]:
        """Scores (higher = predicted better) of architectures.

        ``features``: dict ``{proxy: float[n]}``, a pandas DataFrame, an array/tensor ``[n, m]``
        (columns ``names``, default ``variables``) -> ``float[n]``; or a Suite-Zero file or
        directory (accuracies optional) -> ``{task: TaskScores}``, each task scored as one set.
        ``reference``: None (preprocess over the scored set, as in evolution), ``"train"`` (the
        stored training architectures) or explicit architectures (any input above; a file's
        tasks are pooled). Extra columns are ignored; NaN/inf values count as failed.

        Precision: the preprocessed inputs are the float32 values evolution computed its fitness
        on; the formula is computed on them in float64 (evolution's fitness used float32). The
        exports compute the same float64 operations, so they rank alike (see ``to_python``);
        float32 would merge close values and let numpy's and torch's last-ulp differences in
        exp/log/tanh reorder near-ties. ``dtype="float32"``: evolution's arithmetic instead, which
        reproduces the per-task Kendall of the run's result exactly (float64 may differ from it
        slightly where float32 rounding reordered or merged close values)."""
        if isinstance(features, (str, Path)):
            return self.score_tasks(load(features, labels=False), reference, backend, dtype)
        return self._score_matrix(self._columns(features, names), self._reference(reference), backend, dtype)

    __call__ = score

    def score_tasks(self, tasks: Sequence[Task], reference: Any = None, backend: str = "torch",
                    dtype: str = "float64") -> dict[str, TaskScores]:
        """``{task: TaskScores}`` for loaded tasks, each scored as one set (see ``score``)."""
        ref = self._reference(reference)
        return {t.name: TaskScores(t.name, list(t.keys), self._score_matrix(self._task_columns(t), ref, backend, dtype),
                                   t.accuracy.numpy() if t.labelled else None) for t in tasks}

    def score_task(self, task: Task, reference: Any = None, backend: str = "torch", dtype: str = "float64") -> np.ndarray:
        """``float[n]``: scores of one loaded task's architectures, the task as one set."""
        return self._score_matrix(self._task_columns(task), self._reference(reference), backend, dtype)

    # ------------------------------------------------------------------ export

    def to_sympy(self, protected: bool = False):
        """sympy expression (a list for an ensemble); ``protected=True``: exact protected forms,
        built unevaluated so that ``sympy.lambdify`` on float64 arrays computes what ``score``
        does, operation for operation (``export.node_to_sympy``)."""
        import sympy as sp  # optional dependency

        syms = sp.symbols(self.variables) if len(self.variables) > 1 else [sp.Symbol(v) for v in self.variables]
        out = [node_to_sympy(n, list(syms), protected=protected) for n in self.nodes]
        return out[0] if not self.is_ensemble else out

    def to_latex(self) -> str:
        parts = [node_to_latex(n, self.variables) for n in self.nodes]
        if not self.is_ensemble:
            return parts[0]
        if self.weights is not None:
            return " + ".join(rf"{w / sum(self.weights):.4g}\,\operatorname{{rank}}\left({p}\right)"
                              for w, p in zip(self.weights, parts))
        ranks = " + ".join(rf"\operatorname{{rank}}\left({p}\right)" for p in parts)
        return rf"\frac{{1}}{{{len(parts)}}}\left({ranks}\right)"

    def to_python(self, name: str = "proxy") -> str:
        """Source of a standalone module (numpy only): ``formula(...)`` (or ``formula_0``, ... for
        an ensemble) on preprocessed inputs with the engine's protected semantics in float64 (as
        ``score`` computes), and ``name(...)`` on the raw proxy values of one candidate set (the
        preprocessing to float32, as in evolution, then the formula or the ensemble's mean rank),
        keyword arguments named after the proxies. Its scores rank every set as ``score`` does:
        bit for bit where the formula uses no exp/log/tanh/sqrt/pow/sin/cos; otherwise numpy's and
        torch's versions of those may differ in the last ulp (tests/test_proxy.py)."""
        doc = (f"tensorgp proxy ({self.preprocess} preprocessing over the scored set"
               f"{'; ensemble: mean per-set rank' if self.is_ensemble else ''}).")
        src = node_to_python(self.nodes if self.is_ensemble else self.nodes[0], self.variables, "formula", doc)
        used = sorted(set().union(*(E.variables_used(n) for n in self.nodes)))
        taken: set[str] = set()
        ident = [python_identifier(self.variables[i], taken) for i in used]
        params = ", ".join(ident)
        fnames = ["formula"] if not self.is_ensemble else [f"formula_{k}" for k in range(len(self.nodes))]
        body = [_PY_PREPROCESS, f"def {name}({params}):",
                f'    """Scores of one candidate set (arrays of raw proxy values; higher = better)."""']
        if ident:
            body.append(f"    cols = _preprocess(np.stack([{', '.join(f'np.asarray({i}, dtype=np.float64).reshape(-1)' for i in ident)}], 1), {self.preprocess!r})")
            args = ", ".join(f"cols[:, {j}]" for j in range(len(ident)))
            body.append("    n = cols.shape[0]")
        else:
            args, body = "", body + ["    n = 1"]
        preds = [f"np.broadcast_to({f}({args}), (n,))" for f in fnames]
        if not self.is_ensemble:
            body.append(f"    return np.array({preds[0]}, dtype=np.float64)")
        else:
            w = self._weights()
            body.append(f"    return ({' + '.join(f'{w[k]!r} * _rank({p})' for k, p in enumerate(preds))}) "
                        f"/ ({sum(w)!r} * max(n - 1, 1))")
        return src + "\n" + "\n".join(body) + "\n"

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        ref = None if self.reference is None else {v: self.reference[:, j].tolist() for j, v in enumerate(self.variables)}
        return {"format": PROXY_FORMAT, "kind": "ensemble" if self.is_ensemble else "formula",
                "expressions": list(self.expressions), "variables": list(self.variables),
                "preprocess": self.preprocess, "set_dependent": self.set_dependent,
                "reference": ref, "provenance": dict(self.provenance),
                **({"weights": list(self.weights)} if self.weights is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "proxy") -> "Proxy":
        try:
            ref = d.get("reference")
            arr = None
            if ref:
                arr = np.array([[math.nan if x is None else x for x in ref[v]] for v in d["variables"]],
                               dtype=np.float64).T
            exprs = d["expressions"]
            if not isinstance(exprs, list) or not all(isinstance(e, str) for e in exprs):
                raise TypeError(f"'expressions' must be a list of formulas, got {exprs!r}")
            return cls(list(exprs), list(d["variables"]), d.get("preprocess", "rank"), arr,
                       dict(d.get("provenance") or {}), weights=d.get("weights"))
        except (KeyError, TypeError, ValueError) as e:  # ValueError: a bad formula, mode or weight too
            raise DataError(f"{where}: not a valid proxy block ({e})") from None

    def save(self, path: str | Path) -> Path:
        """Write the proxy as JSON (atomically); ``load_proxy`` reads it back."""
        return write_json(path, {"proxy": self.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> "Proxy":
        return load_proxy(path)


def reference_rows(tasks: Sequence[Task], variables: Sequence[str]) -> np.ndarray:
    """``float64[sum n, m]``: raw values of ``variables`` over the tasks' architectures."""
    return np.concatenate([t.features[:, [t.proxies.index(v) for v in variables]].numpy() for t in tasks])


def proxy_block(result: Mapping, train_tasks: Sequence[Task]) -> dict:
    """The ``proxy`` block of a run result: the selected predictor, the proxies it reads (in the
    run's terminal order), its preprocessing, the training architectures as reference, provenance."""
    exprs = list(result["ensemble"]["expressions"]) if result.get("expression") is None else [result["expression"]]
    weights = result["ensemble"].get("weights") if result.get("expression") is None else None
    names = set().union(*(E.names_in(e) for e in exprs))
    variables = [p for p in result["proxies"] if p in names] or list(result["proxies"][:1])
    prov = {k: result.get(k) for k in ("version", "selected", "metric", "aggregation", "seed", "population",
                                         "generations", "runs", "train_tasks", "fitness", "size")}
    return Proxy(exprs, variables, result["preprocess"], reference_rows(train_tasks, variables), prov,
                 weights=weights).to_dict()


def proxy_from_result(r: Mapping, where: str = "result") -> Proxy:
    """The proxy of a ``run`` result, a leave-one-space-out result (its ``proxy`` block: the
    formula evolved on every space), or a saved proxy."""
    if "proxy" in r and isinstance(r["proxy"], Mapping):
        return Proxy.from_dict(r["proxy"], where)
    if r.get("protocol") == "leave-one-space-out":
        raise DataError(f"{where}: this leave-one-space-out result has no formula evolved on every space "
                        f"(written by an older tensorgp); use one fold's result or rerun")
    if r.get("expression") is None and not r.get("ensemble"):
        raise DataError(f"{where}: holds no 'expression', 'ensemble' or 'proxy' block; is it a tensorgp result?")
    try:
        block = {"expressions": list(r["ensemble"]["expressions"]) if r.get("expression") is None
                 else [str(r["expression"])],
                 "weights": r["ensemble"].get("weights") if r.get("expression") is None else None}
        names = set().union(*(E.names_in(e) for e in block["expressions"] if isinstance(e, str)))
        # a formula of constants alone still needs one column to know how many architectures it scores
        block["variables"] = ([p for p in r.get("proxies", sorted(names)) if p in names] or sorted(names)
                              or list(r.get("proxies") or [])[:1])
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{where}: not a valid result ({e!r} in its 'ensemble' block)") from None
    return Proxy.from_dict({**block, "preprocess": str(r.get("preprocess", "rank")),
                            "provenance": {"selected": r.get("selected")}}, where)


def load_proxy(path: str | Path) -> Proxy:
    """The proxy of ``result.json`` of ``tensorgp run`` (split or leave-one-space-out), of a run
    directory holding one, or of a file written by ``Proxy.save``."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    try:
        r = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read a proxy ({e})") from None
    if not isinstance(r, dict):
        raise DataError(f"{p}: top level is not a JSON object")
    return proxy_from_result(r, str(p))


_PY_PREPROCESS = '''
def _preprocess(x, mode):
    """Per-column preprocessing of one set, float64 in, float32 out (tensorgp.nas.data.preprocess)."""
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        x = np.where(np.isfinite(x) & (x > -1e7), x, np.nan)  # failed values, as the loader reads them
    if mode == "raw":
        return x.astype(np.float32)
    if mode == "signed-log":
        return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)
    out = np.full(x.shape, np.nan)
    for j in range(x.shape[1]):
        fin = np.isfinite(x[:, j])
        v = x[fin, j]
        if v.size == 0:
            continue
        if mode == "rank":
            s = np.sort(v)
            lo = np.searchsorted(s, v, side="left")
            hi = np.searchsorted(s, v, side="right")
            avg = (lo + hi + 1) / 2.0  # 1-based average rank
            out[fin, j] = (avg - 1) / (v.size - 1) if np.unique(v).size > 1 else 0.5
        else:
            sd = v.std()
            out[fin, j] = (v - v.mean()) / (sd if sd > 0 else 1.0)
    return out.astype(np.float32)


def _rank(v):
    """0-based average rank, non-finite values lowest."""
    v = np.where(np.isfinite(v), np.asarray(v, dtype=np.float64), -np.inf)
    s = np.sort(v)
    return (np.searchsorted(s, v, side="left") + np.searchsorted(s, v, side="right") - 1) / 2.0

'''
