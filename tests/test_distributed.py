"""Islands: ring migration (in one process and across 2 gloo processes) and a 2-process
``torchrun`` island run on real data that migrates, checkpoints and resumes exactly."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tensorgp.runtime import checkpoint as ck
from tensorgp.engine import expression as E
from tensorgp.nas.experiment import RunSpec
from tensorgp.runtime.distributed import World, init_world, migrate, pack, unpack
from tensorgp.engine.population import Population
from tensorgp.engine.primitives import FIRST_VAR

REPO = Path(__file__).resolve().parent.parent
R, P, L, K = 2, 6, 8, 2  # islands per process, programs per island, width, migrants


def _islands(first_island: int, runs: int = R) -> tuple[Population, torch.Tensor]:
    """Row i of global island g: the one-node program ``x_{g*P+i}`` with constant ``g*100+i`` and
    fitness i (row 0: NaN, an invalid program), so the best rows are P-1, P-2, the worst 0, 1."""
    n = runs * P
    ids = torch.arange(n, dtype=torch.int32) + first_island * P
    ops = torch.zeros(n, L, dtype=torch.int32)
    ops[:, 0] = FIRST_VAR + ids
    consts = torch.zeros(n, L)
    consts[:, 1] = (ids // P) * 100.0 + ids % P
    fit = (torch.arange(n) % P).float()
    fit[::P] = float("nan")
    return Population(ops, consts, torch.ones(n, dtype=torch.int32)), fit


def _check_ring(pop: Population, fit: torch.Tensor, first_island: int, n_islands: int, runs: int = R) -> None:
    ref, ref_fit = _islands(first_island, runs)
    for r in range(runs):
        src = (first_island + r - 1) % n_islands
        rows = slice(r * P, (r + 1) * P)
        got_ops = pop.ops[rows, 0] - FIRST_VAR
        # worst two (NaN first, then fitness 1) now hold the source's best two (P-1, then P-2)
        assert got_ops[:2].tolist() == [src * P + P - 1, src * P + P - 2]
        assert pop.consts[rows][:2, 1].tolist() == [src * 100.0 + P - 1, src * 100.0 + P - 2]
        assert fit[rows][:2].tolist() == [P - 1.0, P - 2.0]
        assert torch.equal(pop.ops[rows][2:], ref.ops[rows][2:])  # the rest is untouched
        assert torch.equal(fit[rows][2:], ref_fit[rows][2:])


def test_pack_round_trip_keeps_bits():
    pop, fit = _islands(0)
    pop.consts[3, 2] = -0.0
    fit[4] = -float("inf")
    back, bfit = unpack(pack(pop, fit, L), L)
    assert torch.equal(back.ops, pop.ops) and torch.equal(back.length, pop.length)
    assert torch.equal(back.consts.view(torch.int32), pop.consts.view(torch.int32))
    assert torch.equal(bfit.view(torch.int32), fit.view(torch.int32))


def test_ring_migration_between_batched_islands_of_one_process():
    pop, fit = _islands(0, runs=3)
    new_pop, new_fit = migrate(pop, fit, 3, K, World(), L)
    _check_ring(new_pop, new_fit, 0, 3, runs=3)
    # one island alone has nobody to exchange with
    one, one_fit = _islands(0, runs=1)
    same, same_fit = migrate(one, one_fit, 1, K, World(), L)
    assert same is one and same_fit is one_fit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _migrate_worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    world = init_world("cpu")
    try:
        assert world.backend == "gloo" and world.size == 2 and world.rank == rank
        pop, fit = _islands(rank * R)
        new_pop, new_fit = migrate(pop, fit, R, K, world, L)
        _check_ring(new_pop, new_fit, rank * R, 2 * R)
        assert world.agree(rank == 1, rank == 1) == (True, False)
    finally:
        world.close()


def test_ring_migration_across_two_gloo_processes():
    torch.multiprocessing.spawn(_migrate_worker, args=(_free_port(),), nprocs=2, join=True)


# ---------------------------------------------------------------- torchrun on real data
def _torchrun(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tensorgp_cli.cli", "run", *map(str, args)]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _rows(pop: Population) -> set:
    return {(tuple(o), tuple(c), int(n)) for o, c, n in zip(pop.ops.tolist(), pop.consts.tolist(), pop.length.tolist())}


def test_two_process_island_run_migrates_and_resumes(suite_zero, tmp_path):
    base = ["--data", suite_zero / "zc_nasbench201.json", "--train", "nasbench201/*", "--pop", 64,
            "--migrate-every", 2, "--migrants", 3, "--seed", 1, "--quiet"]
    full = tmp_path / "full"
    r = _torchrun(*base, "--gens", 6, "--checkpoint", full, "--every", 100)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((full / "result.json").read_text())
    isl = res["islands"]
    assert isl["processes"] == 2 and isl["total"] == 2 and isl["backend"] == "gloo" and isl["topology"] == "ring"
    assert isl["migrations"] == 3 and isl["migration_s"] > 0 and len(isl["per_rank"]) == 2
    # a valid result: the formula parses, its training Kendall is the fitness, both islands report
    assert res["generations_run"] == 6 and not res["interrupted"]
    E.parse(res["expression"], res["proxies"])
    train = [v["kendall"] for v in res["tasks"].values() if v["split"] == "train"]
    assert abs(sum(train) / len(train) - res["fitness"]) < 1e-5
    assert len(res["run_fitness"]) == 2 and res["selection"]["train"]["fitness"] == pytest.approx(max(res["run_fitness"]))
    assert {h["run"] for h in res["hall_of_fame"]} == {0, 1}
    # rank 0 wrote the result; each rank its own checkpoint, of its own island (seed + rank)
    assert sorted(p.name for p in full.iterdir() if ".prev." not in p.name) == ["checkpoint.pt", "checkpoint.rank1.pt",
                                                                                  "result.json"]
    c0, c1 = ck.load(full, 0, spec_type=RunSpec), ck.load(full, 1, spec_type=RunSpec)
    assert c0.generation == c1.generation == 6 and c0.spec.config.seed == c1.spec.config.seed == 1
    assert not torch.equal(c0.state.hof.pop.ops, c1.state.hof.pop.ops)
    # generation 6 was a migration: each island now holds the other's 3 best programs
    shared = _rows(c0.state.pop) & _rows(c1.state.pop)
    assert len(shared) >= 3

    # stop at 4, resume under torchrun to 6: identical to the uninterrupted run
    part = tmp_path / "part"
    r = _torchrun(*base, "--gens", 4, "--checkpoint", part, "--every", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _torchrun("--resume", part, "--gens", 6, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    res2 = json.loads((part / "result.json").read_text())
    assert res2["expression"] == res["expression"] and res2["run_fitness"] == res["run_fitness"]
    assert res2["islands"]["migrations"] == 3 and res2["checkpoint"]["resumed_from"] == 4
    for rank in (0, 1):
        a, b = ck.load(full, rank).state, ck.load(part, rank).state
        assert torch.equal(a.pop.ops, b.pop.ops) and torch.equal(a.pop.consts, b.pop.consts)
        assert torch.equal(a.fitness.nan_to_num(-9), b.fitness.nan_to_num(-9))

    # a 2-process checkpoint cannot be resumed by one process
    one = subprocess.run([sys.executable, "-m", "tensorgp_cli.cli", "run", "--resume", str(part), "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert one.returncode == 2 and "2 process(es)" in one.stderr
