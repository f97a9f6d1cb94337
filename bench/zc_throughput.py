"""Target 3 of the live proxies: architectures (and proxy values) per second on this CPU at
batch 16, for the cheap set (params, flops, synflow, nwot, jacov) and for all 13, batched (one
PackedNB201 of --pack architectures per pass) against one at a time (pack 1), in the same
process on the same architectures. Prints ratios, absolute figures and the load average.

    python bench/zc_throughput.py [--n 16] [--n-all 8] [--pack 16] [--threads 1]
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

from tensorgp.nas.live_proxies import compute_archs  # noqa: E402
from tensorgp.nas.measures import CHEAP, NAMES  # noqa: E402
from tensorgp.nas.spaces import NB201  # noqa: E402


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="architectures for the cheap set")
    ap.add_argument("--n-all", type=int, default=8, help="architectures for all 13")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pack", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sp = NB201()
    x, y = digits_batch(a.batch)
    archs = [tuple(r) for r in sp.sample(max(a.n, a.n_all), torch.Generator().manual_seed(0)).tolist()]
    res = {"batch": a.batch, "pack": a.pack, "threads": a.threads, "loadavg_start": loadavg(), "sets": {}}
    for label, names, n in (("cheap", list(CHEAP), a.n), ("all13", list(NAMES), a.n_all)):
        row = {"architectures": n}
        for mode, pack in (("one_at_a_time", 1), ("batched", a.pack)):
            t0 = time.perf_counter()
            tab = compute_archs(sp, archs[:n], x, y, names, pack=pack)
            dt = time.perf_counter() - t0
            row[mode] = {"s": dt, "archs_per_s": n / dt, "proxy_values_per_s": n * len(names) / dt,
                         "seconds_per_pass": tab.seconds, "failures": len(tab.failures), "loadavg": loadavg()}
            print(f"{label:6s} {mode:14s} {n} archs x {len(names)} proxies: {dt:7.1f} s  {n / dt:6.2f} archs/s  "
                  f"{n * len(names) / dt:7.2f} values/s  (load {loadavg()})", flush=True)
        row["batched_over_one_at_a_time"] = row["one_at_a_time"]["s"] / row["batched"]["s"]
        print(f"{label:6s} speed-up of batching: {row['batched_over_one_at_a_time']:.2f}x")
        res["sets"][label] = row
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
