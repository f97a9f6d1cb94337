"""The proxy a user holds: exports (Python, sympy, LaTeX) against the engine, scoring of every
input kind with and without a reference set, files, unlabelled data, and the commands around it."""
import json
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from typer.testing import CliRunner

import tensorgp
from tensorgp.engine import expression as E
from tensorgp.engine.evaluate import evaluate
from tensorgp.engine.export import node_to_latex, node_to_python, node_to_sympy
from tensorgp.engine.population import Population, init_population
from tensorgp.engine.primitives import PrimitiveSet
from tensorgp.nas import protocols as P
from tensorgp.nas.data import DataError, load, make_batch
from tensorgp.nas.experiment import evolve_proxy
from tensorgp.nas.proxy import Proxy, load_proxy
from tensorgp.nas.scoring import evaluate_proxy, score_file
from tensorgp.nas.search import read_result, run_search
from tensorgp_cli.cli import app

from test_protocols import spec_for, write_suite
from test_search import grid_task, write_suite_zero

sp = pytest.importorskip("sympy")
# numpy's and torch's versions of these differ in the last ulp (float64 included)
TRANSCENDENTAL = {"log", "exp", "tanh", "sqrt", "pow", "sin", "cos"}


def _python(node, names, dtype="float64"):
    ns: dict = {}
    exec(node_to_python(node, names, dtype=dtype), ns)
    return ns["proxy"]


def _lowest(v):
    return np.where(np.isfinite(v), np.asarray(v, dtype=np.float64), -np.inf)


def same_ranking(a, b) -> bool:
    """True when ``a`` and ``b`` order every pair alike, ties included (NaN and -inf lowest): Kendall
    tau-b exactly 1, or both constant. Computed exactly: scipy's kendalltau returns
    0.9999999999999999 for some identical rankings."""
    a, b = _lowest(a), _lowest(b)
    o = np.lexsort((b, a))
    a, b = a[o], b[o]
    return bool((b[1:] >= b[:-1]).all() and np.array_equal(a[1:] == a[:-1], b[1:] == b[:-1]))


