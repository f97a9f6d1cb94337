"""Fitness and selection designed for transfer: space-aware aggregations, the per-generation
space draws (seeded, resume-safe), nested selection (an inner held-out training space per run)."""
import copy
import json
import math

import pytest
import numpy as np
import torch
from scipy import stats

from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.engine.population import Population
from tensorgp.engine.primitives import FIRST_VAR, PrimitiveSet
from tensorgp.nas import transfer as TR
from tensorgp.nas.data import make_batch
from tensorgp.nas.experiment import RunSpec, evolve_proxy
from tensorgp.nas.objective import RankObjective, correlation

from test_protocols import make_task, spec_for, write_suite


def _batch():
    tasks = [make_task("a/x", 60, 1), make_task("a/y", 60, 2), make_task("b/x", 60, 3), make_task("c/x", 60, 4)]
    return make_batch(tasks, ["p0", "p1", "p2"], "rank")


def _terminals(k: int) -> Population:
    """``k`` one-node programs cycling through the 3 proxies."""
    ops = torch.tensor([[FIRST_VAR + i % 3] for i in range(k)], dtype=torch.int32)
    return Population(ops, torch.zeros(k, 1), torch.ones(k, dtype=torch.int32))


def _per_space(batch, pop):
    k = correlation(batch.X[:, [int(o) - FIRST_VAR for o in pop.ops[:, 0]]].t().contiguous(), batch, "kendall")
    return torch.stack([(k[:, 0] + k[:, 1]) / 2, k[:, 2], k[:, 3]], 1)  # spaces a, b, c


def test_task_spaces_follow_task_names():
    spaces, idx = TR.task_spaces(["nb/x", "nb/y", "tnb/z", "nb/w"])
    assert spaces == ["nb", "tnb"] and idx.tolist() == [0, 0, 1, 0]
    _, w = TR.space_weights(["nb/x", "nb/y", "tnb/z"])
    assert torch.allclose(torch.tensor([[1.0, 2.0, 3.0]]) @ w, torch.tensor([[1.5, 3.0]]))


def test_space_reductions():
    m = torch.tensor([[0.6, 0.2, 0.4], [0.3, 0.3, 0.3]])
    assert torch.allclose(TR.reduce_spaces(m, "space-mean"), m.mean(1))
    assert torch.allclose(TR.reduce_spaces(m, "space-min"), torch.tensor([0.2, 0.3]))
    soft = TR.reduce_spaces(m, "space-softmin")
    assert soft[0] > 0.2 and soft[0] < m[0].mean()  # between the worst space and the mean
    assert soft[1] == pytest.approx(0.3, abs=1e-6)  # equal spaces: their value
    geo = TR.reduce_spaces(m, "space-geo")
    assert geo[0] == pytest.approx(sum(math.log((1 + v) / 2) for v in (0.6, 0.2, 0.4)), abs=1e-6)
    # the log scale punishes a weak space: a spread row loses to an even row of the same mean
    assert TR.reduce_spaces(torch.tensor([[0.9, -0.3], [0.3, 0.3]]), "space-geo").argmax() == 1
    mask = torch.tensor([True, False, True])
    assert torch.allclose(TR.reduce_spaces(m, "space-min", mask), torch.tensor([0.4, 0.3]))
    assert torch.allclose(TR.reduce_spaces(m, "space-mean", mask), torch.tensor([0.5, 0.3]))
    with pytest.raises(ValueError, match="space-max"):
        TR.reduce_spaces(m, "space-max")


def test_inner_mask_gives_each_run_its_held_out_space():
    m = TR.inner_mask(12, 4, 3)  # 4 runs of 3 rows, 3 spaces: run r leaves space r % 3 out
    for row in range(12):
        r = row // 3
        assert m[row].tolist() == [g != r % 3 for g in range(3)]
    assert TR.inner_mask(10, 4, 3) is None  # not a population of 4 runs: every space counts
    assert TR.inner_mask(12, 1, 3) is None


