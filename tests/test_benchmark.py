"""Contract of ``tensorgp bench`` / ``tensorgp.runtime.benchmark`` on tiny sizes (what is reported and how
it is computed, not how fast)."""
import json
import statistics

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tensorgp.runtime import benchmark as B
from tensorgp.engine.evaluate import evaluate_torch
from tensorgp.nas.bench import generation_problem
from tensorgp.nas.experiment import program_population
from tensorgp.engine.expression import parse
from tensorgp.engine.primitives import CONST, FIRST_VAR, OPCODE
from tensorgp.runtime.results import dumps
from tensorgp_cli.cli import app

TINY = dict(pop=24, rows=80, features=4, depth=4, repeat=2, generations=1, task_rows=30)


@pytest.fixture(scope="module")
def tiny_result():
    return B.run_benchmark(B.BenchConfig(**TINY, backends="numba,numba-dedup,torch", peers="none"), None,
                           generation_problem)


def test_eval_contract_and_units(tiny_result):
    r = tiny_result
    nodes = r["population"]["nodes"]
    assert r["population"]["size"] == 24 and r["population"]["max_depth"] <= 4
    assert set(r["eval"]) == {"numba", "numba-dedup", "torch"}
    for b, e in r["eval"].items():
        assert e["population"] == 24 and e["rows"] == 80 and e["nodes"] == nodes
        assert len(e["times"]) == 2 and e["seconds"] == pytest.approx(statistics.median(e["times"]))
        assert e["gpops"] == pytest.approx(nodes * 80 / e["seconds"])  # population-equivalent
    assert r["best"] == max(r["eval"], key=lambda b: r["eval"][b]["gpops"])
    d = r["eval"]["numba-dedup"]
    # executed nodes are counted apart: never more than the population's, and labelled
    assert 0 < d["executed_nodes"] <= nodes and "population-equivalent" in d["label"]
    assert d["executed_gpops"] == pytest.approx(d["executed_nodes"] * 80 / d["seconds"])
    assert "executed_nodes" not in r["eval"]["numba"]
    assert r["peers"] == {} and r["peers_skipped"] == {}
    json.loads(dumps(r))  # JSON-ready


def test_fitness_and_generation_sections(tiny_result):
    f = tiny_result["fitness"]
    assert f["population"] == 24 and f["rows"] == 80 and f["tasks"] == 3  # round(80 / 30)
    for metric in ("kendall", "spearman", "both"):
        for fb, v in f[metric].items():
            assert fb in ("numba", "torch", "triton", "pairs")
            assert v["rows_per_s"] == pytest.approx(24 * 80 / v["seconds"])
    g = tiny_result["generations"]
    assert g["generations"] == 1 and g["population"] == 24 and g["rows"] == 80
    assert g["backend"] == ("numba" if tiny_result["best"] == "numba-dedup" else tiny_result["best"])
    assert g["gens_per_s"] > 0 and g["eval_s"] >= 0 and g["fitness_s"] >= 0


def test_task_offsets():
    off = B.task_offsets(5000, 700).tolist()
    assert off[0] == 0 and off[-1] == 5000 and len(off) == 8  # 7 tasks
    sizes = np.diff(off)
    assert sizes.max() - sizes.min() <= 1
    assert B.task_offsets(10, 700).tolist() == [0, 10]


def test_population_is_seeded_and_within_depth():
    cfg = B.BenchConfig(pop=50, rows=10, depth=3)
    a, b = B.make_population(cfg), B.make_population(cfg)
    assert torch.equal(a.ops, b.ops) and torch.equal(a.consts, b.consts)
    assert B.population_stats(a)["max_depth"] <= 3
    assert torch.equal(B.make_rows(cfg), B.make_rows(cfg))


def test_time_interleaved_warms_up_then_alternates():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = B.time_interleaved(fns, 3, pause=0)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(v) for v in t.values()] == [3, 3]


def test_prefix_order():
    vars_ = ("x0", "x1", "x2")
    pop = program_population(parse("(x0 - (x1 * 2.5))", vars_), "cpu")
    toks = B.prefix_programs(pop)[0]
    assert [o for o, _ in toks] == [OPCODE["sub"], FIRST_VAR, OPCODE["mul"], FIRST_VAR + 1, CONST]
    assert toks[-1][1] == pytest.approx(2.5)


