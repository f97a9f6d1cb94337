import itertools
import json
import statistics

import pytest
import torch

from tensorgp.nas.data import DataWarning, Task, load
from tensorgp.nas.search import (SearchError, best_single_proxy, accuracy_percentile, dense_rank, encodings, formula_scores,
                             neighbour_table, one_hot, proxy_scores, random_search, read_result,
                             regularized_evolution, run_search, search, search_table, top_k_percentile)


def grid_task(name="toy/grid", D=4, V=4, keep=1.0, seed=0, nested=False):
    """Architectures = a ``keep`` share of {0..V-1}^D; accuracy peaks at one encoding and falls with
    the Hamming distance to it; proxies: ``good`` (= accuracy + noise), ``noise``, ``broken`` (all failed)."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.tensor(list(itertools.product(range(V), repeat=D)))
    codes = codes[torch.rand(len(codes), generator=g) < keep]
    target = codes[len(codes) // 3]
    acc = -(codes != target).sum(1).float() + 0.1 * torch.rand(len(codes), generator=g)
    feats = torch.stack([acc + 0.05 * torch.randn(len(codes), generator=g),
                         torch.randn(len(codes), generator=g),
                         torch.full((len(codes),), float("nan"))], 1)
    if nested:
        keys = [str((tuple(r[: D // 2]), tuple(r[D // 2:]))) for r in codes.tolist()]
    else:
        keys = [str(tuple(r)) for r in codes.tolist()]
    return Task(name, "synthetic", keys, ["good", "noise", "broken"], feats, acc)


def brute_neighbours(enc):
    rows = [tuple(r) for r in enc.tolist()]
    where = {r: i for i, r in enumerate(rows)}
    out = []
    for i, r in enumerate(rows):
        s = set()
        for d in range(len(r)):
            for v in set(x[d] for x in rows):
                j = where.get(r[:d] + (v,) + r[d + 1:], -1)
                if j >= 0 and j != i:
                    s.add(j)
        out.append(s)
    return out


# ----------------------------------------------------------------------------- search space


def test_encodings_flat_and_nested():
    t = grid_task(D=4, V=3)
    enc = encodings(t)
    assert enc.shape == (len(t), 4) and enc.dtype == torch.int64
    assert enc[5].tolist() == list(eval(t.keys[5]))
    tn = grid_task(D=4, V=3, nested=True)
    assert torch.equal(encodings(tn), enc)  # nested tuples flatten to the same vectors


@pytest.mark.parametrize("keys, msg", [
    (["(0, 1)", "(1, 0, 2)"], "different lengths"),
    (["abc123", "def456"], "cannot parse"),
    (["('a', 1)", "('b', 2)"], r"not a \(nested\) tuple of integers"),
])
def test_encodings_reject_unusable_keys(keys, msg):
    t = Task("toy/bad", "x", keys, ["p"], torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(SearchError, match=msg) as e:
        encodings(t)
    assert "toy/bad" in str(e.value)


def test_neighbour_table_matches_brute_force_on_a_sparse_table():
    t = grid_task(D=4, V=4, keep=0.15, seed=3)
    enc = encodings(t)
    nb = neighbour_table(enc)
    want = brute_neighbours(enc)
    for i in range(len(t)):
        got = set(nb[i][nb[i] >= 0].tolist())
        assert got == want[i], i
        # distinct slots: each (position, value) is one neighbour at Hamming distance 1
        assert len(got) == int((nb[i] >= 0).sum())
    assert any(len(w) == 0 for w in want)  # the sparse table has isolated architectures
    hot = one_hot(enc)
    dist = enc.shape[1] - hot @ hot.T
    assert torch.equal(dist.long(), (enc[:, None] != enc[None]).sum(-1))


# ----------------------------------------------------------------------------- scores


def test_formula_scores_use_the_engine_and_reject_missing_proxies():
    t = grid_task()
    s = formula_scores(t, "good - 0.5 * noise", "raw")
    f = t.features.float().double()  # the float32 inputs evolution sees, computed on in float64
    assert s.dtype == torch.float64 and torch.equal(s, f[:, 0] - 0.5 * f[:, 1])
    s32 = formula_scores(t, "good - 0.5 * noise", "raw", backend="numba")  # evolution's arithmetic
    assert s32.dtype == torch.float32 and torch.equal(s32, t.features[:, 0].float() - 0.5 * t.features[:, 1].float())
    r = formula_scores(t, "good", "rank")
    assert r.min() >= 0 and r.max() <= 1 and int(r.argmax()) == int(t.features[:, 0].argmax())
    with pytest.raises(SearchError, match=r"toy/grid lacks proxy 'broken'"):
        formula_scores(t, "good + broken")
    with pytest.raises(SearchError, match=r"toy/grid lacks proxy 'synflow'"):
        formula_scores(t, "log(synflow)")
    with pytest.raises(SearchError, match="lacks proxy 'broken'"):
        proxy_scores(t, "broken")


def test_percentile_rank_and_top_k():
    acc = torch.tensor([3.0, 1.0, 2.0, 2.0])
    assert accuracy_percentile(acc).tolist() == [100.0, 25.0, 75.0, 75.0]
    # non-finite lowest, +inf included: the fitness ranks an overflow as a failure
    assert dense_rank(torch.tensor([0.5, float("nan"), -float("inf"), 0.5, 2.0, float("inf")])).tolist() == [2, 1, 1, 2, 3, 1]
    pct = torch.tensor([10.0, 20.0, 30.0, 40.0])
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], [float("nan"), 5.0, 5.0, 0.0]])
    assert top_k_percentile(pred, pct, 1).tolist() == [40.0, 25.0, 25.0]  # ties: their mean
    assert top_k_percentile(pred, pct, 2).tolist() == [35.0, 25.0, 25.0]


# ----------------------------------------------------------------------------- searches


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_search_scores_budget_distinct_table_architectures(method):
    t = grid_task(D=4, V=4, keep=0.5, seed=1)
    s = proxy_scores(t, "good")
    r = search(t, s, budget=40, runs=6, seed=0, method=method, population=10, sample_size=3)
    assert len(r["per_run"]) == 6 and r["budget"] == 40
    for x in r["per_run"]:
        assert x["arch"] in t.keys and t.keys[x["index"]] == x["arch"]
        assert x["evaluations"] == 40
        assert x["accuracy"] == pytest.approx(float(t.accuracy[x["index"]]))
        assert 0 < x["percentile"] <= 100
    assert r["median"]["percentile"] == statistics.median(x["percentile"] for x in r["per_run"])


def test_evolution_trace_visits_distinct_archs_and_keeps_the_best_seen():
    t = grid_task(D=5, V=3, keep=0.6, seed=2)  # sparse: many parents lack free neighbours
    s = proxy_scores(t, "noise")
    enc = encodings(t)
    tr = regularized_evolution(s, enc, budget=70, runs=5, seed=4, population=8, sample_size=4)
    assert tr.visited.sum(1).tolist() == [70] * 5 == tr.evaluations.tolist()
    assert tr.steps == 70 - 8
    rank = dense_rank(s)
    for r in range(5):
        seen = tr.visited[r].nonzero().squeeze(1)
        assert bool(tr.visited[r, tr.best[r]])
        assert int(rank[tr.best[r]]) == int(rank[seen].max())


def test_search_is_deterministic_for_a_seed():
    t = grid_task(D=4, V=4, keep=0.7, seed=5)
    s = proxy_scores(t, "noise")
    enc = encodings(t)
    a = regularized_evolution(s, enc, 50, 4, seed=11, population=10, sample_size=3)
    b = regularized_evolution(s, enc, 50, 4, seed=11, population=10, sample_size=3)
    c = regularized_evolution(s, enc, 50, 4, seed=12, population=10, sample_size=3)
    assert torch.equal(a.visited, b.visited) and torch.equal(a.best, b.best)
    assert not torch.equal(a.visited, c.visited)
    ra, rb = random_search(s, 30, 4, 3), random_search(s, 30, 4, 3)
    assert torch.equal(ra.visited, rb.visited)
    # runs are independent searches, not copies of one
    assert len({tuple(a.visited[r].nonzero().squeeze(1).tolist()) for r in range(4)}) == 4


def test_whole_table_budget_finds_the_argmax():
    t = grid_task(D=3, V=4, keep=0.8, seed=6)
    s = proxy_scores(t, "good")
    for method in ("evolution", "random"):
        r = search(t, s, budget=10_000, runs=3, seed=0, method=method, population=20, sample_size=5)
        assert r["budget"] == len(t)
        assert {x["index"] for x in r["per_run"]} == {int(s.argmax())}


def test_evolution_beats_random_search_on_a_smooth_landscape():
    t = grid_task(D=6, V=4, seed=7)  # 4096 archs, objective = -(Hamming distance to a target) + noise
    s = proxy_scores(t, "good")
    target = int(t.accuracy.argmax())
    ev = search(t, s, budget=150, runs=20, seed=0, method="evolution", population=20, sample_size=5)
    rs = search(t, s, budget=150, runs=20, seed=0, method="random")
    hits_ev = sum(x["index"] == target for x in ev["per_run"])
    hits_rs = sum(x["index"] == target for x in rs["per_run"])
    assert hits_ev >= 15 and hits_rs <= 5, (hits_ev, hits_rs)
    assert ev["median"]["percentile"] > rs["median"]["percentile"]


def test_search_validates_inputs():
    t = grid_task()
    with pytest.raises(SearchError, match="scores"):
        search(t, torch.zeros(3), budget=5, runs=1)
    with pytest.raises(SearchError, match="method"):
        search(t, proxy_scores(t, "good"), budget=5, runs=1, method="bayes")


# ----------------------------------------------------------------------------- command


def write_suite_zero(path, tasks):
    data = {}
    for t in tasks:
        recs = {}
        for i, k in enumerate(t.keys):
            rec = {"idx": str(i), "arch": k, "val_accuracy": float(t.accuracy[i])}
            for j, p in enumerate(t.proxies):
                v = float(t.features[i, j])
                rec[p] = {"score": v if v == v else -1e8, "time": 0.0}
            recs[k] = rec
        data[t.name.split("/")[1]] = recs
    path.write_text(json.dumps(data))
    return path


def test_run_search_result_and_from_result(tmp_path):
    f = write_suite_zero(tmp_path / "zc_toy.json", [grid_task("toy/a", D=5, V=4, seed=8), grid_task("toy/b", seed=9)])
    res = run_search([f], "toy/a", "good + 0.1 * noise", "rank", budget=200, runs=4, seed=1, population=20,
                     sample_size=5, baseline_proxy="noise")
    assert res["task"] == "toy/a" and res["budget"] == 200 and res["runs"] == 4
    assert 0 <= res["median"]["percentile"] <= 100 and res["median"]["time_s"] >= 0
    assert set(res["baselines"]) == {"random", "best_proxy"}
    assert res["baselines"]["best_proxy"]["proxy"] == "noise"
    assert all(0 <= b["percentile"] <= 100 for b in res["baselines"].values())
    assert res["median"]["percentile"] > res["baselines"]["best_proxy"]["percentile"]  # noise is useless
    # default baseline proxy: the best single proxy by Kendall tau
    assert run_search([f], "toy/a", "noise", budget=50, runs=2)["baselines"]["best_proxy"]["proxy"] == "good"
    with pytest.raises(SearchError, match="matches 2 tasks"):
        run_search([f], "toy/*", "good")
    with pytest.raises(SearchError, match="toy/a lacks proxy 'broken'"):
        run_search([f], "toy/a", "good * broken")
    rj = tmp_path / "result.json"
    rj.write_text(json.dumps({"expression": "(good - noise)", "preprocess": "zscore"}))
    assert read_result(rj) == ("(good - noise)", "zscore")
    with pytest.raises(SearchError, match="cannot read a formula"):
        read_result(tmp_path / "missing.json")


def test_cli_search(tmp_path):
    from typer.testing import CliRunner

    from tensorgp_cli.cli import app

    f = write_suite_zero(tmp_path / "zc_toy.json", [grid_task("toy/a", D=5, V=4, seed=8)])
    runner = CliRunner()
    r = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--expr", "good", "--budget", "100",
                            "--runs", "3", "--seed", "2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert {"task", "expression", "budget", "runs", "median", "baselines"} <= set(res)
    assert {"accuracy", "percentile", "time_s"} <= set(res["median"])
    assert all({"accuracy", "percentile"} <= set(v) for v in res["baselines"].values())
    rj = tmp_path / "result.json"
    rj.write_text(json.dumps({"expression": "good", "preprocess": "rank"}))
    r2 = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--from", str(rj), "--budget", "100",
                             "--runs", "3", "--seed", "2", "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.output)["per_run"] == res["per_run"]  # same formula, same seed
    r3 = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--expr", "broken", "--budget", "10"])
    assert r3.exit_code == 2 and "lacks proxy 'broken'" in r3.output
    r4 = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--budget", "10"])
    assert r4.exit_code == 2 and "--expr" in r4.output
    r5 = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--expr", "good", "--budget", "60",
                             "--runs", "2"])
    assert r5.exit_code == 0 and "percentile" in r5.output


# ----------------------------------------------------------------------------- real data


def test_missing_proxy_on_a_real_task(suite_zero):
    with pytest.raises(SearchError, match="transbench101_micro/class_scene lacks proxy 'synflow'"):
        run_search([suite_zero / "zc_transbench101_micro.json"], "transbench101_micro/class_scene",
                   "nwot + synflow", budget=50, runs=2)


def test_real_nb201_and_nb301_tables(suite_zero):
    tasks = {t.name: t for t in load([suite_zero / "zc_nasbench201.json", suite_zero / "zc_nasbench301.json"])}
    nb301 = tasks["nasbench301/cifar10"]
    enc = encodings(nb301)
    assert enc.shape == (len(nb301), 32)  # two cells of 8 (input, op) pairs
    t = tasks["nasbench201/cifar10"]
    r = search(t, formula_scores(t, "nwot + synflow"), budget=100, runs=3, seed=0)
    assert all(x["arch"] in t.keys and x["evaluations"] == 100 for x in r["per_run"])


def test_target_on_nb201_final(nb201_final):
    """The issue's target with the formula evolved for search by bench/search_bench.py (see the report)."""
    expr = "(grasp * (grasp * min(l2_norm, ((zen * flops) - min(snip, params)))))"
    keys = set(load([nb201_final])[0].keys)
    for task in ("nasbench201/cifar10", "nasbench201/ImageNet16-120"):
        res = run_search([nb201_final], task, expr, budget=1000, runs=10, seed=0)
        assert res["table_size"] == 9445
        assert all(x["arch"] in keys and x["evaluations"] == 1000 for x in res["per_run"])
        assert res["median"]["percentile"] >= 98.0, res["median"]
        assert res["median"]["percentile"] > res["baselines"]["best_proxy"]["percentile"], res["baselines"]


