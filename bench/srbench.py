"""SRBench's ground-truth protocol: tensorgp vs pyoperon vs gplearn on Feynman and Strogatz.

    .venv/bin/python bench/srbench.py                                   # the whole protocol (days on 2 cores)
    .venv/bin/python bench/srbench.py --sets feynman --max-problems 20 --budget 20 --noise 0 0.01 \\
        --out docs/srbench.md                                            # a stated subset
    .venv/bin/python bench/srbench.py --problems nguyen-5,nguyen-10,strogatz_glider1 --methods tensorgp \\
        --seeds 0 1 2 --noise 0                                          # the trigonometry targets

Problems (``--sets``): the 100 Feynman equations of the AI Feynman database with its variable
ranges (``bench/data/feynman.txt``), the 14 Strogatz ODE right-hand sides of SRBench's
"ode-strogatz" set, and Nguyen-5 and Nguyen-10 (``nguyen``, not part of SRBench). Strogatz data
in SRBench are points of simulated trajectories; here every variable is drawn uniformly from a
box around those trajectories (stated per problem below), so the figures are comparable in kind,
not in value, with published Strogatz results.

Protocol, as SRBench's ground-truth track: 10,000 training rows (``--rows``) and a noiseless test
split of a third as many; Gaussian noise of standard deviation ``noise * rms(y)`` on the training
targets only (``--noise``, SRBench: 0, 0.001, 0.01, 0.1); every method gets the same wall budget
(``--budget`` seconds, SRBench: 8 hours per run on its cluster; here much less) and the same
number of threads (``--threads``). Exact recovery is SRBench's symbolic check (the model minus
the truth simplifies to a constant, or the model over the truth to a nonzero constant; floats
rounded to 3 significant decimals first), with a time limit on every sympy step
(``--sympy-seconds``): ``feynman.recovered``. Also reported: test R^2 and the share of runs
with R^2 > 0.999 (SRBench's accuracy solution criterion), and wall time.

Methods, with their default settings except the budget, threads and a function set that includes
sin and cos: ``tensorgp`` (``SymbolicRegressor`` defaults, ``max_time`` = budget), ``pyoperon``
(``max_time`` = budget, unbounded generations and evaluations), ``gplearn`` (population 1000,
run generation by generation with ``warm_start`` until the budget is spent or 1000 generations).
Output: one JSON line per run, and a markdown table (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import feynman as FB  # noqa: E402  (problems, data, sympy recovery check and peer parsers)
from feynman import Problem  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "feynman.txt"
PI = math.pi

# SRBench's ode-strogatz set (Strogatz, Nonlinear Dynamics and Chaos; La Cava et al. 2016):
# x' and y' of seven two-state systems. Boxes: where the published trajectories run.
STROGATZ = [
    Problem("strogatz_bacres1", "20 - x - x*y/(1 + 0.5*x**2)", {"x": (0.0, 8.0), "y": (0.0, 12.0)}),
    Problem("strogatz_bacres2", "10 - x*y/(1 + 0.5*x**2)", {"x": (0.0, 8.0), "y": (0.0, 12.0)}),
    Problem("strogatz_barmag1", "0.5*sin(x - y) - sin(x)", {"x": (-PI, PI), "y": (-PI, PI)}),
    Problem("strogatz_barmag2", "0.5*sin(y - x) - sin(y)", {"x": (-PI, PI), "y": (-PI, PI)}),
    Problem("strogatz_glider1", "-0.05*x**2 - sin(y)", {"x": (0.5, 5.0), "y": (-PI, PI)}),
    Problem("strogatz_glider2", "x - cos(y)/x", {"x": (0.5, 5.0), "y": (-PI, PI)}),
    Problem("strogatz_lv1", "3*x - 2*x*y - x**2", {"x": (0.0, 4.0), "y": (0.0, 4.0)}),
    Problem("strogatz_lv2", "2*y - x*y - y**2", {"x": (0.0, 4.0), "y": (0.0, 4.0)}),
    Problem("strogatz_predprey1", "x*(4 - x - y/(1 + x))", {"x": (0.0, 5.0), "y": (0.0, 12.0)}),
    Problem("strogatz_predprey2", "y*(x/(1 + x) - 0.075*y)", {"x": (0.0, 5.0), "y": (0.0, 12.0)}),
    Problem("strogatz_shearflow1", "cot(y)*cos(x)", {"x": (-PI, PI), "y": (0.3, PI - 0.3)}),
    Problem("strogatz_shearflow2", "(cos(y)**2 + 0.1*sin(y)**2)*sin(x)", {"x": (-PI, PI), "y": (-PI, PI)}),
    Problem("strogatz_vdp1", "10*(y - (x**3 - x)/3)", {"x": (-3.0, 3.0), "y": (-3.0, 3.0)}),
    Problem("strogatz_vdp2", "-x/10", {"x": (-3.0, 3.0), "y": (-3.0, 3.0)}),
]
NGUYEN = [
    Problem("nguyen-5", "sin(x**2)*cos(x) - 1", {"x": (-1.0, 1.0)}),
    Problem("nguyen-10", "2*sin(x)*cos(y)", {"x": (0.0, 1.0), "y": (0.0, 1.0)}),
]
TG_FUNCTIONS = None  # tensorgp: the regressor's default function set (sin and cos included)
OPERON_SYMBOLS = "add,sub,mul,div,constant,variable,exp,log,sqrt,square,sin,cos"


def feynman_problems(path: Path = DATA) -> list[Problem]:
    """The Feynman list: one ``name | formula | var:lo:hi ...`` per line."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, formula, ranges = (s.strip() for s in line.split("|"))
        rs = {}
        for tok in ranges.split():
            v, lo, hi = tok.split(":")
            rs[v] = (float(lo), float(hi))
        out.append(Problem(name, formula, rs))
    return out


