"""Checks of the device generation path on a CUDA machine (run by bench/gpu_check.sh; not a test).

    python bench/device_check.py --out DIR          # CUDA
    python bench/device_check.py --out DIR --cpu    # dry run of the device-independent checks

1. ``breed_device`` on CUDA gives the children it gives on the CPU (same population, fitness and
   key: integer work and exact float32 uniforms, so bit-identical);
2. breeding replayed from the captured CUDA graph equals eager breeding, generation after generation;
3. two runs with the same seed give the same final population; a run resumed from its state
   half-way gives the uninterrupted run's final population (on the device under test); so do a
   run that reads its progress every 3 generations (``sync_every=3``) and its resume mid-block;
4. ``cuda_graph=True`` (each generation one replayed CUDA graph) gives the eager run.
Writes DIR/device_check.json; exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import torch

from tensorgp.engine.counter_rng import key_tensor
from tensorgp.engine.device_graph import GraphedBreed
from tensorgp.engine.device_variation import breed_device
from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.engine.population import Population, init_population
from tensorgp.engine.primitives import PrimitiveSet
from tensorgp.engine.variation import Limits, VariationRates

PSET = PrimitiveSet(tuple(f"x{i}" for i in range(8)))


def _same(a: Population, b: Population) -> bool:
    return all(torch.equal(getattr(a, f).cpu(), getattr(b, f).cpu()) for f in ("ops", "consts", "length"))


def _breed(pop: Population, fit: torch.Tensor, key: torch.Tensor) -> Population:
    return breed_device(pop, fit, key, pop.size, PSET, Limits(64, 8), VariationRates(), 7, 0.05)


def check_cpu_vs_cuda() -> dict:
    pop = init_population(5000, PSET, torch.Generator().manual_seed(0))
    fit = torch.rand(5000, generator=torch.Generator().manual_seed(1))
    cpu = _breed(pop, fit, key_tensor(0, 1, "cpu"))
    gpu = _breed(pop.to("cuda"), fit.cuda(), key_tensor(0, 1, "cuda"))
    return {"ok": _same(cpu, gpu), "rows_differing": int(((cpu.ops != gpu.ops.cpu()).any(1)).sum())}


def check_graph_replay() -> dict:
    pop = init_population(5000, PSET, torch.Generator().manual_seed(0)).to("cuda")
    fit = torch.rand(5000, generator=torch.Generator().manual_seed(1)).cuda()
    graphed = GraphedBreed(_breed)
    eager_pop, graph_pop, same = pop, pop, []
    for g in range(1, 4):
        key = key_tensor(0, g, "cuda")
        eager_pop = _breed(eager_pop, fit, key)
        graph_pop = graphed(graph_pop, fit, key)
        same.append(_same(eager_pop, graph_pop))
    return {"ok": all(same) and not graphed.failed, "per_generation": same, "captured": graphed.graph is not None}


def _fitness(pop: Population) -> torch.Tensor:
    return -(pop.length.float() - 9).abs() + pop.consts.sum(1)


def check_seed_and_resume(device: str) -> dict:
    def ev(seed: int, gens: int, k: int = 1) -> Evolver:
        return Evolver(EvolutionConfig(population=2000, generations=gens, runs=2, seed=seed, variation="device",
                                       sync_every=k, patience=50), PSET, _fitness, device)

    a, b = ev(3, 8), ev(3, 8)
    a.run()
    b.run()
    part = ev(3, 4)
    st = part.run()
    resumed = ev(999, 8)
    resumed.restore(st)
    resumed.run()
    # progress read every 3 generations (sync_every): the same run, and resumed mid-block
    k3 = ev(3, 8, 3)
    k3.run()
    part3 = ev(3, 5, 3)
    resumed3 = ev(999, 8, 3)
    resumed3.restore(part3.run())
    resumed3.run()
    same_k = _same(a.state.pop, k3.state.pop) and [h.best for h in a.state.history] == [h.best for h in k3.state.history]
    return {"ok": _same(a.state.pop, b.state.pop) and _same(a.state.pop, resumed.state.pop)
            and torch.equal(a.state.hof.fitness, resumed.state.hof.fitness) and same_k
            and _same(a.state.pop, resumed3.state.pop),
            "same_seed": _same(a.state.pop, b.state.pop), "resume": _same(a.state.pop, resumed.state.pop),
            "sync_every_3": same_k, "resume_sync_every_3": _same(a.state.pop, resumed3.state.pop)}


class _CapturableFitness:
    capturable = True  # a fixed-op objective: a generation with it can be one CUDA graph

    def __call__(self, pop: Population) -> torch.Tensor:
        return _fitness(pop)


def check_generation_graph() -> dict:
    """``cuda_graph=True``: every generation replayed from one captured graph equals the eager run."""
    def ev(graph: bool) -> Evolver:
        return Evolver(EvolutionConfig(population=2000, generations=8, runs=2, seed=3, variation="device",
                                       sync_every=3, patience=50, cuda_graph=graph), PSET, _CapturableFitness(), "cuda")

    a, b = ev(False), ev(True)
    a.run()
    b.run()
    same = _same(a.state.pop, b.state.pop) and torch.equal(a.state.hof.fitness, b.state.hof.fitness) \
        and [h.best for h in a.state.history] == [h.best for h in b.state.history]
    return {"ok": same and not b._graph_gen.failed and b._graph_gen.replays > 0, "same": same,
            "replays": b._graph_gen.replays, "capture_failed": b._graph_gen.failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--cpu", action="store_true", help="dry run: only the device-independent checks, on the CPU")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not a.cpu
    checks = {"seed_and_resume": lambda: check_seed_and_resume("cuda" if cuda else "cpu")}
    if cuda:
        checks = {"cpu_vs_cuda": check_cpu_vs_cuda, "graph_replay": check_graph_replay, **checks,
                  "generation_graph": check_generation_graph}
    res, rc = {"device": "cuda" if cuda else "cpu"}, 0
    for name, fn in checks.items():
        try:
            res[name] = fn()
        except Exception as e:
            traceback.print_exc()
            res[name] = {"ok": False, "error": repr(e)}
        rc |= not res[name]["ok"]
        print(f"{name}: {res[name]}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "device_check.json").write_text(json.dumps(res, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
