"""Feynman-style symbolic-regression benchmark: tensorgp vs gplearn vs pyoperon.

    .venv/bin/python bench/feynman.py                       # every problem, noise 0 and 1%
    .venv/bin/python bench/feynman.py --problems I.12.1,I.14.4 --noise 0 --methods tensorgp
    .venv/bin/python bench/feynman.py --rows-demo 10000000  # chunked fit/predict on 10M rows

Problems: formulas from the AI Feynman list (Udrescu & Tegmark 2020) that use only the
operators all three systems share (no trigonometry: tensorgp's primitive set has none), with
the variable ranges of the Feynman database. Each problem draws ``--rows`` rows (default
10,000), split 75/25 into train and test; training targets get Gaussian noise of standard
deviation ``noise * rms(y)`` (SRBench's convention); test R^2 is against the noiseless truth.

Budgets: every method gets the same population size and generations and the same function
set (add, sub, mul, div, sqrt, log, exp, square), one CPU thread each (tensorgp
``n_jobs=1``, gplearn ``n_jobs=1``, pyoperon ``n_threads=1``); pyoperon runs its default
Levenberg-Marquardt local search with ``--operon-iterations`` steps. ``tensorgp-10x`` is
tensorgp with the same caps plus ``max_time`` = a tenth of gplearn's wall time on the same
problem (gplearn runs first; checked once per generation, so the final polish can overrun it
slightly: the table shows the measured time), for the target "tensorgp's median test R^2 at
least gplearn's at 10x less wall time"; without gplearn it gets a fifth of the population.
tensorgp's numba kernels are loaded by one small warm-up fit before any timing.

Exact recovery (symbolic, SRBench-style): the model is converted to sympy (protected
operators as their plain forms), simplified with its float constants, then every float c
becomes its first continued-fraction convergent within max(5e-4, 1e-3 |c|) (|c| < 5e-4
becomes 0, like SRBench's rounding to 3 decimals), ``Abs(e)`` becomes ``e`` (or ``-e``) where e
has one sign on the data domain,
and the model counts as recovered when ``simplify(model - truth)`` or ``simplify(model / truth)``
is a constant. Each sympy step has a time limit; a timeout counts as not recovered.
Peers that are not installed are skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FUNCTIONS = ("add", "sub", "mul", "div", "sqrt", "log", "exp", "square")


@dataclass(frozen=True)
class Problem:
    name: str
    formula: str  # sympy syntax over the variables (and pi)
    ranges: dict  # variable -> (low, high), uniform

    @property
    def variables(self) -> list[str]:
        return list(self.ranges)


_U15 = (1.0, 5.0)
PROBLEMS = [
    Problem("I.6.2a", "exp(-theta**2/2)/sqrt(2*pi)", {"theta": (1.0, 3.0)}),
    Problem("I.12.1", "mu*Nn", {"mu": _U15, "Nn": _U15}),
    Problem("I.12.2", "q1*q2/(4*pi*epsilon*r**2)", {"q1": _U15, "q2": _U15, "epsilon": _U15, "r": _U15}),
    Problem("I.14.4", "k_spring*x**2/2", {"k_spring": _U15, "x": _U15}),
    Problem("I.10.7", "m_0/sqrt(1-v**2/c**2)", {"m_0": _U15, "v": (1.0, 2.0), "c": (3.0, 10.0)}),
    Problem("I.18.4", "(m1*r1+m2*r2)/(m1+m2)", {"m1": _U15, "m2": _U15, "r1": _U15, "r2": _U15}),
    Problem("I.27.6", "1/(1/d1+n/d2)", {"d1": _U15, "d2": _U15, "n": _U15}),
    Problem("I.39.22", "n*kb*T/V", {"n": _U15, "T": _U15, "V": _U15, "kb": _U15}),
    Problem("I.43.31", "mob*kb*T", {"mob": _U15, "T": _U15, "kb": _U15}),
    Problem("I.44.4", "n*kb*T*log(V2/V1)", {"n": _U15, "kb": _U15, "T": _U15, "V1": _U15, "V2": _U15}),
    Problem("II.11.28", "1+n*alpha/(1-(n*alpha/3))", {"n": (0.0, 1.0), "alpha": (0.0, 1.0)}),
    Problem("II.38.14", "Y/(2*(1+sigma))", {"Y": _U15, "sigma": _U15}),
    Problem("I.40.1", "n_0*exp(-m*g*x/(kb*T))", {"n_0": _U15, "m": _U15, "x": _U15, "T": _U15, "g": _U15, "kb": _U15}),
    Problem("I.47.23", "sqrt(gamma*pr/rho)", {"gamma": _U15, "pr": _U15, "rho": _U15}),
    Problem("II.3.24", "Pwr/(4*pi*r**2)", {"Pwr": _U15, "r": _U15}),
    Problem("III.4.33", "(h/(2*pi))*omega/(exp((h/(2*pi))*omega/(kb*T))-1)", {"h": _U15, "omega": _U15, "kb": _U15, "T": _U15}),
]


# ------------------------------------------------------------------------------- data


def symbols(p: Problem) -> dict:
    import sympy as sp

    # positive where the range is (every Feynman variable), else real: sqrt(x**2) = |x| then stays right
    return {v: sp.Symbol(v, positive=True) if p.ranges[v][0] >= 0 else sp.Symbol(v, real=True) for v in p.variables}


def truth_expr(p: Problem):
    import sympy as sp
    from sympy.parsing.sympy_parser import parse_expr

    return parse_expr(p.formula, local_dict={**symbols(p), "pi": sp.pi, "exp": sp.exp, "sqrt": sp.sqrt, "log": sp.log})


def truth_fn(p: Problem):
    """numpy function of X [n, m] (columns in ``p.variables`` order)."""
    import sympy as sp

    f = sp.lambdify([symbols(p)[v] for v in p.variables], truth_expr(p), "numpy")
    return lambda X: np.asarray(f(*[X[:, i] for i in range(X.shape[1])]), dtype=np.float64) * np.ones(len(X))


def make_problem(p: Problem, n: int = 10_000, noise: float = 0.0, seed: int = 0, test_share: float = 0.25):
    """``(X_train, y_train (noisy), X_test, y_test (noiseless))``, float64."""
    rng = np.random.default_rng(seed)
    X = np.stack([rng.uniform(lo, hi, n) for lo, hi in p.ranges.values()], 1)
    y = truth_fn(p)(X)
    n_test = int(round(n * test_share))
    Xtr, ytr, Xte, yte = X[n_test:], y[n_test:].copy(), X[:n_test], y[:n_test]
    if noise > 0:
        ytr = ytr + rng.normal(0.0, noise * math.sqrt(float(np.mean(ytr ** 2))), len(ytr))
    return Xtr, ytr, Xte, yte


def r2(y: np.ndarray, p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        return float("-inf")
    return 1.0 - float(np.sum((y - p) ** 2)) / float(np.sum((y - y.mean()) ** 2))


# ------------------------------------------------------------------------------- recovery


class _Timeout(BaseException):
    """Not an Exception: sympy catches those internally, which would swallow the time limit."""


def _limited(fn, seconds: float):
    def handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def convergent(v: float, tol: float) -> tuple[int, int]:
    """The first continued-fraction convergent h/k of v with |h/k - v| <= tol."""
    h0, h1, k0, k1 = 0, 1, 1, 0
    x = v
    for _ in range(64):
        a = math.floor(x)
        h0, h1 = h1, a * h1 + h0
        k0, k1 = k1, a * k1 + k0
        if abs(h1 / k1 - v) <= tol or x == a:
            break
        x = 1.0 / (x - a)
    return h1, k1


def _round_floats(expr):
    """Each float c -> its first continued-fraction convergent within max(5e-4, 1e-3 |c|), and
    |c| < 5e-4 -> 0: SRBench's rounding to 3 decimals, made relative for large constants."""
    import sympy as sp

    reps = {}
    for f in expr.atoms(sp.Float):
        v = float(f)
        tol = max(5e-4, 1e-3 * abs(v))
        reps[f] = sp.Integer(0) if abs(v) < tol else sp.Rational(*convergent(v, tol))
    return expr.xreplace(reps)


