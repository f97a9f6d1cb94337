"""Evaluation protocols that run several evolutions: leave-one-space-out (one evolution per
search space among the training tasks, that space held out as the test set) and its summary.
Single-run protocols (architecture splits, validation tasks) live in ``splits``; the choice of
the reported formula in ``selection``."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from .data import DataError, load, select
from .experiment import evolve_proxy
from .splits import finite_mean as _mean, space_of, spaces

# ----------------------------------------------------------------------------- leave one space out


def leave_one_space_out(spec, callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                        on_fold: Callable[[str, int, int], None] | None = None, whole: bool = True) -> dict:
    """One evolution per search space among the tasks matching ``spec.train``, each with that
    space held out as the test set (``spec.test`` must be unset). ``on_fold(space, i, k)`` is
    called before fold i of k (``on_fold("all", k, k)`` before the evolution on every space).
    Returns ``{"protocol", "folds": {space: run result}, "summary", "all_spaces", "expression",
    "proxy"}``: besides the folds (which measure transfer), one more evolution on every space
    gives the formula a user takes away (``expression``/``proxy``, as in a split result);
    ``whole=False`` skips it (a study that measures transfer only)."""
    if spec.test:
        raise ValueError("leave-one-space-out takes its test sets from --train; do not pass --test")
    if spec.validation:
        raise ValueError("leave-one-space-out does not take --validation (use --fit-fraction for held-out rows)")
    t0 = time.perf_counter()
    tasks = select(load(spec.data), spec.train)
    sp = spaces(tasks)
    if len(sp) < 2:
        raise DataError(f"leave-one-space-out needs tasks of at least 2 search spaces, got {sp}")
    folds: dict[str, dict] = {}
    for i, s in enumerate(sp):
        if should_stop is not None and should_stop():
            break
        if on_fold is not None:
            on_fold(s, i, len(sp))
        fold = replace(spec, train=",".join(t.name for t in tasks if space_of(t.name) != s),
                       test=",".join(t.name for t in tasks if space_of(t.name) == s))
        folds[s] = evolve_proxy(fold, callback, should_stop)
    all_run = whole
    whole = None
    if all_run and len(folds) == len(sp) and not (should_stop is not None and should_stop()):
        if on_fold is not None:
            on_fold("all", len(sp), len(sp))
        whole = evolve_proxy(replace(spec, train=",".join(t.name for t in tasks), test=None), callback, should_stop)
    first = next(iter(folds.values()), {})
    return {
        "protocol": "leave-one-space-out",
        "version": first.get("version"),
        "spaces": sp,
        "folds": folds,
        "summary": {s: fold_summary(r) for s, r in folds.items()},
        "interrupted": len(folds) < len(sp) or any(r.get("interrupted") for r in folds.values())
                       or (all_run and whole is None) or bool(whole and whole.get("interrupted")),
        "time_s": time.perf_counter() - t0,
        "config": first.get("config"),
        "preprocess": spec.preprocess, "metric": spec.metric, "aggregation": spec.aggregation,
        "selected": spec.select,
        "all_spaces": _all_spaces(whole),
        "expression": whole.get("expression") if whole else None,
        "ensemble": whole.get("ensemble") if whole else None,
        "proxies": whole.get("proxies") if whole else None,
        "proxy": whole.get("proxy") if whole else None,
    }


def _all_spaces(r: dict | None) -> dict | None:
    """The evolution on every space, without the fields the top level repeats."""
    if r is None:
        return None
    keep = ("expression", "ensemble", "size", "fitness", "selected", "selection", "pareto", "train_tasks",
            "mean_kendall", "generations_run", "time_s", "interrupted")
    return {k: r[k] for k in keep if k in r}


def fold_summary(r: dict, split: str = "test") -> dict:
    """Mean Kendall over one split of a run result: the evolved formula (every strategy; median and
    IQR over runs) and every baseline, plus the single proxies that beat the selected formula."""
    keys = [s["key"] for s in r.get("sets", []) if s["split"] == split]
    if not keys:
        return {}
    base = r["baselines"]
    sel = r.get("selection", {})
    singles = {}
    for p in base["proxies"]:
        singles[p] = _mean([base["single"][k].get(p, {}).get("kendall") for k in keys])
    out = {
        "tasks": keys,
        "strategies": {name: v["mean"].get(split) for name, v in sel.items()},
        "runs": r.get("summary", {}).get("splits", {}).get(split),
        "best_on_train": {"proxy": base["best_on_train"]["proxy"],
                          "kendall": _mean([base["best_on_train"]["tasks"][k]["kendall"] for k in keys])},
        "oracle": _mean([base["oracle"][k]["kendall"] for k in keys]),
        "mean_rank": _mean([base["mean_rank"]["tasks"][k]["kendall"] for k in keys]),
        "single": singles,
    }
    chosen = out["strategies"].get(r.get("selected", "train"))
    out["selected"] = chosen
    out["beaten_by"] = sorted([p for p, v in singles.items() if v is not None and chosen is not None and v > chosen],
                              key=lambda p: -singles[p])
    return out