def within_one_ulp(a, b) -> bool:
    """Elementwise equal (NaN with NaN) or adjacent float64 values."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= np.spacing(np.maximum(np.abs(a), np.abs(b)))
    return bool(((a == b) | (np.isnan(a) & np.isnan(b)) | close).all())


def test_same_ranking():
    assert same_ranking([1.0, 2.0, 2.0, np.nan], [0.1, 5.0, 5.0, -np.inf])
    assert not same_ranking([1.0, 2.0, 2.0], [0.1, 5.0, 5.0000001])  # a tie split
    assert not same_ranking([1.0, 2.0, 3.0], [0.1, 5.0, 4.0])
    assert same_ranking([3.0, 3.0], [7.0, 7.0]) and not same_ranking([3.0, 3.0], [7.0, 8.0])
    x = np.random.default_rng(0).normal(size=2000)
    assert same_ranking(x, np.exp(x)) and kendalltau(x, np.exp(x)).statistic <= 1.0


def _uses(node) -> set:
    from tensorgp.engine.compact import subtrees
    from tensorgp.engine.primitives import CONST, function

    return {function(s.op).name for s in subtrees(node) if s.op < CONST}


def test_round_trip_100_random_formulas_on_every_suite_zero_task(suite_zero):
    """The engine's float64 scores (what Proxy.score computes), to_python and the protected sympy
    form lambdified rank every task's architectures identically (Kendall 1.0) for 100 random
    formulas. sympy and Python compute the same numpy operations: bit for bit equal. Without a
    transcendental function the engine is bit for bit equal too. The one residual (3 of the
    1800 pairs when written, all tanh(inv(epe_nas))): numpy's and torch's float64 tanh/exp/log/
    sin/cos/sqrt differ by up to one ulp (measured on 4e6 arguments), which can split or merge a
    tie between values one ulp apart, e.g. where tanh saturates at 1.0. Such a pair is allowed
    only for a formula with one of those functions and only where every architecture's export
    value is within one ulp of the engine's, so nothing but values at most two ulps apart can be
    ordered differently: no loose tolerance."""
    tasks = load(suite_zero)
    names = sorted(p for p in tasks[0].proxies if all(p in t.proxies for t in tasks))
    pop = init_population(100, PrimitiveSet(tuple(names)), torch.Generator().manual_seed(0), max_len=32,
                          depth_range=(1, 5), const_prob=0.2)
    nodes = [E.row(pop.ops, pop.consts, pop.length, i) for i in range(pop.size)]
    syms = list(sp.symbols(names))
    fns = []
    for n in nodes:
        used = sorted(E.variables_used(n))
        fns.append((_python(n, names), sp.lambdify([syms[i] for i in used], node_to_sympy(n, syms, protected=True),
                                                "numpy"), used))
    exact, ulp_only, total = 0, [], 0
    for t in tasks:
        b = make_batch([t], names, "rank")
        X = b.X.double()  # the float32 inputs evolution saw, computed on in float64
        engine = evaluate(pop, X, "torch").numpy()
        for i in range(10):  # the proxy's scores are the engine's
            p = Proxy([E.to_infix(nodes[i], names)], names, "rank")
            np.testing.assert_array_equal(p.score_task(t), engine[i])
        for i, (py, sy, used) in enumerate(fns):
            cols = [X.numpy()[:, j] for j in used]
            ref = engine[i]
            with np.errstate(all="ignore"):
                python = np.broadcast_to(py(*cols), ref.shape)
                sym = np.broadcast_to(np.asarray(sy(*cols), dtype=np.float64), ref.shape)
            total += 1
            formula = E.to_infix(nodes[i], names)
            np.testing.assert_array_equal(sym, python, err_msg=formula)
            if not (_uses(nodes[i]) & TRANSCENDENTAL):
                np.testing.assert_array_equal(python, ref, err_msg=formula)
            if same_ranking(ref, python):
                exact += 1
                continue
            assert _uses(nodes[i]) & TRANSCENDENTAL and within_one_ulp(ref, python), (t.name, formula)
            ulp_only.append((t.name, formula))
    assert total == 100 * len(tasks) and exact + len(ulp_only) == total, (exact, ulp_only)


def test_protected_operators_in_the_exports():
    """The thresholds (|x| <= 1e-6, exp's clamp at 80, pow's 1e30 ceiling) at and around their
    float64 values, NaN and inf: the Python export and the protected sympy form compute exactly
    what the engine's float64 path computes; the float32 export matches the float32 engine."""
    names = ["a", "b"]
    eps = 1e-6
    a = np.array([0.0, 1e-7, -1e-7, 2e-6, -3.0, 0.5, 1e7, 90.0, np.nan, np.inf, eps, -eps, np.nextafter(eps, 1),
                  80.0, np.nextafter(80.0, 100), 1e16, 0.0, -np.inf])
    b = np.array([1e-7, 0.0, 2.0, -1e-6, 1e-5, -0.25, 3.0, 0.0, 1.0, 2.0, eps, np.nextafter(-eps, -1), -eps,
                  2.0, 1e-3, 2.0, -2.0, 0.5])
    for text in ("(a / b)", "inv(a)", "log(a)", "exp(a)", "sqrt(a)", "(inv(inv(a)) + log(b))", "pow(a, b)",
                 "exp((a * 2))", "min(inv(b), max(a, b))", "square(a)", "tanh(a)", "(b / (a - b))"):
        node = E.parse(text, names)
        used = sorted(E.variables_used(node))
        prog = Population.from_rows([E.to_postfix(node)])
        for dtype in ("float64", "float32"):
            x = np.stack([a, b], 1).astype(dtype)
            ref = evaluate(prog, torch.from_numpy(x), "torch")[0].numpy()
            assert ref.dtype == dtype
            with np.errstate(all="ignore"):
                py = np.broadcast_to(_python(node, names, dtype)(*[x[:, i] for i in used]), ref.shape)
            assert py.dtype == dtype
            if dtype == "float64":
                sy = sp.lambdify([sp.Symbol(names[i]) for i in used],
                                 node_to_sympy(node, [sp.Symbol(n) for n in names], protected=True))
                with np.errstate(all="ignore"):
                    sv = np.broadcast_to(np.asarray(sy(*[x[:, i] for i in used]), dtype=np.float64), ref.shape)
                np.testing.assert_array_equal(sv, py, err_msg=text)
            if not ({f for f in TRANSCENDENTAL if f in text}):
                np.testing.assert_array_equal(py, ref, err_msg=f"{text} {dtype}")
            else:
                np.testing.assert_allclose(py, ref, rtol=4 * np.finfo(dtype).eps, atol=0, equal_nan=True,
                                           err_msg=f"{text} {dtype}")