def problem_sets(names: list[str]) -> list[Problem]:
    table = {"feynman": feynman_problems, "strogatz": lambda: STROGATZ, "nguyen": lambda: NGUYEN}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown problem set(s) {unknown}; choose from {', '.join(table)}")
    return [p for n in names for p in table[n]()]


# ------------------------------------------------------------------------------- methods


def fit_tensorgp(p: Problem, Xtr, ytr, budget: float, threads: int, seed: int):
    from tensorgp import SymbolicRegressor

    kw = {} if TG_FUNCTIONS is None else {"function_set": TG_FUNCTIONS}
    est = SymbolicRegressor(random_state=seed, n_jobs=threads, max_time=budget, **kw).fit(Xtr, ytr)
    syms = FB.symbols(p)
    model = est.to_sympy().xreplace({s: syms[v] for s, v in zip(FB._model_symbols(est), p.variables)})
    return est.predict, model, est.expression_


def fit_pyoperon(p: Problem, Xtr, ytr, budget: float, threads: int, seed: int):
    from pyoperon.sklearn import SymbolicRegressor as S

    est = S(allowed_symbols=OPERON_SYMBOLS, generations=10**9, max_evaluations=10**15, max_time=max(1, int(budget)),
            n_threads=threads, random_state=seed).fit(Xtr, ytr)
    text = est.get_model_string(est.model_, 12, names=[f"v{i}" for i in range(len(p.variables))])
    return est.predict, FB._operon_sympy(text, p), est.get_model_string(est.model_, 4, names=p.variables)


def fit_gplearn(p: Problem, Xtr, ytr, budget: float, threads: int, seed: int):
    from gplearn.functions import make_function
    from gplearn.genetic import SymbolicRegressor as G

    def _exp(x):
        with np.errstate(over="ignore"):
            return np.exp(np.minimum(x, 80.0))

    fs = ("add", "sub", "mul", "div", "sqrt", "log", "sin", "cos", make_function(function=_exp, name="exp", arity=1),
          make_function(function=lambda x: x * x, name="square", arity=1))
    est = G(population_size=1000, generations=1, function_set=fs, random_state=seed, n_jobs=threads, warm_start=True)
    t0 = time.perf_counter()
    gen = 1
    while True:  # gplearn has no time limit: one generation at a time until the next would overrun
        g0 = time.perf_counter()
        est.set_params(generations=gen)
        est.fit(Xtr, ytr)
        last = time.perf_counter() - g0
        if time.perf_counter() - t0 + last > budget or gen >= 1000:
            break
        gen += 1
    text = str(est._program)
    return est.predict, _gplearn_sympy(text, p), text


def _gplearn_sympy(text: str, p: Problem):
    import sympy as sp
    from sympy.parsing.sympy_parser import parse_expr

    syms = FB.symbols(p)
    local = {f"X{i}": syms[v] for i, v in enumerate(p.variables)}
    local.update(add=lambda a, b: a + b, sub=lambda a, b: a - b, mul=lambda a, b: a * b, div=lambda a, b: a / b,
                 sqrt=lambda a: sp.sqrt(sp.Abs(a)), log=lambda a: sp.log(sp.Abs(a)), exp=sp.exp, sin=sp.sin,
                 cos=sp.cos, square=lambda a: a ** 2, neg=lambda a: -a, inv=lambda a: 1 / a)
    try:
        return parse_expr(text, local_dict=local)
    except Exception:
        return None


METHODS = {"tensorgp": fit_tensorgp, "pyoperon": fit_pyoperon, "gplearn": fit_gplearn}


# ------------------------------------------------------------------------------- driver


def one_run(p: Problem, method: str, noise: float, seed: int, args) -> dict:
    n = int(round(args.rows * 4 / 3))  # make_problem keeps a quarter for the test split
    Xtr, ytr, Xte, yte = FB.make_problem(p, n, noise, seed)
    t0 = time.perf_counter()
    try:
        predict, model, text = METHODS[method](p, Xtr, ytr, args.budget, args.threads, seed)
        wall = time.perf_counter() - t0
        pred = predict(Xte)
        err = None
    except Exception as e:  # a failed fit is a failed run, not a failed benchmark
        wall, pred, model, text, err = time.perf_counter() - t0, np.full(len(yte), np.nan), None, "", repr(e)
    t1 = time.perf_counter()
    rec = FB.recovered(model, p, Xte, args.sympy_seconds)
    row = {"problem": p.name, "method": method, "noise": noise, "seed": seed, "test_r2": FB.r2(yte, pred),
           "wall_s": round(wall, 3), "recovered": rec, "sympy_s": round(time.perf_counter() - t1, 2), "model": text}
    if err:
        row["error"] = err
    return row


