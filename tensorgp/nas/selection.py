"""Which evolved formula a run reports, and the figures that go with it: every run's best formula
scored on every task, median and interquartile range over runs, the baselines, and the selection
strategies (``SELECTIONS``), all applied to the hall of fame of every run:

* ``train``: the best training fitness (the usual choice in the proxy-evolution literature);
* ``validation``: the best mean Kendall on the validation tasks (never on held-out rows, which
  would then no longer measure anything held out);
* ``parsimony``: the smallest formula within ``PARSIMONY_TOLERANCE`` of the best training fitness;
* ``ensemble``: the mean per-task rank of every run's best formula (one predictor, R formulas);
* ``compact``: the smallest formula within ``pareto.COMPACT_TOLERANCE`` of the best training
  fitness on the Pareto front of size against fitness (``pareto``), rank-simplified.
* ``nested``: each run leaves one training space out of its fitness and picks its formula on
  that space; the picks' mean-rank ensemble (``transfer``).
* ``shrink``: the same runs; the mean-rank ensemble of every run's best formula, blended with the
  single proxy of the best mean over training spaces at the weight the inner held-out spaces
  choose (``transfer``, "Shrinkage").
* ``anchored``: runs evolved with the anchored fitness; the same blend at the fixed weight 1/2
  (``transfer``, "Anchored fitness").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import baselines as B
from . import pareto as PF
from .proxy import proxy_block
from ..engine import expression as E
from ..engine.evaluate import evaluate
from ..engine.population import Population
from ..engine.primitives import FIRST_VAR
from .data import Task, make_batch
from .objective import RankObjective
from .splits import SELECTIONS, SPLITS, finite_mean as _mean
from .transfer import (ANCHORED, NESTED_SELECTIONS, SHRINK_STEPS, SHRINK_WEIGHTS, best_single, choose_weight,
                       crossfit_score, inner_space, nested_picks, shrink_member_weights, task_spaces)

PARSIMONY_TOLERANCE = 0.01  # fitness a formula may give up to be the smallest

# ----------------------------------------------------------------------------- summaries


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min and max of the finite values."""
    v = torch.tensor([x for x in values if x is not None and math.isfinite(x)], dtype=torch.float64)
    if v.numel() == 0:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "min": float("nan"),
                "max": float("nan"), "n": 0}
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {"median": q[1], "q1": q[0], "q3": q[2], "min": float(v.min()), "max": float(v.max()), "n": int(v.numel())}


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
    return Population.from_rows([E.to_postfix(n) for n in nodes], device)


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
    """Every task of the most held-out split: the chosen predictor's per-task rank quantile vs
    accuracy, for the report's scatter plots (one panel per task)."""
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
    for t, k in enumerate(keys):
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
        "target_tasks": prep.target,
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
    front, fpreds, compact = _pareto(spec, prep, state, entries)
    out["pareto"] = front
    if compact is not None:
        selection["compact"] = compact
    members = [run_best[r] for r in sorted(run_best)] if len(run_best) > 1 else \
        [i for i, c in enumerate(cands) if c["run"] == 0]
    ens_scores, ens_pred = _ensemble_scores(preds, members)
    selection["ensemble"] = {"expressions": [E.to_infix(cands[i]["node"], prep.pset.variables) for i in members],
                             "size": sum(cands[i]["size"] for i in members), "tasks": ens_scores,
                             "mean": split_means(ens_scores, entries)}
    ens_preds = {"ensemble": ens_pred}
    if spec.select in NESTED_SELECTIONS and len(run_best) > 1:  # both, from the same runs: the study compares them
        selection["nested"], ens_preds["nested"] = _nested(cands, scores, entries, preds, prep, R)
        best_r = [run_best[r] for r in sorted(run_best)]
        picks = {"shrink": None, **({ANCHORED: 0.5} if spec.select == ANCHORED else {})}
        for k, (entry, ens) in zip(picks, _shrink(spec, prep, entries, preds, cands, best_r, list(picks.values()))):
            selection[k], ens_preds[k] = entry, ens
    chosen = spec.select if spec.select in selection else "train"
    out["selection"] = {k: {kk: vv for kk, vv in v.items() if kk != "index"} for k, v in selection.items()}
    out["selected"] = chosen
    many = chosen in ens_preds
    out["scatter"] = _scatter(fpreds if chosen == "compact" else preds, entries,
                              None if many else selection[chosen]["index"], ens_preds[chosen] if many else None)
    adopt_selection(out, prep.pset.variables)
    out["proxy"] = proxy_block(out, prep.train)
    return out