def test_constants_are_exported_exactly():
    """A float32 constant is held exactly in the float64 exports (17 digits), so the exports
    compute with the value the engine does."""
    names = ["a"]
    node = E.parse("((a * 0.1) + 0.3)", names)
    x = np.linspace(0, 1, 101)
    ref = evaluate(Population.from_rows([E.to_postfix(node)]), torch.from_numpy(x[:, None]), "torch")[0].numpy()
    np.testing.assert_array_equal(_python(node, names)(x), ref)
    sy = sp.lambdify([sp.Symbol("a")], node_to_sympy(node, [sp.Symbol("a")], protected=True))
    np.testing.assert_array_equal(sy(x), ref)
    assert "0.30000001192092896" in node_to_python(node, names)
    assert "0.300000012" in node_to_python(node, names, dtype="float32")
    with pytest.raises(ValueError, match="dtype"):
        node_to_python(node, names, dtype="float16")


def test_latex_export():
    names = ["nwot", "grad_norm"]
    node = E.parse("((nwot / log(grad_norm)) - min(nwot, -0.5))", names)
    assert node_to_latex(node, names) == (r"\frac{\mathrm{nwot}}{\log\left|\mathrm{grad\_norm}\right|} - "
                                          r"\min\left(\mathrm{nwot}, \left(-0.5\right)\right)")
    assert node_to_latex(E.parse("((nwot + grad_norm) * sqrt(nwot))", names), names) == \
        r"\left(\mathrm{nwot} + \mathrm{grad\_norm}\right) \cdot \sqrt{\left|\mathrm{nwot}\right|}"


# ----------------------------------------------------------------------------- the proxy object


def _features(n=40, seed=0):
    g = np.random.default_rng(seed)
    f = {"nwot": g.normal(size=n), "jacov": g.normal(size=n), "params": g.uniform(1, 5, size=n), "other": g.normal(size=n)}
    f["nwot"][3] = np.nan  # a failed value
    f["jacov"][5] = -1e8  # NASLib's failure sentinel
    return f


def test_score_accepts_dicts_dataframes_arrays_and_tensors():
    pd = pytest.importorskip("pandas")
    p = Proxy(["min((nwot * params), jacov)"], ["nwot", "jacov", "params"])
    f = _features()
    s = p.score(f)
    assert s.shape == (40,) and np.isnan(s[3]) and np.isnan(s[5]) and np.isfinite(np.delete(s, [3, 5])).all()
    np.testing.assert_array_equal(p.score(pd.DataFrame(f)), s)
    arr = np.stack([f["params"], f["jacov"], f["nwot"]], 1)
    np.testing.assert_array_equal(p.score(arr, names=["params", "jacov", "nwot"]), s)
    np.testing.assert_array_equal(p.score(torch.tensor(arr), names=["params", "jacov", "nwot"]), s)
    np.testing.assert_array_equal(p.score(np.stack([f["nwot"], f["jacov"], f["params"]], 1)), s)
    # the formula of the standalone module gives the same scores from raw values
    ns: dict = {}
    exec(p.to_python(), ns)
    np.testing.assert_array_equal(ns["proxy"](nwot=f["nwot"], jacov=f["jacov"], params=f["params"]), s)
    # the rank preprocessing of a set: a score depends on the set, which the proxy says
    assert p.set_dependent and "depend" in str(p)
    assert not np.array_equal(p.score({k: v[:10] for k, v in f.items()}), s[:10])


