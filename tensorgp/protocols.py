"""Evaluation protocols for evolved proxies: what is fitted, what is held out, and which of the
evolved formulas is finally reported.

* Architecture split (``RunSpec.fit_fraction``): evolve on a seeded share of each training
  task's architectures; the rest of each task is reported as split ``holdout``.
* Validation tasks (``RunSpec.validation``): scored, never fitted; they pick the formula when
  ``select == "validation"``.
* Leave-one-space-out (``leave_one_space_out``): one evolution per search space (the task-name
  prefix before "/"), with that space held out as the test set.
* Independent runs (``EvolutionConfig.runs``): every run's best formula is scored on every task;
  the result carries each run's figures and their median and interquartile range.

Selection strategies (``SELECTIONS``), all applied to the hall of fame of every run:

* ``train``: the best training fitness (the paper's choice);
* ``validation``: the best mean Kendall on the validation tasks (never on held-out rows, which
  would then no longer measure anything held out);
* ``parsimony``: the smallest formula within ``PARSIMONY_TOLERANCE`` of the best training fitness;
* ``ensemble``: the mean per-task rank of every run's best formula (one predictor, R formulas).
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import replace
from typing import Callable, Sequence

import torch

from . import baselines as B
from . import expression as E
from .data import DataError, Task, load, make_batch, select
from .evaluate import evaluate
from .population import Population
from .primitives import FIRST_VAR

SELECTIONS = ("train", "validation", "parsimony", "ensemble")
PARSIMONY_TOLERANCE = 0.01  # fitness a formula may give up to be the smallest
SCATTER_TASKS = 3  # tasks whose (prediction rank, accuracy) points the result keeps for figures
SPLITS = ("train", "holdout", "validation", "test")


# ----------------------------------------------------------------------------- splits


def space_of(name: str) -> str:
    """Search space of a task name: ``nasbench201/cifar10`` -> ``nasbench201``."""
    return name.split("/", 1)[0]


def spaces(tasks: Sequence[Task]) -> list[str]:
    """Search spaces of ``tasks`` in order of first appearance."""
    return list(dict.fromkeys(space_of(t.name) for t in tasks))


def split_architectures(tasks: Sequence[Task], fraction: float, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """Per task, a seeded random ``fraction`` of the rows to fit on and the rest held out.

    The permutation of a task depends only on ``seed`` and the task name (not on which other
    tasks are selected), and each part keeps at least 2 rows. Returns ``(fit, held)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fit fraction must be in (0, 1), got {fraction}")
    fit, held = [], []
    for t in tasks:
        n = len(t)
        if n < 4:
            raise DataError(f"task {t.name}: {n} architectures are too few to split")
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(t.name.encode())) % 2**63)
        perm = torch.randperm(n, generator=g)
        k = min(n - 2, max(2, round(fraction * n)))
        fit.append(t.subset(torch.sort(perm[:k]).values))
        held.append(t.subset(torch.sort(perm[k:]).values))
    return fit, held


def split_validation_holdout(spec, tasks: list[Task], train: list[Task],
                             test: list[Task]) -> tuple[list[Task], list[Task], list[Task]]:
    """``(train, validation, holdout)`` for ``experiment.prepare``: validation tasks match
    ``spec.validation`` and are neither train nor test; with ``spec.fit_fraction`` the training
    tasks are cut into the fitted rows and the held-out rows."""
    validation: list[Task] = []
    if spec.validation:
        used = {t.name for t in train + test}
        validation = [t for t in select(tasks, spec.validation) if t.name not in used]
        if not validation:
            raise DataError(f"validation glob {spec.validation!r} selects only training or test tasks")
    holdout: list[Task] = []
    if spec.fit_fraction:
        train, holdout = split_architectures(train, spec.fit_fraction, spec.split_seed)
    if spec.select not in SELECTIONS:
        raise ValueError(f"unknown selection {spec.select!r}; choose from {', '.join(SELECTIONS)}")
    if spec.select == "validation" and not validation:
        raise ValueError("--select validation needs validation tasks (--validation)")
    return train, validation, holdout


