"""The timed steps of bench/gpu_check.sh, one per call, each writing DIR/<step>.json (not a test).

    python bench/gpu_steps.py eval --out DIR        # node-evals/s, 100,000 programs x 10,000 rows
    python bench/gpu_steps.py fitness --out DIR     # fitness vs evaluation time at pop 100,000;
                                                    # Kendall backends by task length (the auto route)
    python bench/gpu_steps.py summary --out DIR     # DIR/summary.json from every step's file
    ... --dry-run: CPU, Triton interpreter (TRITON_INTERPRET=1), tiny sizes

Sizes are chosen to fit the device budget (the whole gpu_check in ~6 minutes on one H200): each
figure is the median of a few timed calls after one warm call, with a synchronize around each.
A step writes its file after every case, so a timeout keeps what finished.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

if __name__ == "__main__":
    import _env

    _env.require_tensorgp()

import torch

TARGET_GPOPS = 1e11  # node-evaluations/s, issue 16
STEP_FILES = ("env", "kernel_tests", "eval", "fitness", "generation_profile", "device_check")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, reps: int) -> float:
    """Median seconds of ``reps`` calls after a warm one."""
    fn()
    _sync(dev)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _write(out: Path, name: str, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))


def _programs(n: int, functions, m: int, dev: torch.device, seed: int = 0):
    from tensorgp.engine.population import init_population
    from tensorgp.engine.primitives import PrimitiveSet

    pset = PrimitiveSet(tuple(f"x{i}" for i in range(m)), functions=functions)
    pop = init_population(n, pset, torch.Generator().manual_seed(seed), max_len=64, depth_range=(2, 6)).trimmed()
    return pop.to(dev)


def step_eval(a: argparse.Namespace, dev: torch.device) -> int:
    """Triton evaluation throughput: node-evaluations/s against the 1e11 target."""
    from tensorgp.engine.primitives import DEFAULT_FUNCTIONS
    from tensorgp.kernels.eval_kernel import evaluate_triton, max_stack_depth

    P, N = (64, 96) if a.dry_run else (100_000, 10_000)
    res: dict = {"target_gpops": TARGET_GPOPS, "cases": []}
    for case, funcs in (("arith", ("add", "sub", "mul", "div")), ("all14", DEFAULT_FUNCTIONS)):
        pop = _programs(P, funcs, 10, dev)
        X = torch.randn(N, 10, generator=torch.Generator(device=dev).manual_seed(1), device=dev)
        S = max_stack_depth(pop.ops)
        nodes = pop.n_nodes()
        t = timed(lambda: evaluate_triton(pop.ops, pop.consts, pop.length, X, max_stack=S), dev, 1 if a.dry_run else 3)
        row = {"case": case, "programs": P, "rows": N, "nodes": nodes, "seconds": t, "gpops": nodes * N / t,
               "target_met": nodes * N / t >= TARGET_GPOPS}
        print(json.dumps(row), flush=True)
        res["cases"].append(row)
        _write(a.out, "eval", res)
        del X, pop
    return 0


def step_fitness(a: argparse.Namespace, dev: torch.device) -> int:
    """Fitness vs evaluation at pop 100,000 on Suite-Zero-sized tasks (18 x ~712 rows), per
    backend; then the Kendall backends by task length, which is what ``fitness.route`` uses."""
    from tensorgp.engine import fitness as F
    from tensorgp.kernels.eval_kernel import evaluate_triton, max_stack_depth

    reps = 1 if a.dry_run else 2
    res: dict = {"pairs_max_rows": F.PAIRS_MAX_ROWS, "main": {}, "by_length": []}
    T, n = (3, 20) if a.dry_run else (18, 712)
    P = 32 if a.dry_run else 100_000
    N = T * n
    g = torch.Generator(device=dev).manual_seed(2)
    pop = _programs(P, ("add", "sub", "mul", "div", "log", "sqrt", "min", "max"), 12, dev)
    X = torch.randn(N, 12, generator=g, device=dev)
    S = max_stack_depth(pop.ops)
    pred = evaluate_triton(pop.ops, pop.consts, pop.length, X, max_stack=S)
    target = torch.rand(N, generator=g, device=dev).round(decimals=3)  # ties, like accuracies
    off = torch.arange(0, N + 1, n, device=dev)
    rt = F.prepare_target(target, off)
    m = res["main"]
    m.update(programs=P, tasks=T, rows_per_task=n, auto_route=F.route(dev, torch.float32, n, tau=True, rho=False),
             eval_s=timed(lambda: evaluate_triton(pop.ops, pop.consts, pop.length, X, max_stack=S), dev, reps))
    _write(a.out, "fitness", res)
    for be in ("auto", "triton", "torch"):
        try:
            m[f"kendall_{be}_s"] = timed(lambda: F.kendall_tau_b(pred, rt, None, be), dev, reps)
            m[f"both_{be}_s"] = timed(lambda: F.rank_correlations(pred, rt, backend=be), dev, reps)
        except Exception as e:  # report, keep going
            m[f"{be}_error"] = repr(e)
        print(json.dumps(m), flush=True)
        _write(a.out, "fitness", res)
    k = [m[f"kendall_{b}_s"] for b in ("triton", "torch") if f"kendall_{b}_s" in m]
    if k:
        m["fitness_over_eval"] = min(k) / m["eval_s"]
    ref = F.kendall_tau_b(pred[:64], rt, None, "torch")
    for be in ("triton", "auto"):
        try:
            m[f"max_abs_diff_{be}_vs_torch"] = float((F.kendall_tau_b(pred[:64], rt, None, be) - ref).abs().max())
        except Exception as e:
            m[f"{be}_check_error"] = repr(e)
    _write(a.out, "fitness", res)
    del pred, X
    # Kendall by task length: P x T x W ~ 1e8 elements (2e8 pair-kernel cells at most)
    lengths = (16, 40) if a.dry_run else (32, 64, 128, 256, 712, 2600, 15625)
    for W in lengths:
        T2 = 4 if W < 1000 else 1
        P2 = 8 if a.dry_run else max(64, min(200_000, int(1e8 // (T2 * W))))
        g2 = torch.Generator(device=dev).manual_seed(W)
        pred2 = torch.randn(P2, T2 * W, generator=g2, device=dev).round(decimals=1)
        tgt2 = torch.rand(T2 * W, generator=g2, device=dev).round(decimals=3)
        rt2 = F.prepare_target(tgt2, torch.arange(0, T2 * W + 1, W, device=dev))
        row = {"rows": W, "tasks": T2, "programs": P2, "route": F.route(dev, torch.float32, W, rho=False)}
        for be in ("triton", "torch") + (("pairs",) if W <= 256 or a.dry_run else ()):
            try:
                row[f"{be}_s"] = timed(lambda: F.kendall_tau_b(pred2, rt2, None, be), dev, reps)
                row[f"{be}_rows_per_s"] = P2 * T2 * W / row[f"{be}_s"]
            except Exception as e:
                row[f"{be}_error"] = repr(e)
        times = {b: row[f"{b}_s"] for b in ("triton", "torch", "pairs") if f"{b}_s" in row}
        row["fastest"] = min(times, key=times.get) if times else None
        print(json.dumps(row), flush=True)
        res["by_length"].append(row)
        _write(a.out, "fitness", res)
        del pred2
    return 0


def _load(out: Path, name: str):
    p = out / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _junit(out: Path) -> dict | None:
    p = out / "junit.xml"
    if not p.exists():
        return None
    import xml.etree.ElementTree as ET

    r = ET.parse(p).getroot()
    suites = [r] if r.tag == "testsuite" else list(r)
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    tot["failed_names"] = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
                           if c.find("failure") is not None or c.find("error") is not None]
    return tot


def step_summary(a: argparse.Namespace, dev: torch.device) -> int:
    """One JSON: every step's status and wall time (DIR/steps.tsv), the headline figures."""
    steps = []
    tsv = a.out / "steps.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            name, rc, wall, limit = line.split("\t")
            steps.append({"step": name, "rc": int(rc), "wall_s": float(wall), "timeout_s": int(limit),
                          "timed_out": int(rc) in (124, 137)})
    s: dict = {"mode": "cpu dry run (Triton interpreter, tiny sizes)" if a.dry_run else "cuda",
               "steps": steps, "total_wall_s": sum(x["wall_s"] for x in steps),
               "sum_of_timeouts_s": sum(x["timeout_s"] for x in steps), "kernel_tests": _junit(a.out)}
    ev = _load(a.out, "eval")
    if ev:
        s["eval"] = {c["case"]: {"gpops": c["gpops"], "target_met": c["target_met"]} for c in ev["cases"]}
    fi = _load(a.out, "fitness")
    if fi:
        s["fitness"] = fi.get("main")
        s["kendall_fastest_by_rows"] = {r["rows"]: r.get("fastest") for r in fi.get("by_length", [])}
        s["kendall_route_by_rows"] = {r["rows"]: r.get("route") for r in fi.get("by_length", [])}
    gp = _load(a.out, "generation_profile")
    if gp:
        s["generation_targets"] = [{k: t.get(k) for k in ("case", "wall_s", "target_s", "met", "eval_s", "fitness_s",
                                                          "variation_s", "sync_every", "cuda_graph", "graph_replays",
                                                          "graph_capture_failed")} for t in gp.get("targets", [])]
        s["generation_profile"] = [{"variation": r["variation"], "population": r["population"],
                                    "launches": [g["launches"] for g in r["generations"]],
                                    "syncs": [g["syncs"] for g in r["generations"]],
                                    "wall_s": [g["wall_s"] for g in r["generations"]],
                                    **{k: r[k] for k in ("cuda_launches", "cuda_syncs") if k in r}}
                                   for r in gp.get("runs", [])]
    dc = _load(a.out, "device_check")
    if dc:
        s["device_check"] = {k: (v.get("ok") if isinstance(v, dict) else v) for k, v in dc.items()}
    s["ok"] = bool(steps) and all(x["rc"] == 0 for x in steps)
    _write(a.out, "summary", s)
    print(json.dumps(s, indent=1, default=str))
    return 0


STEPS = {"eval": step_eval, "fitness": step_fitness, "summary": step_summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (needs TRITON_INTERPRET=1)")
    a = ap.parse_args(argv)
    if a.step != "summary" and not a.dry_run and not torch.cuda.is_available():
        print("no CUDA device (use --dry-run with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    if a.dry_run and a.step != "summary" and os.environ.get("TRITON_INTERPRET") != "1":
        print("--dry-run needs TRITON_INTERPRET=1 in the environment", file=sys.stderr)
        return 2
    dev = torch.device("cpu" if a.dry_run else "cuda")
    try:
        return STEPS[a.step](a, dev)
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