# ----------------------------------------------------------------------------- files without accuracies


def write_unlabelled(path, tasks):
    """A Suite-Zero-format file of ``tasks`` without val_accuracy (architectures a user wants to rank)."""
    write_suite_zero(path, tasks)
    doc = json.loads(path.read_text())
    for recs in doc.values():
        for r in recs.values():
            r.pop("val_accuracy")
    path.write_text(json.dumps(doc))
    return path


def test_run_search_on_a_file_without_accuracies(tmp_path):
    task = grid_task("toy/a", D=5, V=4, seed=8)
    lab = write_suite_zero(tmp_path / "zc_toy.json", [task])
    unl = write_unlabelled(tmp_path / "zc_new.json", [task])
    with pytest.raises(Exception, match="lack val_accuracy"):
        load(unl)  # the labelled loader refuses it: the search must not need it
    kw = dict(budget=100, runs=3, seed=1, population=20, sample_size=5)
    res = run_search([unl], "new/a", "good + 0.1 * noise", "rank", **kw)
    ref = run_search([lab], "toy/a", "good + 0.1 * noise", "rank", **kw)
    assert res["labelled"] is False and ref["labelled"] is True and res["table_size"] == len(task)
    assert "no val_accuracy" in res["note"] and "note" not in ref
    # the same search as with accuracies: the same architectures and scores, no accuracy figures
    for a, b in zip(res["per_run"], ref["per_run"]):
        assert {k: a[k] for k in ("arch", "index", "score", "evaluations")} == \
            {k: b[k] for k in ("arch", "index", "score", "evaluations")}
        assert "accuracy" not in a and "percentile" not in a
    assert set(res["median"]) == {"score", "evaluations", "time_s"}
    assert res["median"]["score"] == ref["median"]["score"] == statistics.median(x["score"] for x in res["per_run"])
    assert set(res["formula_argmax"]) == {"arch", "score"} and "table_best_accuracy" not in res
    assert res["formula_argmax"]["arch"] == ref["formula_argmax"]["arch"]
    # baselines: random search by the formula's score; no single-proxy search unless one is named
    assert set(res["baselines"]) == {"random"} and "percentile" not in res["baselines"]["random"]
    assert res["baselines"]["random"]["score"] == ref["baselines"]["random"]["score"]
    named = run_search([unl], "new/a", "good + 0.1 * noise", "rank", baseline_proxy="noise", **kw)
    bp = named["baselines"]["best_proxy"]
    assert bp["proxy"] == "noise" and "accuracy" not in bp and "note" in named and "baseline_proxy" not in named["note"]
    s = formula_scores(search_table([unl], "new/a"), "good + 0.1 * noise", "rank")
    for x in bp["per_run"]:  # the proxy's own value and the formula's of the architecture it found
        assert x["score"] == pytest.approx(float(task.features[x["index"], 1]))
        assert x["formula_score"] == float(s[x["index"]])
    assert bp["score"] == statistics.median(x["formula_score"] for x in bp["per_run"])
    assert named["median"]["score"] > bp["score"]  # the formula's search beats noise on the formula's objective
    with pytest.raises(SearchError, match="new/a lacks proxy 'broken'"):
        run_search([unl], "new/a", "good", baseline_proxy="broken", budget=10, runs=1)


