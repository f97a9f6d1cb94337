"""The regressor's Pareto front: the table, selection rules, validation losses, per-entry use."""
import math

import numpy as np
import pytest
import torch

from tensorgp import SymbolicRegressor
from tensorgp.sr.pareto import ParetoFront, select


def data(n=600, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 5, (n, 3))
    return X, X[:, 0] * X[:, 1] + X[:, 2] + rng.normal(0, noise, n)


@pytest.fixture(scope="module")
def fitted():
    X, y = data()
    est = SymbolicRegressor(population_size=200, generations=8, random_state=0, n_jobs=1, validation_fraction=0.25).fit(X, y)
    return est, X, y


def test_select_rules():
    loss = [10.0, 1.0, 0.5, 0.101, 0.1]
    cx = [1, 3, 5, 9, 20]
    assert select(loss, cx, "best") == 4
    assert select(loss, cx, "accuracy", 0.01) == 3  # the simplest within 1% of the best
    assert select(loss, cx, "accuracy", 0.0) == 4
    # knee: among losses <= 0.15 (1.5x best), the steepest log drop per node: 0.5 -> 0.101 over 4 nodes
    assert select(loss, cx, "knee") == 3
    assert select([math.nan, 2.0, 1.0], [1, 2, 3], "best") == 2
    assert select([math.inf, math.nan], [1, 2], "accuracy") == 1  # nothing finite: the last entry
    with pytest.raises(ValueError, match="model_selection='fast'"):
        select(loss, cx, "fast")


def test_front_table_and_entries(fitted):
    est, X, y = fitted
    front = est.pareto_front_
    assert isinstance(front, ParetoFront) and len(front) >= 2
    cx = [e.complexity for e in front]
    assert cx == sorted(set(cx))
    assert all(a.loss > b.loss for a, b in zip(front, front[1:]))
    assert front[front.selected].expression == est.expression_
    text = str(front)
    assert text.splitlines()[0].split() == ["#", "complexity", "loss", "val_loss", "expression"]
    assert sum("<- selected" in line for line in text.splitlines()) == 1
    rows = front.to_dicts()
    assert [r["complexity"] for r in rows] == cx and sum(r["selected"] for r in rows) == 1
    with pytest.raises(IndexError, match=f"has {len(front)} entries"):
        est.predict(X, index=len(front))


def test_predict_sympy_latex_per_entry(fitted):
    sympy = pytest.importorskip("sympy")
    est, X, y = fitted
    syms = sympy.symbols("x0 x1 x2")
    for k, e in enumerate(est.pareto_front_):
        p = est.predict(X, index=k)
        f = sympy.lambdify(syms, est.to_sympy(index=k), "numpy")
        np.testing.assert_allclose(f(*X.T) * np.ones(len(X)), p, rtol=1e-5, atol=1e-6)
        assert est.to_latex(index=k) == sympy.latex(est.to_sympy(index=k))
        assert e.to_sympy() == est.to_sympy(index=k)
    np.testing.assert_array_equal(est.predict(X, index=est.pareto_front_.selected), est.predict(X))
    assert "x_{0}" in est.to_latex()


def test_validation_losses_are_held_out_mse(fitted):
    est, X, y = fitted
    Xt, yt = torch.from_numpy(X).float(), torch.from_numpy(y)
    _, _, Xv, yv = est._hold_out(Xt, yt, 0)
    assert len(yv) == 150
    for k, e in enumerate(est.pareto_front_):
        # the entry's own intercept and slope (fitted on the training rows), not refitted
        mse = float(np.mean((est.predict(Xv.numpy(), index=k) - yv.numpy()) ** 2))
        assert e.val_loss == pytest.approx(mse, rel=1e-5)
    val = [e.val_loss for e in est.pareto_front_]
    best = min(val)
    assert est.pareto_front_.selected == next(i for i, v in enumerate(val) if v <= best * 1.01)


def test_pandas_table(fitted):
    pytest.importorskip("pandas")
    pytest.importorskip("sympy")
    est, _, _ = fitted
    df = est.pareto_front_.to_pandas()
    assert list(df.columns) == ["complexity", "loss", "val_loss", "expression", "sympy", "selected"]
    assert len(df) == len(est.pareto_front_) and int(df["selected"].to_numpy().nonzero()[0][0]) == est.pareto_front_.selected


@pytest.mark.parametrize("rule", ["best", "knee"])
def test_model_selection_rules_pick_from_front(rule):
    X, y = data(400, seed=1)
    est = SymbolicRegressor(population_size=150, generations=6, random_state=0, n_jobs=1, model_selection=rule).fit(X, y)
    front = est.pareto_front_
    assert front.rule == rule
    assert front.selected == select([e.loss for e in front], [e.complexity for e in front], rule)
    if rule == "best":
        assert est.loss_ == min(e.loss for e in front)
    with pytest.raises(ValueError, match="model_selection='nope'"):
        SymbolicRegressor(model_selection="nope").fit(X, y)