def _pareto(spec, prep, state, entries) -> tuple[list[dict], dict, dict | None]:
    """``(front, predictions of the front, the compact selection)``: the front of size against
    training fitness (``pareto``), every member scored on every set."""
    objective = RankObjective(prep.train_batch, spec.metric, spec.aggregation, spec.backend)
    fr = PF.front(list(PF.build_pool(state, objective, prep.pset.variables, spec.preprocess,
                                     spec.device).items.values()))
    if not fr:
        return [], {}, None
    preds = _predict(programs_population([c.node for c in fr], spec.device), entries, prep.proxies,
                     spec.preprocess, spec.device, spec.backend)
    scores = _score_rows(preds)
    front = [{"size": c.size, "expression": E.to_infix(c.node, prep.pset.variables), "fitness": c.fitness,
              "source": c.source, "mean": split_means(scores[i], entries)} for i, c in enumerate(fr)]
    pick = PF.compact_choice(fr)
    i = fr.index(pick)
    compact = {"expression": front[i]["expression"], "run": None, "size": pick.size, "fitness": pick.fitness,
               "tasks": scores[i], "mean": front[i]["mean"], "index": i}
    return front, preds, compact


def adopt_selection(out: dict, variables) -> dict:
    """Make the selected predictor the result's formula: ``expression`` (None for an ensemble,
    whose formulas are in ``ensemble``), ``size``, ``fitness``, the per-task figures and
    ``mean_kendall``. The best-training-fitness pick stays as ``expression_train``."""
    chosen = out.get("selected")
    sel = out.get("selection", {}).get(chosen)
    if sel is None:
        return out
    out["expression_train"] = out["expression"]
    if "expressions" in sel and len(sel["expressions"]) == 1:  # a shrunk predictor that is its baseline alone
        sel = {**sel, "expression": sel["expressions"][0]}
    if "expression" not in sel:
        out["expression"] = None
        out["ensemble"] = {"expressions": sel["expressions"], "combine": "mean per-task rank"}
        if sel.get("weights"):
            out["ensemble"].update({"weights": sel["weights"], "combine": "weighted mean per-task rank"})
    else:
        out["expression"] = sel["expression"]
        node = E.parse(sel["expression"], list(variables))
        ops, consts = E.to_postfix(node)
        out.update({"program": {"ops": ops, "consts": consts}, "depth": E.depth(node), "fitness": sel["fitness"]})
    out["size"] = sel["size"]
    for k, v in sel["tasks"].items():
        if k in out["tasks"]:
            out["tasks"][k].update({"kendall": v["kendall"], "spearman": v["spearman"]})
    splits = {}
    for v in out["tasks"].values():
        splits.setdefault(v["split"], []).append(v.get("kendall"))
    out["mean_kendall"] = {s: _mean(ks) for s, ks in splits.items()}
    return out


def _nested(cands: list[dict], scores: list[dict], entries, preds: dict[str, tuple], prep, runs: int) -> tuple[dict, dict]:
    """Nested selection: each run's hall-of-fame entry with the best mean Kendall on the run's
    inner held-out training space, as one mean-rank ensemble: ``(selection entry, {split: pred[N]})``."""
    names = [t.name for t in prep.train]
    spaces, idx = task_spaces(names)
    idx = idx.tolist()
    val = [[_mean([scores[i][n]["kendall"] for n, g in zip(names, idx) if g == s]) for s in range(len(spaces))]
           for i in range(len(cands))]
    members = nested_picks(cands, val, runs)
    ens_scores, ens_pred = _ensemble_scores(preds, members)
    inner = [inner_space(cands[i]["run"], len(spaces)) for i in members]
    return {"expressions": [E.to_infix(cands[i]["node"], prep.pset.variables) for i in members],
            "inner_spaces": [spaces[g] for g in inner], "inner_kendall": [val[i][g] for i, g in zip(members, inner)],
            "size": sum(cands[i]["size"] for i in members), "tasks": ens_scores,
            "mean": split_means(ens_scores, entries)}, ens_pred




