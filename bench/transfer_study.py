"""Leave-one-space-out over the 4 Suite-Zero spaces: fitness and selection designed for transfer
(issue 15). Driven by ``bench/quality.py`` (experiments ``transfer``, ``transfer-tnb``, ``recipe``);
each (setting, seed) evolution is stored in OUT/transfer/NAME-sSEED.json, so an interrupted study
resumes where it stopped.

How settings are chosen without looking at an outer held-out space: every space-aware setting
runs with nested selection (run r of the R runs leaves training space r mod G out of its fitness
and picks its formula on it); the *inner* held-out Kendall of those picks, averaged over folds and
seeds, is a transfer score measured on training spaces only. The setting with the best inner score
is the recipe; the study never ranks settings by an outer held-out figure.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from tensorgp.nas.protocols import leave_one_space_out
from tensorgp.nas.report import fmt, table
from tensorgp.nas.splits import finite_mean as _mean
from tensorgp.runtime.results import write_json

MONOTONE = "add,mul,min,max,sqrt,log,exp,tanh,square"  # non-decreasing on ranks in [0, 1]
BUDGET = dict(runs=6, pop=200, gens=15)  # per evolution (a fold); see the report for the cost
SEEDS = 3
BASE_SETTING = "task-mean"  # today's default: mean over tasks, ensemble of runs
SETTINGS = [  # (name, label, settings over quality.DEFAULT and BUDGET)
    ("task-mean", "mean over tasks, ensemble (the former default)", {"aggregation": "mean", "select": "ensemble"}),
    ("space-mean", "mean over spaces, nested", {"aggregation": "space-mean", "select": "nested"}),
    ("space-min", "worst space, nested", {"aggregation": "space-min", "select": "nested"}),
    ("space-softmin", "soft minimum over spaces (T 0.05), nested", {"aggregation": "space-softmin", "select": "nested"}),
    ("space-geo", "sum of log((1 + tau) / 2) over spaces (AZ-NAS-like), nested",
     {"aggregation": "space-geo", "select": "nested"}),
    ("space-sample", "worst of G-1 spaces drawn each generation (EZNAS-like), nested",
     {"aggregation": "space-sample", "select": "nested"}),
    ("space-min-monotone", "worst space, nested, monotone formulas (no constants)",
     {"aggregation": "space-min", "select": "nested", "functions": MONOTONE, "constants": False}),
    ("space-mean-shrink", "mean over spaces, shrunk toward the best single proxy",
     {"aggregation": "space-mean", "select": "shrink"}),
    ("space-sample-shrink", "worst of G-1 spaces drawn each generation, shrunk toward the best single proxy",
     {"aggregation": "space-sample", "select": "shrink"}),
]
PICKS = ("shrink", "nested", "ensemble", "train", "parsimony")  # selection strategies shown per setting
SHORT = {"nasbench201": "NB201", "nasbench301": "NB301", "transbench101_micro": "TNB-micro",
         "transbench101_macro": "TNB-macro"}


def settings_of(name: str) -> dict:
    return next(kw for n, _, kw in SETTINGS if n == name)


def label_of(name: str) -> str:
    return next(lab for n, lab, _ in SETTINGS if n == name)


# ----------------------------------------------------------------------------- running


def run_transfer(spec_of, data_root: Path, out: Path, scale: float, seeds: int = SEEDS,
                 names: list[str] | None = None, until: float | None = None) -> dict:
    """Every setting over ``seeds`` seeds, leave-one-space-out over every space of the suite.
    Seed 0 of every setting first; the later seeds go to the recipe (best inner score) and the
    former default first, then the rest, so a study cut short has the comparisons that matter.
    ``until`` (epoch seconds): start no new evolution after it; what is stored is reported."""
    names = names or [n for n, _, _ in SETTINGS]
    folder = out / "transfer"
    folder.mkdir(parents=True, exist_ok=True)

    def one(name: str, seed: int) -> dict | None:
        path = folder / f"{name}-s{seed}.json"
        if path.exists():
            return json.loads(path.read_text())
        if until is not None and time.time() > until:
            return None
        t0, load = time.perf_counter(), os.getloadavg()[0]
        kw = {**BUDGET, **settings_of(name)}
        spec = spec_of({"name": name, "label": label_of(name), "group": "transfer", "kind": "loso", "seed": seed,
                        "train": "*", **kw}, data_root, scale)
        r = leave_one_space_out(replace(spec, train="*", test=None), whole=False)  # folds only: the recipe
        r["study"] = {"name": name, "seed": seed, "scale": scale, "load_before": load,
                      "load_after": os.getloadavg()[0], "wall_s": time.perf_counter() - t0}
        write_json(path, r)
        print(f"    transfer {name} seed {seed}: {time.perf_counter() - t0:.0f} s, held-out mean "
              f"{fmt(_mean([v.get('selected') for v in r['summary'].values()]))}, inner {fmt(inner_score([r]))}",
              flush=True)
        return r

    res: dict[str, dict[int, dict]] = {n: {} for n in names}
    for n in names:
        res[n][0] = one(n, 0)
    res = {n: {s: r for s, r in v.items() if r is not None} for n, v in res.items()}
    res = {n: v for n, v in res.items() if v}
    names = list(res)
    order = sorted(names, key=lambda n: -(inner_score(res[n].values()) or -9))
    chosen = order[0]
    later = [chosen] + ([BASE_SETTING] if BASE_SETTING in names and BASE_SETTING != chosen else [])
    later += [n for n in order if n not in later]
    for n in later:
        for s in range(1, seeds):
            r = one(n, s)
            if r is not None:
                res[n][s] = r
    return {"kind": "transfer", "budget": BUDGET, "scale": scale, "chosen": recipe_choice(res),
            "settings": {n: {"label": label_of(n), "settings": settings_of(n),
                             "seeds": {str(s): compact(r) for s, r in sorted(v.items())}} for n, v in res.items()}}


def recipe_choice(res: dict[str, dict]) -> str | None:
    """The setting with the best inner held-out score (training spaces only) over the seeds every
    setting has (``SEEDS`` at most: extra seeds of one setting do not move the choice)."""
    common = set.intersection(*(set(v) for v in res.values())) if res else set()
    common = {s for s in common if s < SEEDS}
    scored = {n: inner_score([v[s] for s in sorted(common)]) for n, v in res.items()}
    scored = {n: v for n, v in scored.items() if v is not None}
    return max(scored, key=scored.get) if scored else None


def inner_score(results) -> float | None:
    """Mean over folds (and results) of the selected predictor's per-run Kendall on the runs'
    inner held-out spaces (nested: the picks'; shrink: cross-fitted, see ``transfer``)."""
    v = []
    for r in results:
        for f in (r["folds"].values() if "folds" in r else [r]):
            nest = f.get("selection", {}).get(f.get("selected"))
            if nest:
                v += [x for x in nest.get("inner_kendall") or [] if x is not None]
    return _mean(v)


# ----------------------------------------------------------------------------- what is kept


def compact(r: dict) -> dict:
    """Per fold: held-out mean of every pick, the single-proxy baselines, the formulas."""
    folds = {}
    for space, f in r["folds"].items():
        test = [s["key"] for s in f["sets"] if s["split"] == "test"]
        train = [s["key"] for s in f["sets"] if s["split"] == "train"]
        single = f["baselines"]["single"]
        proxies = f["baselines"]["proxies"]

        def mean_of(p: str, keys: list[str]) -> float | None:
            return _mean([single[k].get(p, {}).get("kendall") for k in keys])

        def space_mean(p: str, keys: list[str]) -> float | None:
            spaces = sorted({k.split("/", 1)[0] for k in keys})
            return _mean([mean_of(p, [k for k in keys if k.split("/", 1)[0] == s]) for s in spaces])

        held = {p: mean_of(p, test) for p in proxies}
        by_task = max(proxies, key=lambda p: mean_of(p, train) or -9)
        by_space = max(proxies, key=lambda p: space_mean(p, train) or -9)
        hindsight = max(proxies, key=lambda p: held[p] if held[p] is not None else -9)
        sel = f["selection"]
        folds[space] = {
            "picks": {k: sel[k]["mean"].get("test") for k in PICKS if k in sel},
            "train_fitness": f["fitness"],
            "selected": f["selected"],
            "formulas": sel[f["selected"]].get("expressions") or [sel[f["selected"]].get("expression")],
            "inner": sel.get(f["selected"], {}).get("inner_kendall"),
            "inner_unshrunk": sel.get("shrink", {}).get("inner_unshrunk"),
            "shrink": {k: sel["shrink"].get(k) for k in ("baseline", "weight_scores", "inner_baselines")}
            if "shrink" in sel else None,
            "baselines": {"task_mean": {"proxy": by_task, "kendall": held[by_task]},
                          "space_mean": {"proxy": by_space, "kendall": held[by_space]},
                          "hindsight": {"proxy": hindsight, "kendall": held[hindsight]},
                          "oracle": r["summary"][space]["oracle"]},
            "single": held,
        }
    st = r.get("study", {})
    return {"folds": folds, "wall_s": st.get("wall_s"), "load_before": st.get("load_before"),
            "load_after": st.get("load_after"), "time_s": r.get("time_s")}


# ----------------------------------------------------------------------------- report


def _med(v: list[float | None]) -> float | None:
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def held_out(setting: dict, pick: str | None = None) -> dict[str, list[float | None]]:
    """``{space: [held-out mean over the space's tasks, per seed]}`` of a pick (default: the setting's own)."""
    out: dict[str, list] = {}
    for s in setting["seeds"].values():
        for space, f in s["folds"].items():
            out.setdefault(space, []).append(f["picks"].get(pick or f["selected"]))
    return out


def section(tr: dict, split: dict | None = None, recipe: dict | None = None, command: str = "") -> str:
    """The report's main protocol: leave-one-space-out over the 4 spaces."""
    sets = tr["settings"]
    chosen = tr.get("chosen")
    any_seed = next(iter(next(iter(sets.values()))["seeds"].values()))
    spaces = list(any_seed["folds"])
    base = {sp: any_seed["folds"][sp]["baselines"] for sp in spaces}  # identical for every setting and seed
    b = tr["budget"]
    lines = [
        "## Main protocol: leave-one-space-out over the 4 search spaces", "",
        f"One evolution per search space, with that space's tasks held out and the other three spaces' tasks "
        f"as training tasks (NB201 3 tasks, NB301 1, TNB-micro 7, TNB-macro 7; rank preprocessing, Kendall). Each "
        f"evolution is {b['runs']} runs x population {b['pop']} x {b['gens']} generations (scale "
        f"{tr['scale']}); figures are the median over seeds of the held-out mean Kendall of the setting's "
        "reported predictor. Baselines on the same held-out tasks: *best single (task mean)* = the proxy with "
        "the best mean Kendall over the training tasks (what the issue's table calls the best single proxy on "
        "the other spaces); *best single (space mean)* = the proxy with the best mean over training spaces; "
        "*hindsight single* = the best proxy on the held-out space itself; *oracle* = the best proxy of each "
        "held-out task, in hindsight.", "",
        "Settings: fitness aggregation and selection. *nested* = run r leaves training space r mod 3 out of "
        "its fitness and picks its hall-of-fame formula on it; the picks form a mean-rank ensemble. "
        "*ensemble* = mean-rank ensemble of every run's best formula by training fitness. *inner held-out* = "
        "mean Kendall of the nested picks on the training space their own run left out (no outer held-out "
        "space involved).", "",
        "How each setting was chosen: the settings (and their constants: soft-minimum temperature 0.05, "
        "G-1 spaces per draw, the monotone function set of the earlier study) were fixed from the issue's list "
        "before any run, never tuned; the budget per evolution was set by the CPU time available; the recipe "
        "(the default for multi-space training, `transfer.MULTI_SPACE_DEFAULT`) is the setting with the best "
        "inner held-out score, a figure measured on training spaces only. No outer held-out figure enters any "
        "choice; the best single proxies of the baselines are chosen on each fold's training tasks.", "",
    ]
    rows = []
    for n, s in sets.items():
        ho = held_out(s)
        nseeds = len(s["seeds"])
        per = [_med(ho.get(sp, [])) for sp in spaces]
        mean_seeds = [_mean([ho[sp][i] for sp in spaces]) for i in range(nseeds)]
        inner = inner_score_compact(s)
        rows.append([("**" + s["label"] + "** (recipe)") if n == chosen else s["label"], nseeds, fmt(inner)]
                    + [fmt(v) for v in per] + [fmt(_med(mean_seeds))])
    for key, label in (("task_mean", "best single (task mean)"), ("space_mean", "best single (space mean)"),
                       ("hindsight", "hindsight single"), ("oracle", "oracle (per task)")):
        vals = [base[sp][key] for sp in spaces]
        cells = [fmt(v) if key == "oracle" else f"{fmt(v['kendall'])} ({v['proxy']})" for v in vals]
        nums = [v if key == "oracle" else v["kendall"] for v in vals]
        rows.append([label, "", ""] + cells + [fmt(_mean(nums))])
    if chosen:
        lines += targets_lines(sets[chosen], base, spaces, split, chosen)
    lines += ["| setting | seeds | inner held-out | " + " | ".join(SHORT.get(s, s) for s in spaces) + " | mean |",
              table(["", "", ""] + [""] * len(spaces) + [""], rows).split("\n", 1)[1], ""]
    # every pick of every setting
    prow = []
    for n, s in sets.items():
        for pick in PICKS:
            ho = held_out(s, pick)
            if not any(v is not None for vs in ho.values() for v in vs):
                continue
            prow.append([s["label"], pick] + [fmt(_med(ho[sp])) for sp in spaces]
                        + [fmt(_med([_mean([ho[sp][i] for sp in spaces]) for i in range(len(s["seeds"]))]))])
    lines += ["Every selection strategy of every setting (median over seeds):", "",
              table(["setting", "pick"] + [SHORT.get(sp, sp) for sp in spaces] + ["mean"], prow), ""]
    if chosen:
        s = sets[chosen]
        lines += [f"Recipe (`{chosen}`) per seed, with the single proxies that beat it on the held-out space:", ""]
        srow = []
        for seed, r in s["seeds"].items():
            for sp in spaces:
                f = r["folds"][sp]
                v = f["picks"].get(f["selected"])
                beat = sorted([p for p, x in f["single"].items() if x is not None and v is not None and x > v],
                              key=lambda p: -f["single"][p])
                srow.append([seed, SHORT.get(sp, sp), fmt(v), f"{fmt(f['baselines']['task_mean']['kendall'])} "
                             f"({f['baselines']['task_mean']['proxy']})",
                             ", ".join(f"{p} ({fmt(f['single'][p])})" for p in beat) or "none"])
        lines += [table(["seed", "held out", "recipe", "best single (task mean)", "single proxies above it"], srow,
                        "llrrl"), ""]
        walls = [(r["wall_s"], r["load_before"], r["load_after"]) for r in s["seeds"].values() if r.get("wall_s")]
        if walls:
            lines += [f"Wall time of one leave-one-space-out (4 evolutions + scoring) of the recipe: "
                      + ", ".join(f"{w:.0f} s (load {a:.1f} -> {c:.1f})" for w, a, c in walls)
                      + f" on a {os.cpu_count()}-core machine shared with other work.", ""]
    if chosen:
        lines += findings_lines(sets, chosen, base, spaces)
    if split:
        lines += split_lines(split)
    if recipe:
        lines += recipe_lines(recipe)
    return "\n".join(lines)


def targets_lines(s: dict, base: dict, spaces: list[str], split: dict | None, chosen: str) -> list[str]:
    """Issue 15's targets, measured on the recipe (median over seeds)."""
    ho = held_out(s)
    med = {sp: _med(ho[sp]) for sp in spaces}
    n = len(s["seeds"])
    mean = _med([_mean([ho[sp][i] for sp in spaces]) for i in range(n)])
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    rows = []
    for sp in spaces:
        b = base[sp]["task_mean"]
        rows.append([f"{SHORT.get(sp, sp)} held out >= best single chosen on the other spaces",
                     f">= {fmt(b['kendall'])} ({b['proxy']})", fmt(med[sp]),
                     yes(med[sp] is not None and med[sp] >= b["kendall"])])
    rows.append(["mean over the 4 held-out spaces", ">= 0.45", fmt(mean), yes(mean is not None and mean >= 0.45)])
    mac = next((sp for sp in spaces if sp.endswith("macro")), None)
    if mac:
        rows.append(["TNB-macro held out", ">= 0.45", fmt(med[mac]), yes(med[mac] is not None and med[mac] >= 0.45)])
    if split and chosen in split["settings"]:
        v = _med([x["test"] for x in split["settings"][chosen]])
        rows.append(["NB201+NB301 -> TNB-micro", ">= 0.42", fmt(v), yes(v is not None and v >= 0.42)])
    return [f"Targets of issue 15, on the recipe `{chosen}` (median over {n} seeds):", "",
            table(["target", "goal", "reached", "met"], rows, "lrrl"), ""]


def findings_lines(sets: dict, chosen: str, base: dict, spaces: list[str]) -> list[str]:
    """What the table says, computed from it (so a regenerated section stays true)."""
    def mean_med(s: dict, pick: str | None = None) -> float | None:
        ho = held_out(s, pick)
        return _med([_mean([ho[sp][i] for sp in spaces]) for i in range(len(s["seeds"]))])

    rec = sets[chosen]
    ho = held_out(rec)
    out = ["Findings:", ""]
    if BASE_SETTING in sets:
        b = sets[BASE_SETTING]
        out.append(f"- The recipe's mean over the 4 held-out spaces is {fmt(mean_med(rec))} ({len(rec['seeds'])} "
                   f"seeds) against {fmt(mean_med(b))} for the former default at the same budget "
                   f"({len(b['seeds'])} seeds) and {fmt(_mean([base[sp]['task_mean']['kendall'] for sp in spaces]))} "
                   f"for the best single proxy chosen on the other spaces.")
    for sp in spaces:
        v = _med(ho[sp])
        above = sorted([(p, x) for p, x in next(iter(rec["seeds"].values()))["folds"][sp]["single"].items()
                        if x is not None and v is not None and x > v], key=lambda t: -t[1])
        if above:
            out.append(f"- {SHORT.get(sp, sp)} held out: the recipe ({fmt(v)}) still loses to "
                       + ", ".join(f"{p} ({fmt(x)})" for p, x in above) + ".")
    best = max(sets, key=lambda n: mean_med(sets[n]) or -9)
    if best != chosen:
        out.append(f"- The best held-out mean is `{best}` ({fmt(mean_med(sets[best]))}, {len(sets[best]['seeds'])} "
                   f"seed(s)), which the inner score did not choose: it is shown, never used to choose.")
    return out + [""]


def inner_score_compact(setting: dict) -> float | None:
    v = [x for s in setting["seeds"].values() for f in s["folds"].values() for x in (f.get("inner") or [])
         if x is not None]
    return _mean(v)


def split_lines(sp: dict) -> list[str]:
    rows = []
    for n, v in sp["settings"].items():
        vals = [x["test"] for x in v]
        rows.append([v and label_of(n), len(vals), ", ".join(fmt(x) for x in vals), fmt(_med(vals)),
                     f"{fmt(v[0]['best_on_train'])} ({v[0]['best_on_train_proxy']})", fmt(v[0]["oracle"])])
    return ["### NB201+NB301 -> TNB-micro with the transfer settings", "",
            "The recipe on the earlier headline split, same budget per evolution. With two training spaces, "
            "nested selection leaves each run's fitness a single space. (The former default's figure on this "
            "split, 0.420 for its 8-run ensemble, is the earlier study's below; not rerun, for CPU time.)", "",
            table(["setting", "seeds", "per seed", "median", "best single on training", "oracle"], rows), ""]


def recipe_lines(rc: dict) -> list[str]:
    sel = rc["selection"][rc["selected"]]
    exprs = sel.get("expressions") or [sel.get("expression")]
    return ["### The deliverable: the recipe run on all 4 spaces", "",
            f"`{rc['study']['name']}` on all 18 tasks (seed {rc['seed']}); the predictor meant for a new search "
            f"space is the mean per-task rank of these {len(exprs)} formulas"
            + (f" (each picked on its inner held-out space: {', '.join(sel.get('inner_spaces', []))})"
               if sel.get("inner_spaces") else "") + ":", "",
            *[f"- `{e}`" for e in exprs], "",
            "How well this recipe transfers is the recipe row of the table above: the same recipe, run on the "
            "three other spaces of each fold.", ""]


def run_split(spec_of, data_root: Path, out: Path, scale: float, names: list[str], seeds: int = SEEDS) -> dict:
    """NB201+NB301 -> TNB-micro for ``names``, each over ``seeds`` seeds (cached per seed)."""
    from tensorgp.nas.experiment import evolve_proxy

    folder = out / "transfer"
    folder.mkdir(parents=True, exist_ok=True)
    res = {}
    for n in names:
        res[n] = []
        for s in range(seeds):
            path = folder / f"split-{n}-s{s}.json"
            if not path.exists():
                kw = {**BUDGET, **settings_of(n)}
                r = evolve_proxy(spec_of({"name": n, "label": label_of(n), "group": "transfer", "kind": "split",
                                          "seed": s, **kw}, data_root, scale))
                keys = [x["key"] for x in r["sets"] if x["split"] == "test"]
                b = r["baselines"]
                write_json(path, {"test": r["selection"][r["selected"]]["mean"]["test"],
                                  "best_on_train": _mean([b["best_on_train"]["tasks"][k]["kendall"] for k in keys]),
                                  "best_on_train_proxy": b["best_on_train"]["proxy"],
                                  "oracle": _mean([b["oracle"][k]["kendall"] for k in keys])})
            res[n].append(json.loads(path.read_text()))
    return {"kind": "transfer-split", "settings": res}
