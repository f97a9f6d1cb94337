"""What ``SymbolicRegressor`` accepts: X, y, sample weights, ``random_state``, and the fitted check.

scikit-learn is a soft dependency. When it is installed the estimator derives from its
``BaseEstimator``/``RegressorMixin`` and these checks run through its own utilities
(``validate_data``, ``check_is_fitted``, ``NotFittedError``, ``column_or_1d``,
``check_consistent_length``), so ``n_features_in_``, ``feature_names_in_``, the messages and
the warnings are scikit-learn's. Without it the same rules hold with the same phrases, from the
fallbacks below. torch tensors never go through scikit-learn (they may live on a GPU): they get
the fallback checks and keep their device.

On top of either path: X is cast to float32 and y to float64, and both must then be finite
(a value beyond the float32 range becomes inf and is reported as such), with a message naming
the first bad row and column; complex values and duplicate column names are errors.
"""
from __future__ import annotations

import inspect
import numbers
import re
import warnings
from typing import Any

import numpy as np
import torch

from ..engine.primitives import OPCODE

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError
    from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

    HAVE_SKLEARN = True
    EstimatorBase: tuple[type, ...] = (RegressorMixin, BaseEstimator)
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    HAVE_SKLEARN = False

    class NotFittedError(ValueError, AttributeError):
        """Raised when a method that needs a fitted model is called before ``fit``."""

    class DataConversionWarning(UserWarning):
        """A column vector y was given where a 1-D y is expected."""

    class _ParamsMixin:
        """``get_params``/``set_params``/``repr`` from the constructor's signature, as
        scikit-learn's ``BaseEstimator`` derives them."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params: Any):
            valid = set(self._get_param_names())
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"Invalid parameter {k!r} for estimator {type(self).__name__}; "
                                     f"valid: {', '.join(sorted(valid))}")
                setattr(self, k, v)
            return self

        def __repr__(self) -> str:
            changed = []
            for k, p in inspect.signature(type(self).__init__).parameters.items():
                if k == "self":
                    continue
                v = getattr(self, k)
                try:
                    same = bool(v == p.default)
                except Exception:
                    same = v is p.default
                if not same:
                    changed.append(f"{k}={v!r}")
            return f"{type(self).__name__}({', '.join(changed)})"

    EstimatorBase = (_ParamsMixin,)


def use_sklearn() -> bool:
    """Whether the checks go through scikit-learn (a function, so tests can switch it off)."""
    return HAVE_SKLEARN


# ------------------------------------------------------------------------------- names


def is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "to_numpy") and getattr(X, "ndim", 2) == 2


def sanitize(names: list[str]) -> list[str]:
    """Names usable in formulas the parser reads back: characters outside ``[A-Za-z0-9_]`` -> ``_``,
    no leading digit, not a number word (``nan``, ``inf``) or an operator's name, unique."""
    reserved = {"nan", "inf"} | set(OPCODE)
    out: list[str] = []
    for n in names:
        s = re.sub(r"[^A-Za-z0-9_]", "_", n) or "x"
        if s[0].isdigit():
            s = "x_" + s
        if s in reserved:
            s = s + "_"
        base, k = s, 1
        while s in out:
            s, k = f"{base}_{k}", k + 1
        out.append(s)
    return out


def _frame_names(X: Any) -> list[str] | None:
    """String column names of a frame (None for other inputs or non-string names); duplicates
    are an error, since predict matches columns by name."""
    if not is_frame(X):
        return None
    cols = list(X.columns)
    seen, dup = set(), []
    for c in cols:
        if c in seen and c not in dup:
            dup.append(c)
        seen.add(c)
    if dup:
        raise ValueError(f"X has duplicate column names {dup}; give every column a unique name "
                         "(predict matches columns by name)")
    return [str(c) for c in cols] if all(isinstance(c, str) for c in cols) else None


# ------------------------------------------------------------------------------- arrays


