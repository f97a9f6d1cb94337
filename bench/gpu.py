"""GPU benchmark of the Triton path (run by bench/gpu_check.sh; not a test).

    python -m bench.gpu --out DIR              # CUDA: 100,000 programs x 10,000 rows
    python -m bench.gpu --out DIR --dry-run    # CPU, tiny sizes, Triton interpreter (TRITON_INTERPRET=1)

Cases (each one ``tensorgp.runtime.benchmark.run_benchmark``; units in its docstring):

* ``arith``: add/sub/mul/div, depth <= 6, 10 features; Triton and (on the first ``--torch-pop``
  programs) the torch interpreter; Kendall/Spearman fitness on the first ``--fitness-pop``
  programs (torch and the Triton Kendall kernel); ``--generations`` Evolver steps.
* ``all14``: the same with all 14 functions, evaluation only.

Writes DIR/bench_gpu.json after every case (a timeout keeps what finished) with a ``summary``:
Triton node-evals/s against the 1e11 target, and evaluation vs fitness throughput per
individual-row (fitness must not be the bottleneck).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

TARGET_GPOPS = 1e11


def _case_configs(a: argparse.Namespace, cuda: bool) -> list[tuple[str, dict]]:
    common = dict(features=10, depth=6, peers="none", repeat=a.repeat, seed=a.seed, task_rows=700,
                  fitness_pop=a.fitness_pop, torch_pop=a.torch_pop)
    if cuda:
        backends = "triton,torch" if a.torch_pop else "triton"
        dev = "cuda"
    else:  # dry run: the interpreter is slow, so tiny sizes
        backends = "triton,torch"
        dev = "cpu"
    arith = dict(common, pop=a.pop, rows=a.rows, functions=("add", "sub", "mul", "div"), device=dev,
                 backends=backends, generations=a.generations, fitness=True)
    all14 = dict(common, pop=a.pop, rows=a.rows, functions=None, device=dev, backends="triton",
                 generations=0, fitness=False)
    return [("arith", arith), ("all14", all14)]


def summarize(cases: dict) -> dict:
    """Target check and eval-vs-fitness throughput of the finished cases."""
    s: dict = {"target_gpops": TARGET_GPOPS}
    ar = cases.get("arith")
    if ar and "eval" in ar and "triton" in ar["eval"]:
        g = ar["eval"]["triton"]["gpops"]
        s["triton_gpops"] = g
        s["target_met"] = g >= TARGET_GPOPS
        e = ar["eval"]["triton"]
        s["eval_rows_per_s"] = e["population"] * e["rows"] / e["seconds"]  # individual-rows/s
        f = ar.get("fitness") or {}
        k = f.get("kendall", {})
        if k:
            best = max(k, key=lambda b: k[b]["rows_per_s"])
            s["kendall_best_backend"] = best
            s["kendall_rows_per_s"] = k[best]["rows_per_s"]
            s["fitness_over_eval_time"] = s["eval_rows_per_s"] / k[best]["rows_per_s"]
            s["fitness_is_bottleneck"] = s["fitness_over_eval_time"] > 1.0
        gen = ar.get("generations")
        if gen:
            s["generation_eval_s"] = gen["eval_s"]
            s["generation_fitness_s"] = gen["fitness_s"]
            s["generation_variation_s"] = gen["variation_s"]
    a14 = cases.get("all14")
    if a14 and "eval" in a14 and "triton" in a14["eval"]:
        s["all14_triton_gpops"] = a14["eval"]["triton"]["gpops"]
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_bench_out")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (also implied when there is no CUDA)")
    ap.add_argument("--pop", type=int, default=None)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--generations", type=int, default=None)
    ap.add_argument("--fitness-pop", type=int, default=None)
    ap.add_argument("--torch-pop", type=int, default=None)
    ap.add_argument("--cases", default="arith,all14")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("no CUDA device: dry run needs TRITON_INTERPRET=1 (set before python starts)", file=sys.stderr)
            return 2
        sizes = dict(pop=16, rows=96, repeat=1, generations=1, fitness_pop=16, torch_pop=16)
    else:
        sizes = dict(pop=100_000, rows=10_000, repeat=3, generations=2, fitness_pop=20_000, torch_pop=2_000)
    for k, v in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, v)

    from tensorgp.nas.bench import generation_problem
    from tensorgp.runtime.benchmark import BenchConfig, run_benchmark
    from tensorgp.runtime.results import write_json

    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "bench_gpu.json"
    res: dict = {"mode": "cuda" if cuda else "cpu dry run (Triton interpreter, tiny sizes)",
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}, "cases": {}}
    wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
    rc = 0
    for name, kw in _case_configs(a, cuda):
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        print(f"== case {name}", flush=True)
        try:
            r = run_benchmark(BenchConfig(**kw), lambda m: print(f"   {m}", flush=True), generation_problem)
            r["wall_s"] = time.perf_counter() - t0
            for b, e in r["eval"].items():
                print(f"   {b:12s} {e['gpops']:.3e} node-evals/s  {e['seconds']:.4f} s  "
                      f"({e['population']} programs x {e['rows']} rows)", flush=True)
            for m in ("kendall", "spearman", "both"):
                for fb, f in (r.get("fitness") or {}).get(m, {}).items():
                    print(f"   fitness {m}/{fb}: {f['rows_per_s']:.3e} individual-rows/s", flush=True)
            if r.get("generations"):
                g = r["generations"]
                print(f"   generations: {g['gens_per_s']:.3f}/s (eval {g['eval_s']:.3f} s, fitness "
                      f"{g['fitness_s']:.3f} s, variation {g['variation_s']:.3f} s)", flush=True)
            res["cases"][name] = r
        except Exception as e:  # keep going: the other case may still tell something
            traceback.print_exc()
            res["cases"][name] = {"error": repr(e), "wall_s": time.perf_counter() - t0}
            rc = 1
        finally:
            if cuda:
                torch.cuda.empty_cache()
        res["summary"] = summarize(res["cases"])
        write_json(path, res)
    print(f"summary: {res.get('summary')}")
    print(f"wrote {path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