def _strip_abs(expr, syms: list, X: np.ndarray):
    """Replace ``Abs(e)`` by ``e`` or ``-e`` where e has one sign on the rows of X."""
    import sympy as sp

    for a in sorted(expr.atoms(sp.Abs), key=lambda e: sp.count_ops(e)):
        try:
            v = np.asarray(sp.lambdify(syms, a.args[0], "numpy")(*[X[:, i] for i in range(X.shape[1])]), dtype=np.float64)
        except Exception:
            continue
        v = v * np.ones(len(X))
        if np.all(v > 0):
            expr = expr.xreplace({a: a.args[0]})
        elif np.all(v < 0):
            expr = expr.xreplace({a: -a.args[0]})
    return expr


def recovered(model, p: Problem, X: np.ndarray, seconds: float = 20.0) -> bool:
    """Symbolic equivalence up to an additive or multiplicative constant (see module doc)."""
    import sympy as sp

    if model is None:
        return False
    truth = truth_expr(p)
    syms = [symbols(p)[v] for v in p.variables]
    try:
        if sp.count_ops(model) > 200:
            return False

        def check() -> bool:
            m = _strip_abs(model, syms, X)
            m = _round_floats(sp.simplify(m))
            m = _strip_abs(m, syms, X)
            d = sp.simplify(m - truth)
            if not d.free_symbols:
                return True
            q = sp.simplify(m / truth)
            return not q.free_symbols and q != 0

        return bool(_limited(check, seconds))
    except _Timeout:
        return False
    except Exception:  # a model sympy cannot handle counts as not recovered
        return False