def test_sample_mask_is_a_function_of_seed_and_generation():
    a = [TR.sample_mask(7, g, 4) for g in range(20)]
    assert all(int(x.sum()) == 3 for x in a)
    assert all(torch.equal(x, TR.sample_mask(7, g, 4)) for g, x in enumerate(a))
    assert len({tuple(x.tolist()) for x in a}) > 1  # the draw changes with the generation
    assert int(TR.sample_mask(7, 0, 4, k=1).sum()) == 1
    with pytest.raises(ValueError, match="k=5"):
        TR.sample_mask(0, 0, 4, k=5)


def test_objective_space_aggregations_and_inner_runs():
    batch = _batch()
    pop = _terminals(6)
    sp = _per_space(batch, pop)
    assert torch.allclose(RankObjective(batch, "kendall", "space-min")(pop), sp.min(1).values)
    soft = RankObjective(batch, "kendall", "space-softmin")(pop)
    assert torch.all(soft >= sp.min(1).values - 1e-6) and torch.all(soft <= sp.mean(1) + 1e-6)
    # 3 runs of 2 rows: run r's fitness ignores space r
    nested = RankObjective(batch, "kendall", "space-min", inner_runs=3)(pop)
    for row in range(6):
        keep = [g for g in range(3) if g != row // 2]
        assert nested[row] == pytest.approx(float(sp[row, keep].min()), abs=1e-6)
    with pytest.raises(ValueError, match="space-aware"):
        RankObjective(batch, "kendall", "mean", inner_runs=3)


def test_space_sample_draws_per_generation_and_scores_every_space_outside_evolution():
    batch = _batch()
    pop = _terminals(3)
    sp = _per_space(batch, pop)
    obj = RankObjective(batch, "kendall", "space-sample", seed=5)
    assert torch.allclose(obj(pop), sp.min(1).values)  # no generation: the worst of all spaces
    for g in range(6):
        assert obj.begin_generation(g) is True
        mask = TR.sample_mask(5, g, 3)
        assert torch.allclose(obj(pop), torch.where(mask, sp, math.inf).min(1).values)
    obj.begin_generation(None)
    assert torch.allclose(obj(pop), sp.min(1).values)
    assert RankObjective(batch, "kendall", "space-min").begin_generation(3) is False


def _evolver(batch, seed=0):
    cfg = EvolutionConfig(population=30, generations=6, runs=2, seed=seed, max_depth=4, init_depth=(1, 3),
                          hall_of_fame=4)
    pset = PrimitiveSet(("p0", "p1", "p2"), PrimitiveSet.parse_functions(None), True)
    return Evolver(cfg, pset, RankObjective(batch, "kendall", "space-sample", seed=seed, inner_runs=2))


def test_resampled_evolution_resumes_identically():
    """A resampled objective depends on the generation only: stopping after 3 generations and
    continuing in a fresh evolver (as a checkpoint resume does) ends where one run ends."""
    batch = _batch()
    full = _evolver(batch)
    full.run()
    part = _evolver(batch)
    while part.state is None or part.state.generation < 3:
        part.step()
    resumed = _evolver(batch)
    resumed.restore(copy.deepcopy(part.state))
    resumed.run()
    assert torch.equal(full.state.pop.ops, resumed.state.pop.ops)
    assert torch.equal(full.state.hof.fitness, resumed.state.hof.fitness)
    # the carried-over elites are scored under the current generation's draw
    obj = full.fitness_fn
    obj.begin_generation(full.state.generation)
    assert torch.allclose(obj(full.state.pop), full.state.fitness, equal_nan=True)
    # after evolution the hall of fame is re-scored on every space, best first within each run
    full.rescore_hall_of_fame(None)
    hof = full.state.hof.fitness.view(2, -1)
    assert torch.all(hof[:, :-1] >= hof[:, 1:])
    finite = torch.isfinite(full.state.hof.fitness)
    static = RankObjective(batch, "kendall", "space-min", inner_runs=2)(full.state.hof.pop)
    assert torch.allclose(full.state.hof.fitness[finite], static[finite])


def test_nested_selection_picks_on_each_runs_inner_space(tmp_path):
    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, train="*", runs=3, gens=2, aggregation="space-min", select="nested"))
    assert r["selected"] == "nested"
    nest = r["selection"]["nested"]
    assert nest["inner_spaces"] == ["alpha", "beta", "gamma"]  # run r leaves space r mod 3 out
    assert len(nest["expressions"]) == 3
    # each pick's inner figure is its mean Kendall on that space's training tasks, and no other
    # hall-of-fame formula of the run does better there
    for run, (space, v) in enumerate(zip(nest["inner_spaces"], nest["inner_kendall"])):
        mine = [h for h in r["hall_of_fame"] if h["run"] == run]
        assert mine
        assert v == pytest.approx(max(_inner_mean(r, data, h["expression"], space) for h in mine), abs=1e-5)
    with pytest.raises(ValueError, match="space-aware"):
        evolve_proxy(spec_for(data, train="*", runs=3, gens=1, select="nested"))