def _weighted_ranks(pred: torch.Tensor, off: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``float64[N]``: sum over rows of ``weights[K]`` (integers: exact sums) times each row's
    0-based per-task rank (``pred float[K, N]``); the order of the weighted mean rank."""
    return (B.task_ranks(pred, off, quantile=False) * weights.to(torch.float64)[:, None]).sum(0)


def _shrink(spec, prep, entries, preds: dict[str, tuple], cands: list[dict], members: list[int],
            fixed: Sequence[float | None] = (None,)) -> list[tuple[dict, dict]]:
    """Shrinkage toward the best single proxy (``transfer``): ``(selection entry, {split: pred[N]})``
    for each baseline weight of ``fixed``, from one scoring of the proxies and the blends.

    ``members``: index into ``cands`` of each run's best formula by training fitness (run r never
    fitted its inner held-out space ``r mod G``). ``fixed``: None chooses the baseline's weight on
    the inner held-out spaces; a number fixes it (the anchored fitness's 1/2), and the inner figure
    is then each run's blend at that weight."""
    J = len(prep.proxies)
    term = Population((torch.arange(J, dtype=torch.int32) + FIRST_VAR)[:, None].to(spec.device),
                      torch.zeros(J, 1, device=spec.device), torch.ones(J, dtype=torch.int32, device=spec.device))
    tpreds = _predict(term, entries, prep.proxies, spec.preprocess, spec.device, spec.backend)
    pred, acc, off, keys = preds["train"]
    tpred = tpreds["train"][0]
    spaces, space = task_spaces(keys)
    single = B.score_predictions(tpred, acc, off)["kendall"].double()  # [J, T]
    W = torch.tensor([shrink_member_weights(w, 1)[1] for w in SHRINK_WEIGHTS], dtype=torch.float64)  # k
    inner = [inner_space(cands[i]["run"], len(spaces)) for i in members]
    base_r = [best_single(single, space, g) for g in inner]  # chosen on run r's own fitness spaces
    rows = []
    for i, b in zip(members, base_r):  # R x W blends, scored in one batch
        qf, qb = (B.task_ranks(p[None], off, quantile=False)[0] for p in (pred[i], tpred[b]))
        rows.append((SHRINK_STEPS - W)[:, None] * qf[None] + W[:, None] * qb[None])  # exact: integer weights
    tau = B.score_predictions(torch.cat(rows), acc, off)["kendall"].double().reshape(len(members), len(W), -1)
    s = torch.stack([tau[r][:, space == g].mean(1) for r, g in enumerate(inner)])  # [R, W] inner held-out
    b = best_single(single, space)
    names = [E.to_infix(cands[i]["node"], prep.pset.variables) for i in members]

    def at(fixed: float | None) -> tuple[dict, dict]:  # one predictor: the chosen or the given weight
        w = SHRINK_WEIGHTS[choose_weight(s)] if fixed is None else fixed
        weights = shrink_member_weights(w, len(members))
        keep = [k for k, x in enumerate(weights) if x > 0]
        exprs = [(names + [prep.proxies[b]])[k] for k in keep]
        wt = torch.tensor([weights[k] for k in keep], dtype=torch.float64)
        scores_out, ens = {}, {}
        for split, (p, a, o, ks) in preds.items():
            both = torch.cat([p[members], tpreds[split][0][b][None]])[keep]
            e = _weighted_ranks(both, o, wt)
            ens[split] = e
            scores_out.update(B.metric_dicts(B.score_predictions(e[None], a, o), 0, ks))
        size = sum(cands[members[k]]["size"] for k in keep if k < len(members)) + (1 if w > 0 else 0)
        entry = {"expressions": exprs, "weights": [int(x) for x in wt] if len(exprs) > 1 else None,
                 "baseline": {"proxy": prep.proxies[b], "weight": w},
                 "weight_scores": {str(x): float(v) for x, v in zip(SHRINK_WEIGHTS, s.nanmean(0).tolist())},
                 "weight_scores_runs": [[float(v) for v in row] for row in s.tolist()],
                 "inner_spaces": [spaces[g] for g in inner], "inner_baselines": [prep.proxies[x] for x in base_r],
                 "inner_kendall": crossfit_score(s, inner) if fixed is None else
                 [float(x) if math.isfinite(x) else None for x in s[:, SHRINK_WEIGHTS.index(fixed)].tolist()],
                 "inner_unshrunk": [float(x) for x in s[:, 0]],
                 "size": size, "tasks": scores_out, "mean": split_means(scores_out, entries)}
        if len(exprs) == 1:
            entry["fitness"] = _proxy_fitness(spec, prep)[prep.proxies[b]] if w == 1 else cands[members[0]]["fitness"]
        return entry, ens

    return [at(f) for f in fixed]
