"""Live search: the table-driven loop with proxies computed as it goes; rank preprocessing
against every candidate a run has scored so far; the CLI end to end on made-up data."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tensorgp.nas.data import preprocess
from tensorgp.nas.live_search import LiveObjective, run_live_search
from tensorgp.nas.search import SearchError, neighbour_table, regularized_evolution
from tensorgp.nas.spaces import NB201
from tensorgp_cli.cli import _expand_multi, app

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, _expand_multi([str(a) for a in args]))


def _landscape(enc):
    """float64[n, 2]: two made-up proxies of each encoding (integers: exact in float32)."""
    w = torch.tensor([3, 1, 4, 1, 5, 9], dtype=torch.float64)
    a = (enc.double() * w).sum(1)
    b = ((enc == 2).sum(1) * 7 - (enc == 1).sum(1)).double()
    return torch.stack([a, b], 1)


def _lookup(enc, cols=2):
    table = _landscape(enc)[:, :cols]
    index = {tuple(r): i for i, r in enumerate(enc.tolist())}
    calls = []

    def measure(archs):
        calls.append(len(archs))
        return table[[index[a] for a in archs]]

    return measure, calls


def test_live_objective_reproduces_the_table_driven_search():
    """Raw formula, proxies looked up as they are 'measured': the same architectures visited and
    found as the search over the precomputed table (the loop is shared)."""
    enc = NB201().enumerate()[::3]
    nb = neighbour_table(enc)
    X = _landscape(enc)
    table_scores = (X[:, 0] + X[:, 1]).float()
    ref = regularized_evolution(table_scores, enc, 120, 4, 7, 20, 5, nb)
    measure, calls = _lookup(enc)
    obj = LiveObjective(NB201(), enc, "synflow + jacov", "raw", 4, measure)
    live = regularized_evolution(None, enc, 120, 4, 7, 20, 5, nb, objective=obj)
    assert torch.equal(live.best, ref.best) and torch.equal(live.visited, ref.visited)
    # each architecture measured once, children of all runs measured together
    assert obj.measured == int(live.visited.any(0).sum()) and max(calls) <= 4 * 20


def test_rank_preprocessing_ranks_against_everything_the_run_scored():
    enc = torch.tensor([[0, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4], [1, 0, 0, 0, 0, 0]])
    measure, _ = _lookup(enc, cols=1)
    obj = LiveObjective(NB201(), enc, "synflow", "rank", 1, measure)
    obj.observe(torch.tensor([[0, 1]]))
    before = obj.values(torch.tensor([[0, 1]]))
    assert before.tolist() == [[0.0, 1.0]]  # ranks among the two scored so far
    obj.observe(torch.tensor([[2]]))  # a better one arrives: the others' objective moves
    after = obj.values(torch.tensor([[0, 1, 2]]))
    assert after.tolist() == [[0.0, 0.5, 1.0]]
    obj.observe(torch.tensor([[3]]))
    S = torch.tensor([0, 1, 2, 3])
    expect = preprocess(_landscape(enc)[S][:, :1].float(), "rank")[:, 0]
    assert torch.allclose(obj.values(S[None])[0].float(), expect)
    # unscored architectures never win a comparison
    obj2 = LiveObjective(NB201(), enc, "synflow", "rank", 2, measure)
    obj2.observe(torch.tensor([[0], [1]]))
    assert obj2.values(torch.tensor([[1], [0]])).tolist() == [[float("-inf")], [float("-inf")]]


def _table(tmp_path, keys, acc):
    rows = {k: {"synflow": {"score": 1.0}, "jacov": {"score": 1.0}, "val_accuracy": a} for k, a in zip(keys, acc)}
    p = tmp_path / "zc_fake.json"
    p.write_text(json.dumps({"cifar10": rows}))
    return p


def test_live_search_end_to_end_tiny(tmp_path):
    sp = NB201(channels=4, cells=1)
    enc = sp.enumerate()[::50]
    keys = [sp.encode(a) for a in enc.tolist()]
    table = _table(tmp_path, keys, list(range(len(keys))))
    x, y = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(6) % 3
    res = run_live_search(sp, "synflow + jacov", x, y, "rank", budget=12, runs=2, population=4, sample_size=2,
                          data=[table], task="fake/cifar10", pack=4)
    assert res["failures"] == [] and res["task"] == "fake/cifar10" and res["candidates"] == len(keys)
    assert res["architectures_measured"] <= 24
    for r in res["per_run"]:
        assert r["evaluations"] == 12 and r["arch"] in keys
        assert set(r["proxies"]) == {"synflow", "jacov"}
        assert 0 < r["percentile"] <= 100 and r["accuracy"] == keys.index(r["arch"])
    t = res["timing"]
    assert t["proxies_s"] > 0 and t["total_s"] >= t["search_s"]
    # a table without accuracies gives the candidates only: the same search, no accuracy figures
    doc = json.loads(table.read_text())
    for rec in doc["cifar10"].values():
        rec.pop("val_accuracy")
    (tmp_path / "zc_new.json").write_text(json.dumps(doc))
    unl = run_live_search(sp, "synflow + jacov", x, y, "rank", budget=12, runs=2, population=4, sample_size=2,
                          data=[tmp_path / "zc_new.json"], task="new/cifar10", pack=4)
    assert unl["labelled"] is False and res["labelled"] is True and unl["candidates"] == len(keys)
    assert [r["arch"] for r in unl["per_run"]] == [r["arch"] for r in res["per_run"]]
    assert all("accuracy" not in r for r in unl["per_run"]) and set(unl["median"]) == {"score"}
    assert "table_best_accuracy" not in unl
    with pytest.raises(SearchError, match="names a table, but no data"):  # never silently the whole space
        run_live_search(sp, "synflow + jacov", x, y, "rank", budget=12, runs=2, task="fake/cifar10")


def test_cli_proxies_then_eval_and_search(tmp_path):
    sp = NB201()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 2, 3]))
    archs = ["(0, 2, 3, 2, 3, 1)", "(2, 2, 2, 2, 2, 2)", "(4, 0, 3, 1, 4, 3)"]
    (tmp_path / "a.txt").write_text("\n".join(archs))
    acc = _table(tmp_path, archs, [80.0, 90.0, 70.0])
    out = tmp_path / "zc_mine.json"
    r = invoke(["proxies", "--space", "nb201", "--archs", tmp_path / "a.txt", "--batch", tmp_path / "b.npz",
                "--out", out, "--proxies", "params,synflow,nwot", "--accuracy", acc, "--accuracy-task", "fake/cifar10",
                "--pack", 2, "--classes", 10, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())["cifar10"]
    assert list(d) == archs and d[archs[1]]["val_accuracy"] == 90.0
    assert d[archs[1]]["params"]["score"] == pytest.approx(1.531546)  # all conv3x3: NB201's largest
    assert d[archs[0]]["arch"] == sp.to_string(sp.decode(archs[0]))
    r = invoke(["eval", "--data", out, "--tasks", "mine/*", "--expr", "params", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["tasks"]["mine/cifar10"]["n"] == 3
    r = invoke(["search", "--data", out, "--task", "mine/cifar10", "--expr", "synflow", "--budget", 3, "--runs", 1,
                "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    best = max(archs, key=lambda k: d[k]["synflow"]["score"])  # budget 3 = the whole file
    assert res["per_run"][0]["arch"] == best and res["table_size"] == 3


@pytest.mark.parametrize("args, msg", [
    (["--space", "nb999", "--sample", 2], "unknown search space 'nb999'"),
    (["--sample", 2, "--all"], "exactly one of --archs"),
    (["--sample", 2, "--proxies", "snyflow"], "unknown proxy 'snyflow'"),
])
def test_cli_proxies_bad_input(tmp_path, args, msg):
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 3, 8, 8), np.float32), y=np.arange(4))
    r = invoke(["proxies", "--batch", tmp_path / "b.npz", "--out", tmp_path / "o.json", *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "o.json").exists()


def test_cli_bad_batch_and_live_search_errors(tmp_path):
    x = np.zeros((4, 3, 8, 8), np.float32)
    x[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(4))
    r = invoke(["proxies", "--sample", 2, "--batch", tmp_path / "nan.npz", "--out", tmp_path / "o.json"])
    assert r.exit_code == 2 and "NaN/inf" in r.output and "nan.npz" in r.output
    np.savez(tmp_path / "int.npz", x=np.zeros((4, 3, 8, 8), np.int32), y=np.arange(4))
    r = invoke(["search", "--live", "--space", "nb201", "--batch", tmp_path / "int.npz", "--expr", "synflow"])
    assert r.exit_code == 2 and "dtype" in r.output
    r = invoke(["search", "--live", "--space", "nope", "--batch", tmp_path / "nan.npz", "--expr", "synflow"])
    assert r.exit_code == 2 and "unknown search space 'nope'" in r.output
    r = invoke(["search", "--live", "--space", "nb201", "--expr", "synflow"])
    assert r.exit_code == 2 and "--batch" in r.output
