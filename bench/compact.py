"""Compact formulas over seeds: on the quality study's default setting (bench/quality.py: DEFAULT and
BUDGET, NB201+NB301 -> TransNAS-Bench-101-micro), the `compact` selection (smallest Pareto-front
formula within 0.01 of the best training fitness) against the longest front formula (the best
training fitness), the train pick and the study's default (ensemble), held-out mean Kendall and sizes.

    .venv/bin/python bench/compact.py --data ../shared/data --seeds 5 [--scale 1.0] [--out runs/compact.json]

An experiment driver, not a test. Prints one line per seed and the means, with the load average.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from quality import EXPERIMENTS, spec_of  # the study's default setting, same specs
from tensorgp.nas.experiment import evolve_proxy
from tensorgp.runtime.results import write_json


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink population and generations (quick look)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    main_exp = next(e for e in EXPERIMENTS if e["name"] == "main")
    rows = []
    print(f"load average at start: {loadavg()}", flush=True)
    for seed in range(a.seeds):
        spec = spec_of(main_exp, a.data, a.scale)
        spec = replace(spec, config=replace(spec.config, seed=seed))
        t0 = time.perf_counter()
        r = evolve_proxy(spec)
        front = r["pareto"]
        sel = r["selection"]
        row = {"seed": seed, "time_s": time.perf_counter() - t0, "load": loadavg(),
               "compact": {"size": sel["compact"]["size"], "test": sel["compact"]["mean"]["test"],
                           "fitness": sel["compact"]["fitness"], "expression": sel["compact"]["expression"]},
               "longest": {"size": front[-1]["size"], "test": front[-1]["mean"]["test"],
                           "fitness": front[-1]["fitness"], "expression": front[-1]["expression"]},
               "train": {"size": sel["train"]["size"], "test": sel["train"]["mean"]["test"]},
               "ensemble": {"size": sel["ensemble"]["size"], "test": sel["ensemble"]["mean"]["test"]}}
        rows.append(row)
        print(f"seed {seed}: compact size {row['compact']['size']:3d} test {row['compact']['test']:.4f} | "
              f"longest on front size {row['longest']['size']:3d} test {row['longest']['test']:.4f} | "
              f"train pick size {row['train']['size']:3d} test {row['train']['test']:.4f} | "
              f"ensemble size {row['ensemble']['size']:4d} test {row['ensemble']['test']:.4f} "
              f"({row['time_s']:.0f} s, load {row['load']})", flush=True)
    for k in ("compact", "longest", "train", "ensemble"):
        print(f"mean over {len(rows)} seeds: {k:8s} size {statistics.mean(r[k]['size'] for r in rows):6.1f} "
              f"test {statistics.mean(r[k]['test'] for r in rows):.4f}")
    print(f"load average at end: {loadavg()}")
    if a.out is not None:
        write_json(a.out, {"setting": "bench/quality.py main (DEFAULT, BUDGET)", "scale": a.scale, "seeds": rows})


if __name__ == "__main__":
    sys.exit(main())
