"""What an evolved proxy must beat, scored on the same architectures, and the scoring itself.

Every predictor (an evolved formula, a single proxy, an ensemble) is a row of predictions
``pred: float[K, N]`` over the N rows of T tasks concatenated (task t = ``offsets[t]:offsets[t+1]``).
``score_predictions`` turns it into per-task figures ``float32[K, T]``:

* ``kendall``, ``spearman``: global rank agreement with accuracy;
* ``top_kendall``: Kendall among the best 10% of the task by accuracy (the part a search uses);
* ``precision5``: share of the true top 5% that the predictor's top 5% recovers;
* ``top10_pct``: accuracy percentile (0..100) of the best architecture among the predictor's
  top 10, i.e. what a search that trains only those 10 would end with (100 = the best one).

A non-finite prediction (a failed proxy) ranks below every finite one, as in the fitness.
Baselines: every single proxy as is; the single proxy with the best training fitness; the best
single proxy of each task chosen with hindsight (an oracle no user has); and the mean-rank
ensemble of the proxies the formula may use.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .data import Task
from ..engine.fitness import rank_correlations, top_kendall

METRIC_KEYS = ("kendall", "spearman", "top_kendall", "precision5", "top10_pct")
TOP_FRACTION = 0.1  # for top_kendall
PRECISION_FRACTION = 0.05  # for precision5
SEARCH_BUDGET = 10  # for top10_pct


def _finite_or_lowest(pred: torch.Tensor) -> torch.Tensor:
    pred = pred.to(torch.float64)
    return torch.where(torch.isfinite(pred), pred, torch.full_like(pred, -math.inf))


def task_ranks(pred: torch.Tensor, offsets: torch.Tensor, quantile: bool = True) -> torch.Tensor:
    """``pred: float[K, N]`` -> ``float64[K, N]`` average rank within each task (ties share their
    mean rank; non-finite values rank lowest): the quantile in [0, 1] (one-row task: 0.5), or
    with ``quantile=False`` the 0-based rank itself, a multiple of 1/2, so that sums over
    predictors are exact and keep exact ties (an ensemble's order must not depend on rounding).

    Batched over tasks on ``pred``'s device with no host read (the anchored fitness ranks every
    generation): sort by value, then stably by task, and give each run of equal values in a task
    the mean of its first and last position."""
    x = _finite_or_lowest(pred)
    K, N = x.shape
    if N == 0:
        return x
    off = torch.as_tensor(offsets, device=x.device)
    pos = torch.arange(N, device=x.device)
    task = torch.searchsorted(off[1:], pos, right=True)  # int64[N]: the task of each row
    by_value = torch.sort(x, dim=1, stable=True).indices
    order = by_value.gather(1, torch.sort(task[by_value], dim=1, stable=True).indices)  # [K, N] task, then value
    sv, st = x.gather(1, order), task[order]
    new = torch.ones(K, N, dtype=torch.bool, device=x.device)
    new[:, 1:] = (sv[:, 1:] != sv[:, :-1]) | (st[:, 1:] != st[:, :-1])  # a tie group starts
    end = torch.ones_like(new)
    end[:, :-1] = new[:, 1:]
    first = torch.cummax(torch.where(new, pos, 0).expand(K, N), dim=1).values
    last = torch.flip(torch.cummin(torch.flip(torch.where(end, pos, N).expand(K, N), [1]), dim=1).values, [1])
    start = off[:-1][st]
    avg = (first + last - 2 * start).to(x.dtype) / 2  # 0-based average rank within the task
    if quantile:
        n = (off[1:] - off[:-1])[st].to(x.dtype)
        avg = torch.where(n > 1, avg / (n - 1).clamp(min=1), torch.full_like(avg, 0.5))
    return torch.empty_like(x).scatter_(1, order, avg)


def score_predictions(pred: torch.Tensor, accuracy: torch.Tensor, offsets: torch.Tensor) -> dict[str, torch.Tensor]:
    """``pred: float[K, N]`` -> ``{metric: float32[K, T]}`` for every metric in ``METRIC_KEYS``."""
    pred = pred.detach().cpu().to(torch.float64)  # exact for float32 predictions and rank means
    accuracy = accuracy.detach().cpu().to(torch.float64)  # as the objective ranks it: a float32 cast merges ties
    offsets = torch.as_tensor(offsets).cpu()
    tau, rho = rank_correlations(pred, accuracy, offsets)
    tk = top_kendall(pred, accuracy, offsets, TOP_FRACTION)
    x = _finite_or_lowest(pred)
    off = offsets.tolist()
    K, T = pred.shape[0], len(off) - 1
    prec = torch.zeros(K, T)
    best = torch.zeros(K, T)
    for t, (a, b) in enumerate(zip(off[:-1], off[1:])):  # tasks, batched over K
        n = b - a
        if n == 0:
            continue
        acc = accuracy[a:b]
        q = max(1, round(PRECISION_FRACTION * n))
        true_top = torch.zeros(n, dtype=torch.bool)
        true_top[torch.argsort(acc, descending=True, stable=True)[:q]] = True
        order = torch.argsort(x[:, a:b], dim=1, descending=True, stable=True)
        prec[:, t] = true_top[order[:, :q]].float().mean(1)
        pct = 100.0 * torch.searchsorted(torch.sort(acc).values, acc, right=True).float() / n
        best[:, t] = pct[order[:, :min(SEARCH_BUDGET, n)]].max(1).values
    return {"kendall": tau, "spearman": rho, "top_kendall": tk, "precision5": prec, "top10_pct": best}


def metric_dicts(scores: dict[str, torch.Tensor], row: int, keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Row ``row`` of ``score_predictions`` output as ``{key_t: {metric: value}}`` per task t."""
    return {k: {m: float(scores[m][row, t]) for m in METRIC_KEYS} for t, k in enumerate(keys)}