def consistent_proxies(tasks: Sequence[Task], proxies: Sequence[str], min_tau: float = 0.0) -> list[str]:
    """The ``proxies`` whose mean Kendall over the tasks of each search space exceeds ``min_tau`` in
    every space of ``tasks`` (training tasks only): terminals whose sign holds across spaces."""
    single = B.single_proxies([(t.name, t) for t in tasks])
    keep = []
    for p in proxies:
        per_space = [_mean([single[t.name].get(p, {}).get("kendall") for t in tasks if space_of(t.name) == s])
                     for s in spaces(tasks)]
        if all(v is not None and v > min_tau for v in per_space):
            keep.append(p)
    return keep


# ----------------------------------------------------------------------------- summaries


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min and max of the finite values."""
    v = torch.tensor([x for x in values if x is not None and math.isfinite(x)], dtype=torch.float64)
    if v.numel() == 0:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "min": float("nan"),
                "max": float("nan"), "n": 0}
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {"median": q[1], "q1": q[0], "q3": q[2], "min": float(v.min()), "max": float(v.max()), "n": int(v.numel())}


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def split_means(per_task: dict[str, dict], entries: Sequence[tuple[str, str, Task]], metric: str = "kendall") -> dict:
    """``{split: mean of metric over that split's tasks}`` for the splits that have tasks."""
    out = {}
    for split in SPLITS:
        keys = [k for k, s, _ in entries if s == split]
        if keys:
            out[split] = _mean([per_task[k][metric] for k in keys if k in per_task])
    return out


# ----------------------------------------------------------------------------- scoring formulas


def programs_population(nodes: Sequence[E.Node], device: str | torch.device = "cpu") -> Population:
    """One row per formula, left-aligned and PAD-filled to the longest."""
    rows = [E.to_postfix(n) for n in nodes]
    L = max(len(o) for o, _ in rows)
    ops = torch.zeros(len(rows), L, dtype=torch.int32)
    consts = torch.zeros(len(rows), L, dtype=torch.float32)
    for i, (o, c) in enumerate(rows):  # a handful of formulas, not a population
        ops[i, :len(o)] = torch.tensor(o, dtype=torch.int32)
        consts[i, :len(c)] = torch.tensor(c, dtype=torch.float32)
    length = torch.tensor([len(o) for o, _ in rows], dtype=torch.int32)
    return Population(ops.to(device), consts.to(device), length.to(device))


def eval_entries(prep) -> list[tuple[str, str, Task]]:
    """``(key, split, task)`` of every scored set: the key is the task name, plus ``(held-out)``
    for the unfitted rows of a training task."""
    out = [(t.name, "train", t) for t in prep.train]
    out += [(f"{t.name} (held-out)", "holdout", t) for t in prep.holdout]
    out += [(t.name, "validation", t) for t in prep.validation]
    out += [(t.name, "test", t) for t in prep.test]
    return out


def _predict(pop: Population, entries, proxies, preprocess, device, backend) -> dict[str, tuple]:
    """Per split: ``(pred float32[K, N], accuracy, offsets, keys)``, each split batched."""
    out = {}
    for split in SPLITS:
        part = [(k, t) for k, s, t in entries if s == split]
        if not part:
            continue
        batch = make_batch([t for _, t in part], proxies, preprocess, device)
        pred = evaluate(pop, batch.X, backend).cpu()
        out[split] = (pred, batch.accuracy.cpu(), batch.offsets.cpu(), [k for k, _ in part])
    return out


def _score_rows(preds: dict[str, tuple], rows: torch.Tensor | None = None) -> list[dict[str, dict[str, float]]]:
    """Per predictor row: ``{key: {metric: v}}`` over every split."""
    per_row: list[dict] | None = None
    for pred, acc, off, keys in preds.values():
        p = pred if rows is None else pred[rows]
        sc = B.score_predictions(p, acc, off)
        if per_row is None:
            per_row = [{} for _ in range(p.shape[0])]
        for i in range(p.shape[0]):
            per_row[i].update(B.metric_dicts(sc, i, keys))
    return per_row or []


def _ensemble_scores(preds: dict[str, tuple], rows: list[int]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Mean per-task rank of the formulas ``rows`` as one predictor: ``({key: metrics}, {split: pred[N]})``."""
    scores: dict = {}
    ens = {}
    for split, (pred, acc, off, keys) in preds.items():
        e = B.task_ranks(pred[rows], off, quantile=False).sum(0, keepdim=True)  # exact sums: exact ties
        ens[split] = e[0]
        scores.update(B.metric_dicts(B.score_predictions(e, acc, off), 0, keys))
    return scores, ens


# ----------------------------------------------------------------------------- result extension


def _candidates(state, pset) -> list[dict]:
    """Every finite hall-of-fame entry of every run: ``{run, rank, node, fitness, size}``."""
    hof = state.hof
    H = hof.size
    R = hof.fitness.numel() // H
    out = []
    for r in range(R):
        for h in range(H):
            f = float(hof.fitness[r * H + h])
            if not math.isfinite(f):
                continue
            node = E.simplify(E.row(hof.pop.ops, hof.pop.consts, hof.pop.length, r * H + h))
            out.append({"run": r, "rank": h, "node": node, "fitness": f, "size": E.size(node)})
    return out


def _proxy_fitness(spec, prep) -> dict[str, float]:
    """Training fitness of each terminal used alone, with the run's own objective."""
    from .objective import RankObjective

    m = len(prep.proxies)
    ops = (torch.arange(m, dtype=torch.int32) + FIRST_VAR)[:, None]
    pop = Population(ops.to(spec.device), torch.zeros(m, 1, device=spec.device),
                     torch.ones(m, dtype=torch.int32, device=spec.device))
    fit = RankObjective(prep.train_batch, spec.metric, spec.aggregation, spec.backend)(pop).tolist()
    return dict(zip(prep.proxies, fit))


def _choose(strategy: str, cands: list[dict], scores: list[dict], entries) -> int | None:
    """Index into ``cands`` chosen by a single-formula strategy (None when it does not apply)."""
    if not cands:
        return None
    idx = range(len(cands))
    if strategy == "train":  # the first maximum, as build_result picks its "expression"
        return max(idx, key=lambda i: cands[i]["fitness"])
    if strategy == "parsimony":
        best = max(c["fitness"] for c in cands)
        ok = [i for i in idx if cands[i]["fitness"] >= best - PARSIMONY_TOLERANCE]
        return min(ok, key=lambda i: (cands[i]["size"], -cands[i]["fitness"]))
    if strategy == "validation":
        keys = [k for k, s, _ in entries if s == "validation"]
        if not keys:
            return None
        val = [_mean([scores[i][k]["kendall"] for k in keys]) for i in idx]
        return max(idx, key=lambda i: (val[i], cands[i]["fitness"]))
    raise ValueError(f"unknown selection {strategy!r}")


def _scatter(pred: dict[str, tuple], entries, single: torch.Tensor | None, ens: dict | None) -> dict:
    """Up to ``SCATTER_TASKS`` tasks of the most held-out split: the chosen predictor's per-task
    rank quantile vs accuracy, for the report's scatter plots."""
    for split in ("test", "validation", "holdout", "train"):
        if split in pred:
            break
    else:
        return {}
    p, acc, off, keys = pred[split]
    row = ens[split][None] if ens is not None else p[single][None]
    ranks = B.task_ranks(row, off)[0]
    out = {}
    o = off.tolist()
    for t, k in enumerate(keys[:SCATTER_TASKS]):
        a, b = o[t], o[t + 1]
        out[k] = {"split": split, "x": [round(v, 4) for v in ranks[a:b].tolist()],
                  "y": [round(v, 5) for v in acc[a:b].tolist()]}
    return out


def extend_result(res: dict, spec, prep, state) -> dict:
    """Add protocol fields to ``experiment.build_result``'s dict: the scored sets, each run's
    best formula on every task with median/IQR over runs, the selection strategies, the
    baselines, per-run fitness histories and scatter points."""
    entries = eval_entries(prep)
    cands = _candidates(state, prep.pset)
    R = spec.config.runs
    out = dict(res)
    out.update({
        "protocol": "split",
        "fit_fraction": spec.fit_fraction,
        "split_seed": spec.split_seed if spec.fit_fraction else None,
        "validation_tasks": [t.name for t in prep.validation],
        "sets": [{"key": k, "task": t.name, "split": s, "n": len(t)} for k, s, t in entries],
        "history_runs": [list(h.best_per_run) for h in state.history],
    })
    base = B.compute([(k, t) for k, _, t in entries], prep.proxies, _proxy_fitness(spec, prep))
    single_all = base["single"]
    out["baselines"] = base
    for k, s, t in entries:  # keep "tasks" complete for every scored set
        if k not in out["tasks"]:
            out["tasks"][k] = {"split": s, "n": len(t)}
        out["tasks"][k]["split"] = s
        out["tasks"][k]["task"] = t.name
        out["tasks"][k]["single"] = {p: v["kendall"] for p, v in single_all[k].items()}
        bs = base["oracle"][k]
        out["tasks"][k]["best_single"] = {"proxy": bs["proxy"], "kendall": bs["kendall"]}
    if not cands:
        out.update({"runs_detail": [], "summary": {}, "selection": {}, "selected": spec.select, "scatter": {}})
        return out
    pop = programs_population([c["node"] for c in cands], spec.device)
    preds = _predict(pop, entries, prep.proxies, spec.preprocess, spec.device, spec.backend)
    scores = _score_rows(preds)
    best = _choose("train", cands, scores, entries)
    for k, s, t in entries:  # the formula of "expression" (best training fitness) on the held-out rows too
        if "kendall" not in out["tasks"][k]:
            out["tasks"][k].update({"kendall": scores[best][k]["kendall"], "spearman": scores[best][k]["spearman"]})
    out["mean_kendall"] = split_means(out["tasks"], entries)

    # each run's best formula
    run_best = {}
    for i, c in enumerate(cands):
        if c["run"] not in run_best or c["fitness"] > cands[run_best[c["run"]]]["fitness"]:
            run_best[c["run"]] = i
    runs_detail = []
    for r in range(R):
        if r not in run_best:
            continue
        i = run_best[r]
        c = cands[i]
        runs_detail.append({"run": r, "expression": E.to_infix(c["node"], prep.pset.variables), "size": c["size"],
                            "fitness": c["fitness"], "tasks": scores[i], "mean": split_means(scores[i], entries)})
    out["runs_detail"] = runs_detail
    out["summary"] = {
        "splits": {s: summarize([d["mean"].get(s) for d in runs_detail]) for s in SPLITS
                   if any(sp == s for _, sp, _ in entries)},
        "tasks": {k: summarize([d["tasks"][k]["kendall"] for d in runs_detail]) for k, _, _ in entries},
    }

    # selection strategies
    selection = {}
    for strategy in ("train", "validation", "parsimony"):
        i = _choose(strategy, cands, scores, entries)
        if i is None:
            continue
        c = cands[i]
        selection[strategy] = {"expression": E.to_infix(c["node"], prep.pset.variables), "run": c["run"],
                               "size": c["size"], "fitness": c["fitness"], "tasks": scores[i],
                               "mean": split_means(scores[i], entries), "index": i}
    members = [run_best[r] for r in sorted(run_best)] if len(run_best) > 1 else \
        [i for i, c in enumerate(cands) if c["run"] == 0]
    ens_scores, ens_pred = _ensemble_scores(preds, members)
    selection["ensemble"] = {"expressions": [E.to_infix(cands[i]["node"], prep.pset.variables) for i in members],
                             "size": sum(cands[i]["size"] for i in members), "tasks": ens_scores,
                             "mean": split_means(ens_scores, entries)}
    chosen = spec.select if spec.select in selection else "train"
    out["selection"] = {k: {kk: vv for kk, vv in v.items() if kk != "index"} for k, v in selection.items()}
    out["selected"] = chosen
    out["scatter"] = _scatter(preds, entries, None if chosen == "ensemble" else selection[chosen]["index"],
                              ens_pred if chosen == "ensemble" else None)
    return out


# ----------------------------------------------------------------------------- leave one space out


def leave_one_space_out(spec, callback: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                        on_fold: Callable[[str, int, int], None] | None = None) -> dict:
    """One evolution per search space among the tasks matching ``spec.train``, each with that
    space held out as the test set (``spec.test`` must be unset). ``on_fold(space, i, k)`` is
    called before fold i of k. Returns ``{"protocol", "folds": {space: run result}, "summary"}``."""
    from .experiment import evolve_proxy

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
    first = next(iter(folds.values()), {})
    return {
        "protocol": "leave-one-space-out",
        "version": first.get("version"),
        "spaces": sp,
        "folds": folds,
        "summary": {s: fold_summary(r) for s, r in folds.items()},
        "interrupted": len(folds) < len(sp) or any(r.get("interrupted") for r in folds.values()),
        "time_s": time.perf_counter() - t0,
        "config": first.get("config"),
        "preprocess": spec.preprocess, "metric": spec.metric, "aggregation": spec.aggregation,
        "selected": spec.select,
    }


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
