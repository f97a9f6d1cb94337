"""Measurements for ``tensorgp search`` (not a test). Needs ``../shared/data/nb201-final``.

    python bench/search_bench.py formulas --expr "..." --expr "..."   # search each formula on both tasks
    python bench/search_bench.py singles                              # every single proxy as the objective
    python bench/search_bench.py grid --expr "..."                    # population x sample size
    python bench/search_bench.py evolve --train cifar10 --k 10        # evolve a formula for search

``evolve`` runs the engine's evolution with a search-oriented fitness: the mean accuracy
percentile of the formula's top-k architectures (``search.top_k_percentile``, tie-aware),
optionally mixed with Kendall tau, averaged over the training tasks; it then searches with the
best formula on every task (a task not trained on is a transfer test).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script: the project interpreter, or a clear message
    import _env

    _env.require_tensorgp()

from tensorgp.engine import expression as E
from tensorgp.nas.data import load, preprocess
from tensorgp.engine.evaluate import evaluate
from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.engine.fitness import kendall_tau_b
from tensorgp.engine.primitives import PrimitiveSet
from tensorgp.nas.search import (accuracy_percentile, encodings, formula_scores, neighbour_table, proxy_scores, search,
                             top_k_percentile)

DATA = Path(os.environ.get("TENSORGP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "nb201-final"
TASKS = ("nasbench201/cifar10", "nasbench201/ImageNet16-120")
# proxies that are finite on (almost) every NB201 architecture
PROXIES = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip",
           "synflow", "zen")


def tasks():
    return {t.name: t for t in load([DATA]) if t.name in TASKS}


def run_formula(t, scores, enc, nb, args, method="evolution"):
    return search(t, scores, args.budget, args.runs, args.seed, method, args.population, args.sample_size,
                  enc=enc, neighbours=nb)


def fmt(r):
    ps = sorted(x["percentile"] for x in r["per_run"])
    return f"median pct {r['median']['percentile']:6.2f}  (min {ps[0]:6.2f}, max {ps[-1]:6.2f})  {r['time_s']:.2f} s"


def cmd_formulas(args):
    ts = tasks()
    for ex in args.expr:
        print(ex)
        for name, t in ts.items():
            enc = encodings(t)
            nb = neighbour_table(enc)
            s = formula_scores(t, ex, args.preprocess)
            pct = accuracy_percentile(t.accuracy)
            top = top_k_percentile(s[None], pct, 1).item(), top_k_percentile(s[None], pct, 10).item()
            print(f"  {name:28s} top1 {top[0]:6.2f} top10 {top[1]:6.2f} | evolution {fmt(run_formula(t, s, enc, nb, args))}"
                  f" | random {fmt(run_formula(t, s, enc, nb, args, 'random'))}")


def cmd_singles(args):
    for name, t in tasks().items():
        enc = encodings(t)
        nb = neighbour_table(enc)
        pct = accuracy_percentile(t.accuracy)
        for p in PROXIES:
            if not t.present(p):
                continue
            s = proxy_scores(t, p)
            print(f"{name:28s} {p:10s} top1 {top_k_percentile(s[None], pct, 1).item():6.2f} "
                  f"| evolution {fmt(run_formula(t, s, enc, nb, args))}")


def cmd_grid(args):
    """Per (population, sample size): median accuracy percentile and how often a run ends on the
    objective's maximum over the table (what a search can reach), over ``--seeds`` x ``--runs`` runs."""
    ts = tasks()
    for name, t in ts.items():
        enc = encodings(t)
        nb = neighbour_table(enc)
        objectives = [(ex, formula_scores(t, ex, args.preprocess)) for ex in args.expr]
        objectives += [(p, proxy_scores(t, p)) for p in args.proxy]
        for label, s in objectives:
            top = s.max()
            for P in args.pops:
                for S in args.samples:
                    if S > P:
                        continue
                    pct, hits = [], 0
                    for seed in range(args.seeds):
                        r = search(t, s, args.budget, args.runs, seed, "evolution", P, S, enc=enc, neighbours=nb)
                        pct += [x["percentile"] for x in r["per_run"]]
                        hits += sum(x["score"] == float(top) for x in r["per_run"])
                    print(f"{name:28s} {label[:30]:30s} P {P:4d} S {S:3d}: median pct {statistics.median(pct):6.2f} "
                          f"mean {statistics.mean(pct):6.2f}  argmax found {100 * hits / len(pct):5.1f}% "
                          f"({len(pct)} runs)", flush=True)


