"""Throughput of the numba CPU evaluator (not a test).

    python bench/eval_cpu.py                       # both standard cases, default block
    python bench/eval_cpu.py --blocks 64,128,256,512,1024 --dedup

Node evaluations/s = sum(program lengths) x rows / seconds (median, and best, of --reps runs
after a warm-up call that also compiles). With --dedup the same population-equivalent count is
divided by the dedup time. Case "arith": 1000 ramped half-and-half trees, depth 1..6,
add/sub/mul/div, 5000 rows, 10 features. Case "all14": the same with all 14 functions, 7800 rows.

The first line times a fixed scalar loop on 1 and 2 threads: on a shared VM it shows how much
CPU the machine gives right now (quiet on the 2-core dev VM: about 76 ms and 38 ms).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from numba import njit

if __name__ == "__main__":  # run as a script: the project interpreter, or a clear message
    import _env

    _env.require_tensorgp()

from tensorgp.engine import eval_numba
from tensorgp.engine.population import init_population
from tensorgp.engine.primitives import DEFAULT_FUNCTIONS, PrimitiveSet

CASES = {
    "arith": (("add", "sub", "mul", "div"), 5000),
    "all14": (DEFAULT_FUNCTIONS, 7800),
}


@njit(nogil=True, cache=True)
def _spin(n: int) -> float:
    s = 0.0
    for i in range(n):
        s = s * 0.999999 + i
    return s


def calibrate() -> str:
    from concurrent.futures import ThreadPoolExecutor

    _spin(10)
    res = []
    with ThreadPoolExecutor(2) as ex:
        for nt in (1, 2):
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                list(ex.map(_spin, [20_000_000] * nt))
                best = min(best, time.perf_counter() - t)
            res.append(f"{best * 1e3:.0f} ms")
    return "calibration loop, 1 and 2 threads: " + " / ".join(res)


def run_case(name: str, blocks: list[int], threads: int, reps: int, dedup: bool, chunk: int, P: int, m: int) -> None:
    funcs, N = CASES[name]
    pset = PrimitiveSet(tuple(f"x{i}" for i in range(m)), functions=funcs)
    pop = init_population(P, pset, torch.Generator().manual_seed(0), max_len=128, depth_range=(1, 6)).trimmed()
    X = torch.from_numpy(np.random.default_rng(0).normal(size=(N, m)).astype(np.float32))
    out = torch.empty(P, N)
    nodes = pop.n_nodes() * N
    print(f"[{name}] P={P} N={N} m={m} threads={threads} mean length={pop.n_nodes() / P:.1f} L={pop.max_len}")
    modes = [False, True] if dedup else [False]
    for dd in modes:
        for block in blocks:
            stats: list = []
            kw = dict(block=block, chunk=chunk, n_threads=threads, dedup=dd)
            eval_numba.evaluate_numba(pop.ops, pop.consts, pop.length, X, out=out, stats=stats, **kw)  # compile + warm
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                eval_numba.evaluate_numba(pop.ops, pop.consts, pop.length, X, out=out, **kw)
                times.append(time.perf_counter() - t)
            med, best = statistics.median(times), min(times)
            extra = ""
            if dd:
                s = stats[0]
                extra = f"  distinct nodes {s.executed_nodes}/{s.population_nodes} ({s.executed_nodes / s.population_nodes:.0%}), instructions {s.instructions}, registers {s.registers}, block used {s.block}"
            print(f"  dedup={dd!s:5} block={block:5d}  median {med * 1e3:7.2f} ms  {nodes / med:.3e} node-evals/s"
                  f"  (best {nodes / best:.3e}){extra}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="arith,all14")
    ap.add_argument("--blocks", default=str(eval_numba.DEFAULT_BLOCK))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=eval_numba.DEFAULT_CHUNK)
    ap.add_argument("--P", type=int, default=1000)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--dedup", action="store_true", help="also time dedup=True")
    a = ap.parse_args()
    print(calibrate())
    for case in a.cases.split(","):
        run_case(case, [int(b) for b in a.blocks.split(",")], a.threads, a.reps, a.dedup, a.chunk, a.P, a.m)


if __name__ == "__main__":
    main()
