"""Issue 15, fourth round (docs/issue15-plan.md): a blind test on a search space that no round,
setting or default has seen. Both multi-space recipes (``--select shrink``, the default, and
``--select anchored``) evolve on every task of the 4 Suite-Zero spaces in ``../shared/data``, with
the terminals restricted to the proxies the unseen file also has; each saved proxy is then scored
on the unseen file, next to the single proxies a user would have picked from the training spaces.

The unseen file is the user's (NAS-Bench-101's Suite-Zero file is in automl/NASLib's git history,
``naslib/data/zc_nasbench101.json``); it is never copied into the project. Each (recipe, seed)
evolution is cached in OUT/unseen/NAME-sSEED.json, so an interrupted study resumes.

    python bench/unseen_study.py --unseen /path/to/zc_nasbench101.json --out runs/quality
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality as Q  # noqa: E402
from transfer_study import ANCHORED_NAME, BUDGET, SHORT, _med, settings_of  # noqa: E402

from tensorgp.nas.data import common_proxies, load, select  # noqa: E402
from tensorgp.nas.experiment import evolve_proxy, single_proxy_scores  # noqa: E402
from tensorgp.nas.proxy import proxy_from_result  # noqa: E402
from tensorgp.nas.report import fmt, table  # noqa: E402
from tensorgp.nas.scoring import evaluate_proxy  # noqa: E402
from tensorgp.nas.splits import space_of  # noqa: E402
from tensorgp.runtime.results import write_json  # noqa: E402

RECIPES = ("space-mean-shrink", ANCHORED_NAME)  # the default of 3+ spaces first
DEFAULT_2 = {"aggregation": "auto", "select": "auto"}  # what 2 training spaces default to (compact)
BUDGETS = {"fold": BUDGET, "study": Q.BUDGET}  # rounds 2-3's fold budget; the quality study's (the 2-space 0.42)
SIDE_PICKS = ("ensemble", "train")  # reported from the same runs, never used to choose


def terminals(train, unseen) -> list[str]:
    """The default terminals of the training tasks that every unseen task has (what ``run --for`` keeps)."""
    return common_proxies(list(train) + list(unseen))


def _settings(name: str) -> dict:
    return DEFAULT_2 if name == "auto" else settings_of(name)


def fit(name: str, seed: int, data_root: Path, terms: list[str], out: Path, train: str = "*",
        budget: str = "fold") -> Path:
    """The recipe's evolution on the training tasks (cached): the result a user would hold."""
    tag = "" if train == "*" else train.replace("/*", "").replace("nasbench", "nb").replace(",", "+") + "-"
    path = out / "unseen" / f"{tag}{name}-s{seed}.json"
    if path.exists():
        return path
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    spec = Q.spec_of({"name": name, "group": "unseen", "kind": "loso", "seed": seed, "train": train,
                      "proxies": terms, **BUDGETS[budget], **_settings(name)}, data_root, 1.0)
    r = evolve_proxy(spec)
    r["study"] = {"name": name, "seed": seed, "wall_s": time.perf_counter() - t0, "load_before": load0,
                  "load_after": os.getloadavg()[0]}
    write_json(path, r)
    print(f"    {name} seed {seed}: {r['study']['wall_s']:.0f} s", flush=True)
    return path


def pick_proxy(r: dict, pick: str):
    """A selection entry of a run result as a ``Proxy`` (its formula, or its runs' ensemble)."""
    s = r["selection"][pick]
    block = ({"expression": s["expression"]} if "expression" in s else
             {"expression": None, "ensemble": {"expressions": s["expressions"], "weights": s.get("weights")}})
    return proxy_from_result({**block, "proxies": r["proxies"], "preprocess": r["preprocess"]}, pick)


def unseen_kendall(proxy, unseen_path: Path) -> float | None:
    return evaluate_proxy(proxy, unseen_path)["mean_kendall"]


def baselines(train, unseen, terms: list[str]) -> dict:
    """B1 (best space mean over the training spaces), B2 (best task mean) among the terminals,
    B3 (best on the unseen tasks in hindsight, every proxy they have); each scored on the unseen tasks."""
    tr = single_proxy_scores(train, terms)
    by_space: dict[str, list[str]] = {}
    for t in train:
        by_space.setdefault(space_of(t.name), []).append(t.name)
    space_mean = {p: statistics.fmean(statistics.fmean(tr[n][p] for n in names) for names in by_space.values())
                  for p in terms}
    b1 = max(space_mean, key=space_mean.get)
    task_mean = {p: statistics.fmean(tr[t.name][p] for t in train) for p in terms}
    b2 = max(task_mean, key=task_mean.get)
    un = single_proxy_scores(unseen)
    mean_un = {p: statistics.fmean(un[t.name][p] for t in unseen if p in un[t.name])
               for p in sorted({p for v in un.values() for p in v})}
    b3 = max(mean_un, key=mean_un.get)
    return {"B1": (b1, mean_un.get(b1)), "B2": (b2, mean_un.get(b2)), "B3": (b3, mean_un[b3]), "all": mean_un}