def summary(rows: list[dict]) -> str:
    out = ["| method | noise | runs | exact recovery | R^2 > 0.999 | median test R^2 | median wall s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for nz in sorted({r["noise"] for r in rows}):
        for m in sorted({r["method"] for r in rows}):
            rs = [r for r in rows if r["method"] == m and r["noise"] == nz]
            if not rs:
                continue
            rec = sum(r["recovered"] for r in rs)
            acc = sum(r["test_r2"] > 0.999 for r in rs)
            out.append(f"| {m} | {nz:g} | {len(rs)} | {100 * rec / len(rs):.0f}% ({rec}) | {100 * acc / len(rs):.0f}% ({acc}) | "
                       f"{statistics.median(r['test_r2'] for r in rs):.4f} | {statistics.median(r['wall_s'] for r in rs):.1f} |")
    return "\n".join(out)


def per_problem(rows: list[dict]) -> str:
    methods = sorted({r["method"] for r in rows})
    out = ["| problem | noise | " + " | ".join(f"{m} R^2 / exact / s" for m in methods) + " |",
           "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for key in sorted({(r["noise"], r["problem"]) for r in rows}):
        cells = []
        for m in methods:
            rs = [r for r in rows if (r["noise"], r["problem"]) == key and r["method"] == m]
            cells.append(" ; ".join(f"{r['test_r2']:.4f} / {'yes' if r['recovered'] else 'no'} / {r['wall_s']:.1f}"
                                    for r in rs) or "-")
        out.append(f"| {key[1]} | {key[0]:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="feynman,strogatz", help="comma-separated: feynman, strogatz, nguyen")
    ap.add_argument("--problems", default="", help="comma-separated names (searched in every set; with --tables-from: "
                                                   "only these problems' rows)")
    ap.add_argument("--max-problems", type=int, default=0, help="the first K of each set (a subset)")
    ap.add_argument("--methods", default="tensorgp,pyoperon,gplearn")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.001, 0.01, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget", type=float, default=60.0, help="wall seconds per run, every method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=10_000, help="training rows")
    ap.add_argument("--sympy-seconds", type=float, default=10.0)
    ap.add_argument("--tensorgp-functions", default="", help="tensorgp's function set (default: the regressor's)")
    ap.add_argument("--out", default="", help="markdown file for the tables")
    ap.add_argument("--jsonl", default="", help="append every run here as it finishes")
    ap.add_argument("--tables-from", nargs="+", default=[], help="only render the tables of these --jsonl files")
    args = ap.parse_args(argv)
    if args.tables_from:
        rows = [json.loads(line) for f in args.tables_from for line in Path(f).read_text().splitlines() if line.strip()]
        if args.problems:  # the tables of a subset of the stored runs
            rows = [r for r in rows if r["problem"] in set(args.problems.split(","))]
        text = f"{summary(rows)}\n\n{per_problem(rows)}\n"
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return
    global TG_FUNCTIONS
    if args.tensorgp_functions:
        TG_FUNCTIONS = tuple(args.tensorgp_functions.split(","))
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=RuntimeWarning)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.problems:
        wanted = args.problems.split(",")
        pool = problem_sets(["feynman", "strogatz", "nguyen"])
        chosen = [p for p in pool if p.name in wanted]
        missing = sorted(set(wanted) - {p.name for p in chosen})
        if missing:
            raise SystemExit(f"unknown problem(s) {missing}")
    else:
        chosen = []
        for s in args.sets.split(","):
            ps = problem_sets([s])
            chosen += ps[: args.max_problems] if args.max_problems else ps
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    methods = [m for m in methods if FB.available(m)]
    if "tensorgp" in methods:  # numba's kernels load once, outside the timings
        from tensorgp import SymbolicRegressor

        Xw = np.random.default_rng(0).uniform(1, 2, (200, 2))
        SymbolicRegressor(population_size=20, generations=1, random_state=0).fit(Xw, np.sin(Xw[:, 0]) + Xw[:, 1])
    load0 = os.getloadavg()
    t_start = time.time()
    rows = []
    for noise in args.noise:
        for p in chosen:
            for seed in args.seeds:
                for m in methods:
                    row = one_run(p, m, noise, seed, args)
                    rows.append(row)
                    line = json.dumps(row)
                    print(line, flush=True)
                    if args.jsonl:
                        with open(args.jsonl, "a") as f:
                            f.write(line + "\n")
    load1 = os.getloadavg()
    head = (f"{len(chosen)} problems x {len(args.noise)} noise levels x {len(args.seeds)} seed(s) x {len(methods)} methods; "
            f"budget {args.budget:g} s, {args.threads} thread(s), {args.rows} training rows; "
            f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; {time.time() - t_start:.0f} s in all")
    text = f"{head}\n\n{summary(rows)}\n\n{per_problem(rows)}\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