def _inner_mean(r, data, expr, space):
    from tensorgp.nas.experiment import evaluate_expression

    sc = evaluate_expression(expr, [data], f"{space}/*", preprocess=r["preprocess"])
    return sc["mean_kendall"]


def test_nested_picks_prefers_inner_score_then_fitness():
    cands = [{"run": 0, "fitness": 0.9}, {"run": 0, "fitness": 0.5}, {"run": 1, "fitness": 0.1},
             {"run": 1, "fitness": 0.2}]
    val = [[0.1, 0.9], [0.4, 0.0], [0.3, 0.3], [0.0, 0.3]]  # [candidate][space]
    assert TR.nested_picks(cands, val, 2) == [1, 3]  # run 0 on space 0; run 1 on space 1, tie -> fitness


def test_cli_nested_selection(tmp_path):
    from typer.testing import CliRunner

    from tensorgp_cli.cli import app

    data = write_suite(tmp_path)
    common = ["--data", str(data), "--pop", "20", "--gens", "1", "--runs", "3", "--max-depth", "4", "--quiet",
              "--train", "*"]
    ok = CliRunner().invoke(app, ["run", *common, "--aggregation", "space-softmin", "--select", "nested", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["selected"] == "nested"
    bad = CliRunner().invoke(app, ["run", *common, "--select", "nested", "--aggregation", "mean"])
    assert bad.exit_code != 0 and "space-aware" in bad.output
    # the defaults: 3+ spaces -> the study's recipe; fewer -> task mean, the compact formula
    multi = json.loads(CliRunner().invoke(app, ["run", *common, "--json"]).output)
    assert (multi["aggregation"], multi["selected"]) == (TR.MULTI_SPACE_DEFAULT["aggregation"],
                                                         TR.MULTI_SPACE_DEFAULT["select"])
    one = CliRunner().invoke(app, ["run", *common[:-1], "alpha/*", "--json"])
    assert one.exit_code == 0, one.output
    one = json.loads(one.output)
    assert (one["aggregation"], one["selected"]) == ("mean", "compact")
    # the table a person reads shows how far the inner held-out spaces trust the formulas
    shown = CliRunner().invoke(app, ["run", *common[:-2], "--train", "*", "--select", "shrink"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    w = multi["selection"]["shrink"]["weight_scores"]
    assert f"w=1 {float(w['1.0']):.3f}" in text and f"w=0 {float(w['0.0']):.3f}" in text
    best = max(w.values()) - w["1.0"]
    assert f"the formulas add {best:+.3f} over {multi['selection']['shrink']['baseline']['proxy']} alone" in text


def test_resolve_auto_needs_runs_for_nested():
    spec = RunSpec(data=[], train="*", aggregation="auto", select="auto", config=EvolutionConfig(runs=1))
    r = TR.resolve_auto(spec, ["a/x", "b/y", "c/z"])
    assert r.aggregation == TR.MULTI_SPACE_DEFAULT["aggregation"] and r.select == "compact"
    explicit = RunSpec(data=[], train="*", aggregation="mean", select="ensemble")
    assert TR.resolve_auto(explicit, ["a/x", "b/y"]) is explicit


def test_two_training_spaces_get_the_plain_defaults():
    """A nested run over two spaces would fit one space alone: two spaces keep mean / compact."""
    spec = RunSpec(data=[], train="*", aggregation="auto", select="auto", config=EvolutionConfig(runs=4))
    r = TR.resolve_auto(spec, ["a/x", "a/w", "b/y"])
    assert (r.aggregation, r.select) == (TR.SINGLE_SPACE_DEFAULT["aggregation"], "compact")
    r3 = TR.resolve_auto(spec, ["a/x", "b/y", "c/z"])
    assert (r3.aggregation, r3.select) == (TR.MULTI_SPACE_DEFAULT["aggregation"], TR.MULTI_SPACE_DEFAULT["select"])


def test_resampled_evolution_with_unfilled_hall_of_fame_slots():
    """More hall-of-fame slots than programs: the empty slots are re-scored without error and stay empty."""
    batch = _batch()
    cfg = EvolutionConfig(population=4, generations=3, runs=2, seed=1, max_depth=3, init_depth=(1, 2),
                          hall_of_fame=40, elitism=1, tournament_size=2)
    pset = PrimitiveSet(("p0", "p1", "p2"), PrimitiveSet.parse_functions(None), True)
    ev = Evolver(cfg, pset, RankObjective(batch, "kendall", "space-sample", seed=1), "cpu")
    ev.run()
    ev.rescore_hall_of_fame(None)
    fit = ev.state.hof.fitness.view(2, -1)
    empty = (ev.state.hof.pop.length == 0).view(2, -1)
    assert bool(empty.any()) and torch.all(torch.isinf(fit[empty]))
    assert torch.all(torch.isfinite(fit[:, 0]))


# ----------------------------------------------------------------------------- shrinkage toward the best single proxy


def test_best_single_means_over_spaces_and_leaves_the_inner_space_out():
    # proxy 0 is strong on the one-task space 1; proxy 1 on the two tasks of space 0
    k = torch.tensor([[0.1, 0.1, 0.9], [0.5, 0.5, 0.3]], dtype=torch.float64)
    space = torch.tensor([0, 0, 1])
    assert TR.best_single(k, space) == 0  # space means 0.5 vs 0.4 (the task mean would pick proxy 1)
    assert TR.best_single(k, space, exclude=0) == 0  # only space 1 counts
    assert TR.best_single(k, space, exclude=1) == 1
    absent = torch.tensor([[float("nan"), float("nan"), 0.9], [0.1, 0.1, 0.1]], dtype=torch.float64)
    assert TR.best_single(absent, space) == 1  # a proxy absent from a whole space loses
    with pytest.raises(ValueError):
        TR.best_single(k, torch.tensor([0, 0, 0]), exclude=0)


def test_choose_weight_ties_go_to_the_baseline_and_crossfit_never_scores_where_it_chose():
    W = (0.0, 0.5, 1.0)
    assert TR.choose_weight(torch.tensor([[0.3, 0.3, 0.3]]), W) == 2  # a tie: the baseline's weight
    assert TR.shrink_member_weights(0.25, 6) == [3] * 6 + [6]  # 3/24 each, 6/24 = 0.25 for the baseline
    with pytest.raises(ValueError):
        TR.shrink_member_weights(0.3, 6)
    assert TR.choose_weight(torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.3, 0.2]]), W) == 1  # means 0.3, 0.35, 0.15
    # runs 0, 1 hold out space 0, where the formula wins (w = 0); runs 2, 3 hold out space 1,
    # where the baseline wins (w = 1): each space's runs get the weight the other space chose
    s = torch.tensor([[0.6, 0.5, 0.2], [0.6, 0.5, 0.2], [0.1, 0.2, 0.4], [0.1, 0.2, 0.4]])
    assert TR.crossfit_score(s, [0, 0, 1, 1], W) == pytest.approx([0.2, 0.2, 0.1, 0.1])
    assert TR.crossfit_score(s, [0, 0, 0, 0], W) == [None] * 4  # no other space to choose on


def test_shrink_selection_blends_the_runs_best_formulas_with_the_best_single_proxy(tmp_path):
    from tensorgp.nas.proxy import Proxy, proxy_from_result

    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, train="*", runs=3, gens=2, aggregation="space-mean", select="shrink"))
    assert r["selected"] == "shrink" and "nested" in r["selection"]  # the same runs give both
    sh = r["selection"]["shrink"]
    assert sh["inner_spaces"] == ["alpha", "beta", "gamma"]
    assert list(sh["weight_scores"]) == [str(w) for w in TR.SHRINK_WEIGHTS]
    w = sh["baseline"]["weight"]
    assert sh["weight_scores"][str(w)] == max(sh["weight_scores"].values())
    # the baseline: best mean over training spaces of each single proxy's Kendall
    single = r["baselines"]["single"]
    train = [x["key"] for x in r["sets"] if x["split"] == "train"]

    def space_mean(p):
        per = {}
        for k in train:
            per.setdefault(k.split("/")[0], []).append(single[k][p]["kendall"])
        return sum(sum(v) / len(v) for v in per.values()) / len(per)
    assert sh["baseline"]["proxy"] == max(r["proxies"], key=space_mean)
    # the members: every run's best formula by training fitness, weighted (1 - w) / R, plus the baseline at w
    best = [d["expression"] for d in r["runs_detail"]]
    if 0 < w < 1:
        assert sh["expressions"] == best + [sh["baseline"]["proxy"]]
        assert sh["weights"] == TR.shrink_member_weights(w, 3)  # (1 - w) / 3 each and w, as integers
        assert [x / sum(sh["weights"]) for x in sh["weights"]] == pytest.approx([(1 - w) / 3] * 3 + [w])
    elif w == 1:
        assert sh["expressions"] == [sh["baseline"]["proxy"]] and r["expression"] == sh["baseline"]["proxy"]
    else:
        assert sh["expressions"] == best
    # the proxy a user takes away scores every task as the selection says (in evolution's float32
    # arithmetic; the float64 default may reorder values that float32 rounding merged)
    proxy = proxy_from_result(r)
    assert isinstance(proxy, Proxy)
    for k in train:
        sc = proxy.score(str(data / f"zc_{k.split('/')[0]}.json"), dtype="float32")[k]
        tau = stats.kendalltau(sc.scores, sc.accuracy).statistic
        assert tau == pytest.approx(sh["tasks"][k]["kendall"], abs=1e-5)