@pytest.mark.parametrize("exprs, preprocess", [(["min((nwot * params), jacov)"], "rank"),
                                                (["(nwot - jacov)", "(params * nwot)", "jacov"], "rank"),
                                                (["(nwot * params)"], "zscore"),
                                                (["(nwot * params)"], "signed-log")])
def test_reference_scores_agree_one_at_a_time(exprs, preprocess):
    ref = _features(200, seed=1)
    p = Proxy(exprs, ["nwot", "jacov", "params"], preprocess,
              np.stack([ref["nwot"], ref["jacov"], ref["params"]], 1))
    f = _features(30, seed=2)
    together = p.score(f, reference="train")
    alone = np.concatenate([p.score({k: v[i:i + 1] for k, v in f.items()}, reference="train") for i in range(30)])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(p.score(f, reference=ref), together)  # explicit reference = the stored one
    # against the reference, the ranking is the formula's: for a single formula it matches the in-set one
    if len(exprs) == 1 and preprocess == "rank":
        fin = np.isfinite(together)
        assert kendalltau(together[fin], p.score(f)[fin]).statistic > 0.8


def test_proxy_without_reference_and_bad_inputs():
    p = Proxy(["(nwot * params)"], ["nwot", "params"])
    with pytest.raises(DataError, match="no column for proxy 'params'"):
        p.score({"nwot": [1.0, 2.0]})
    with pytest.raises(DataError, match="reference='train'"):
        p.score({"nwot": [1.0], "params": [2.0]}, reference="train")
    with pytest.raises(DataError, match="different lengths"):
        p.score({"nwot": [1.0, 2.0], "params": [2.0]})
    with pytest.raises(DataError, match="2 columns"):
        p.score(np.zeros((4, 3)))
    with pytest.raises(E.ParseError, match="unknown variable 'snip'"):
        Proxy(["(snip + nwot)"], ["nwot"])
    with pytest.raises(ValueError, match="preprocess"):
        Proxy(["nwot"], ["nwot"], "log")


# ----------------------------------------------------------------------------- results, files, commands


def _unlabelled(tmp_path, src):
    """A copy of the synthetic gamma file without val_accuracy."""
    doc = json.loads((src / "zc_gamma.json").read_text())
    for t in doc.values():
        for r in t.values():
            r.pop("val_accuracy")
    path = tmp_path / "unlabelled" / "zc_new.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    return path


def test_run_result_is_a_proxy_and_scores_unlabelled_files(tmp_path):
    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, test="gamma/*", select="compact"))
    assert r["selected"] == "compact" and r["expression"] == r["selection"]["compact"]["expression"]
    sizes = [f["size"] for f in r["pareto"]]
    fits = [f["fitness"] for f in r["pareto"]]
    assert sizes == sorted(set(sizes)) and fits == sorted(fits) and len(set(fits)) == len(fits)
    assert r["size"] == min(f["size"] for f in r["pareto"] if f["fitness"] >= max(fits) - 0.01)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps(r))
    p = tensorgp.load_proxy(tmp_path / "run")
    assert p.expressions == [r["expression"]] and p.reference.shape[0] == 150  # the training tasks: alpha 2 x 50, beta 50
    unl = _unlabelled(tmp_path, data)
    with pytest.raises(DataError, match="lack val_accuracy"):
        load(unl)
    scored = p.score(unl)
    assert list(scored) == ["new/task0"] and scored["new/task0"].accuracy is None
    labelled = p.score(data / "zc_gamma.json")["gamma/task0"]
    np.testing.assert_array_equal(scored["new/task0"].scores, labelled.scores)
    # the per-task figures of the result are this very proxy's, in evolution's float32 arithmetic
    f32 = p.score(data / "zc_gamma.json", dtype="float32")["gamma/task0"]
    tau = kendalltau(f32.scores, f32.accuracy).statistic
    assert tau == pytest.approx(r["tasks"]["gamma/task0"]["kendall"], abs=1e-6)
    # float64 (the default) ranks the same values without float32's rounding: close, not equal
    assert kendalltau(labelled.scores, labelled.accuracy).statistic == pytest.approx(tau, abs=0.02)
    with pytest.raises(ValueError, match="dtype"):
        p.score(unl, dtype="float16")
    p.save(tmp_path / "p.json")
    q = load_proxy(tmp_path / "p.json")
    assert q.expressions == p.expressions and np.array_equal(q.reference, p.reference, equal_nan=True)