def _nonfinite_message(what: str, bad: np.ndarray) -> str:
    pos = np.argwhere(bad)
    first = pos[0].tolist()
    where = f"row {first[0]}" + (f", column {first[1]}" if len(first) > 1 else "")
    return (f"{what} contains {len(pos)} non-finite value(s) (NaN or inf, or beyond the float32 range "
            f"for X), first at {where}; remove or impute them")


def _reject_complex(X: Any, what: str) -> None:
    """Complex input is an error (a cast would silently drop the imaginary part); checked on the
    dtype(s) where there are some, so a large array is not scanned."""
    if torch.is_tensor(X):
        kinds = "c" if X.is_complex() else ""
    elif is_frame(X):
        kinds = "".join(getattr(d, "kind", "O") for d in X.dtypes)
    elif hasattr(X, "dtype") and not _is_sparse(X):
        kinds = X.dtype.kind
    else:
        kinds = "" if _is_sparse(X) else ("c" if np.iscomplexobj(np.asarray(X, dtype=object).tolist()) else "")
    if "c" in kinds or ("O" in kinds and not _is_sparse(X) and _has_complex_objects(X)):
        raise ValueError(f"Complex data not supported in {what}: tensorgp fits real-valued data only")


def _has_complex_objects(X: Any) -> bool:
    arr = X.to_numpy() if is_frame(X) else np.asarray(X)
    return any(isinstance(v, complex) for v in arr.ravel()[:100_000].tolist())


def _is_sparse(X: Any) -> bool:
    return hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse")


def _fallback_array(X: Any, what: str) -> np.ndarray:
    """Any array-like -> numeric numpy array, refusing sparse, complex and non-numeric data."""
    if _is_sparse(X):
        raise TypeError(f"sparse data was passed for {what}, but dense data is required; use .toarray()")
    arr = X.to_numpy() if is_frame(X) else np.asarray(X)
    if arr.dtype.kind not in "biuf":
        try:
            cast = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} must be numeric: {e}") from e
        arr = cast
    return arr


def _check_shape(arr: np.ndarray | torch.Tensor, name: str) -> None:
    shape = tuple(arr.shape)
    if len(shape) != 2:
        hint = "Reshape your data either using array.reshape(-1, 1) if it has a single feature or array.reshape(1, -1) if it contains a single sample"
        raise ValueError(f"Expected a 2D array for X, got shape {shape}" + (f". {hint}" if len(shape) == 1 else ""))
    if shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={shape}) while a minimum of 1 is required by {name}.")
    if shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required by {name}.")


def _as_float32(X: Any, allow_nonfinite: bool = False) -> torch.Tensor:
    """A validated numeric 2-D array or tensor -> ``float32[N, m]`` tensor; finite unless allowed."""
    if torch.is_tensor(X):
        t = X.detach().to(torch.float32)
    else:
        with np.errstate(over="ignore"), warnings.catch_warnings():  # beyond float32 range -> inf, reported below
            # a read-only array (a memmap, a broadcast view) is only ever read: no copy for torch's sake
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(np.array(X, dtype=np.float32, copy=None, order="C"))
    if not allow_nonfinite:
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(_nonfinite_message("X", bad.cpu().numpy()))
    return t


