"""Core-engine benchmark (issue: pop 1000 x 50 generations on all 11 Suite-Zero tasks < 20 s).

Runs the same evolution as
    tensorgp run --train '*' --pop 1000 --gens 50 --seed 0
in-process and prints wall time, node-evaluations/s, individual-architecture evaluations/s and
the split between evaluation, fitness (rank statistics) and variation. A second run in the same
process gives the warm figure (numba compiles on first use; its cache makes later processes warm).

    .venv/bin/python bench/core_run.py [--data DIR] [--pop 1000] [--gens 50] [--backend auto]
"""
from __future__ import annotations

import argparse
import json
import time

if __name__ == "__main__":  # run as a script: the project interpreter, or a clear message
    import _env

    _env.require_tensorgp()

from tensorgp.nas.data import find_data_dir
from tensorgp.engine.evolve import EvolutionConfig
from tensorgp.nas.experiment import RunSpec, evolve_proxy, prepare


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--train", default="*")
    ap.add_argument("--pop", type=int, default=1000)
    ap.add_argument("--gens", type=int, default=50)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    spec = RunSpec(data=[args.data or find_data_dir()], train=args.train, backend=args.backend,
                   config=EvolutionConfig(population=args.pop, generations=args.gens, seed=0))
    rows = []
    for rep in range(args.repeat):
        t0 = time.perf_counter()
        prep = prepare(spec)
        res = evolve_proxy(spec, prepared=prep)
        wall = time.perf_counter() - t0
        tm = res["timing"]
        rows.append({"repeat": rep, "wall_s": round(wall, 2), "backend": res["backend"],
                     "archs": prep.train_batch.X.shape[0], "eval_s": round(tm["eval_s"], 2),
                     "fitness_s": round(tm["fitness_s"], 2), "variation_s": round(tm["variation_s"], 2),
                     "node_evals_per_s": f"{tm['node_evals_per_s']:.3g}",
                     "arch_evals_per_s": f"{tm['arch_evals_per_s']:.3g}", "fitness": round(res["fitness"], 4)})
        print(json.dumps(rows[-1]))
    gplearn_rate = 1.1e6  # individual-architecture evaluations/s of the gplearn rebuild on this machine
    best = min(rows, key=lambda r: r["wall_s"])
    print(f"best wall {best['wall_s']} s; arch-evals/s {best['arch_evals_per_s']} = "
          f"{float(best['arch_evals_per_s']) / gplearn_rate:.1f}x the gplearn rebuild (1.1e6/s)")


if __name__ == "__main__":
    main()