def test_ensemble_is_what_is_reported_scored_and_searched(tmp_path):
    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, test="gamma/*", select="ensemble"))
    assert r["expression"] is None and r["ensemble"]["expressions"] == r["selection"]["ensemble"]["expressions"]
    assert r["tasks"]["gamma/task0"]["kendall"] == r["selection"]["ensemble"]["tasks"]["gamma/task0"]["kendall"]
    (tmp_path / "result.json").write_text(json.dumps(r))
    p = load_proxy(tmp_path / "result.json")
    assert p.is_ensemble and len(p.expressions) == 3
    s = p.score(data / "zc_gamma.json")["gamma/task0"]
    assert kendalltau(s.scores, s.accuracy).statistic == pytest.approx(r["tasks"]["gamma/task0"]["kendall"], abs=1e-6)
    ns: dict = {}
    exec(p.to_python(), ns)
    t = load(data / "zc_gamma.json")[0]
    np.testing.assert_allclose(ns["proxy"](**{v: t.column(v).numpy() for v in p.variables}), s.scores, rtol=1e-12)
    assert p.to_latex().startswith(r"\frac{1}{3}")


def _flat(text: str) -> str:
    """CLI output without the line breaks rich wraps messages at."""
    return "".join(text.split())


def test_score_command_writes_csv_and_json(tmp_path):
    data = write_suite(tmp_path)
    r = evolve_proxy(spec_for(data, test="gamma/*"))
    (tmp_path / "result.json").write_text(json.dumps(r))
    unl = _unlabelled(tmp_path, data)
    runner = CliRunner()
    res = runner.invoke(app, ["score", "--from", str(tmp_path / "result.json"), "--data", str(unl),
                              "--out", str(tmp_path / "s.csv"), "--top", "3"])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "task,rank,arch,score" and len(lines) == 51 and lines[1].startswith("new/task0,1,")
    res = runner.invoke(app, ["score", "--from", str(tmp_path / "result.json"), "--data", str(unl),
                              "--out", str(tmp_path / "s.json"), "--reference", "train"])
    assert res.exit_code == 0, res.output
    js = json.loads((tmp_path / "s.json").read_text())
    assert js["reference"] == "train" and not js["set_dependent"] and len(js["scores"]) == 50
    bad = runner.invoke(app, ["score", "--from", str(tmp_path / "result.json"), "--data", str(unl),
                              "--out", str(tmp_path / "s.txt")])
    assert bad.exit_code == 2 and "unknownformat'.txt'" in _flat(bad.output)
    missing = runner.invoke(app, ["score", "--from", str(tmp_path / "nope.json"), "--data", str(unl)])
    assert missing.exit_code == 2 and "nope.json:nosuchfile" in _flat(missing.output)
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    other = runner.invoke(app, ["score", "--from", str(tmp_path / "other.json"), "--data", str(unl)])
    assert other.exit_code == 2 and "isitatensorgpresult" in _flat(other.output)


