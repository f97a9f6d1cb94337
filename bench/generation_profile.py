"""Per-generation profile of the evolution loop: launches, host synchronisations and the
evaluation / fitness / variation split, at several population sizes, for the device path
(``EvolutionConfig.variation="device"``) against the compiled one (the baseline) in the same
process. Not a test. Called by bench/gpu_check.sh.

    python bench/generation_profile.py                       # CPU: pops 100,1000,10000, 3 generations
    python bench/generation_profile.py --device cuda --out DIR --targets   # + the issue's GPU targets

Columns per generation:
* ``launches``: dispatched torch operations that are not views (``runtime.op_count``; on a GPU
  each is at least one kernel launch; Triton and numba kernels count as none: their wrappers'
  torch operations are counted) and ``syncs``: operations that read a result on the host
  (``.item()``, ``nonzero``, ``unique``, boolean-mask indexing, ...), over the whole step
  (variation, evaluation, fitness, bookkeeping);
* on CUDA also ``cuda_launches`` / ``cuda_syncs`` from the torch profiler (kernel launch and
  stream/device synchronise calls) in a separate profiled generation;
* ``eval_s``, ``fitness_s``, ``variation_s`` (``GenStats``; on CUDA after a synchronize) and
  ``wall_s``.
Ratios: device wall / compiled wall per population size. ``--targets`` (CUDA) times the issue's
configurations on all Suite-Zero tasks with the device path and prints them against the targets.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.nas.data import find_data_dir
from tensorgp.nas.experiment import RunSpec, prepare
from tensorgp.nas.objective import RankObjective
from tensorgp.runtime.op_count import OpCounter

# (name, runs, population, generations, wall target in seconds): issue 16, H200, warm
TARGETS = (("pop 1,000 x 50", 1, 1000, 50, 1.0), ("pop 100,000 x 10", 1, 100_000, 10, 1.5),
           ("pop 1,000,000 x 3", 1, 1_000_000, 3, 4.0), ("31 runs x 1,000 x 100", 31, 1000, 100, 5.0))
CUDA_LAUNCH = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")
CUDA_SYNC = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


SYNC_FREE = False  # --sync-free: the device path's objective without host reads (no deduplication)
CUDA_GRAPH = False  # --cuda-graph: device-path generations replayed from one CUDA graph (with --sync-free)


def make_evolver(prep, backend: str, device: str, pop: int, gens: int, runs: int, variation: str, seed: int,
                 sync_every: int = 1) -> Evolver:
    free = SYNC_FREE and variation == "device"
    cfg = EvolutionConfig(population=pop, generations=gens, runs=runs, seed=seed, variation=variation,
                          sync_every=sync_every, cuda_graph=free and CUDA_GRAPH)
    obj = RankObjective(prep.train_batch, "kendall", "mean", backend, sync_free=free,
                        max_stack=cfg.max_depth + 1 if free else None)
    return Evolver(cfg, prep.pset, obj, device, count_rows=prep.train_batch.X.shape[0])


def cuda_counts(ev: Evolver) -> dict:
    """Kernel launches and synchronising calls of one step, from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ev.step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    return {"cuda_launches": sum(n in CUDA_LAUNCH for n in names),
            "cuda_syncs": sum(any(n.startswith(s) for s in CUDA_SYNC) for n in names) - 1}  # minus ours


def profile_run(prep, backend: str, device: str, pop: int, gens: int, variation: str, seed: int) -> dict:
    dev = torch.device(device)
    ev = make_evolver(prep, backend, device, pop, gens + 2, 1, variation, seed)
    t0 = time.perf_counter()
    ev.initialize()
    _sync(dev)
    init_s = time.perf_counter() - t0
    ev.step()  # warm: compiles, caches, graph capture
    rows = []
    for g in range(gens):
        _sync(dev)
        t0 = time.perf_counter()
        with OpCounter() as c:
            s = ev.step()
        _sync(dev)
        wall = time.perf_counter() - t0
        rows.append({"gen": s.generation, "launches": c.launches, "dispatched": c.total, "syncs": c.syncs,
                     "sync_ops": dict(c.sync_ops), "eval_s": s.eval_s, "fitness_s": s.fitness_s,
                     "variation_s": s.variation_s, "wall_s": wall})
    # timing without the dispatch mode in the way
    _sync(dev)
    t0 = time.perf_counter()
    ev.step()
    _sync(dev)
    out = {"variation": variation, "population": pop, "init_s": init_s, "generations": rows,
           "wall_s_unprofiled": time.perf_counter() - t0}
    if dev.type == "cuda":
        out.update(cuda_counts(ev))
    return out


