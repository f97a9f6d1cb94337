"""SymbolicRegressor against scikit-learn's own estimator checks, bad inputs and their
messages, and the fallback used when scikit-learn is not installed."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tensorgp import SymbolicRegressor

TINY = dict(population_size=40, generations=2, random_state=0, n_jobs=1)


def data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 5, (n, 3))
    return X, X[:, 0] * X[:, 1] + X[:, 2]


# ------------------------------------------------------------------ scikit-learn's checks

try:
    from sklearn.utils.estimator_checks import parametrize_with_checks
except ImportError:  # pragma: no cover - sklearn is optional
    parametrize_with_checks = None

if parametrize_with_checks is not None:
    @parametrize_with_checks([SymbolicRegressor(population_size=50, generations=2, n_jobs=1)])
    def test_sklearn_estimator_checks(estimator, check):
        check(estimator)


def test_sklearn_base_classes():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import BaseEstimator, is_regressor

    est = SymbolicRegressor()
    assert isinstance(est, BaseEstimator) and is_regressor(est), sklearn.__version__
    tags = est.__sklearn_tags__()
    assert tags.target_tags.required and not tags.input_tags.allow_nan and not tags.input_tags.sparse


# ------------------------------------------------------------------ bad inputs and their messages


def test_complex_input_is_an_error():
    X, y = data()
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        SymbolicRegressor(**TINY).fit(X + 1j, y)
    with pytest.raises(ValueError, match="Complex data not supported in y"):
        SymbolicRegressor(**TINY).fit(X, y.astype(complex))
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        SymbolicRegressor(**TINY).fit(torch.from_numpy(X).to(torch.complex64), y)
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        SymbolicRegressor(**TINY).fit([[1 + 2j, 1.0]] * 5, [1.0] * 5)
    est = SymbolicRegressor(**TINY).fit(X, y)
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        est.predict(X.astype(complex))


@pytest.mark.parametrize("rs", [np.random.RandomState(0), np.random.default_rng(0)])
def test_random_state_objects(rs):
    X, y = data()
    kind = type(rs)
    a = SymbolicRegressor(**{**TINY, "random_state": kind(0) if kind is np.random.RandomState else np.random.default_rng(0)}).fit(X, y)
    b = SymbolicRegressor(**{**TINY, "random_state": rs}).fit(X, y)
    assert a.expression_ == b.expression_  # same state, same fit
    with pytest.raises(ValueError, match="random_state='zero' must be None, an int"):
        SymbolicRegressor(**{**TINY, "random_state": "zero"}).fit(X, y)


@pytest.mark.parametrize("factor", [1e100, 1e200, 1e-100])
def test_extreme_target_scales(factor):
    X, y = data()
    full = SymbolicRegressor(**TINY).fit(X, y * factor)  # with the restart: LM on many programs
    assert "inf" not in full.expression_ and "nan" not in full.expression_ and full.score(X, y * factor) > 0.999
    # the same search as on y: only without the restart, whose many float32 LM fits make the path
    # chaotic (rounding differs at another scale and the population is tiny)
    est = SymbolicRegressor(**TINY, restart_generations=0).fit(X, y)
    big = SymbolicRegressor(**TINY, restart_generations=0).fit(X, y * factor)
    assert "inf" not in big.expression_ and "nan" not in big.expression_
    assert big.score(X, y * factor) == pytest.approx(est.score(X, y), abs=1e-6)  # float32 constants
    # y * factor / unit differs from y by a factor that is not a power of two, so LM's float32
    # constants (leaf weights in the restart and the polish) may round differently: float32 tolerance
    np.testing.assert_allclose(big.predict(X) / factor, est.predict(X), rtol=1e-6)
    assert all(np.isfinite(e.intercept) and np.isfinite(e.slope) for e in big.pareto_front_)


def _printed(est, X):
    """``expression_`` evaluated as printed (products, sums and squares only here)."""
    return eval(est.expression_, {"square": np.square, **{f"x{j}": X[:, j] for j in range(X.shape[1])}})


@pytest.mark.parametrize("target", ["tiny", "offset"])
def test_the_printed_expression_predicts_what_predict_does(target):
    """Constants below float32's normal range are printed, not flushed to 0; an intercept that
    dwarfs the target's spread gets the digits the spread needs."""
    X, y = data()
    y = y * 1e-50 if target == "tiny" else 123456.789 + X[:, 0] * X[:, 1] / 10
    est = SymbolicRegressor(population_size=200, generations=4, random_state=0, n_jobs=1, restart_generations=0,
                            function_set=("add", "mul", "square")).fit(X, y)
    assert np.abs(_printed(est, X) - est.predict(X)).max() <= 1e-4 * y.std()