def test_search_table_keeps_the_labelled_architectures(tmp_path):
    task = grid_task("toy/a", D=3, V=4, seed=2)
    f = write_suite_zero(tmp_path / "zc_toy.json", [task])
    doc = json.loads(f.read_text())
    for k in list(doc["a"])[:5]:
        doc["a"][k].pop("val_accuracy")
    f.write_text(json.dumps(doc))
    with pytest.warns(DataWarning, match="5 of 64 architectures have no finite val_accuracy"):
        t = search_table([f], "toy/a")
    assert len(t) == 59 and t.labelled and bool(torch.isfinite(t.accuracy).all())
    assert not search_table([write_unlabelled(tmp_path / "zc_u.json", [task])], "u/a").labelled


def test_search_from_a_proxy_on_an_unlabelled_file(tmp_path):
    from tensorgp.nas.proxy import Proxy

    task = grid_task("toy/a", D=4, V=4, seed=3)
    unl = write_unlabelled(tmp_path / "zc_new.json", [task])
    res = run_search([unl], "new/a", Proxy(["good", "(good + noise)"], ["good", "noise"]), budget=60, runs=2,
                     population=10, sample_size=3)
    assert res["labelled"] is False and res["expression"] == "ensemble: good; (good + noise)"
    assert all("percentile" not in x for x in res["per_run"]) and res["dtype"] == "float64"
    # the search's objective is the proxy's score: --expr, --from and Proxy.score agree exactly
    t = search_table([unl], "new/a")
    expr = "(tanh((good * 3.7)) + log(noise))"
    want = torch.from_numpy(Proxy([expr], ["good", "noise"]).score_task(t))
    assert torch.equal(formula_scores(t, expr), torch.where(torch.isnan(want), -float("inf"), want))


