"""Weighted leaves: the rewrite keeps outputs, unit weights drop back out, LM tunes the weights."""
import numpy as np
import pytest
import torch

from tensorgp import SymbolicRegressor
from tensorgp.engine.evaluate import evaluate
from tensorgp.engine.expression import parse, to_postfix
from tensorgp.engine.population import Population, init_population
from tensorgp.engine.primitives import CONST, DEFAULT_FUNCTIONS, FIRST_VAR, PrimitiveSet
from tensorgp.sr.constants import optimize_constants
from tensorgp.sr.leaf_weights import add_weights, drop_unit_weights


def programs(texts, variables):
    return Population.from_rows([to_postfix(parse(t, variables)) for t in texts])


def test_weights_keep_outputs_and_drop_back_out():
    g = torch.Generator().manual_seed(0)
    pop = init_population(200, PrimitiveSet(("a", "b", "c"), DEFAULT_FUNCTIONS), g, max_len=32,
                          depth_range=(1, 5), const_prob=0.3)
    X = torch.rand(64, 3, generator=g) * 4 - 2
    w, is_w = add_weights(pop)
    assert torch.equal(w.length, pop.length + 2 * is_w.sum(1).int())
    assert (w.ops[is_w] == CONST).all() and (w.consts[is_w] == 1).all()
    a, b = evaluate(pop, X, "torch"), evaluate(w, X, "torch")
    ok = torch.isfinite(a)
    torch.testing.assert_close(a[ok], b[ok])
    back = drop_unit_weights(w, is_w).trimmed()
    p = pop.trimmed()
    assert torch.equal(back.ops, p.ops) and torch.equal(back.consts, p.consts) and torch.equal(back.length, p.length)


def test_weighted_leaf_gets_no_second_weight():
    pop = programs(["(0.5 * x0) + (x1 * -2.0)", "x0 + x1"], ["x0", "x1"])
    _, is_w = add_weights(pop)
    assert is_w.sum(1).tolist() == [0, 2]


def test_lm_tunes_leaf_weights_and_keeps_only_moved_ones():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(-3, 3, (500, 2)).astype(np.float32))
    y = torch.sin(X[:, 0].double()) + 0.05 * X[:, 1].double() ** 2
    pop = programs(["sin(x0) + square(x1)"], ["x0", "x1"])
    w, is_w = add_weights(pop)
    new, sse0, sse1 = optimize_constants(w, X, y, linear_scaling=True, steps=30)
    assert sse1[0] < 1e-9 * sse0[0]
    out = drop_unit_weights(new, is_w)
    # sin's weight stays at 1 and is dropped; square's becomes +-sqrt(0.05)
    c = out.consts[0][out.ops[0] == CONST]
    assert len(c) == 1 and abs(abs(float(c[0])) - 0.05 ** 0.5) < 1e-4
    assert int((out.ops[0] >= FIRST_VAR).sum()) == 2


def test_regressor_finds_a_coefficient_without_ephemeral_constants():
    # no ephemeral constants: only a leaf weight can give x1 its 0.3 next to sin(x0)
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, (400, 2))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1]
    kw = dict(function_set=("add", "mul", "sin"), const_prob=0.0, population_size=300, generations=10,
              random_state=0, n_jobs=1)
    on = SymbolicRegressor(weighted_leaves=True, **kw).fit(X, y)
    off = SymbolicRegressor(weighted_leaves=False, **kw).fit(X, y)
    assert on.score(X, y) > 1 - 1e-8
    assert off.score(X, y) < on.score(X, y)


def test_restart_runs_only_when_the_plain_run_falls_short():
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 3, (300, 2))
    kw = dict(population_size=200, generations=6, restart_generations=4, random_state=0, n_jobs=1)
    easy = SymbolicRegressor(**kw).fit(X, X[:, 0] * X[:, 1])  # exact in the plain run: no restart
    assert easy.score(X, X[:, 0] * X[:, 1]) > 1 - 1e-9
    assert {h["phase"] for h in easy.history_} == {0}
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1]
    off = SymbolicRegressor(function_set=("add", "mul", "sin"), const_prob=0.0, restart_generations=0,
                            **{k: v for k, v in kw.items() if k != "restart_generations"}).fit(X, y)
    assert {h["phase"] for h in off.history_} == {0} and off.n_generations_ <= 6
    on = SymbolicRegressor(function_set=("add", "mul", "sin"), const_prob=0.0, **kw).fit(X, y)
    assert {h["phase"] for h in on.history_} == {0, 1} or on.score(X, y) > 1 - 1e-9
    assert on.n_generations_ <= 11 and [h["generation"] for h in on.history_] == list(range(len(on.history_)))


def test_weighted_programs_respect_length_and_depth_limits():
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, (300, 3))
    y = np.exp(0.3 * X[:, 0]) * np.sin(1.7 * X[:, 1]) + 0.2 * X[:, 2] ** 3
    est = SymbolicRegressor(population_size=120, generations=3, restart_generations=4, max_length=12, max_depth=4, init_depth=(2, 4),
                            random_state=0, n_jobs=1).fit(X, y)
    assert {h["phase"] for h in est.history_} == {0, 1}
    from tensorgp.engine.population import program_depth

    for e in est.hall_of_fame_:
        p = e.program
        assert int(p.length[0]) <= 12 and int(program_depth(p.ops, p.length)[0]) <= 4


# ------------------------------------------------------------------ the restart's noise-floor test