def _concat(tasks: Sequence[Task]) -> tuple[torch.Tensor, torch.Tensor]:
    acc = torch.cat([t.accuracy for t in tasks])
    off = torch.cumsum(torch.tensor([0] + [len(t) for t in tasks]), 0)
    return acc, off


def proxy_predictions(tasks: Sequence[Task], proxies: Sequence[str]) -> torch.Tensor:
    """``float32[len(proxies), N]``: each proxy's raw values on the tasks' rows (NaN where absent).
    Raw is enough: every score here is invariant to the monotone preprocessing modes."""
    return torch.cat([torch.stack([t.column(p) for p in proxies]) for t in tasks], 1)


def single_proxies(entries: Sequence[tuple[str, Task]]) -> dict[str, dict[str, dict[str, float]]]:
    """Every proxy present on a task (see ``Task.present``), used as is: ``{key: {proxy: {metric: v}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, t in entries:
        names = [p for p in t.proxies if t.present(p)]
        if not names:
            out[key] = {}
            continue
        acc, off = _concat([t])
        sc = score_predictions(proxy_predictions([t], names), acc, off)
        out[key] = {p: {m: float(sc[m][i, 0]) for m in METRIC_KEYS} for i, p in enumerate(names)}
    return out


def mean_rank_ensemble(entries: Sequence[tuple[str, Task]], proxies: Sequence[str]) -> dict[str, dict[str, float]]:
    """The mean per-task rank of ``proxies`` (each as is) as one predictor: ``{key: {metric: v}}``."""
    if not entries:
        return {}
    tasks = [t for _, t in entries]
    acc, off = _concat(tasks)
    pred = task_ranks(proxy_predictions(tasks, proxies), off, quantile=False).sum(0, keepdim=True)  # exact
    return metric_dicts(score_predictions(pred, acc, off), 0, [k for k, _ in entries])


def oracle(single: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict]:
    """Per task, the single proxy with the best Kendall on that very task (hindsight)."""
    out = {}
    for key, per in single.items():
        if not per:
            out[key] = {"proxy": None, **{m: float("nan") for m in METRIC_KEYS}}
            continue
        p = max(per, key=lambda q: per[q]["kendall"])
        out[key] = {"proxy": p, **per[p]}
    return out


def best_on_train(train_fitness: dict[str, float], single: dict[str, dict[str, dict[str, float]]]) -> dict:
    """The proxy with the best training fitness (``{proxy: fitness}``) and its figures on every task."""
    finite = {p: f for p, f in train_fitness.items() if math.isfinite(f)}
    if not finite:
        return {"proxy": None, "fitness": float("nan"), "tasks": {}}
    p = max(finite, key=lambda q: finite[q])
    nan = {m: float("nan") for m in METRIC_KEYS}
    return {"proxy": p, "fitness": finite[p], "tasks": {k: dict(per.get(p, nan)) for k, per in single.items()}}


def compute(entries: Sequence[tuple[str, Task]], proxies: Sequence[str], train_fitness: dict[str, float]) -> dict:
    """All baselines on ``entries`` (``(key, task)`` pairs of every split).

    ``proxies``: the terminals the formula may use (the ensemble's members and the candidates
    for best-on-train); ``train_fitness``: each of those proxies' training fitness.
    """
    single = single_proxies(entries)
    return {
        "proxies": list(proxies),
        "single": single,
        "best_on_train": best_on_train(train_fitness, single),
        "oracle": oracle(single),
        "mean_rank": {"proxies": list(proxies), "tasks": mean_rank_ensemble(entries, proxies)},
    }