# ------------------------------------------------------------------------------- methods


def run_tensorgp(p: Problem, Xtr, ytr, Xte, pop: int, gens: int, seed: int, max_time: float | None = None,
                 small: bool = False):
    from tensorgp import SymbolicRegressor

    est = SymbolicRegressor(population_size=max(50, pop // 5) if small else pop, generations=gens,
                            function_set=FUNCTIONS, random_state=seed, n_jobs=1, max_time=max_time)
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    dt = time.perf_counter() - t0
    syms = symbols(p)
    model = est.to_sympy().xreplace({sp_sym: syms[v] for sp_sym, v in zip(_model_symbols(est), p.variables)})
    return est.predict(Xte), dt, model, est.expression_


def _model_symbols(est):
    import sympy as sp

    return [sp.Symbol(n) for n in est.variable_names_]


def run_gplearn(p: Problem, Xtr, ytr, Xte, pop: int, gens: int, seed: int):
    from gplearn.functions import make_function
    from gplearn.genetic import SymbolicRegressor as G

    def _exp(x):
        with np.errstate(over="ignore"):
            return np.exp(np.minimum(x, 80.0))

    fs = ("add", "sub", "mul", "div", "sqrt", "log", make_function(function=_exp, name="exp", arity=1),
          make_function(function=lambda x: x * x, name="square", arity=1))
    est = G(population_size=pop, generations=gens, function_set=fs, random_state=seed, n_jobs=1)
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    dt = time.perf_counter() - t0
    text = str(est._program)
    return est.predict(Xte), dt, _gplearn_sympy(text, p), text


def _gplearn_sympy(text: str, p: Problem):
    import sympy as sp
    from sympy.parsing.sympy_parser import parse_expr

    syms = symbols(p)
    local = {f"X{i}": syms[v] for i, v in enumerate(p.variables)}
    local.update(add=lambda a, b: a + b, sub=lambda a, b: a - b, mul=lambda a, b: a * b, div=lambda a, b: a / b,
                 sqrt=lambda a: sp.sqrt(sp.Abs(a)), log=lambda a: sp.log(sp.Abs(a)), exp=sp.exp,
                 square=lambda a: a ** 2, neg=lambda a: -a, inv=lambda a: 1 / a)
    try:
        return parse_expr(text, local_dict=local)
    except Exception:
        return None


def run_pyoperon(p: Problem, Xtr, ytr, Xte, pop: int, gens: int, seed: int, iterations: int):
    from pyoperon.sklearn import SymbolicRegressor as S

    est = S(allowed_symbols="add,sub,mul,div,constant,variable,exp,log,sqrt,square", population_size=pop,
            generations=gens, max_evaluations=10**12, optimizer_iterations=iterations, n_threads=1,
            random_state=seed, max_length=50)
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    dt = time.perf_counter() - t0
    text = est.get_model_string(est.model_, 12, names=[f"v{i}" for i in range(len(p.variables))])
    return est.predict(Xte), dt, _operon_sympy(text, p), est.get_model_string(est.model_, 4, names=p.variables)


def _operon_sympy(text: str, p: Problem):
    import sympy as sp
    from sympy.parsing.sympy_parser import parse_expr

    syms = symbols(p)
    local = {f"v{i}": syms[v] for i, v in enumerate(p.variables)}
    local.update(exp=sp.exp, log=sp.log, sqrt=sp.sqrt, sin=sp.sin, cos=sp.cos)
    try:
        return parse_expr(text.replace("^", "**"), local_dict=local)
    except Exception:
        return None


def available(method: str) -> bool:
    try:
        if method.startswith("tensorgp"):
            import tensorgp  # noqa: F401
        elif method == "gplearn":
            import gplearn  # noqa: F401
        elif method == "pyoperon":
            import pyoperon  # noqa: F401
        else:
            return False
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------- driver


def run(args) -> list[dict]:
    chosen = PROBLEMS if not args.problems else [q for q in PROBLEMS if q.name in args.problems.split(",")]
    if args.max_problems:
        chosen = chosen[: args.max_problems]
    methods = [m for m in args.methods.split(",") if m]
    if "gplearn" in methods and "tensorgp-10x" in methods:  # its time budget comes from gplearn's run
        methods = ["gplearn"] + [m for m in methods if m != "gplearn"]
    for m in methods:
        if not available(m):
            print(f"# skipping {m}: not installed", file=sys.stderr)
    methods = [m for m in methods if available(m)]
    if any(m.startswith("tensorgp") for m in methods):  # load numba's compiled kernels once, outside the timings
        from tensorgp import SymbolicRegressor

        Xw = np.random.default_rng(0).uniform(1, 2, (200, 2))
        SymbolicRegressor(population_size=20, generations=1, function_set=FUNCTIONS, random_state=0).fit(Xw, Xw[:, 0] * 1.5 + Xw[:, 1])
    rows = []
    for noise in args.noise:
        for p in chosen:
            for seed in range(args.seeds):
                Xtr, ytr, Xte, yte = make_problem(p, args.rows, noise, seed)
                gp_wall = None
                for m in methods:
                    if m == "tensorgp":
                        pred, dt, model, text = run_tensorgp(p, Xtr, ytr, Xte, args.pop, args.gens, seed)
                    elif m == "tensorgp-10x":
                        budget = None if gp_wall is None else gp_wall / 10
                        pred, dt, model, text = run_tensorgp(p, Xtr, ytr, Xte, args.pop, args.gens, seed, budget, gp_wall is None)
                    elif m == "gplearn":
                        pred, dt, model, text = run_gplearn(p, Xtr, ytr, Xte, args.pop, args.gens, seed)
                        gp_wall = dt
                    else:
                        pred, dt, model, text = run_pyoperon(p, Xtr, ytr, Xte, args.pop, args.gens, seed, args.operon_iterations)
                    row = {"problem": p.name, "noise": noise, "seed": seed, "method": m, "test_r2": r2(yte, pred),
                           "wall_s": dt, "recovered": recovered(model, p, Xte), "model": text}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| method | noise | problems | exact recovery | median test R^2 | median wall s | total wall s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    keys = sorted({(r["method"], r["noise"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for m, nz in keys:
        rs = [r for r in rows if r["method"] == m and r["noise"] == nz]
        rec = sum(r["recovered"] for r in rs)
        out.append(f"| {m} | {nz:g} | {len(rs)} | {rec}/{len(rs)} ({100 * rec / len(rs):.0f}%) | "
                   f"{statistics.median(r['test_r2'] for r in rs):.6f} | {statistics.median(r['wall_s'] for r in rs):.2f} | "
                   f"{sum(r['wall_s'] for r in rs):.1f} |")
    return "\n".join(out)


def rows_demo(n: int, pop: int, gens: int) -> None:
    """Fit and predict on ``n`` rows of I.12.2 with bounded memory; prints time and peak RSS."""
    import resource

    import torch

    from tensorgp import SymbolicRegressor

    p = next(q for q in PROBLEMS if q.name == "I.43.31")
    rng = np.random.default_rng(0)
    X = np.stack([rng.uniform(lo, hi, n).astype(np.float32) for lo, hi in p.ranges.values()], 1)
    y = truth_fn(p)(X.astype(np.float64))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    est = SymbolicRegressor(population_size=pop, generations=gens, function_set=FUNCTIONS, random_state=0,
                            const_opt_rows=4096, tol=0.0).fit(X, y)
    t1 = time.perf_counter()
    pred = est.predict(X)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data_mb = (X.nbytes + y.nbytes) / 2**20
    print(json.dumps({"rows": n, "population": pop, "generations": est.n_generations_, "fit_s": round(t1 - t0, 2),
                      "predict_s": round(t2 - t1, 2), "r2": r2(y, pred), "expression": est.expression_,
                      "data_mb": round(data_mb, 1), "peak_rss_mb_before_fit": round(rss0, 1), "peak_rss_mb": round(rss, 1),
                      "threads": torch.get_num_threads()}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="", help="comma-separated names (default: all)")
    ap.add_argument("--max-problems", type=int, default=0)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--methods", default="gplearn,tensorgp,tensorgp-10x,pyoperon")
    ap.add_argument("--pop", type=int, default=500)
    ap.add_argument("--gens", type=int, default=20)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--operon-iterations", type=int, default=1)
    ap.add_argument("--json", default="", help="write every row and the table here")
    ap.add_argument("--rows-demo", type=int, default=0, help="instead: fit/predict on this many rows")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the peers' protected operators overflow noisily
    if args.rows_demo:
        rows_demo(args.rows_demo, args.pop, args.gens)
        return
    rows = run(args)
    t = table(rows)
    print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "table": t}, indent=1))


if __name__ == "__main__":
    main()
