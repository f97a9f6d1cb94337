"""Protocols (architecture splits, validation, leave-one-space-out, multi-run summaries,
selection strategies), baselines, and the top-weighted fitness."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, rankdata, spearmanr

from tensorgp.nas import baselines as B
from tensorgp.nas import protocols as P
from tensorgp.nas import selection as SEL
from tensorgp.nas import splits as S
from tensorgp.nas.data import Task, load
from tensorgp.engine.evolve import EvolutionConfig
from tensorgp.nas.experiment import RunSpec, evolve_proxy, prepare
from tensorgp.engine.fitness import kendall_tau_b, top_kendall, top_rows
from tensorgp.nas.objective import RankObjective, correlation, parse_metric
from tensorgp.engine.population import Population
from tensorgp.engine.primitives import FIRST_VAR


def make_task(name, n=60, seed=0, m=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, generator=g)
    acc = x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(n, generator=g)
    return Task(name, "mem", [str(i) for i in range(n)], [f"p{j}" for j in range(m)], x, acc)


def write_suite(tmp_path, spaces=("alpha", "beta", "gamma"), tasks_per_space=(2, 1, 1), n=50):
    """Synthetic Suite-Zero files: accuracy = p0 + 0.5 p1 + noise in every task, except that p2
    is informative in space alpha only (a proxy that does not transfer)."""
    rng = np.random.default_rng(0)
    for s, k in zip(spaces, tasks_per_space):
        doc = {}
        for t in range(k):
            recs = {}
            for i in range(n):
                p = rng.normal(size=3)
                a = p[0] + 0.5 * p[1] + (0.8 * p[2] if s == "alpha" else 0.0) + 0.3 * rng.normal()
                recs[f"({s},{t},{i})"] = {"p0": {"score": float(p[0]), "time": 0.1}, "p1": {"score": float(p[1])},
                                          "p2": {"score": float(p[2])}, "val_accuracy": float(a)}
            doc[f"task{t}"] = recs
        (tmp_path / f"zc_{s}.json").write_text(json.dumps(doc))
    return tmp_path


def spec_for(data, **kw):
    cfg = EvolutionConfig(population=kw.pop("pop", 40), generations=kw.pop("gens", 3), runs=kw.pop("runs", 3),
                          seed=kw.pop("seed", 0), max_depth=4, init_depth=(1, 3), hall_of_fame=4)
    return RunSpec(data=[data], train=kw.pop("train", "alpha/*,beta/*"), config=cfg, **kw)


# ----------------------------------------------------------------------------- splits


def test_split_architectures_is_seeded_disjoint_and_per_task():
    a, b = make_task("s/a", 100, 1), make_task("s/b", 41, 2)
    fit, held = S.split_architectures([a, b], 0.7, seed=3)
    for t, f, h in zip((a, b), fit, held):
        assert f.name == h.name == t.name
        assert len(f) == round(0.7 * len(t)) and len(f) + len(h) == len(t)
        assert set(f.keys).isdisjoint(h.keys) and set(f.keys) | set(h.keys) == set(t.keys)
        rows = [t.keys.index(k) for k in h.keys]
        assert torch.equal(h.features, t.features[rows]) and torch.equal(h.accuracy, t.accuracy[rows])
    fit2, _ = S.split_architectures([b], 0.7, seed=3)  # a task's split ignores the other tasks
    assert fit2[0].keys == fit[1].keys
    fit3, _ = S.split_architectures([b], 0.7, seed=4)
    assert fit3[0].keys != fit[1].keys
    with pytest.raises(ValueError):
        S.split_architectures([a], 1.0)


def test_consistent_proxies_keep_the_sign_in_every_space():
    a1, a2, b1 = make_task("a/x", 80, 1), make_task("a/y", 80, 2), make_task("b/x", 80, 3)
    b1 = Task(b1.name, b1.source, b1.keys, b1.proxies, b1.features * torch.tensor([1.0, -1.0, 1.0]), b1.accuracy)
    # p1 is reversed on space b, p2 is noise (its sign differs by chance, so the threshold decides)
    kept = S.consistent_proxies([a1, a2, b1], ["p0", "p1", "p2"], min_tau=0.2)
    assert kept == ["p0"]
    assert S.consistent_proxies([a1, a2], ["p0", "p1", "p2"], min_tau=0.2) == ["p0", "p1"]


def test_summarize_matches_numpy_quantiles():
    v = [0.3, 0.1, 0.5, 0.2, float("nan"), 0.9]
    s = SEL.summarize(v)
    fin = np.array([0.3, 0.1, 0.5, 0.2, 0.9])
    assert s["n"] == 5
    assert s["median"] == pytest.approx(np.median(fin))
    assert s["q1"] == pytest.approx(np.quantile(fin, 0.25)) and s["q3"] == pytest.approx(np.quantile(fin, 0.75))
    assert math.isnan(SEL.summarize([])["median"])


# ----------------------------------------------------------------------------- scoring and baselines


def test_task_ranks_average_ties_and_failed_values_lowest():
    pred = torch.tensor([[3.0, 1.0, 1.0, float("nan"), 7.0, 2.0, 2.0, float("-inf")]])
    off = torch.tensor([0, 5, 8])
    r = B.task_ranks(pred, off)[0]
    first = rankdata([3.0, 1.0, 1.0, -np.inf, 7.0]) - 1
    assert r.dtype == torch.float64 and torch.allclose(r[:5], torch.tensor(first / 4))
    assert torch.allclose(r[5:], torch.tensor([0.75, 0.75, 0.0], dtype=torch.float64))


def test_task_ranks_equal_scipy_per_task_on_random_segments():
    """The batched ranking against scipy's average ranks task by task: ties, NaN/inf (lowest),
    empty and one-row tasks, several rows."""
    g = torch.Generator().manual_seed(1)
    for case in range(200):
        sizes = torch.randint(0, 9, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        off = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        x = torch.randint(-3, 4, (int(torch.randint(1, 4, (1,), generator=g)), int(off[-1])), generator=g).double()
        m = torch.rand(x.shape, generator=g)
        x[m < 0.1], x[(m >= 0.1) & (m < 0.15)], x[(m >= 0.15) & (m < 0.2)] = float("nan"), -math.inf, math.inf
        for quantile in (True, False):
            r = B.task_ranks(x, off, quantile)
            for a, b in zip(off[:-1].tolist(), off[1:].tolist()):
                if b == a:
                    continue
                low = np.where(np.isfinite(x[:, a:b].numpy()), x[:, a:b].numpy(), -np.inf)
                want = np.stack([rankdata(row) - 1 for row in low])
                want = want if not quantile else want / (b - a - 1) if b - a > 1 else np.full_like(want, 0.5)
                np.testing.assert_array_equal(r[:, a:b].numpy(), want)


def test_score_predictions_against_scipy_and_search_metrics():
    g = torch.Generator().manual_seed(0)
    acc = torch.randn(200, generator=g)
    noisy = acc + torch.randn(200, generator=g)
    pred = torch.stack([acc, -acc, noisy])
    off = torch.tensor([0, 120, 200])
    sc = B.score_predictions(pred, acc, off)
    for t, (a, b) in enumerate([(0, 120), (120, 200)]):
        assert sc["kendall"][2, t] == pytest.approx(kendalltau(noisy[a:b], acc[a:b]).statistic, abs=1e-5)
        assert sc["spearman"][2, t] == pytest.approx(spearmanr(noisy[a:b], acc[a:b]).statistic, abs=1e-5)
    assert torch.all(sc["precision5"][0] == 1) and torch.all(sc["top10_pct"][0] == 100)
    assert torch.all(sc["precision5"][1] == 0) and torch.all(sc["top10_pct"][1] < 15)
    assert torch.all(sc["top_kendall"][0] == 1)


def test_baselines_oracle_best_on_train_and_mean_rank():
    tasks = [make_task("s/a", 80, 1), make_task("s/b", 80, 2)]
    entries = [(t.name, t) for t in tasks]
    single = B.single_proxies(entries)
    for t in tasks:
        for j, p in enumerate(t.proxies):
            assert single[t.name][p]["kendall"] == pytest.approx(kendalltau(t.features[:, j], t.accuracy).statistic, abs=1e-5)
    orc = B.oracle(single)
    for k, per in single.items():
        assert orc[k]["kendall"] == max(v["kendall"] for v in per.values())
    bot = B.best_on_train({"p0": 0.1, "p1": 0.5, "p2": float("nan")}, single)
    assert bot["proxy"] == "p1" and bot["tasks"]["s/b"]["kendall"] == single["s/b"]["p1"]["kendall"]
    ens = B.mean_rank_ensemble(entries, ["p0", "p1"])
    t = tasks[0]
    mr = (rankdata(t.features[:, 0]) + rankdata(t.features[:, 1])) / 2
    assert ens["s/a"]["kendall"] == pytest.approx(kendalltau(mr, t.accuracy).statistic, abs=1e-5)


# ----------------------------------------------------------------------------- top-weighted fitness


def test_top_rows_and_top_kendall():
    y = torch.tensor([1.0, 5, 3, 2, 9, 8, 7, 1, 2, 3])
    off = torch.tensor([0, 4, 10])
    idx, o = top_rows(y, off, 0.5)
    assert idx.tolist() == [1, 2, 4, 5, 6] and o.tolist() == [0, 2, 5]
    # an order that is right at the bottom but wrong at the top: global Kendall high, top Kendall -1
    acc = torch.arange(20, dtype=torch.float32)
    pred = acc.clone()
    pred[18], pred[19] = 19.0, 18.0
    pred = pred[None]
    off1 = torch.tensor([0, 20])
    assert float(kendall_tau_b(pred, acc, off1)[0, 0]) > 0.98
    assert float(top_kendall(pred, acc, off1, 0.1)[0, 0]) == pytest.approx(-1.0)


def test_kendall_top_metric_and_space_aggregations():
    assert parse_metric("kendall-top") == ("kendall-top", 0.1)
    assert parse_metric("kendall-top25") == ("kendall-top", 0.25)
    for bad in ("kendall-topx", "pearson", "kendall-top0"):
        with pytest.raises(ValueError):
            parse_metric(bad)
    tasks = [make_task("a/x", 60, 1), make_task("a/y", 60, 2), make_task("b/x", 60, 3)]
    from tensorgp.nas.data import make_batch

    batch = make_batch(tasks, ["p0", "p1", "p2"], "rank")
    pop = Population(torch.tensor([[FIRST_VAR], [FIRST_VAR + 1], [FIRST_VAR + 2]], dtype=torch.int32),
                     torch.zeros(3, 1), torch.ones(3, dtype=torch.int32))
    k = correlation(batch.X.t().contiguous(), batch, "kendall")
    top = top_kendall(batch.X.t().contiguous(), batch.accuracy, batch.offsets, 0.2)
    assert torch.allclose(correlation(batch.X.t().contiguous(), batch, "kendall-top20"), 0.5 * (k + top))
    space = torch.stack([(k[:, 0] + k[:, 1]) / 2, k[:, 2]], 1)
    assert torch.allclose(RankObjective(batch, "kendall", "space-mean")(pop), space.mean(1))
    assert torch.allclose(RankObjective(batch, "kendall", "space-min")(pop), space.min(1).values)
    assert torch.allclose(RankObjective(batch, "kendall", "mean")(pop), k.mean(1))
    with pytest.raises(ValueError):
        RankObjective(batch, "kendall", "space-max")


# ----------------------------------------------------------------------------- protocols end to end


def test_multi_run_result_has_per_run_figures_summaries_selection_and_baselines(tmp_path):
    data = write_suite(tmp_path)
    spec = spec_for(data, test="gamma/*", validation="beta/*", train="alpha/*", select="validation")
    r = evolve_proxy(spec)
    assert [s["split"] for s in r["sets"]] == ["train", "train", "validation", "test"]
    assert len(r["runs_detail"]) == 3 and {d["run"] for d in r["runs_detail"]} == {0, 1, 2}
    test_means = [d["mean"]["test"] for d in r["runs_detail"]]
    assert r["summary"]["splits"]["test"]["median"] == pytest.approx(float(np.median(test_means)))
    assert r["summary"]["splits"]["test"]["q1"] == pytest.approx(float(np.quantile(test_means, 0.25)))
    # each run's best formula: its training mean is its fitness (kendall, mean aggregation)
    for d in r["runs_detail"]:
        assert d["mean"]["train"] == pytest.approx(d["fitness"], abs=1e-5)
    sel = r["selection"]
    assert max(d["fitness"] for d in r["runs_detail"]) == pytest.approx(sel["train"]["fitness"])
    assert set(sel) == {"train", "validation", "parsimony", "ensemble", "compact"} and r["selected"] == "validation"
    # the selected formula is the result's formula; the train pick stays as expression_train
    assert sel["validation"]["expression"] == r["expression"] and r["fitness"] == sel["validation"]["fitness"]
    assert sel["train"]["expression"] == r["expression_train"]
    assert r["tasks"]["gamma/task0"]["kendall"] == pytest.approx(sel["validation"]["tasks"]["gamma/task0"]["kendall"])
    assert sel["validation"]["mean"]["validation"] >= max(d["mean"]["validation"] for d in r["runs_detail"]) - 1e-9
    assert sel["parsimony"]["size"] <= sel["train"]["size"]
    assert sel["parsimony"]["fitness"] >= sel["train"]["fitness"] - SEL.PARSIMONY_TOLERANCE
    assert len(sel["ensemble"]["expressions"]) == 3
    b = r["baselines"]
    assert b["proxies"] == ["p0", "p1", "p2"]
    # p2 helps on alpha only: it is the worst proxy elsewhere, and the oracle is the best per task
    for k in ("beta/task0", "gamma/task0"):
        assert b["oracle"][k]["proxy"] == "p0"
    assert b["best_on_train"]["proxy"] in ("p0", "p2")
    assert "gamma/task0" in r["scatter"] and len(r["scatter"]["gamma/task0"]["x"]) == 50
    assert len(r["history_runs"]) == r["generations_run"] + 1 and len(r["history_runs"][0]) == 3
    json.dumps(r)  # the result stays plain JSON


def test_fit_fraction_fits_on_part_and_reports_held_out_rows(tmp_path):
    data = write_suite(tmp_path, n=60)
    spec = spec_for(data, train="alpha/*", fit_fraction=0.7, split_seed=1, runs=2)
    prep = prepare(spec)
    assert [len(t) for t in prep.train] == [42, 42] and [len(t) for t in prep.holdout] == [18, 18]
    assert prep.train_batch.X.shape[0] == 84
    r = evolve_proxy(spec, prepared=prep)
    hold = [s for s in r["sets"] if s["split"] == "holdout"]
    assert [s["key"] for s in hold] == ["alpha/task0 (held-out)", "alpha/task1 (held-out)"]
    assert all(s["n"] == 18 for s in hold)
    assert r["tasks"]["alpha/task0 (held-out)"]["split"] == "holdout"
    assert set(r["mean_kendall"]) == {"train", "holdout"}
    full = {t.name: t for t in load(data)}
    # the held-out rows are exactly the complement of the fitted rows
    assert set(prep.train[0].keys) | set(prep.holdout[0].keys) == set(full["alpha/task0"].keys)


def test_select_validation_without_validation_data_is_an_error(tmp_path):
    data = write_suite(tmp_path)
    with pytest.raises(ValueError, match="validation"):
        prepare(spec_for(data, select="validation"))
    with pytest.raises(ValueError, match="validation"):  # held-out rows measure, they never select
        prepare(spec_for(data, select="validation", fit_fraction=0.7))
    with pytest.raises(ValueError, match="selection"):
        prepare(spec_for(data, select="luck"))


def test_leave_one_space_out_holds_out_each_space(tmp_path):
    data = write_suite(tmp_path)
    spec = spec_for(data, train="*", runs=2, gens=2)
    r = P.leave_one_space_out(spec)
    assert r["protocol"] == "leave-one-space-out" and r["spaces"] == ["alpha", "beta", "gamma"]
    for s, fold in r["folds"].items():
        test = {x["task"] for x in fold["sets"] if x["split"] == "test"}
        train = {x["task"] for x in fold["sets"] if x["split"] == "train"}
        assert test and all(n.startswith(s + "/") for n in test)
        assert train and not any(n.startswith(s + "/") for n in train)
        summ = r["summary"][s]
        assert summ["selected"] == pytest.approx(fold["selection"][fold["selected"]]["mean"]["test"])
        assert summ["beaten_by"] == sorted([p for p, v in summ["single"].items() if v > summ["selected"]],
                                           key=lambda p: -summ["single"][p])
    with pytest.raises(ValueError):
        P.leave_one_space_out(spec_for(data, train="*", test="gamma/*"))
    assert r["all_spaces"] is not None and r["proxy"] is not None and not r["interrupted"]
    folds_only = P.leave_one_space_out(spec, whole=False)  # a study of transfer: the folds, no formula to take away
    assert folds_only["all_spaces"] is None and folds_only["proxy"] is None and not folds_only["interrupted"]
    assert folds_only["summary"] == r["summary"]  # seeded: the same folds


# ----------------------------------------------------------------------------- real data


def test_baselines_reproduce_reference_figures_on_suite_zero(suite_zero):
    """The reference figures of the issue for train NB201+NB301 / test TransNAS-Bench-101-micro."""
    spec = RunSpec(data=[suite_zero], train="nasbench201/*,nasbench301/*", test="transbench101_micro/*",
                   config=EvolutionConfig(population=20, generations=0, seed=0))
    r = evolve_proxy(spec)
    keys = [s["key"] for s in r["sets"] if s["split"] == "test"]
    assert len(keys) == 7
    b = r["baselines"]
    mean = lambda f: sum(f(k) for k in keys) / len(keys)  # noqa: E731
    assert b["best_on_train"]["proxy"] == "nwot"
    assert mean(lambda k: b["best_on_train"]["tasks"][k]["kendall"]) == pytest.approx(0.279, abs=1e-3)
    assert mean(lambda k: b["oracle"][k]["kendall"]) == pytest.approx(0.409, abs=1e-3)
    assert mean(lambda k: b["mean_rank"]["tasks"][k]["kendall"]) == pytest.approx(0.326, abs=1e-3)


def test_fit_fraction_on_nb201_final(nb201_final):
    spec = RunSpec(data=[nb201_final], train="nasbench201/cifar10", fit_fraction=0.7,
                   config=EvolutionConfig(population=30, generations=1, seed=0))
    prep = prepare(spec)
    assert len(prep.train[0]) + len(prep.holdout[0]) == 9445
    assert len(prep.holdout[0]) == 9445 - round(0.7 * 9445)
    r = evolve_proxy(spec, prepared=prep)
    k = "nasbench201/cifar10 (held-out)"
    # jacov is the best single proxy on the whole task (0.632); on a random 30% it stays close
    assert r["baselines"]["oracle"][k]["proxy"] in ("jacov", "nwot")
    assert 0.58 < r["baselines"]["single"][k]["jacov"]["kendall"] < 0.68


# ----------------------------------------------------------------------------- command line


def test_cli_run_protocol_options(tmp_path):
    from typer.testing import CliRunner

    from tensorgp_cli.cli import app

    (tmp_path / "d").mkdir()
    data = write_suite(tmp_path / "d")
    common = ["--data", str(data), "--pop", "20", "--gens", "1", "--runs", "2", "--max-depth", "4", "--quiet"]
    r = CliRunner().invoke(app, ["run", *common, "--train", "alpha/*", "--validation", "beta/*", "--test", "gamma/*",
                                 "--fit-fraction", "0.6", "--select", "validation", "--aggregation", "space-mean",
                                 "--metric", "kendall-top20", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["fit_fraction"] == 0.6 and res["selected"] == "validation" and res["metric"] == "kendall-top20"
    assert {s["split"] for s in res["sets"]} == {"train", "holdout", "validation", "test"}
    assert "oracle" in r.output and "mean-rank" in r.output  # the baselines table (wrapped at 80 columns)
    lo = CliRunner().invoke(app, ["run", *common, "--train", "*", "--protocol", "leave-one-space-out", "--json"])
    assert lo.exit_code == 0, lo.output
    doc = json.loads(lo.output)
    assert doc["protocol"] == "leave-one-space-out" and set(doc["folds"]) == {"alpha", "beta", "gamma"}
    bad = CliRunner().invoke(app, ["run", *common, "--protocol", "leave-one-space-out", "--test", "gamma/*"])
    assert bad.exit_code == 2 and "--test" in bad.output
    bad = CliRunner().invoke(app, ["run", *common, "--select", "validation"])
    assert bad.exit_code == 2 and "--validation" in bad.output


# ----------------------------------------------------------------------------- --for: the target space's proxies


def test_for_restricts_terminals_to_the_target_spaces_proxies(tmp_path):
    from typer.testing import CliRunner

    from tensorgp.nas.data import DataError
    from tensorgp.runtime.checkpoint import spec_from_dict, spec_to_dict
    from tensorgp_cli.cli import app

    data = write_suite(tmp_path)
    target = tmp_path / "new" / "zc_new.json"  # an unlabelled space that lacks p1
    target.parent.mkdir()
    doc = {"nb": {"t": {f"a{i}": {"p0": float(i), "p2": 1.0 / (i + 1)} for i in range(30)}}}
    target.write_text(json.dumps(doc))
    spec = spec_for(data, train="*", runs=2, gens=2, target=[target])
    assert prepare(spec).proxies == ["p0", "p2"]
    r = evolve_proxy(spec)
    assert r["proxies"] == ["p0", "p2"] and r["target_tasks"] == [t.name for t in load(target, labels=False)]
    assert "p1" not in " ".join(r["proxy"]["expressions"])
    with pytest.raises(DataError, match="proxy 'p1' is missing.*nb/t"):
        prepare(spec_for(data, train="*", proxies=["p0", "p1"], target=[target]))
    back = spec_from_dict(spec_to_dict(spec), RunSpec)  # a checkpoint keeps it, as an absolute path
    assert back.target == [str(target.resolve())] and prepare(back).proxies == ["p0", "p2"]
    common = ["run", "--data", str(data), "--train", "*", "--pop", "20", "--gens", "1", "--runs", "2", "--quiet"]
    ok = CliRunner().invoke(app, [*common, "--for", str(target), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["proxies"] == ["p0", "p2"]
    bad = CliRunner().invoke(app, [*common, "--for", str(tmp_path / "missing.json")])
    assert bad.exit_code == 2 and "missing.json" in bad.output