def test_nan_tolerances_and_a_negative_time_budget_are_rejected():
    X, y = data()
    for bad in (dict(selection_tolerance=float("nan")), dict(tol=float("nan")), dict(max_time=-1)):
        with pytest.raises(ValueError, match="must be"):
            SymbolicRegressor(**TINY, **bad).fit(X, y)


def test_score_sample_weight_checked():
    X, y = data()
    est = SymbolicRegressor(**TINY).fit(X, y)
    with pytest.raises(ValueError, match=r"sample_weight has shape \(5,\), expected \(200,\)"):
        est.score(X, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        est.score(X, y, sample_weight=-np.ones(200))
    w = np.zeros(200)
    w[:100] = 1
    assert est.score(X, y, sample_weight=w) == pytest.approx(est.score(X[:100], y[:100]), abs=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error():
    X, y = data()
    with pytest.raises(ValueError, match=r"device='cuda': device 'cuda' requested but torch sees no CUDA device"):
        SymbolicRegressor(**{**TINY, "device": "cuda"}).fit(X, y)
    with pytest.raises(ValueError, match=r"device='bogus': unknown device"):
        SymbolicRegressor(**{**TINY, "device": "bogus"}).fit(X, y)


def test_duplicate_column_names():
    pd = pytest.importorskip("pandas")
    X, y = data()
    df = pd.DataFrame(X, columns=["m", "m", "r"])
    with pytest.raises(ValueError, match=r"X has duplicate column names \['m'\]"):
        SymbolicRegressor(**TINY).fit(df, y)
    est = SymbolicRegressor(**TINY).fit(X, y)
    with pytest.raises(ValueError, match="duplicate column names"):
        est.predict(df)


def test_structural_errors_and_warnings():
    sp = pytest.importorskip("scipy.sparse")
    X, y = data()
    with pytest.raises(TypeError, match="(?i)sparse"):
        SymbolicRegressor(**TINY).fit(sp.csr_matrix(X), y)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        SymbolicRegressor(**TINY).fit(X, None)
    with pytest.warns(UserWarning, match="(?i)column-vector y"):  # DataConversionWarning is a UserWarning
        SymbolicRegressor(**TINY).fit(X, y[:, None])
    with pytest.raises(ValueError, match="validation_fraction=1.5 must be None or a share in"):
        SymbolicRegressor(**{**TINY, "validation_fraction": 1.5}).fit(X, y)


# ------------------------------------------------------------------ without scikit-learn

FALLBACK = textwrap.dedent("""
    import sys, warnings
    sys.modules["sklearn"] = None  # import sklearn -> ImportError
    import numpy as np
    from tensorgp import SymbolicRegressor
    from tensorgp.sr import inputs
    assert not inputs.HAVE_SKLEARN
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, (200, 3)); y = X[:, 0] * X[:, 1] + X[:, 2]
    est = SymbolicRegressor(population_size=40, generations=2, random_state=np.random.RandomState(0), n_jobs=1)
    assert "population_size=40" in repr(est) and est.get_params()["generations"] == 2
    def fails(fn, exc, text):
        try:
            fn()
        except exc as e:
            assert text in str(e), (text, str(e))
        else:
            raise AssertionError("no error: " + text)
    fails(lambda: est.predict(X), inputs.NotFittedError, "is not fitted yet")
    fails(lambda: est.set_params(nope=1), ValueError, "Invalid parameter 'nope'")
    est.fit(X, y)
    assert est.n_features_in_ == 3 and est.score(X, y) > 0.5
    fails(lambda: est.predict(X[:, :2]), ValueError, "X has 2 features, but SymbolicRegressor is expecting 3")
    fails(lambda: est.fit(X + 1j, y), ValueError, "Complex data not supported in X")
    fails(lambda: est.fit(X[:, 0], y), ValueError, "Reshape your data")
    fails(lambda: est.fit(X[:, :0], y), ValueError, "0 feature(s)")
    fails(lambda: est.fit(X, None), ValueError, "requires y to be passed")
    fails(lambda: est.fit(X, y[:-1]), ValueError, "inconsistent numbers of samples")
    fails(lambda: est.fit([["a"] * 3] * 5, [1.0] * 5), ValueError, "X must be numeric")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        est.fit(X, y[:, None])
    assert any("column-vector y" in str(x.message) for x in w)
    print("fallback ok")
""")


def test_works_without_sklearn():
    out = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True)
    assert out.returncode == 0 and "fallback ok" in out.stdout, out.stderr[-3000:]


def test_column_names_become_names_the_formula_parser_reads_back():
    from tensorgp.engine.expression import parse, to_infix
    from tensorgp.sr.inputs import sanitize

    names = sanitize(["nan", "inf", "sin", "α", "x 1", "1a", "a", "a"])
    assert names == ["nan_", "inf_", "sin_", "_", "x_1", "x_1a", "a", "a_1"]
    text = " + ".join(names)
    assert to_infix(parse(text, names), names).count("+") == len(names) - 1  # every name is a variable