def test_weighted_ensemble_proxy_scores_the_weighted_mean_rank():
    from tensorgp.nas.proxy import Proxy

    x = {"p0": np.array([1.0, 3.0, 2.0, 4.0]), "p1": np.array([4.0, 1.0, 3.0, 2.0])}
    p = Proxy(["p0", "p1"], ["p0", "p1"], "raw", weights=[3.0, 1.0])
    q0, q1 = np.array([0, 2, 1, 3]) / 3, np.array([3, 0, 2, 1]) / 3
    assert p.score(x) == pytest.approx(0.75 * q0 + 0.25 * q1)
    ns: dict = {}
    exec(p.to_python(), ns)
    assert ns["proxy"](**x) == pytest.approx(0.75 * q0 + 0.25 * q1)
    again = Proxy.from_dict(p.to_dict())
    assert again.weights == pytest.approx(p.weights)
    assert Proxy(["p0", "p1"], ["p0", "p1"], "raw").score(x) == pytest.approx((q0 + q1) / 2)
    with pytest.raises(ValueError, match="weight"):
        Proxy(["p0", "p1"], ["p0", "p1"], "raw", weights=[1.0, -1.0])


def _blend_kendall(batch, pred, anchor_col):
    """Reference: per-task Kendall of the equal-weight rank blend, with the selection's ranking."""
    from tensorgp.nas import baselines as B

    off = batch.offsets
    blend = B.task_ranks(pred, off, quantile=False) + B.task_ranks(batch.X[:, anchor_col][None], off, quantile=False)
    return B.score_predictions(blend, batch.accuracy, off)["kendall"]


