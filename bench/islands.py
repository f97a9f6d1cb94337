"""Island speed-up on the CPU (not a test): 1 process with population P vs 2 torchrun processes
(gloo) with P/2 each, the same generations, 1 thread per process.

    python bench/islands.py                                  # P=1000, 20 generations, NB201 (suite-zero)
    python bench/islands.py --pop 2000 --gens 30 --reps 3 --batched
    python bench/islands.py --data ../shared/data/nb201-final/zc_nasbench201.json --train 'nasbench201/*'

Each configuration runs ``tensorgp run`` in fresh processes with OMP_NUM_THREADS=1,
MKL_NUM_THREADS=1, NUMBA_NUM_THREADS=1 (so torch and numba use one thread each). Reported per
configuration (best of --reps, runs interleaved so load drifts hit both alike):
  evolve_s  the evolution loop, first generation to last, max over ranks (``timing.loop_s``)
  cpu_s     CPU seconds of that loop, max over ranks (``timing.loop_cpu_s``): what each process
            would take on a core of its own, so cpu_s(1 process) / cpu_s(2 processes) is the
            speed-up an idle 2-core machine would show even when this one is shared
  wall_s    the whole command: interpreter and torch start-up, data loading, torchrun rendezvous,
            scoring the result on every task
  migr_s    seconds inside migrations, max over ranks (includes waiting for the slower island)
            and min over ranks (about the exchange alone)
speed-up = evolve_s(1 process) / evolve_s(2 processes); migration share = migr_s / evolve_s.
The 1-process run takes ``--checkpoint TMP --every 0`` (one checkpoint at the end) so that it
goes through the same loop and reports the same timings.
--batched adds 1 process holding the 2 islands as one batched population (same algorithm as the
2-process run, no parallelism), which separates the island algorithm from the parallel speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _data_default() -> Path:
    from tensorgp.nas.data import find_data_dir

    return find_data_dir() / "zc_nasbench201.json"


def run(args: list[str], nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as d:
        cli = ["-m", "tensorgp_cli.cli", "run", *args, "--out", d, "--quiet", "--checkpoint", d, "--every", "0"]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cli]
        else:
            cmd = [sys.executable, *cli]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-4000:]}")
        res = json.loads((Path(d) / "result.json").read_text())
    isl = res.get("islands") or {}
    return {"evolve_s": res["timing"]["loop_s"], "cpu_s": res["timing"]["loop_cpu_s"], "wall_s": wall, "migr_max_s": isl.get("migration_s", 0.0),
            "migr_min_s": isl.get("migration_s_min", 0.0), "migrations": isl.get("migrations", 0),
            "fitness": res["fitness"], "expression": res["expression"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--train", default="nasbench201/*")
    ap.add_argument("--pop", type=int, default=1000, help="total population P (2 islands of P/2)")
    ap.add_argument("--gens", type=int, default=20)
    ap.add_argument("--migrate-every", type=int, default=5)
    ap.add_argument("--migrants", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--batched", action="store_true", help="also 1 process with 2 batched islands of P/2")
    a = ap.parse_args()
    data = a.data or _data_default()
    if not data.exists():
        raise SystemExit(f"data {data} not found (pass --data)")
    common = ["--data", str(data), "--train", a.train, "--gens", str(a.gens), "--seed", str(a.seed)]
    isl = ["--migrate-every", str(a.migrate_every), "--migrants", str(a.migrants)]
    configs = {"1 process, P": ([*common, "--pop", str(a.pop)], 1),
               "2 processes, P/2 each": ([*common, *isl, "--pop", str(a.pop // 2)], 2)}
    if a.batched:
        configs["1 process, 2 batched islands of P/2"] = ([*common, *isl, "--pop", str(a.pop // 2), "--islands", "2"], 1)
    print(f"P={a.pop} gens={a.gens} data={data} train={a.train} migrate every {a.migrate_every} "
          f"({a.migrants} migrants), 1 thread per process, cpus={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    best: dict[str, dict] = {}
    for rep in range(a.reps):
        for name, (args, nproc) in configs.items():
            r = run(args, nproc)
            print(f"  rep {rep} {name:<38} evolve {r['evolve_s']:7.2f} s  cpu {r['cpu_s']:7.2f} s  wall {r['wall_s']:7.2f} s  "
                  f"fitness {r['fitness']:.4f}", flush=True)
            if name not in best or r["evolve_s"] < best[name]["evolve_s"]:
                best[name] = r
    print(f"\n{'configuration':<38} {'evolve_s':>9} {'cpu_s':>7} {'wall_s':>8} {'migr_s max/min':>15} {'migrations':>10} {'fitness':>8}")
    for name, r in best.items():
        print(f"{name:<38} {r['evolve_s']:9.2f} {r['cpu_s']:7.2f} {r['wall_s']:8.2f} {r['migr_max_s']:7.3f}/{r['migr_min_s']:<7.3f} "
              f"{r['migrations']:>10} {r['fitness']:8.4f}")
    one, two = best["1 process, P"], best["2 processes, P/2 each"]
    print(f"\nspeed-up (evolve_s): {one['evolve_s'] / two['evolve_s']:.2f}x  (cpu_s: {one['cpu_s'] / two['cpu_s']:.2f}x, "
          f"wall: {one['wall_s'] / two['wall_s']:.2f}x); "
          f"migration share of the 2-process run: {two['migr_max_s'] / two['evolve_s']:.1%} incl. waiting, "
          f"{two['migr_min_s'] / two['evolve_s']:.1%} exchange alone; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