def test_cli_search_on_a_file_without_accuracies(tmp_path):
    from typer.testing import CliRunner

    from tensorgp_cli.cli import app

    unl = write_unlabelled(tmp_path / "zc_new.json", [grid_task("toy/a", D=5, V=4, seed=8)])
    runner = CliRunner()
    args = ["search", "--data", str(unl), "--task", "new/a", "--expr", "good", "--budget", "60", "--runs", "2"]
    r = runner.invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["labelled"] is False and set(res["baselines"]) == {"random"}
    assert all({"arch", "index", "score"} <= set(x) and "accuracy" not in x for x in res["per_run"])
    rich = runner.invoke(app, args)
    assert rich.exit_code == 0, rich.output
    flat = "".join(rich.output.split())
    assert "noaccuracies" in flat and "formulascore" in flat and res["note"] in rich.output
    assert "percentile" not in rich.output.replace(res["note"], "")  # no accuracy column or figure
    assert res["per_run"][0]["arch"].replace(" ", "") in flat and "Traceback" not in rich.output
    named = runner.invoke(app, args + ["--baseline-proxy", "noise"])
    assert named.exit_code == 0 and "drivenbynoise" in "".join(named.output.split())
    bad = runner.invoke(app, args + ["--baseline-proxy", "broken"])
    assert bad.exit_code == 2 and "lacks proxy 'broken'" in bad.output and "Traceback" not in bad.output


