"""Target 4 of the live proxies: live regularized evolution (formula synflow + jacov, raw,
budget 200, 5 runs; only the formula's proxies are computed, on the CPU) over nb201-final's
cifar10 architectures, against the table-driven ``tensorgp search`` with the same formula,
budget, runs and seed. Prints both median percentiles, the live search's wall time and where
it goes (proxy passes, formula, search loop), and the load average.

    python bench/live_search.py [--budget 200] [--runs 5] [--batch 8] [--pack 16]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zc_data import digits_batch  # noqa: E402

from tensorgp.nas.live_search import run_live_search  # noqa: E402
from tensorgp.nas.search import run_search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nb201-final/zc_nasbench201.json"))
    ap.add_argument("--expr", default="synflow + jacov")
    ap.add_argument("--preprocess", default="raw")
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pack", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    load0 = open("/proc/loadavg").read().split()[:3]
    table = run_search([a.data], "nasbench201/cifar10", a.expr, a.preprocess, a.budget, a.runs, a.seed)
    x, y = digits_batch(a.batch, a.seed)
    t0 = time.perf_counter()
    done = [0]

    def progress(k):
        if k >= done[0] + 100:
            done[0] = k
            print(f"  {k} architectures measured, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    live = run_live_search("nb201", a.expr, x, y, a.preprocess, a.budget, a.runs, a.seed, data=[a.data],
                           task="nasbench201/cifar10", pack=a.pack, threads=a.threads, progress=progress)
    load1 = open("/proc/loadavg").read().split()[:3]
    tm = live["timing"]
    print(f"table-driven search: median percentile {table['median']['percentile']:.2f} "
          f"(per run {[round(r['percentile'], 2) for r in table['per_run']]})")
    print(f"live search:         median percentile {live['median']['percentile']:.2f} "
          f"(per run {[round(r['percentile'], 2) for r in live['per_run']]})")
    print(f"difference {live['median']['percentile'] - table['median']['percentile']:+.2f} points (target: within 2)")
    print(f"live wall {tm['total_s']:.1f} s (target < 600 s): proxies {tm['proxies_s']:.1f} s for "
          f"{live['architectures_measured']} architectures, formula {tm['formula_s']:.2f} s, search loop "
          f"{tm['search_loop_s']:.2f} s, prepare {tm['prepare_s']:.2f} s; batch {a.batch}, pack {a.pack}; "
          f"load {' '.join(load0)} -> {' '.join(load1)}")
    if a.out:
        Path(a.out).write_text(json.dumps({"table": table, "live": live, "loadavg": [load0, load1]}, indent=1))


if __name__ == "__main__":
    main()