def study(data_root: Path, unseen_path: Path, out: Path, seeds: int, train_glob: str = "*",
          recipes: tuple[str, ...] = RECIPES, budget: str = "fold") -> dict:
    train = select(load(data_root / "suite-zero"), train_glob)
    unseen = load(unseen_path)
    terms = terminals(train, unseen)
    base = baselines(train, unseen, terms)
    rows = {}
    for name in recipes:
        rows[name] = []
        for s in range(seeds):
            r = json.loads(fit(name, s, data_root, terms, out, train_glob, budget).read_text())
            held = proxy_from_result(r, name)
            rows[name].append({"seed": s, "kendall": unseen_kendall(held, unseen_path), "size": held.size,
                               "formulas": len(held.expressions),
                               "picks": {p: unseen_kendall(pick_proxy(r, p), unseen_path) for p in SIDE_PICKS},
                               "fitness": r["selection"][r["selected"]]["mean"].get("train"),
                               "wall_s": r["study"]["wall_s"], "load": [r["study"]["load_before"], r["study"]["load_after"]]})
    return {"unseen": [t.name for t in unseen], "n": [len(t) for t in unseen], "terminals": terms,
            "spaces": sorted({SHORT.get(space_of(t.name), space_of(t.name)) for t in train}),
            "baselines": base, "recipes": rows, "budget": BUDGETS[budget]}


def decision(res: dict) -> dict:
    """The pre-registered criteria: the transfer test of each recipe and the adoption rule."""
    b1, b2 = res["baselines"]["B1"][1], res["baselines"]["B2"][1]
    med = {n: _med([x["kendall"] for x in v]) for n, v in res["recipes"].items()}
    passes = {n: m is not None and m >= b1 and m >= b2 for n, m in med.items()}
    shrink, anch = RECIPES
    adopt = anch in med and shrink in med and passes[anch] and med[anch] > med[shrink]
    return {"median": med, "passes": passes, "adopt_anchored": adopt}


def lines(res: dict) -> list[str]:
    d = decision(res)
    b = res["baselines"]
    unseen = ", ".join(f"{t} ({n} architectures)" for t, n in zip(res["unseen"], res["n"]))
    out = [f"Unseen: {unseen}. Training: every task of {', '.join(res['spaces'])}; terminals "
           f"{', '.join(res['terminals'])}; {res['budget']['runs']} runs x population {res['budget']['pop']} x "
           f"{res['budget']['gens']} generations per seed.", ""]
    rows = []
    for n, v in res["recipes"].items():
        default = n == "auto" or (n == RECIPES[0] and "auto" not in res["recipes"])
        rows.append([n + (" (the default)" if default else ""), ", ".join(fmt(x["kendall"]) for x in v),
                     f"**{fmt(d['median'][n])}**", "yes" if d["passes"][n] else "no",
                     f"{min(x['size'] for x in v)}-{max(x['size'] for x in v)}"])
        for p in SIDE_PICKS:
            rows.append([f"  {p} pick of the same runs", ", ".join(fmt(x["picks"][p]) for x in v),
                         fmt(_med([x["picks"][p] for x in v])), "", ""])
    for k, label in (("B1", "B1: best space mean on the training spaces"), ("B2", "B2: best task mean on the training tasks"),
                     ("B3", "B3: best on the unseen space in hindsight")):
        rows.append([f"{label} ({b[k][0]})", "", fmt(b[k][1]), "", "1"])
    out += ["Kendall tau on the unseen space, per seed and median:", "",
            table(["predictor", "per seed", "median", "passes (>= B1 and B2)", "nodes"], rows, "llrrr"), ""]
    above = {n: sorted([p for p, x in b["all"].items() if x > (d["median"][n] or -9)], key=lambda p: -b["all"][p])
             for n in res["recipes"]}
    for n, ps in above.items():
        out.append(f"- Single proxies above {n}'s median: " + (", ".join(f"{p} ({fmt(b['all'][p])})" for p in ps) or "none") + ".")
    if "auto" not in res["recipes"]:
        out.append(f"- Adoption rule (anchored strictly above shrink and passing): "
                   + ("**anchored becomes the multi-space default**." if d["adopt_anchored"] else "**the default stays shrink**."))
    walls = [x["wall_s"] for v in res["recipes"].values() for x in v]
    loads = [l for v in res["recipes"].values() for x in v for l in x["load"]]
    out.append(f"- Wall time per evolution {min(walls):.0f}-{max(walls):.0f} s on one core, load average "
               f"{min(loads):.1f}-{max(loads):.1f}.")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="issue 15, fourth round: both multi-space recipes on an unseen space")
    ap.add_argument("--unseen", type=Path, required=True, help="Suite-Zero file of a search space outside the training data")
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--train", default="*", help="training task globs (default: every task of the 4 spaces)")
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help="settings of bench/transfer_study.py, or auto (the default for the training tasks)")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="fold")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    res = study(a.data, a.unseen, a.out, a.seeds, a.train, tuple(a.recipes.split(",")), a.budget)
    if a.json:
        write_json(a.json, {**res, "decision": decision(res)})
    print("\n".join(lines(res)))


if __name__ == "__main__":
    main()
