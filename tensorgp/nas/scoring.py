"""``tensorgp score`` as a library call: a proxy scores and ranks every architecture of every task
of a Suite-Zero file (accuracies optional), and the scores are written as CSV or JSON;
``tensorgp eval --from``: a saved proxy's rank correlation with accuracy on labelled tasks."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from ..runtime.output import check_out_file
from ..runtime.results import dumps, write_atomic
from .baselines import score_predictions
from .data import load, select
from .experiment import scorable, scored_mean
from .proxy import Proxy, TaskScores, load_proxy

SCORE_FORMATS = (".csv", ".json")


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def score_rows(scored: dict[str, TaskScores]) -> list[dict[str, Any]]:
    """One row per (task, architecture), best first within each task: ``task, rank, arch, score``
    (and ``accuracy`` when the file had accuracies). A NaN score (a needed proxy failed) is None."""
    rows = []
    for name, ts in scored.items():
        ranks = ts.rank()
        for i in ts.order():
            row = {"task": name, "rank": int(ranks[i]), "arch": ts.keys[i], "score": _num(ts.scores[i])}
            if ts.accuracy is not None:
                row["accuracy"] = _num(ts.accuracy[i])
            rows.append(row)
    return rows


def check_output(path: str | Path | None) -> None:
    """Fail before scoring on an output name whose format is unknown."""
    if path is not None and Path(path).suffix.lower() not in SCORE_FORMATS:
        raise ValueError(f"--out {path}: unknown format {Path(path).suffix or '(no suffix)'!r}; "
                         f"use a name ending in {' or '.join(SCORE_FORMATS)}")
    if path is not None:
        check_out_file(path)


def write_scores(path: str | Path, rows: Sequence[dict], meta: dict) -> Path:
    """Write the rows atomically: CSV (a header line, one row per architecture) or JSON
    (``meta`` plus ``scores``)."""
    check_output(path)
    if Path(path).suffix.lower() == ".json":
        return write_atomic(path, dumps({**meta, "scores": list(rows)}) + "\n")
    buf = io.StringIO()
    fields = ["task", "rank", "arch", "score"] + (["accuracy"] if any("accuracy" in r for r in rows) else [])
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return write_atomic(path, buf.getvalue())


def score_file(result: str | Path | Proxy, data: str | Path | Sequence[str | Path], reference: Any = None,
               out: str | Path | None = None, top: int = 10) -> dict:
    """Score every architecture of ``data`` with the proxy of ``result`` (a result.json, a run
    directory, a saved proxy, or a ``Proxy``). Returns ``{proxy, preprocess, set_dependent,
    reference, tasks: {task: {n, labelled, top: [[arch, score], ...]}}, rows}`` (``top`` best per task); with ``out`` also writes
    the rows (``.csv`` or ``.json``)."""
    check_output(out)
    proxy = result if isinstance(result, Proxy) else load_proxy(result)
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    scored = proxy.score_tasks(load(paths, labels=False), reference)  # one load: a task in two files is an error
    rows = score_rows(scored)
    meta = {"proxy": proxy.expressions[0] if not proxy.is_ensemble else None,
            "ensemble": proxy.expressions if proxy.is_ensemble else None,
            "weights": proxy.weights if proxy.is_ensemble else None,
            "preprocess": proxy.preprocess, "set_dependent": proxy.set_dependent and reference is None,
            "reference": None if reference is None else str(reference)}
    if out is not None:
        write_scores(out, rows, meta)
    tasks = {n: {"n": len(ts.keys), "labelled": ts.accuracy is not None, "top": [[k, _num(v)] for k, v in ts.top(top)]}
             for n, ts in scored.items()}
    return {**meta, "tasks": tasks, "rows": rows}


def evaluate_proxy(result: str | Path | Proxy, data: str | Path | Sequence[str | Path], tasks_glob: str = "*") -> dict:
    """Kendall and Spearman of a held proxy (a result.json, a run directory, a saved proxy, or a
    ``Proxy``; a formula or a weighted ensemble) on every labelled task of ``data``, each task
    scored as one set with the proxy's own arithmetic (``Proxy.score_task``). Tasks that cannot be
    correlated are reported as ``evaluate_expression`` reports them and left out of the mean.
    Returns ``{proxy, ensemble, weights, preprocess, tasks: {task: {n, kendall, spearman}}, mean_kendall}``."""
    proxy = result if isinstance(result, Proxy) else load_proxy(result)
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    out: dict[str, dict] = {}
    for t in select(load(paths, labels=False), tasks_glob):
        t, problem = scorable(t, proxy.variables)
        if problem is not None:
            out[t.name] = problem
            continue
        pred = torch.from_numpy(proxy.score_task(t)).unsqueeze(0)  # non-finite scores rank last
        m = score_predictions(pred, t.accuracy, torch.tensor([0, len(t)]))
        out[t.name] = {"n": len(t), "kendall": float(m["kendall"][0, 0]), "spearman": float(m["spearman"][0, 0])}
    return {"proxy": proxy.expressions[0] if not proxy.is_ensemble else None,
            "ensemble": proxy.expressions if proxy.is_ensemble else None,
            "weights": proxy.weights if proxy.is_ensemble else None,
            "preprocess": proxy.preprocess, "tasks": out, "mean_kendall": scored_mean(out)}
