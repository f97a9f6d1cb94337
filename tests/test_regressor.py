"""SymbolicRegressor: scikit-learn conventions, losses, constants, chunking, bad input, recovery."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from tensorgp import SymbolicRegressor
from tensorgp.sr import losses as LS
from tensorgp.sr.constants import jacobian, optimize_constants
from tensorgp.engine.expression import parse, to_postfix
from tensorgp.engine.population import Population, init_population
from tensorgp.engine.primitives import CONST, DEFAULT_FUNCTIONS, PrimitiveSet

SMALL = dict(population_size=200, generations=8, random_state=0, n_jobs=1)


def data(n=600, seed=0, m=3):
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 5, (n, m)).astype(np.float32)
    y = X[:, 0].astype(np.float64) * X[:, 1] + X[:, 2]
    return X, y


def programs(texts, variables):
    return Population.from_rows([to_postfix(parse(t, variables)) for t in texts])


# ------------------------------------------------------------------ scikit-learn conventions


def test_get_set_params_round_trip():
    est = SymbolicRegressor(generations=3, loss="mae")
    p = est.get_params()
    assert p["generations"] == 3 and p["loss"] == "mae" and "random_state" in p
    est2 = SymbolicRegressor(**p)
    assert est2.get_params() == p
    assert est.set_params(generations=5, linear_scaling=False) is est
    assert est.generations == 5 and est.linear_scaling is False
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        est.set_params(not_a_param=1)
    assert "generations=5" in repr(est) and "loss='mae'" in repr(est)
    assert not hasattr(est, "program_")  # the constructor sets hyperparameters only


def test_sklearn_clone_and_cross_val():
    sk = pytest.importorskip("sklearn")
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import cross_val_score

    est = SymbolicRegressor(population_size=60, generations=2, random_state=1, n_jobs=1)
    c = clone(est)
    assert c is not est and c.get_params() == est.get_params()
    assert is_regressor(est)
    X, y = data(200)
    scores = cross_val_score(est, X, y, cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores)), sk.__version__


def test_not_fitted():
    with pytest.raises(ValueError, match="not fitted"):
        SymbolicRegressor().predict(np.ones((3, 2)))


# ------------------------------------------------------------------ losses against references


LOSS_TEXTS = ["x0 * x1", "x0 + x2", "log(x0) * 3.5", "x2", "0.5"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore:An input array is constant")
@pytest.mark.parametrize("scaling", [True, False])
def test_builtin_losses_match_numpy(scaling):
    scipy_stats = pytest.importorskip("scipy.stats")
    X, _ = data(500, seed=3)
    rng = np.random.default_rng(4)
    y = X[:, 0].astype(np.float64) * X[:, 1] + rng.normal(0, 0.5, len(X))
    pop = programs(LOSS_TEXTS, ["x0", "x1", "x2"])
    f = np.stack([eval(t.replace("log", "np.log"), {"np": np}, {"x0": X[:, 0].astype(np.float64), "x1": X[:, 1].astype(np.float64),
                                                                  "x2": X[:, 2].astype(np.float64)}) * np.ones(len(X)) for t in LOSS_TEXTS])
    for loss in LS.LOSSES:
        obj = LS.RegressionObjective(torch.from_numpy(X), torch.from_numpy(y), loss, linear_scaling=scaling, backend="torch")
        got = obj.losses(pop).numpy()
        scaled = scaling or loss in LS.SCALE_FREE
        exp = []
        for fi in f:
            if scaled:
                var = fi.var()
                b = np.cov(fi, y, bias=True)[0, 1] / var if var > 1e-12 * fi.mean() ** 2 else 0.0
                p = y.mean() + b * (fi - fi.mean())
            else:
                p = fi
            if loss == "mse":
                exp.append(np.mean((p - y) ** 2))
            elif loss == "mae":
                exp.append(np.mean(np.abs(p - y)))
            elif loss == "r2":
                exp.append(np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))
            elif loss == "pearson":
                exp.append(1 - abs(np.corrcoef(fi, y)[0, 1]) if fi.std() > 0 else 1.0)
            elif loss == "spearman":
                exp.append(1 - abs(np.nan_to_num(scipy_stats.spearmanr(fi, y)[0])))
            else:
                exp.append(1 - abs(np.nan_to_num(scipy_stats.kendalltau(fi, y)[0])))
        np.testing.assert_allclose(got, exp, rtol=2e-5, atol=2e-6, err_msg=loss)


def test_nonfinite_program_is_invalid():
    X, y = data(100)
    X[0, 0] = 5.0  # exp clamps its input at 80, so exp(100) = 5.5e34 and its square overflows to inf on row 0 only
    pop = programs(["square(exp(x0 * 20))", "x0"], ["x0", "x1", "x2"])
    for loss in LS.LOSSES:
        obj = LS.RegressionObjective(torch.from_numpy(X), torch.from_numpy(y), loss)
        fit = obj(pop)
        assert torch.isnan(fit[0]) and torch.isfinite(fit[1]), loss


@pytest.mark.parametrize("loss", ["mse", "mae", "r2", "pearson", "spearman", "kendall"])
def test_every_loss_fits(loss):
    X, y = data(400)
    est = SymbolicRegressor(loss=loss, **SMALL).fit(X, y)
    assert est.score(X, y) > 0.9
    assert np.isfinite(est.loss_)


def test_callable_loss():
    X, y = data(400)
    calls = []

    def huber(pred, target):
        calls.append(pred.shape)
        r = (pred - target).abs()
        return torch.where(r < 1, 0.5 * r * r, r - 0.5).mean(1)

    est = SymbolicRegressor(loss=huber, **SMALL).fit(X, y)
    assert calls and calls[0][1] == len(y)
    assert est.score(X, y) > 0.9

    with pytest.raises(ValueError, match="one value per program"):
        SymbolicRegressor(loss=lambda p, t: p.mean(), **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="unknown loss"):
        SymbolicRegressor(loss="rmse").fit(X, y)


# ------------------------------------------------------------------ inputs


def test_dataframe_names_and_reordering():
    pd = pytest.importorskip("pandas")
    X, y = data(400)
    df = pd.DataFrame(X, columns=["mass", "speed", "offset 1"])
    est = SymbolicRegressor(**SMALL).fit(df, pd.Series(y))
    assert list(est.feature_names_in_) == ["mass", "speed", "offset 1"]
    assert est.variable_names_ == ["mass", "speed", "offset_1"]
    assert set(est.expression_.replace("(", " ").replace(")", " ").split()) & {"mass", "speed", "offset_1"}
    p1 = est.predict(df)
    p2 = est.predict(df[["offset 1", "mass", "speed"]])  # columns are matched by name
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError, match="missing"):
        est.predict(df[["mass", "speed"]])
    sym = est.to_sympy()
    assert {s.name for s in sym.free_symbols} <= {"mass", "speed", "offset_1"}


def test_torch_and_list_inputs():
    X, y = data(300)
    est = SymbolicRegressor(**SMALL).fit(torch.from_numpy(X), torch.from_numpy(y))
    out = est.predict(torch.from_numpy(X))
    assert torch.is_tensor(out) and out.shape == (300,)
    est2 = SymbolicRegressor(**SMALL).fit(X.tolist(), y.tolist())
    np.testing.assert_allclose(est2.predict(X), out.numpy())


@pytest.mark.parametrize("bad,match", [
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), y), r"X contains 1 non-finite .* row 2, column 1"),
    (lambda X, y: (X, np.where(np.arange(len(y)) == 5, np.inf, y)), r"y contains 1 non-finite .* row 5"),
    (lambda X, y: (np.full_like(X, 1e39, dtype=np.float64), y), "float32 range"),
    (lambda X, y: (X, y[:-1]), r"inconsistent numbers of samples: \[20, 19\]"),
    (lambda X, y: (X[:0], y[:0]), r"0 sample\(s\)"),
    (lambda X, y: (X[:, :0], y), r"0 feature\(s\)"),
    (lambda X, y: (X[:, 0], y), "Reshape your data"),
    (lambda X, y: (X, np.stack([y, y], 1)), r"y should be a 1d array, got an array of shape \(20, 2\)"),
    (lambda X, y: (np.array([["a"] * 3] * len(y)), y), "numeric"),
])
def test_bad_input_errors(bad, match):
    X, y = data(20)
    Xb, yb = bad(X, y)
    with pytest.raises(ValueError, match=match):
        SymbolicRegressor(**SMALL).fit(Xb, yb)


def test_predict_checks_features_and_finiteness():
    X, y = data(300)
    est = SymbolicRegressor(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but SymbolicRegressor is expecting 3 features"):
        est.predict(X[:, :2])
    Xn = X.copy()
    Xn[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 non-finite .* row 4, column 1"):  # scikit-learn's convention
        est.predict(Xn)


def test_constant_target():
    X, _ = data(50)
    y = np.full(50, 2.5)
    with pytest.warns(UserWarning, match="constant"):
        est = SymbolicRegressor(**SMALL).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), y)
    assert est.score(X, y) == 1.0 and est.expression_ == "2.5"
    assert float(est.to_sympy()) == 2.5


# ------------------------------------------------------------------ results


def test_recovers_simple_formula_and_results():
    sympy = pytest.importorskip("sympy")
    X, y = data(1000)
    est = SymbolicRegressor(population_size=300, generations=15, random_state=0, n_jobs=1).fit(X, y)
    assert est.score(X, y) > 1 - 1e-9
    x0, x1, x2 = sympy.symbols("x0 x1 x2")
    diff = est.to_sympy() - (x0 * x1 + x2)
    assert all(abs(float(c)) < 1e-4 for c in sympy.Poly(sympy.expand(diff), x0, x1, x2).coeffs()), est.expression_
    # Pareto front: complexity up, loss strictly down; the model is on it
    front = est.pareto_front_
    assert [e.complexity for e in front] == sorted({e.complexity for e in front})
    assert all(a.loss > b.loss for a, b in zip(front, front[1:]))
    assert any(e.expression == est.expression_ for e in front)
    assert len(est.hall_of_fame_) >= len(front)
    assert est.history_ and est.n_generations_ <= 15
    assert est.program_.size == 1 and est.complexity_ == int(est.program_.length[0])


def test_to_sympy_matches_predict():
    sympy = pytest.importorskip("sympy")
    rng = np.random.default_rng(1)
    X = rng.uniform(1, 3, (500, 2)).astype(np.float32)
    y = np.exp(-0.5 * X[:, 0].astype(np.float64)) * X[:, 1] + 0.3
    est = SymbolicRegressor(**SMALL).fit(X, y)
    x0, x1 = sympy.symbols("x0 x1")
    X64 = [X[:, 0].astype(np.float64), X[:, 1].astype(np.float64)]
    f = sympy.lambdify([x0, x1], est.to_sympy(), "numpy")
    assert np.corrcoef(f(*X64) * np.ones(len(X)), est.predict(X))[0, 1] > 0.999
    # every operator's mapping, on a domain where no protection threshold is hit
    prog = programs(["sqrt(log(x0 + 2.5)) / (exp(x1 * -0.5) - square(inv(x0 + 1.5))) + max(x0, neg(x1)) * min(abs(x0), tanh(x1))"],
                    ["x0", "x1"])
    est.program_, est.intercept_, est.slope_ = prog, 0.25, -1.5
    g = sympy.lambdify([x0, x1], est.to_sympy(), "numpy")
    np.testing.assert_allclose(g(*X64), est.predict(X), rtol=2e-6)


def test_max_time_stops_early():
    X, y = data(400, seed=6)
    y = np.sqrt(y) + np.log(X[:, 2])
    est = SymbolicRegressor(population_size=100, generations=1000, max_time=0.0, random_state=0, n_jobs=1).fit(X, y)
    assert est.n_generations_ == 0 and np.all(np.isfinite(est.predict(X)))


def test_determinism():
    X, y = data(400, seed=5)
    y = np.sqrt(y) + 0.1 * X[:, 0]
    a = SymbolicRegressor(**SMALL).fit(X, y)
    b = SymbolicRegressor(**SMALL).fit(X, y)
    assert a.expression_ == b.expression_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert [h["best_loss"] for h in a.history_] == [h["best_loss"] for h in b.history_]


# ------------------------------------------------------------------ chunking


def test_chunked_equals_unchunked():
    X, _ = data(5000, seed=2)
    rng = np.random.default_rng(0)
    y = np.log(X[:, 0].astype(np.float64)) * X[:, 1] + rng.normal(0, 0.1, len(X))
    g = torch.Generator().manual_seed(0)
    pset = PrimitiveSet(("x0", "x1", "x2"), DEFAULT_FUNCTIONS)
    pop = init_population(300, pset, g, max_len=32, depth_range=(1, 4), const_prob=0.2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for loss in ("mse", "mae", "r2", "pearson"):
        for scaling in (True, False):
            whole = LS.RegressionObjective(Xt, yt, loss, scaling).losses(pop)
            parts = LS.RegressionObjective(Xt, yt, loss, scaling, chunk_rows=777, chunk_elements=20_000).losses(pop)
            np.testing.assert_allclose(parts.numpy(), whole.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"{loss} {scaling}")
    est = SymbolicRegressor(**SMALL).fit(X, y)
    p = est.predict(X)
    est.chunk_rows = 123
    np.testing.assert_array_equal(est.predict(X), p)


def test_torch_reductions_match_numba(monkeypatch):
    """The device path (torch sums) and the CPU path (fused numba sums) agree."""
    X, y = data(3000, seed=7)
    g = torch.Generator().manual_seed(1)
    pop = init_population(100, PrimitiveSet(("x0", "x1", "x2"), DEFAULT_FUNCTIONS), g, max_len=24, depth_range=(1, 4))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(np.sqrt(y))
    ref = {(l, s): LS.RegressionObjective(Xt, yt, l, s, chunk_rows=1000).losses(pop) for l in LS.DECOMPOSABLE for s in (True, False)}
    monkeypatch.setattr(LS, "_HAVE_NUMBA", False)
    for (l, s), r in ref.items():
        got = LS.RegressionObjective(Xt, yt, l, s, chunk_rows=1000).losses(pop)
        np.testing.assert_allclose(got.numpy(), r.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"{l} {s}")


def test_memory_bounded_on_two_million_rows(monkeypatch):
    """Every evaluation block stays within chunk_rows x chunk_elements on 2M rows."""
    n = 2_000_000
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, (n, 2)).astype(np.float32)
    y = X[:, 0].astype(np.float64) * X[:, 1]
    seen = []
    real = LS.evaluate

    def spy(pop, Xc, backend="auto"):
        out = real(pop, Xc, backend)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(LS, "evaluate", spy)
    est = SymbolicRegressor(population_size=40, generations=1, chunk_rows=1 << 17, random_state=0, n_jobs=1).fit(X, y)
    assert max(seen) <= 1 << 23 and len(seen) > n // (1 << 17)
    assert est.score(X[:10000], y[:10000]) > 0.5


# ------------------------------------------------------------------ constants


def test_jacobian_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    pset = PrimitiveSet(("a", "b"), DEFAULT_FUNCTIONS)
    pop = init_population(64, pset, g, max_len=32, depth_range=(1, 5), const_prob=0.5)
    X = torch.rand(50, 2, generator=g) * 4 - 2
    f_nb, J_nb = jacobian(pop.ops, pop.consts, pop.length, X, backend="numba")
    f_t, J_t = jacobian(pop.ops, pop.consts, pop.length, X, backend="torch")
    ok = torch.isfinite(f_t) & (f_t.abs() < 1e6)
    torch.testing.assert_close(f_nb[ok], f_t[ok], rtol=1e-9, atol=1e-9)
    Jok = ok[:, None, :].expand_as(J_t) & torch.isfinite(J_t) & (J_t.abs() < 1e6)
    torch.testing.assert_close(J_nb[Jok], J_t[Jok], rtol=1e-9, atol=1e-9)
    # central differences through the float64 interpreter, away from protection thresholds
    from tensorgp.sr.constants import const_slots

    is_c, slot, C = const_slots(pop.ops, pop.length)
    h = 1e-6
    checked = 0
    for j in range(C):
        delta = torch.where(is_c & (slot == j), h, 0.0).double()
        fp, _ = jacobian(pop.ops, pop.consts.double() + delta, pop.length, X, backend="torch")
        fm, _ = jacobian(pop.ops, pop.consts.double() - delta, pop.length, X, backend="torch")
        fd = (fp - fm) / (2 * h)
        good = ok & torch.isfinite(fd) & (fd.abs() < 1e4) & (J_t[:, j].abs() < 1e4)
        assert torch.allclose(fd[good], J_t[:, j][good], rtol=1e-4, atol=1e-4)
        checked += int(good.sum())
    assert checked > 1000


def test_levenberg_marquardt_fits_inner_constant():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(0, 3, (400, 1)).astype(np.float32))
    y = 2.0 * torch.exp(-0.7 * X[:, 0].double()) + 1.0
    # with scaling: a wrong inner constant (same sign: crossing 0 would pass through the point
    # where exp(c x) is constant and the scaling degenerates), and a program without constants
    pop = programs(["exp(x0 * -0.2)", "x0"], ["x0"])
    new, sse0, sse1 = optimize_constants(pop, X, y, linear_scaling=True, steps=10)
    assert sse1[0] < 1e-10 * sse0[0]
    assert abs(float(new.consts[0][new.ops[0] == CONST][0]) + 0.7) < 1e-5
    assert sse1[1] == sse0[1] and torch.equal(new.consts[1], pop.consts[1])
    # without scaling every constant is free, and the sign change is no obstacle
    pop = programs(["(exp(x0 * 0.1) * 0.5) + 0.0"], ["x0"])
    new, sse0, sse1 = optimize_constants(pop, X, y, linear_scaling=False, steps=40)
    c = new.consts[0][new.ops[0] == CONST]
    assert sse1[0] < 1e-10 * sse0[0], c
    torch.testing.assert_close(c, torch.tensor([-0.7, 2.0, 1.0]), rtol=1e-5, atol=1e-5)


def test_import_is_lazy():
    code = "import sys, tensorgp; assert 'tensorgp.sr.regressor' not in sys.modules; tensorgp.SymbolicRegressor; assert 'tensorgp.sr.regressor' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