def test_eval_from_scores_a_held_ensemble_on_labelled_tasks(tmp_path):
    data = write_suite(tmp_path)
    doc = json.loads((data / "zc_beta.json").read_text())
    for r in doc["task0"].values():  # a task that lacks a proxy the ensemble reads
        r.pop("p1")
    (data / "zc_beta.json").write_text(json.dumps(doc))
    p = Proxy(["p0", "(p0 * p1)", "p2"], ["p0", "p1", "p2"], weights=[3, 1, 0.5])
    p.save(tmp_path / "p.json")
    res = evaluate_proxy(tmp_path / "p.json", data)
    assert res["ensemble"] == p.expressions and res["weights"] == [3.0, 1.0, 0.5]
    assert "lacks proxy p1" in res["tasks"]["beta/task0"]["error"]
    taus = []
    for t in load(data):
        if t.name == "beta/task0":
            continue
        want = kendalltau(p.score_task(t), t.accuracy.numpy()).statistic  # tau-b, as the fitness
        assert res["tasks"][t.name]["kendall"] == pytest.approx(want, abs=1e-6)  # float32 statistic
        taus.append(want)
    assert res["mean_kendall"] == pytest.approx(np.mean(taus), abs=1e-6) and np.mean(taus) > 0.3
    with pytest.raises(DataError, match="no selected task can be scored.*no val_accuracy"):
        evaluate_proxy(p, _unlabelled(tmp_path, data))
    runner = CliRunner()
    ok = runner.invoke(app, ["eval", "--from", str(tmp_path / "p.json"), "--data", str(data), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["mean_kendall"] == pytest.approx(res["mean_kendall"], abs=1e-12)
    table = runner.invoke(app, ["eval", "--from", str(tmp_path / "p.json"), "--data", str(data)])
    assert table.exit_code == 0 and "weighted ensemble" in table.output and "lacks" in table.output
    both = runner.invoke(app, ["eval", "--from", str(tmp_path / "p.json"), "--expr", "p0", "--data", str(data)])
    assert both.exit_code == 2 and "exactlyoneof--exprand--from" in _flat(both.output)


def test_arrays_dicts_exports_and_files_rank_alike_where_float32_would_merge_values(tmp_path):
    """Raw values are preprocessed in float64 whatever the input (as the loader and evolution do):
    1 and 1 + 1e-12 are distinct in float64 and one value in float32."""
    vals = np.array([1.0, 1.0 + 1e-12, 2.0, 2.0 + 1e-9, 0.5, 3.0])
    acc = np.arange(6, dtype=float)
    doc = {"t": {f"a{i}": {"x": float(v), "y": float(-v), "val_accuracy": float(a)} for i, (v, a) in enumerate(zip(vals, acc))}}
    (tmp_path / "zc_s.json").write_text(json.dumps(doc))
    for pre in ("rank", "zscore", "signed-log"):
        p = Proxy(["(x - y)"], ["x", "y"], pre)
        f = p.score(tmp_path / "zc_s.json")["s/t"].scores
        ns: dict = {}
        exec(p.to_python(), ns)
        for got in (p.score({"x": vals, "y": -vals}), p.score(np.stack([vals, -vals], 1)), ns["proxy"](x=vals, y=-vals)):
            assert same_ranking(got, f)
        assert pre != "rank" or len(set(f.tolist())) == 6  # the float64 values stay distinct


def test_constant_formulas_score_every_row_and_proxies_with_references_compare():
    assert Proxy(["2.0"], []).score({"nwot": [1, 2, 3]}).tolist() == [2.0, 2.0, 2.0]
    p = Proxy(["nwot"], ["nwot"], reference=np.ones((3, 1)))
    assert p == Proxy(["nwot"], ["nwot"], reference=np.zeros((2, 1)))  # the reference is data, not identity


@pytest.mark.parametrize("block, message", [
    ({"proxy": {"expressions": ["nwot +"], "variables": ["nwot"]}}, "unexpected end of formula"),
    ({"proxy": {"expressions": ["nwot"], "variables": ["nwot"], "preprocess": "ranks"}}, "unknown preprocess mode"),
    ({"proxy": {"expressions": ["nwot", "snip"], "variables": ["nwot", "snip"], "weights": [1, -1]}}, "positive weight"),
    ({"proxy": {"expressions": "nwot", "variables": ["nwot"]}}, "must be a list of formulas"),
    ({"ensemble": {"weights": [1]}, "proxies": ["nwot"]}, "its 'ensemble' block"),
])
def test_a_bad_proxy_file_is_named_with_its_problem(tmp_path, block, message):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(block))
    with pytest.raises(DataError, match=f"bad.json: .*{message}"):
        load_proxy(f)


def test_score_file_refuses_a_task_that_two_files_hold(tmp_path):
    data = write_suite(tmp_path)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "zc_gamma.json").write_text((data / "zc_gamma.json").read_text())
    with pytest.raises(DataError, match="duplicate task gamma/task0"):
        score_file(Proxy(["p0"], ["p0"]), [data / "zc_gamma.json", tmp_path / "copy" / "zc_gamma.json"])