def test_anchored_objective_scores_each_runs_blend_with_its_own_anchor():
    from tensorgp.engine.evaluate import evaluate
    from tensorgp.nas.objective import anchors_for

    batch = _batch()
    batch.X[::7, 2] = float("nan")  # failed proxy values: NaN after preprocessing
    per_run, whole = anchors_for(batch, 3)
    k = correlation(batch.X.t().contiguous(), batch, "kendall").double()
    _, space = TR.task_spaces(batch.names)
    assert per_run == [TR.best_single(k, space, g) for g in range(3)] and whole == TR.best_single(k, space)
    # programs with ties, NaN and inf: ranked as the selection ranks them (non-finite lowest)
    from tensorgp.engine.expression import parse, to_postfix

    texts = ["p1 * p2", "p0", "log(p2 - 0.5)", "square(p1)", "p2", "min(p0, 0.5)"]
    pop = Population.from_rows([to_postfix(parse(t, ["p0", "p1", "p2"])) for t in texts])
    pred = evaluate(pop, batch.X, "torch")
    assert not torch.isfinite(pred).all() and (pred[5] == 0.5).sum() > 10  # the edge cases are there
    obj = RankObjective(batch, "kendall", "space-mean", inner_runs=3, anchors=(per_run, whole))
    fit = obj(pop)
    W = TR.space_weights(batch.names)[1].double()
    for row in range(6):
        r = row // 2
        ref = _blend_kendall(batch, evaluate(pop[row:row + 1], batch.X, "torch"), per_run[r])[0].double() @ W
        keep = [g for g in range(3) if g != r]
        assert float(fit[row]) == pytest.approx(float(ref[keep].mean()), abs=1e-6)
    # a program that adds nothing (a constant) scores as its anchor alone
    const = Population.from_rows([to_postfix(parse("0.5", ["p0", "p1", "p2"]))])
    alone = correlation(batch.X[:, [whole]].t().contiguous(), batch, "kendall")[0].double() @ W
    assert float(RankObjective(batch, "kendall", "space-mean", anchors=(per_run, whole))(const)[0]) == \
        pytest.approx(float(alone.mean()), abs=1e-6)