def run_targets(prep, backend: str, device: str, seed: int, sync_every: int = 1, scale: float = 1.0,
                on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """The issue's configurations, device path, each warmed by a 2-generation run first.
    ``scale`` < 1 shrinks the populations (a CPU dry run); ``on_row`` sees each finished row."""
    res = []
    for name, runs, pop, gens, target in TARGETS:
        pop = max(8, int(pop * scale))
        ev = make_evolver(prep, backend, device, pop, gens, runs, "device", seed, sync_every)
        warm = make_evolver(prep, backend, device, pop, 2, runs, "device", seed, sync_every)
        warm.run()  # compile and capture once (warm, in one process)
        # the timed run replays the warm run's CUDA graphs: same shapes and settings (only the
        # generation count differs, which neither graph reads), so no capture inside the timing
        ev._graphed, ev._graph_gen = warm._graphed, warm._graph_gen
        _sync(torch.device(device))
        t0 = time.perf_counter()
        st = ev.run()
        _sync(torch.device(device))
        wall = time.perf_counter() - t0
        h = st.history
        row = {"case": name, "runs": runs, "population": pop, "generations": gens, "sync_every": sync_every,
               "wall_s": wall, "target_s": target,
               "met": wall < target, "eval_s": sum(x.eval_s for x in h), "fitness_s": sum(x.fitness_s for x in h),
               "variation_s": sum(x.variation_s for x in h), "best": max(x.best for x in h),
               "cuda_graph": ev.config.cuda_graph, "graph_replays": ev._graph_gen.replays,
               "graph_capture_failed": ev._graph_gen.failed}
        print(f"  target {name:24s} wall {wall:8.3f} s (target {target} s, {'met' if row['met'] else 'MISSED'}); "
              f"eval {row['eval_s']:.3f} fitness {row['fitness_s']:.3f} variation {row['variation_s']:.3f}", flush=True)
        res.append(row)
        if on_row is not None:
            on_row(row)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--train", default="*")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--pops", default=None, help="comma-separated (CPU default 100,1000,10000; CUDA 1000,10000,100000)")
    ap.add_argument("--gens", type=int, default=3)
    ap.add_argument("--variations", default="compiled,device", help="the first is the baseline of the ratios")
    ap.add_argument("--targets", action="store_true", help="time the issue's GPU configurations (device path)")
    ap.add_argument("--target-scale", type=float, default=1.0, help="populations of --targets times this (dry runs)")
    ap.add_argument("--sync-every", type=int, default=1, help="EvolutionConfig.sync_every of the --targets runs")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="with --sync-free: EvolutionConfig.cuda_graph (a generation = one replayed CUDA graph)")
    ap.add_argument("--sync-free", action="store_true",
                    help="device-path runs use RankObjective(sync_free=True): no deduplication, no host reads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="directory for generation_profile.json")
    a = ap.parse_args(argv)
    global SYNC_FREE, CUDA_GRAPH
    SYNC_FREE, CUDA_GRAPH = a.sync_free, a.cuda_graph
    cuda = a.device.startswith("cuda")
    pops = [int(p) for p in (a.pops or ("1000,10000,100000" if cuda else "100,1000,10000")).split(",")]
    variations = [v.strip() for v in a.variations.split(",") if v.strip()]
    prep = prepare(RunSpec(data=[a.data or find_data_dir()], train=a.train, device=a.device, backend=a.backend))
    load = os.getloadavg()
    print(f"device {a.device}; {prep.train_batch.n_tasks} tasks, {prep.train_batch.X.shape[0]} rows; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch threads {torch.get_num_threads()}", flush=True)
    res: dict = {"device": a.device, "sync_free": a.sync_free, "sync_every": a.sync_every,
                 "cuda_graph": a.cuda_graph,
                 "tasks": prep.train_batch.n_tasks, "rows": int(prep.train_batch.X.shape[0]),
                 "load_before": load, "runs": [], "ratios": {}}
    def save(r: dict) -> None:  # after every run: a timeout keeps what finished
        if a.out:
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / "generation_profile.json").write_text(json.dumps(r, indent=1))

    hdr = f"{'variation':9s} {'pop':>8s} {'gen':>4s} {'launches':>8s} {'dispatched':>10s} {'syncs':>6s} " \
          f"{'eval_s':>8s} {'fitness_s':>9s} {'variation_s':>11s} {'wall_s':>8s}"
    print(hdr)
    for pop in pops:
        walls = {}
        for v in variations:
            r = profile_run(prep, a.backend, a.device, pop, a.gens, v, a.seed)
            res["runs"].append(r)
            for g in r["generations"]:
                print(f"{v:9s} {pop:8d} {g['gen']:4d} {g['launches']:8d} {g['dispatched']:10d} {g['syncs']:6d} "
                      f"{g['eval_s']:8.4f} {g['fitness_s']:9.4f} {g['variation_s']:11.4f} {g['wall_s']:8.4f}", flush=True)
            if "cuda_launches" in r:
                print(f"{v:9s} {pop:8d}  profiler: {r['cuda_launches']} CUDA launches, {r['cuda_syncs']} syncs", flush=True)
            walls[v] = statistics.median(g["wall_s"] for g in r["generations"])
            save(res)
        base = variations[0]
        for v in variations[1:]:
            ratio = walls[v] / walls[base]
            res["ratios"][f"{v}/{base} pop {pop}"] = ratio
            print(f"  pop {pop}: {v} wall per generation {walls[v]:.4f} s = {ratio:.2f}x {base} ({walls[base]:.4f} s)")
    if a.targets:
        res["targets"] = []
        run_targets(prep, a.backend, a.device, a.seed, a.sync_every, a.target_scale,
                    on_row=lambda row: (res["targets"].append(row), save(res)))
    res["load_after"] = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in res['load_after'])}")
    save(res)
    if a.out:
        print(f"wrote {a.out / 'generation_profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