def test_backend_choice_errors():
    assert B.resolve_backends("auto", "cpu")[0] in ("numba", "torch")
    with pytest.raises(ValueError, match="unknown backend"):
        B.resolve_backends("numba,fast", "cpu")
    with pytest.raises(ValueError, match="unknown peer"):
        B.resolve_peers("gplearn,deap")
    assert B.resolve_peers("none") == []


def _ours(pop, X):
    return evaluate_torch(pop.ops, pop.consts, pop.length, X).numpy()


def test_gplearn_runs_the_same_trees():
    pytest.importorskip("gplearn")
    cfg = B.BenchConfig(pop=40, rows=64, features=3, depth=5, functions=("add", "sub", "mul"))
    pop, X = B.make_population(cfg), B.make_rows(cfg)
    progs = B.gplearn_programs(B.prefix_programs(pop))
    got = np.stack([p.execute(np.asfortranarray(X.numpy())) for p in progs])
    assert B.agreement(got, _ours(pop, X)) == 1.0
    # the check can fail: operands in the wrong order (x1 - x0 for x0 - x1) disagree
    bad = B.gplearn_programs([[(OPCODE["sub"], 0.0), (FIRST_VAR + 1, 0.0), (FIRST_VAR, 0.0)]])
    ref = _ours(program_population(parse("(x0 - x1)", ("x0", "x1", "x2")), "cpu"), X)
    assert B.agreement(np.stack([bad[0].execute(X.numpy())]), ref) < 0.1


def test_pyoperon_runs_the_same_trees():
    op = pytest.importorskip("pyoperon")
    # no div: operon's is unprotected, so x / (x0 - x0) is inf there and 1 here
    cfg = B.BenchConfig(pop=40, rows=64, features=3, depth=5, functions=("add", "sub", "mul", "square"))
    pop, X = B.make_population(cfg), B.make_rows(cfg)
    Xf = np.asfortranarray(X.numpy())
    ds = op.Dataset(Xf)
    call, out = B.operon_call(B.operon_trees(B.prefix_programs(pop), ds), ds, 64, 2)
    call()
    assert B.agreement(out, _ours(pop, X)) == 1.0
    # an operand-order mistake (our postfix order given to operon as is) is caught
    one = program_population(parse("(x0 - (x1 / x2))", ("x0", "x1", "x2")), "cpu")
    n = int(one.length[0])
    postfix = list(zip(one.ops[0, :n].tolist(), one.consts[0, :n].tolist()))
    call, out1 = B.operon_call(B.operon_trees([postfix[::-1]], ds), ds, 64, 1)  # operon_trees reverses
    call()
    ref = _ours(one, X)
    assert B.agreement(out1, ref) < 0.1


def test_peers_report_ratio_and_skip_with_reason(monkeypatch):
    pytest.importorskip("gplearn")
    real = B.peer_available
    monkeypatch.setattr(B, "peer_available", lambda p: "not installed (test)" if p == "pyoperon" else real(p))
    r = B.run_benchmark(B.BenchConfig(**dict(TINY, generations=0), fitness=False, backends="numba", peers="auto"))
    assert r["peers_skipped"] == {"pyoperon": "not installed (test)"} and "pyoperon" not in r["peers"]
    g = r["peers"]["gplearn"]
    assert g["gpops"] == pytest.approx(r["population"]["nodes"] * 80 / g["seconds"])
    assert g["ratio"] == pytest.approx(r["eval"][r["best"]]["gpops"] / g["gpops"])
    assert g["agreement"] > 0.99 and g["verified_programs"] == 24


def test_unsupported_function_skips_the_peer():
    pytest.importorskip("gplearn")
    r = B.run_benchmark(B.BenchConfig(**dict(TINY, generations=0), functions=("add", "exp"), fitness=False,
                                      backends="numba", peers="gplearn"))
    assert "exp" in r["peers_skipped"]["gplearn"] and r["peers"] == {}


def test_cli_bench_json():
    res = CliRunner().invoke(app, ["bench", "--pop", "16", "--rows", "50", "--features", "3", "--depth", "3",
                                   "--repeat", "1", "--generations", "0", "--no-fitness", "--backends", "numba,torch",
                                   "--peers", "none", "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for b in ("numba", "torch"):
        assert {"gpops", "seconds", "population", "rows"} <= set(d["eval"][b])
        assert d["eval"][b]["population"] == 16 and d["eval"][b]["rows"] == 50
    assert d["peers"] == {} and "fitness" not in d and "generations" not in d
    bad = CliRunner().invoke(app, ["bench", "--backends", "numba,fast", "--quiet"])
    assert bad.exit_code == 2