def _check_tensor_X(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.is_sparse:
        raise TypeError("sparse data was passed for X, but dense data is required; use .to_dense()")
    _check_shape(t, name)
    return t


def _n_features_message(name: str, got: int, want: int) -> str:
    return f"X has {got} features, but {name} is expecting {want} features as input."


def fit_X(est: Any, X: Any) -> tuple[torch.Tensor, list[str] | None]:
    """Check the training X, set ``n_features_in_`` (and ``feature_names_in_`` for a frame
    with string column names). Returns ``(float32[N, m] tensor, column names or None)``."""
    name = type(est).__name__
    _reject_complex(X, "X")
    names = _frame_names(X)
    if torch.is_tensor(X):
        t = _as_float32(_check_tensor_X(X, name))
    elif use_sklearn():
        arr = validate_data(est, X, reset=True, dtype="numeric", ensure_all_finite=False)
        t = _as_float32(arr)
    else:
        arr = _fallback_array(X, "X")
        _check_shape(arr, name)
        t = _as_float32(arr)
    est.n_features_in_ = int(t.shape[1])
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_
    return t, names


def fit_y(est: Any, y: Any, n: int) -> torch.Tensor:
    """Check the target: ``float64[N]`` CPU tensor (a ``[N, 1]`` column is accepted with a
    ``DataConversionWarning``)."""
    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target y is None")
    _reject_complex(y, "y")
    if torch.is_tensor(y):
        arr = y.detach().to("cpu", torch.float64).numpy()
    elif use_sklearn():
        from sklearn.utils import check_array

        arr = check_array(y, ensure_2d=False, dtype="numeric", ensure_all_finite=False, input_name="y")
    else:
        arr = _fallback_array(y, "y")
    if arr.ndim == 2 and arr.shape[1] == 1:
        if use_sklearn():
            arr = column_or_1d(arr, warn=True)
        else:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is raveled",
                          DataConversionWarning, stacklevel=3)
            arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {tuple(arr.shape)} instead "
                         "(one target per row)")
    if len(arr) != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n}, {len(arr)}] (X, y)")
    t = torch.from_numpy(np.array(arr, dtype=np.float64, copy=True))
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(_nonfinite_message("y", bad.numpy()))
    return t


def check_fitted(est: Any, attribute: str = "program_") -> None:
    if use_sklearn():
        check_is_fitted(est, attribute)
    elif not hasattr(est, attribute):
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with "
                             "appropriate arguments before using this estimator.")


def predict_X(est: Any, X: Any) -> torch.Tensor:
    """Check X for ``predict``/``score`` of a fitted estimator: same features as in fit (a
    frame's columns are matched by name when fit saw names), finite. ``float32[N, m]``."""
    check_fitted(est)
    name = type(est).__name__
    _reject_complex(X, "X")
    fitted_names = getattr(est, "feature_names_in_", None)
    cols = _frame_names(X)  # duplicates are an error here too
    if fitted_names is not None and is_frame(X):
        cols = cols or [str(c) for c in X.columns]
        missing = [c for c in fitted_names if c not in cols]
        if missing:
            raise ValueError(f"X is missing the column(s) {missing} seen in fit")
        X = X[list(fitted_names)]
    if torch.is_tensor(X):
        t = _check_tensor_X(X, name)
    elif use_sklearn():
        t = validate_data(est, X, reset=False, dtype="numeric", ensure_all_finite=False)
    else:
        t = _fallback_array(X, "X")
        _check_shape(t, name)
    if t.shape[1] != est.n_features_in_:
        raise ValueError(_n_features_message(name, int(t.shape[1]), est.n_features_in_))
    return _as_float32(t)


def sample_weights(w: Any, n: int) -> torch.Tensor:
    """``float64[n]`` weights: None -> ones; finite, non-negative, one per row, positive sum."""
    if w is None:
        return torch.ones(n, dtype=torch.float64)
    arr = (w.detach().to("cpu", torch.float64).numpy() if torch.is_tensor(w)
           else np.asarray(w, dtype=np.float64))
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"sample_weight has shape {arr.shape}, expected ({n},): one weight per row of X")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError("sample_weight must be finite and non-negative with a positive sum")
    return torch.from_numpy(arr.copy())


def seed_from(random_state: Any) -> int:
    """The fit's integer seed: an int as it is, a ``numpy.random.RandomState`` or ``Generator``
    draws one (advancing it, as scikit-learn estimators do), None draws from numpy's global RNG."""
    if random_state is None:
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state={random_state!r} must be None, an int, a numpy RandomState or a numpy Generator")