def test_score_file_names_a_missing_proxy(tmp_path):
    data = write_suite(tmp_path)
    p = Proxy(["(p0 * p3)"], ["p0", "p3"])
    with pytest.raises(DataError, match="has no values of proxy 'p3'"):
        score_file(p, data / "zc_gamma.json")


def test_leave_one_space_out_carries_a_formula_for_score_and_search(tmp_path):
    data = write_suite(tmp_path)
    r = P.leave_one_space_out(spec_for(data, train="*", runs=2, gens=2))
    assert r["all_spaces"]["train_tasks"] == ["alpha/task0", "alpha/task1", "beta/task0", "gamma/task0"]
    assert r["expression"] == r["all_spaces"]["expression"] and r["proxy"]["expressions"] == [r["expression"]]
    (tmp_path / "loso.json").write_text(json.dumps(r))
    p = load_proxy(tmp_path / "loso.json")
    assert p.expressions == [r["expression"]]
    assert score_file(tmp_path / "loso.json", data / "zc_beta.json")["tasks"]["beta/task0"]["n"] == 50


def test_search_from_an_ensemble_result(tmp_path):
    f = write_suite_zero(tmp_path / "zc_toy.json", [grid_task("toy/a", D=5, V=4, seed=8)])
    rj = tmp_path / "result.json"
    rj.write_text(json.dumps({"expression": None, "ensemble": {"expressions": ["good", "(good + noise)"]},
                              "proxies": ["good", "noise"], "preprocess": "rank"}))
    proxy, pre = read_result(rj)
    assert isinstance(proxy, Proxy) and proxy.is_ensemble and pre == "rank"
    res = run_search([f], "toy/a", proxy, budget=100, runs=2, seed=0, population=20, sample_size=5)
    assert res["expression"] == "ensemble: good; (good + noise)"
    assert res["median"]["percentile"] > res["baselines"]["random"]["percentile"] - 1e-9
    runner = CliRunner()
    out = runner.invoke(app, ["search", "--data", str(f), "--task", "toy/a", "--from", str(rj), "--budget", "50",
                              "--runs", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["expression"].startswith("ensemble")


def test_score_file_warns_when_a_needed_proxy_failed_everywhere(tmp_path):
    data = write_suite(tmp_path)
    doc = json.loads((data / "zc_gamma.json").read_text())
    for t in doc.values():
        for r in t.values():
            if isinstance(r["p0"], dict):
                r["p0"]["score"] = -1e8  # NASLib's failure sentinel on every architecture
            else:
                r["p0"] = -1e8
    path = tmp_path / "dead" / "zc_gamma.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    p = Proxy(["(p0 * p1)"], ["p0", "p1"])
    with pytest.warns(UserWarning, match="proxy 'p0' failed .* on every architecture"):
        scored = p.score(path)
    assert np.isnan(scored["gamma/task0"].scores).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy file scores without the warning
        p.score(data / "zc_gamma.json")