def test_nearest_neighbours_and_whiteness():
    from tensorgp.sr.noise_floor import nearest_neighbours, neighbour_correlation, residual_whiteness_z

    X = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2]], dtype=torch.float64)
    assert nearest_neighbours(X, block=3).tolist() == [1, 0, 3, 2]
    g = torch.Generator().manual_seed(0)
    X = torch.rand(3000, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(3000, generator=g, dtype=torch.float64)
    assert abs(residual_whiteness_z(X, noise)) < 4  # independent residual: ~N(0, 1)
    smooth = torch.sin(3 * X[:, 0]) * X[:, 1]
    assert residual_whiteness_z(X, smooth + 0.5 * noise) > 10  # structure left: large
    assert residual_whiteness_z(X, torch.zeros(3000, dtype=torch.float64)) == 0.0
    assert neighbour_correlation(X, smooth) > 0.8  # all structure
    assert abs(neighbour_correlation(X, noise)) < 0.1
    with pytest.raises(ValueError, match="r must be"):
        residual_whiteness_z(X, noise[:10])
    with pytest.raises(ValueError, match="X must be"):
        nearest_neighbours(X[:1])


def test_restart_skipped_at_the_noise_floor_only():
    rng = np.random.default_rng(4)
    X = rng.uniform(1, 3, (2000, 2))
    y0 = X[:, 0] * X[:, 1]
    y = y0 + rng.normal(0, 0.01 * np.sqrt(np.mean(y0 ** 2)), len(y0))  # tol is out of reach
    kw = dict(population_size=200, generations=8, restart_generations=3, random_state=0, n_jobs=1)
    est = SymbolicRegressor(**kw).fit(X, y)
    assert est.score(X, y0) > 0.9999
    assert est.restart_structure_ is not None and est.restart_structure_ <= 0.25
    assert {h["phase"] for h in est.history_} == {0}  # the plain run already fits all but noise
    forced = SymbolicRegressor(restart_noise_share=None, **kw).fit(X, y)
    assert forced.restart_structure_ is None and {h["phase"] for h in forced.history_} == {0, 1}
    # noiseless but short of the formula (no sin): a smooth residual, so the restart runs
    ys = np.sin(X[:, 0]) * X[:, 1]
    short = SymbolicRegressor(function_set=("add", "mul"), **kw).fit(X, ys)
    assert short.restart_structure_ > 0.5 and {h["phase"] for h in short.history_} == {0, 1}


# ------------------------------------------------------------------ pruning weighted terms


def test_prune_candidates():
    from tensorgp.engine.expression import to_infix
    from tensorgp.sr.prune import candidates

    names = ["x0", "x1", "x2"]
    got = {to_infix(c, names) for c in candidates(parse("(x0 * x1) + (1e-7 * x2)", names))}
    assert "x0 * x1" in got.union({g.strip("()") for g in got})
    # a weight near 1 may be removed, one far from 1 only dropped with its term
    near = [to_infix(c, names) for c in candidates(parse("x0 / (x1 + (0.99 * x2))", names))]
    far = [to_infix(c, names) for c in candidates(parse("x0 / (x1 + (5 * x2))", names))]
    assert any("0.99" not in s and "x2" in s for s in near)
    assert all("x2" not in s for s in far) and len(far) == 1
    # 0 - c u becomes (-c) u; a product with the term removed disappears as a whole
    sub = [to_infix(c, names) for c in candidates(parse("(2 * x0) - (3 * x1)", names))]
    assert any("-3" in s and "x0" not in s for s in sub)
    assert candidates(parse("x0 * x1", names)) == []
    off = {to_infix(c, names).strip("()") for c in candidates(parse("(2e-06 + x0) * x1", names))}
    assert "x0 * x1" in off  # an offset set to 0


def test_regressor_prunes_a_negligible_term():
    from tensorgp.engine.expression import row, size
    from tensorgp.sr.losses import RegressionObjective

    rng = np.random.default_rng(5)
    X = torch.from_numpy(rng.uniform(1, 3, (500, 2)).astype(np.float32))
    y = (X[:, 0] * X[:, 1] + 0.3 * X[:, 0]).double()
    est = SymbolicRegressor(random_state=0)
    est._backend, est._functions = "torch", ("add", "mul")
    obj = RegressionObjective(X, y, "mse", True, "torch", "cpu", 1 << 17, generator=torch.Generator().manual_seed(0))
    pop = programs(["((x0 * x1) + (0.3 * x0)) + (1e-06 * x1)", "(x0 * x1) + (0.3 * x0)"], ["x0", "x1"])
    loss = obj.normalized(obj.losses(pop))
    out, out_loss, src = est._prune(pop, loss, obj, X, y)
    assert out.size == 1 and src.tolist() == [0]  # only the negligible term goes; 0.3 x0 is part of the fit
    node = row(out.ops, out.consts, out.length, 0)
    assert size(node) == 7 and float(out_loss[0]) <= float(loss[0]) * (1 + 1e-3) + 1e-9
    none = SymbolicRegressor(prune_tolerance=None, population_size=100, generations=2, random_state=0).fit(X.numpy(), y.numpy())
    assert none.score(X.numpy(), y.numpy()) > 0.99


@pytest.mark.parametrize("kw, match", [(dict(prune_tolerance=-1.0), "prune_tolerance"),
                                       (dict(restart_noise_share=2.0), "restart_noise_share")])
def test_bad_prune_and_noise_parameters(kw, match):
    X = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    with pytest.raises(ValueError, match=match):
        SymbolicRegressor(population_size=20, generations=1, **kw).fit(X, X[:, 0])
