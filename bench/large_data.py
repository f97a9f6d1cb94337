"""A fit on data larger than memory: 50 million rows x 5 features in a 1 GB float32 memmap on disk.

    .venv/bin/python bench/large_data.py                      # 50M rows under /tmp/tensorgp-large
    .venv/bin/python bench/large_data.py --rows 2000000       # a smaller run

Writes X (float32 [rows, 5], uniform in [1, 3]) and y = x0 * x1 + sin(x2) (float32; x3, x4 are
distractors) chunk by chunk, so the data is never all in memory, then fits
``SymbolicRegressor(random_state=0)`` on the memmaps (``tensorgp.sr.streaming``: evolution on a
100,000-row sample, then one full-data pass over the Pareto front). Prints the fit time, the
process's peak resident memory (``ru_maxrss``: everything, Python and torch included), the
recovered formula, R^2 on all rows and the load average; as the baseline, in the same process,
the same settings fitted in memory on the sample alone (the cost of the full-data phase is the
difference).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

FEATURES = 5


def write_data(d: Path, rows: int, chunk: int = 1 << 20, seed: int = 0) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    xp, yp = d / f"X_{rows}.f32", d / f"y_{rows}.f32"
    if xp.exists() and yp.exists() and xp.stat().st_size == rows * FEATURES * 4 and yp.stat().st_size == rows * 4:
        return xp, yp
    rng = np.random.default_rng(seed)
    with open(xp, "wb") as fx, open(yp, "wb") as fy:
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            X = rng.uniform(1.0, 3.0, (n, FEATURES)).astype(np.float32)
            y = (X[:, 0] * X[:, 1] + np.sin(X[:, 2])).astype(np.float32)
            fx.write(X.tobytes())
            fy.write(y.tobytes())
    return xp, yp


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--dir", default="/tmp/tensorgp-large")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    from tensorgp import SymbolicRegressor

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    xp, yp = write_data(Path(args.dir), args.rows)
    t_write = time.perf_counter() - t0
    X = np.memmap(xp, np.float32, "r", shape=(args.rows, FEATURES))
    y = np.memmap(yp, np.float32, "r", shape=(args.rows,))
    rss_before = rss_mb()
    load0 = os.getloadavg()
    t1 = time.perf_counter()
    est = SymbolicRegressor(random_state=args.seed, n_jobs=args.threads).fit(X, y)
    fit_s = time.perf_counter() - t1
    st = est.stream_stats_
    # baseline: the in-memory fit of the sample alone, same settings, same process
    from tensorgp.sr.streaming import ArraySource

    Xs, ys = ArraySource(X, y).sample(st["sample_rows"], np.random.default_rng(args.seed))
    t2 = time.perf_counter()
    base = SymbolicRegressor(random_state=args.seed, n_jobs=args.threads).fit(Xs, ys)
    base_s = time.perf_counter() - t2
    out = {"rows": args.rows, "features": FEATURES, "data_gb": round((X.nbytes + y.nbytes) / 1e9, 3),
           "write_s": round(t_write, 1), "fit_s": round(fit_s, 1), "sample_s": round(st["sample_s"], 1),
           "evolve_s": round(st["evolve_s"], 1), "full_pass_s": round(st["full_pass_s"], 1),
           "front_size": st["front_size"], "peak_rss_mb": round(rss_mb(), 1), "rss_before_fit_mb": round(rss_before, 1),
           "expression": est.expression_, "r2_all_rows": st["r2_all_rows"],
           "baseline_sample_fit_s": round(base_s, 1), "fit_over_baseline": round(fit_s / base_s, 2),
           "baseline_expression": base.expression_, "threads": args.threads,
           "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