def test_anchored_selection_is_the_half_blend_and_the_saved_proxy_reproduces_it(tmp_path):
    from tensorgp.nas.proxy import proxy_from_result

    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, train="*", runs=3, gens=2, aggregation="space-mean", select="anchored"))
    assert r["selected"] == "anchored" and {"nested", "shrink"} <= set(r["selection"])
    an = r["selection"]["anchored"]
    assert an["baseline"]["weight"] == 0.5
    best = [d["expression"] for d in r["runs_detail"]]
    assert an["expressions"] == best + [an["baseline"]["proxy"]]
    assert [x / sum(an["weights"]) for x in an["weights"]] == pytest.approx([1 / 6] * 3 + [0.5])
    # nothing is chosen on the inner spaces: the inner figure is each run's own blend there
    runs = an["weight_scores_runs"]
    assert an["inner_kendall"] == pytest.approx([row[TR.SHRINK_WEIGHTS.index(0.5)] for row in runs])
    # the runs' fitness is the blend's: the best run's fitness is its blend's training space mean
    train = [x["key"] for x in r["sets"] if x["split"] == "train"]
    proxy = proxy_from_result(r)
    for k in train:
        sc = proxy.score(str(data / f"zc_{k.split('/')[0]}.json"), dtype="float32")[k]
        assert stats.kendalltau(sc.scores, sc.accuracy).statistic == pytest.approx(an["tasks"][k]["kendall"], abs=1e-5)