class TopKFitness:
    """Mean over training tasks and over ``ks`` of ``top_k_percentile / 100`` (+ ``kendall_weight`` x
    Kendall tau)."""

    def __init__(self, train, proxies, ks, kendall_weight, mode):
        self.ks, self.kw = ks, kendall_weight
        self.X = [preprocess(t.features[:, [t.proxies.index(p) for p in proxies]], mode) for t in train]
        self.pct = [accuracy_percentile(t.accuracy) for t in train]
        self.acc = [t.accuracy for t in train]

    def __call__(self, pop):
        fits = []
        for X, pct, acc in zip(self.X, self.pct, self.acc):
            pred = evaluate(pop, X)
            f = sum(top_k_percentile(pred, pct, k) for k in self.ks) / (100.0 * len(self.ks))
            if self.kw:
                off = torch.tensor([0, X.shape[0]])
                f = f + self.kw * kendall_tau_b(torch.nan_to_num(pred, nan=-3e38), acc, off)[:, 0]
            fits.append(f)
        f = torch.stack(fits).mean(0)
        const = pop.length == 1  # nothing to learn from
        return torch.where(torch.isfinite(f) & ~const, f, torch.full_like(f, float("nan")))


def cmd_evolve(args):
    ts = tasks()
    train = [ts[f"nasbench201/{n}"] for n in args.train.split(",")]
    proxies = [p for p in PROXIES if all(t.present(p) for t in train)]
    pset = PrimitiveSet(tuple(proxies))
    cfg = EvolutionConfig(population=args.pop, generations=args.gens, runs=1, max_depth=args.max_depth,
                          init_depth=(2, min(4, args.max_depth)), parsimony=args.parsimony, seed=args.seed)
    fit = TopKFitness(train, proxies, args.k, args.kendall_weight, args.preprocess)
    ev = Evolver(cfg, pset, fit)
    t0 = time.perf_counter()
    state = ev.run(lambda s: print(f"gen {s.generation:3d} best {s.best:.4f} mean {s.mean:.4f} "
                                   f"size {s.mean_size:.1f}", flush=True) if s.generation % 5 == 0 else None)
    print(f"evolved in {time.perf_counter() - t0:.1f} s")
    seen = []
    for h in range(min(state.hof.size, args.show)):
        f = float(state.hof.fitness[h])
        node = E.simplify(E.row(state.hof.pop.ops, state.hof.pop.consts, state.hof.pop.length, h))
        ex = E.to_infix(node, proxies)
        if ex in seen:
            continue
        seen.append(ex)
        print(f"\nfitness {f:.4f}: {ex}")
        for name, t in ts.items():
            enc = encodings(t)
            nb = neighbour_table(enc)
            s = formula_scores(t, ex, args.preprocess)
            tag = "train" if t in train else "test "
            print(f"  {tag} {name:28s} evolution {fmt(run_formula(t, s, enc, nb, args))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("formulas", "singles", "grid", "evolve"))
    ap.add_argument("--expr", action="append", default=[])
    ap.add_argument("--proxy", action="append", default=[])
    ap.add_argument("--preprocess", default="rank")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--sample-size", type=int, default=10)
    ap.add_argument("--pops", type=lambda s: [int(x) for x in s.split(",")], default=[20, 50, 100])
    ap.add_argument("--samples", type=lambda s: [int(x) for x in s.split(",")], default=[5, 10, 25])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train", default="cifar10")
    ap.add_argument("--k", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10],
                    help="top-k sizes whose mean percentiles are averaged")
    ap.add_argument("--kendall-weight", type=float, default=0.0)
    ap.add_argument("--pop", type=int, default=300)
    ap.add_argument("--gens", type=int, default=30)
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--parsimony", type=float, default=0.0)
    ap.add_argument("--show", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    {"formulas": cmd_formulas, "singles": cmd_singles, "grid": cmd_grid, "evolve": cmd_evolve}[args.cmd](args)


if __name__ == "__main__":
    main()