def test_an_overflowing_formula_never_makes_an_architecture_the_best(tmp_path):
    """+inf (an overflow) ranks lowest, as in the fitness and in ``tensorgp score``: never the pick."""
    t = grid_task("toy/a", D=5, V=4, seed=8)
    big = t.features[:, 0] + 10  # positive, increasing with accuracy
    big[t.accuracy.argmin()] = 1e30  # square(square(.)) overflows float64 only here
    t = Task(t.name, t.source, t.keys, [*t.proxies, "big"], torch.cat([t.features, big[:, None]], 1), t.accuracy)
    f = write_suite_zero(tmp_path / "zc_toy.json", [t])
    res = run_search([f], "toy/a", "square(square(square(square(big))))", "raw", budget=200, runs=3, seed=0)
    worst = t.keys[int(t.accuracy.argmin())]
    assert all(x["arch"] != worst for x in res["per_run"]) and res["median"]["percentile"] > 50
    assert dense_rank(torch.tensor([float("inf"), 1.0, float("nan"), -float("inf")])).tolist() == [1, 2, 1, 1]
    assert top_k_percentile(torch.tensor([[float("inf"), 1.0, 0.0]]), torch.tensor([100.0, 50.0, 10.0]), 1).tolist() == [50.0]


def test_default_baseline_search_uses_the_tasks_best_proxy_whatever_its_name(tmp_path):
    """nwot and jacov are the strongest proxies on NB201 only (jacov is the weakest on NB101): the
    single-proxy baseline is the best proxy of the task at hand, not of a fixed short list."""
    t = grid_task("toy/a", D=5, V=4, seed=8)
    feats = torch.cat([t.features, -t.features[:, :1], t.features[:, 1:2]], 1)  # jacov: reversed; nwot: noise
    t = Task(t.name, t.source, t.keys, [*t.proxies, "jacov", "nwot"], feats, t.accuracy)
    assert best_single_proxy(t) == "good" and best_single_proxy(t, ["jacov", "nwot"]) == "nwot"
    f = write_suite_zero(tmp_path / "zc_toy.json", [t])
    res = run_search([f], "toy/a", "noise", budget=100, runs=2, seed=0)
    assert res["baselines"]["best_proxy"]["proxy"] == "good"
    small = run_search([f], "toy/a", "noise", budget=8, runs=1, seed=0, population=20, sample_size=12)
    assert (small["population"], small["sample_size"]) == (8, 8)  # the sizes the search ran with


def test_search_on_a_real_file_stripped_of_its_accuracies(suite_zero, tmp_path):
    doc = json.loads((suite_zero / "zc_transbench101_micro.json").read_text())
    recs = doc["class_scene"] if "class_scene" in doc else doc["transbench101_micro"]["class_scene"]
    for r in recs.values():
        r.pop("val_accuracy", None)
    f = tmp_path / "zc_stripped.json"
    f.write_text(json.dumps({"class_scene": recs}))
    kw = dict(budget=100, runs=3, seed=0)
    res = run_search([f], "stripped/class_scene", "(nwot + jacov)", **kw)
    ref = run_search([suite_zero / "zc_transbench101_micro.json"], "transbench101_micro/class_scene",
                     "(nwot + jacov)", **kw)
    assert res["labelled"] is False and res["table_size"] == ref["table_size"]
    assert [x["arch"] for x in res["per_run"]] == [x["arch"] for x in ref["per_run"]]
    assert "percentile" not in res["median"] and "percentile" in ref["median"]
