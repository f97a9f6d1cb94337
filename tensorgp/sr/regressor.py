"""``SymbolicRegressor``: symbolic regression with scikit-learn conventions on the tensorgp engine.

    from tensorgp import SymbolicRegressor
    est = SymbolicRegressor(generations=20, random_state=0).fit(X, y)
    est.expression_, est.predict(X_new), est.score(X_test, y_test), est.to_sympy()

Inputs: numpy arrays, torch tensors, pandas DataFrames/Series (column names become variable
names, after replacing characters that cannot appear in a name by ``_``) or nested lists;
neither pandas nor scikit-learn is needed (with scikit-learn installed the estimator is one of
its ``BaseEstimator``s and validates through its utilities; see ``inputs``). ``fit``,
``predict`` and ``score`` require finite X (and y): NaN/inf raise a ValueError that says
where. A constant y is not an error: a UserWarning is issued and the model is that
constant (``expression_`` is the value, ``score`` is 1.0 on data where y is that constant).

How a fit runs:

* Evolution: ``tensorgp.engine.evolve.Evolver`` (tournament selection, subtree crossover and
  subtree/hoist/point mutation, elitism) with ``losses.RegressionObjective`` as its fitness,
  ``-loss / scale`` (see ``losses``), minus ``parsimony_coefficient * length``.
* Linear scaling (``linear_scaling=True``, default): each program f is scored as the
  least-squares ``a + b f`` (closed form from row sums, batched over the population), and
  the model is that scaled expression. Scale-free losses (pearson, spearman, kendall) always
  get it for prediction.
* Constants: ephemeral random constants (``const_prob`` of terminals, uniform in
  ``const_range``). With ``const_optimization=True`` (default) the ``const_opt_elites`` best
  programs that contain constants and were not optimised yet get ``const_opt_steps``
  Levenberg-Marquardt iterations on ``const_opt_rows`` fixed random rows after every generation
  (exact Jacobians from a forward-mode interpreter, ``tensorgp.sr.constants``); improved constants
  are written back into the population (Lamarckian) when the real loss on all rows improves.
  At the end every program of the Pareto front gets a longer polish (3x the steps, on up to
  16x the rows) the same way.
* Memetic restart (``restart_generations`` > 0, default 30): when the run above ends without
  reaching ``tol`` (and time is left), a second phase starts from a fresh random population and
  runs ``restart_generations`` more generations in which LM tunes the best not-yet-tuned
  ``restart_opt_share`` (default 0.6) of the population every generation (half the steps, a
  quarter of the rows); it ends early once its last ``restart_patience`` (default 10)
  generations lowered the best loss (of both phases) by less than 1%. With ``weighted_leaves``
  (default; needs ``mul``) every variable leaf there also gets a coefficient for LM to tune
  (``tensorgp.sr.leaf_weights``); a weight is kept only where LM moved it from 1 and the
  program's selection fitness (loss plus parsimony) improves. This is what
  finds structures that are only good once an inner coefficient is right (``-0.05 x^2 - sin y``:
  ``sin(y) + square(x)`` is poor until x is weighted), which the plain run, tuning 4 elites,
  rarely sees; the plain run is kept first because cheap unweighted search finds constant-free
  formulas (Nguyen-5) that the weighted phase buries under weighted approximations. Both phases
  share the hall of fame; the final polish also weights leaves. In the restart, LM tunes each
  program *structure* (opcodes, constants ignored) once, so its budget goes to distinct
  structures rather than to copies that differ only in constants.
* Noise-floor test (``restart_noise_share``, default 0.25): before the restart, the residual of
  the best model so far is checked for structure left to fit (``tensorgp.sr.noise_floor``: the
  correlation of each row's residual with its nearest neighbour's, which estimates the share of
  the residual that is structure rather than noise). At most ``restart_noise_share`` means the
  model already fits everything but noise, up to a part the restart could only shave a little
  off, so the restart is skipped; with noisy targets ``tol`` is never reached and this is what
  keeps those fits from paying for a restart that cannot help. None always runs the restart.
* Pruning (``prune_tolerance``, default 1e-3): after the final polish, the front programs the
  model selection could pick (loss within ``selection_tolerance`` of the best) are pruned
  greedily of coefficient terms (``tensorgp.sr.prune``): a term ``c * t`` or an offset dropped,
  or a weight within 0.1 of 1 removed, constants re-fitted (``const_opt_steps`` LM steps on
  ``const_opt_rows`` rows), kept while the normalised loss stays within ``prune_tolerance``
  (relative, plus 1e-9) of the program's own; the pruned program replaces its original. This
  removes leftovers such as ``1e-7 * x0`` and weights like ``0.988`` fitted to noise. None
  disables it.
* Rows are evaluated in chunks of ``chunk_rows`` (and program blocks of a bounded number of
  values), so memory stays bounded for tens of millions of rows; on CUDA, data over 1 GiB is
  streamed to the device chunk by chunk.
* Results: a hall of fame holds the best program of every length (complexity) seen; its
  non-dominated members are ``pareto_front_``. The model (``program_``, ``expression_``) is the
  simplest front member whose training loss is within ``selection_tolerance`` (relative) of
  the best. ``tol`` stops the run early once the best normalised loss reaches it.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from ..engine import expression as E
from ..engine.device import resolve_device
from ..engine.export import node_to_sympy
from .constants import optimize_constants
from .leaf_weights import add_weights, drop_unit_weights
from .noise_floor import neighbour_correlation
from . import prune as P
from .inputs import NotFittedError  # noqa: F401 (re-exported)
from .inputs import EstimatorBase, check_fitted, fit_X, fit_y, predict_X, sample_weights, sanitize, seed_from
from ..engine.evaluate import evaluate, resolve_backend
from ..engine.evolve import EvolutionConfig, Evolver
from .losses import RegressionObjective, check_loss, loss_unit, y_unit
from .pareto import SELECTIONS, FittedProgram, ParetoFront, select
from .streaming import as_source, fit_source
from ..engine.population import Population, first_new, pad_to, program_depth, program_keys
from ..engine.primitives import CONST, FIRST_VAR, OPCODE, PrimitiveSet, function
from ..engine.variation import VariationRates

SR_FUNCTIONS = ("add", "sub", "mul", "div", "sqrt", "log", "exp", "square", "sin", "cos")


class _threads:
    """Temporarily set torch's intra-op thread count (None: leave it)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.n is not None:
            if int(self.n) < 1:
                raise ValueError("n_jobs must be >= 1 or None")
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        if self.n is not None:
            torch.set_num_threads(self.prev)
        return False


# ------------------------------------------------------------------------------- hall of fame


class _Archive:
    """Best program (lowest normalised loss) of every length 1..L seen so far."""

    def __init__(self, L: int, device: torch.device):
        self.L = L
        self.ops = torch.zeros(L + 1, L, dtype=torch.int32, device=device)
        self.consts = torch.zeros(L + 1, L, device=device)
        self.length = torch.zeros(L + 1, dtype=torch.int32, device=device)
        self.loss = torch.full((L + 1,), math.inf, dtype=torch.float64, device=device)

    def update(self, pop: Population, loss: torch.Tensor) -> None:
        dev = self.loss.device
        pop = pop.to(dev)
        loss = torch.nan_to_num(loss.to(dev, torch.float64), nan=math.inf)
        lengths = pop.length.long().clamp(max=self.L)
        best = torch.full_like(self.loss, math.inf).scatter_reduce(0, lengths, loss, "amin")
        hit = (loss == best[lengths]) & torch.isfinite(loss)
        P = pop.size
        first = torch.full((self.L + 1,), P, dtype=torch.long, device=dev)
        first.scatter_reduce_(0, lengths[hit], torch.arange(P, device=dev)[hit], "amin")
        take = (best < self.loss) & (first < P)
        rows = first[take]
        self.ops[take] = pad_to(pop.ops[rows], self.L)
        self.consts[take] = pad_to(pop.consts[rows], self.L)
        self.length[take] = pop.length[rows]
        self.loss[take] = best[take]

    def entries(self) -> tuple[Population, torch.Tensor, torch.Tensor]:
        """``(pop, loss, on_front)`` of the filled slots, by increasing length."""
        filled = torch.isfinite(self.loss).nonzero()[:, 0]
        loss = self.loss[filled]
        prev = torch.cat([loss.new_full((1,), math.inf), torch.cummin(loss, 0).values[:-1]])
        front = loss < prev
        return Population(self.ops[filled], self.consts[filled], self.length[filled]), loss, front

    @property
    def best(self) -> float:
        return float(self.loss.min())


# ------------------------------------------------------------------------------- formulas


def _fmt_num(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.{digits}g}"
    return s


def _infix(node: E.Node, names: list[str], digits: int) -> str:
    if node.op == CONST:
        s = _fmt_num(node.value, digits)
        return f"({s})" if s.startswith("-") else s
    if node.op >= FIRST_VAR:
        return names[node.op - FIRST_VAR]
    f = function(node.op)
    a = [_infix(c, names, digits) for c in node.children]
    if f.name in ("add", "sub") and node.children[1].op == CONST and node.children[1].value < 0:
        # x + (-c) -> x - c, x - (-c) -> x + c
        op = "-" if f.name == "add" else "+"
        return f"({a[0]} {op} {_fmt_num(-node.children[1].value, digits)})"
    if f.name in ("add", "sub", "mul", "div"):
        return f"({a[0]} {dict(add='+', sub='-', mul='*', div='/')[f.name]} {a[1]})"
    if f.name == "neg":
        return f"(-{a[0]})"
    return f"{f.name}({', '.join(a)})"


def _f32(v: float) -> float:
    """v rounded to float32 as the program's constants are, unless outside float32's normal range
    (a slope of 1e-50 must not print as 0)."""
    return float(np.float32(v)) if v == 0 or 1.2e-38 <= abs(v) < 3e38 else float(v)


def _model_node(node: E.Node, a: float, b: float) -> E.Node:
    """``a + b * node`` as a tree (the identity parts left out), simplified exactly."""
    out = node
    if b != 1.0:
        out = E.Node(OPCODE["mul"], 0.0, (E.Node(CONST, _f32(b)), out))
    if a != 0.0:  # float64, as predict adds it: a float32 intercept can be off by more than y's spread
        out = E.Node(OPCODE["add"], 0.0, (out, E.Node(CONST, float(a))))
    return E.simplify(out)


def model_expression(node: E.Node, a: float, b: float, names: list[str], digits: int = 6, y_scale: float = 0.0,
                     y_spread: float = 0.0) -> str:
    """Readable ``a + b * f`` with constants to ``digits`` significant digits, more where the
    intercept dwarfs the target's spread ``y_spread`` (its standard deviation), so that the printed
    formula still predicts to ~10^-digits of the spread. An intercept below float32 resolution of
    the target (``|a| <= 1e-7 * y_scale``) and a slope that rounds to 1 at ``digits`` are left
    out (``predict`` still uses the exact values)."""
    if abs(a) <= 1e-7 * y_scale:
        a = 0.0
    if a != 0.0 and y_spread > 0 and math.isfinite(a) and abs(a) > y_spread:
        digits = min(17, digits + math.ceil(math.log10(abs(a) / y_spread)))
    if float(_fmt_num(b, digits)) == 1.0:
        b = 1.0
    s = _infix(_model_node(node, a, b), names, digits)
    if s.startswith("(") and s.endswith(")"):
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(s) - 1:
                break
        else:
            s = s[1:-1]
    return s


# ------------------------------------------------------------------------------- estimator


class SymbolicRegressor(*EstimatorBase):
    """Symbolic regression estimator (scikit-learn API, no scikit-learn needed).

    Parameters
    ----------
    population_size, generations : programs per generation, generations to run.
    tournament_size, elitism : selection pressure; programs copied unchanged per generation.
    function_set : function names (``tensorgp.engine.primitives.FUNCTIONS``), a tuple or "add,mul,..".
    max_depth, max_length, init_depth : tree depth and node limits; ramped half-and-half depths.
    const_prob, const_range : share of terminals that are ephemeral random constants, and their range.
    p_crossover, p_subtree_mutation, p_hoist_mutation, p_point_mutation : operator probabilities
        (the rest are copies).
    parsimony_coefficient : selection fitness = -normalised loss - coefficient * length.
    loss : "mse" (default), "mae", "r2", "pearson", "spearman", "kendall", or a callable
        ``(pred float32[P, n], y float32[n]) -> loss[P]`` (lower is better; it receives the
        scaled predictions when ``linear_scaling``; it sees at most ``chunk_rows`` rows).
    linear_scaling : score and report ``a + b * f`` with least-squares a, b (default True).
    const_optimization, const_opt_elites, const_opt_steps, const_opt_rows : Levenberg-Marquardt
        on the constants of the best programs after each generation (see module docstring).
    weighted_leaves : in the restart phase and the final polish, LM also tunes a weight per
        variable leaf (kept only where it pays; see module docstring). Needs ``mul``.
    restart_generations, restart_opt_share, restart_patience : the memetic restart phase (0
        generations disables): its length, the share of the population tuned by LM per
        generation, and how many generations without a 1% gain in the best loss end it early
        (0: never).
    restart_noise_share : skip the restart when the best model's residual is at most this share
        structure (its nearest-neighbour correlation; ``tensorgp.sr.noise_floor``); None: never skip.
    prune_tolerance : relative loss tolerance for pruning coefficient terms from the final
        front (``tensorgp.sr.prune``); None: no pruning.
    model_selection, selection_tolerance : which Pareto-front entry is the model (see
        ``tensorgp.sr.pareto``): "accuracy" (default) the simplest entry with loss <= best +
        selection_tolerance * |best|; "knee" the steepest log-loss drop per unit of complexity
        among entries within 1.5x the best loss; "best" the lowest loss. The loss is the
        validation loss when ``validation_fraction`` is set, else the training loss.
    validation_fraction : None, or a share in (0, 1) of the rows held out (seeded by
        random_state) and never fitted: every front entry gets its ``val_loss`` there.
    tol : stop once the best normalised loss (mse / var(y), mae / mean|y - median y|, the
        other built-in losses as they are) is <= tol; 0 disables; not used with a callable
        loss. max_time : seconds; no generation starts that would end past 80% of it (judging
        by the last one), the rest is left for the final polish, which is skipped once
        max_time has passed; None for no limit.
    chunk_rows : rows per evaluation chunk (bounds memory; see ``losses``).
    device : "cpu", "cuda", "cuda:1", or "auto" (CUDA when available). backend : evaluator
        ("auto", "torch", "numba", "triton"; see ``tensorgp.engine.evaluate``).
    n_jobs : CPU threads for torch and the numba evaluator during fit/predict (the previous
        setting is restored afterwards); None keeps the current ``torch.get_num_threads()``.
        Most per-generation tensors are small, so on a busy machine 1 thread can be fastest.
    random_state : int for reproducible fits; None draws a seed from numpy's global RNG.
    verbose : 0 silent, 1 one line per generation.
    """

    _estimator_type = "regressor"

    def __init__(self, population_size: int = 1000, generations: int = 30, tournament_size: int = 5,
                 function_set: tuple[str, ...] | str = SR_FUNCTIONS, max_depth: int = 8, max_length: int = 48,
                 init_depth: tuple[int, int] = (2, 5), const_prob: float = 0.1,
                 const_range: tuple[float, float] = (-1.0, 1.0), p_crossover: float = 0.8,
                 p_subtree_mutation: float = 0.05, p_hoist_mutation: float = 0.05, p_point_mutation: float = 0.05,
                 elitism: int = 2, parsimony_coefficient: float = 1e-4, loss: Any = "mse",
                 linear_scaling: bool = True, const_optimization: bool = True, const_opt_elites: int = 4,
                 const_opt_steps: int = 10, const_opt_rows: int = 1024, weighted_leaves: bool = True,
                 restart_generations: int = 30, restart_opt_share: float = 0.6, restart_patience: int = 10,
                 restart_noise_share: float | None = 0.25, prune_tolerance: float | None = 1e-3, selection_tolerance: float = 0.01,
                 model_selection: str = "accuracy", validation_fraction: float | None = None,
                 tol: float = 1e-10, max_time: float | None = None, chunk_rows: int = 1 << 17,
                 device: str = "cpu", backend: str = "auto", n_jobs: int | None = None,
                 random_state: int | None = None, verbose: int = 0):
        self.population_size = population_size
        self.generations = generations
        self.tournament_size = tournament_size
        self.function_set = function_set
        self.max_depth = max_depth
        self.max_length = max_length
        self.init_depth = init_depth
        self.const_prob = const_prob
        self.const_range = const_range
        self.p_crossover = p_crossover
        self.p_subtree_mutation = p_subtree_mutation
        self.p_hoist_mutation = p_hoist_mutation
        self.p_point_mutation = p_point_mutation
        self.elitism = elitism
        self.parsimony_coefficient = parsimony_coefficient
        self.loss = loss
        self.linear_scaling = linear_scaling
        self.const_optimization = const_optimization
        self.const_opt_elites = const_opt_elites
        self.const_opt_steps = const_opt_steps
        self.const_opt_rows = const_opt_rows
        self.weighted_leaves = weighted_leaves
        self.restart_generations = restart_generations
        self.restart_opt_share = restart_opt_share
        self.restart_patience = restart_patience
        self.restart_noise_share = restart_noise_share
        self.prune_tolerance = prune_tolerance
        self.selection_tolerance = selection_tolerance
        self.model_selection = model_selection
        self.validation_fraction = validation_fraction
        self.tol = tol
        self.max_time = max_time
        self.chunk_rows = chunk_rows
        self.device = device
        self.backend = backend
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ---------------------------------------------------------------- sklearn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # scikit-learn's regressor defaults (only it calls this)
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False  # fit and predict reject NaN/inf
        tags.non_deterministic = False  # for a given random_state and device
        return tags

    # ---------------------------------------------------------------- fit
    def _resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return resolve_device(self.device)
        except ValueError as e:
            raise ValueError(f"device={self.device!r}: {e}") from None

    def _check_params(self) -> None:
        if int(self.population_size) < 2:
            raise ValueError("population_size must be >= 2")
        if int(self.generations) < 0:
            raise ValueError("generations must be >= 0")
        check_loss(self.loss)
        if not 0 <= self.restart_opt_share <= 1:
            raise ValueError(f"restart_opt_share={self.restart_opt_share!r} must be in [0, 1]")
        if self.prune_tolerance is not None and not (isinstance(self.prune_tolerance, (int, float))
                                                     and self.prune_tolerance >= 0):
            raise ValueError(f"prune_tolerance={self.prune_tolerance!r} must be None or >= 0")
        if self.restart_noise_share is not None and not (isinstance(self.restart_noise_share, (int, float))
                                                         and 0 <= self.restart_noise_share <= 1):
            raise ValueError(f"restart_noise_share={self.restart_noise_share!r} must be None or in [0, 1]")
        for name in ("const_opt_elites", "const_opt_steps", "restart_generations", "restart_patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if int(self.const_opt_rows) < 1 or int(self.chunk_rows) < 1:
            raise ValueError("const_opt_rows and chunk_rows must be >= 1")
        if not (self.tol >= 0 and self.selection_tolerance >= 0 and self.parsimony_coefficient >= 0):  # NaN too
            raise ValueError("tol, selection_tolerance and parsimony_coefficient must be >= 0 (not NaN)")
        if self.max_time is not None and not self.max_time >= 0:  # 0: the initial population only
            raise ValueError(f"max_time={self.max_time!r} must be None or >= 0 seconds")
        if not 0 <= self.const_prob <= 1:
            raise ValueError("const_prob must be in [0, 1]")
        if self.model_selection not in SELECTIONS:
            raise ValueError(f"model_selection={self.model_selection!r}; choose from {', '.join(SELECTIONS)}")
        f = self.validation_fraction
        if f is not None and not (isinstance(f, (int, float)) and 0 < f < 1):
            raise ValueError(f"validation_fraction={f!r} must be None or a share in (0, 1)")
        lo, hi = self.const_range
        if not lo <= hi:
            raise ValueError(f"const_range {self.const_range} must be (low, high) with low <= high")

    def fit(self, X: Any, y: Any = None) -> "SymbolicRegressor":
        """Evolve a formula for ``y ~ X``. Returns self. A numpy memmap X, or a
        ``streaming.RowSource`` (then y is None), is streamed from disk: see ``tensorgp.sr.streaming``."""
        src = as_source(X, y)
        if src is None and y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        with _threads(self.n_jobs):
            if src is not None:
                return fit_source(self, src, model_expression)
            return self._fit(X, y)

    def _fit(self, X: Any, y: Any) -> "SymbolicRegressor":
        t_start = time.perf_counter()
        self.__dict__.pop("stream_stats_", None)  # a refit's results are its own (streaming sets it after)
        self.restart_structure_ = None
        self._check_params()
        dev = self._resolve_device()
        seed = seed_from(self.random_state)
        Xt, names = fit_X(self, X)
        yt = fit_y(self, y, Xt.shape[0])
        N, m = Xt.shape
        self.variable_names_ = sanitize(names if names is not None else [f"x{i}" for i in range(m)])
        self._device = dev
        self._backend = resolve_backend(self.backend, dev)
        ymin, ymax = float(yt.min()), float(yt.max())
        if ymin == ymax:
            warnings.warn(f"y is constant ({ymin!r}); the model is that constant", UserWarning, stacklevel=2)
            self._set_constant_model(ymin, time.perf_counter() - t_start)
            return self

        Xt, yt, Xv, yv = self._hold_out(Xt, yt, seed)
        N = Xt.shape[0]
        unit = y_unit(yt)
        yt, yv = yt / unit, (None if yv is None else yv / unit)
        self._functions = PrimitiveSet.parse_functions(self.function_set)
        pset = PrimitiveSet(tuple(self.variable_names_), self._functions,
                            constants=self.const_prob > 0, const_range=tuple(float(v) for v in self.const_range))
        g = torch.Generator().manual_seed(seed + 1)
        obj = RegressionObjective(Xt, yt, self.loss, self.linear_scaling, self._backend, dev, self.chunk_rows, generator=g)
        # LM rows: const_opt_rows during evolution, 16x as many for the final polish of the front
        perm = torch.randperm(N, generator=g)[: 16 * int(self.const_opt_rows)] if N > self.const_opt_rows else None

        def rows(k: int):
            if perm is None or k >= N:
                return Xt.to(dev), yt.to(dev)
            idx = perm[:k].sort().values
            return Xt[idx.to(Xt.device)].to(dev), yt[idx].to(dev)

        Xo, yo = rows(int(self.const_opt_rows))
        L = int(self.max_length)
        archive = _Archive(L, dev)
        self.history_ = []
        self.restart_structure_ = None
        t0 = time.perf_counter()
        # phase 1: the plain run (LM on a few elites); phase 2, only when phase 1 ends without
        # reaching tol: a memetic restart (fresh population, LM with weighted leaves on many programs)
        phases = [(int(self.generations), int(self.const_opt_elites), int(self.const_opt_steps), Xo, yo, False)]
        if int(self.restart_generations) > 0:
            Xr, yr = rows(max(1, int(self.const_opt_rows) // 4))
            phases.append((int(self.restart_generations), max(1, round(self.restart_opt_share * int(self.population_size))),
                           max(1, int(self.const_opt_steps) // 2), Xr, yr, self._weights_on()))
        for k, (gens, elites, steps, Xp, yp, weights) in enumerate(phases):
            if k and ((isinstance(self.loss, str) and archive.best <= self.tol) or self._out_of_time(t_start, 0.8)):
                break
            if k and self.restart_noise_share is not None:
                self.restart_structure_ = self._residual_structure(archive, obj, *rows(4096))
                if self.restart_structure_ <= float(self.restart_noise_share):
                    break  # the plain run's best already fits everything but noise (up to that share)
            cfg = EvolutionConfig(
                population=int(self.population_size), generations=gens, tournament_size=int(self.tournament_size),
                elitism=int(self.elitism), rates=VariationRates(self.p_crossover, self.p_subtree_mutation,
                                                                self.p_hoist_mutation, self.p_point_mutation),
                max_len=L, max_depth=int(self.max_depth), init_depth=tuple(self.init_depth),
                const_prob=float(self.const_prob), parsimony=float(self.parsimony_coefficient), hall_of_fame=1,
                seed=seed + 7919 * k)
            evolver = Evolver(cfg, pset, obj, device=dev, count_rows=N)
            done_keys = torch.empty(0, dtype=torch.int64, device=dev)  # keys of programs already tuned
            offset = len(self.history_)  # a phase's first population counts as a generation of its own
            st = evolver.initialize()
            while True:
                t_opt = time.perf_counter()
                if self.const_optimization and elites > 0 and steps > 0:
                    done_keys = self._optimize_elites(evolver, obj, Xp, yp, done_keys, elites, steps, weights)
                archive.update(st.pop, -st.fitness.to(torch.float64))
                best = archive.best
                gs = st.history[-1]
                rec = {"generation": offset + st.generation, "phase": k, "best_loss": best * obj.scale * loss_unit(self.loss, unit),
                       "best_normalized_loss": best, "mean_length": gs.mean_size, "eval_s": gs.eval_s,
                       "variation_s": gs.variation_s, "const_opt_s": time.perf_counter() - t_opt,
                       "elapsed_s": time.perf_counter() - t0}
                self.history_.append(rec)
                if self.verbose:
                    print(f"gen {rec['generation']:4d}  phase {k}  best normalised loss {best:.4g}  mean length "
                          f"{gs.mean_size:.1f}  {rec['elapsed_s']:.2f}s", flush=True)
                if st.generation >= cfg.generations or (isinstance(self.loss, str) and best <= self.tol):
                    break
                if k and self._stalled(k, int(self.restart_patience)):
                    break
                # no generation that would end past 80% of max_time (the last one's duration as the
                # estimate): the rest is for the final polish
                last = rec["elapsed_s"] - (self.history_[-2]["elapsed_s"] if len(self.history_) > 1 else 0.0)
                if self.max_time is not None and time.perf_counter() - t_start + last >= 0.8 * self.max_time:
                    break
                evolver.step()
        self.n_generations_ = self.history_[-1]["generation"]
        out_of_time = self.max_time is not None and time.perf_counter() - t_start >= self.max_time
        val = None if Xv is None else RegressionObjective(Xv, yv, self.loss, self.linear_scaling, self._backend, dev,
                                                          self.chunk_rows, generator=g)
        self._finish(archive, obj, *rows(16 * int(self.const_opt_rows)), polish=not out_of_time, val=val, unit=unit)
        self.fit_time_ = time.perf_counter() - t_start
        return self

    def _hold_out(self, X: torch.Tensor, y: torch.Tensor, seed: int):
        """``(X_fit, y_fit, X_val, y_val)``: a seeded ``validation_fraction`` of the rows held
        out (None, None without it)."""
        if self.validation_fraction is None:
            return X, y, None, None
        N = X.shape[0]
        k = int(round(self.validation_fraction * N))
        if not 1 <= k < N:
            raise ValueError(f"validation_fraction={self.validation_fraction} of {N} rows leaves "
                             f"{k} validation and {N - k} training rows; both need at least 1")
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed + 2))
        val, fit = perm[:k].sort().values, perm[k:].sort().values
        return X[fit.to(X.device)], y[fit], X[val.to(X.device)], y[val]

    def _stalled(self, phase: int, patience: int) -> bool:
        """The last ``patience`` generations of ``phase`` lowered the best loss by less than 1% (0: never)."""
        h = [r for r in self.history_ if r["phase"] == phase]
        if patience <= 0 or len(h) <= patience:
            return False
        return h[-1]["best_normalized_loss"] > 0.99 * h[-1 - patience]["best_normalized_loss"]

    def _residual_structure(self, archive: _Archive, obj: RegressionObjective, Xs: torch.Tensor,
                            ys: torch.Tensor) -> float:
        """Nearest-neighbour correlation of the best archived model's residual on ``Xs, ys``
        (``tensorgp.sr.noise_floor``): ~0 at the noise floor, the share of structure left otherwise."""
        i = int(torch.argmin(archive.loss))
        prog = Population(archive.ops[i:i + 1], archive.consts[i:i + 1], archive.length[i:i + 1]).trimmed()
        a, b = obj.scaling(prog)
        f = evaluate(prog, Xs, self._backend)[0].to(torch.float64)
        return neighbour_correlation(Xs, ys.to(torch.float64) - (float(a[0]) + float(b[0]) * f))

    def _out_of_time(self, t_start: float, share: float = 1.0) -> bool:
        return self.max_time is not None and time.perf_counter() - t_start >= share * self.max_time

    def _optimize_elites(self, evolver: Evolver, obj: RegressionObjective, Xo, yo, done_keys: torch.Tensor, k: int,
                         steps: int, weights: bool) -> torch.Tensor:
        """LM on the k best not-yet-optimised programs with constants (with ``weights``: with
        variables too, each leaf getting a weight); improved ones written back.

        ``done_keys: int64[D]`` keys (``_keys``) of programs tuned before in this phase; returns it
        extended with the keys tuned now and the keys of the programs written back."""
        st = evolver.state
        fit = torch.nan_to_num(st.fitness, nan=-math.inf)
        tunable = (st.pop.ops == CONST) | ((st.pop.ops >= FIRST_VAR) if weights else False)
        has_c = tunable.any(1) & torch.isfinite(fit)
        cand = torch.nonzero(has_c)[:, 0]
        if len(cand) == 0:
            return done_keys
        cand = cand[torch.argsort(fit[cand], descending=True, stable=True)][: 8 * k]
        pick = first_new(self._keys(st.pop[cand], weights), done_keys.to(cand.device))[:k]
        if len(pick) == 0:
            return done_keys
        idx = cand[pick]
        done_keys = torch.cat([done_keys, self._keys(st.pop[idx], weights).to(done_keys.device)])
        new, improved = self._tune(st.pop[idx], Xo, yo, obj.linear_scaling, steps, weights)
        improved = improved.to(idx.device)
        if not bool(improved.any()):
            return done_keys
        rows, new = idx[improved], new.to(st.pop.device)[improved]
        new_fit = obj(new).to(st.fitness.device)
        # kept where the selection fitness (loss and parsimony) improves: a weight must pay for its nodes
        pc = float(self.parsimony_coefficient)
        better = (torch.nan_to_num(new_fit, nan=-math.inf) - pc * new.length.to(new_fit)
                  > fit[rows] - pc * st.pop.length[rows].to(new_fit))
        if not bool(better.any()):
            return done_keys
        rows, new, new_fit = rows[better], new[better], new_fit[better]
        evolver.replace(rows, new, new_fit)
        return torch.cat([done_keys, self._keys(st.pop[rows], weights).to(done_keys.device)])

    @staticmethod
    def _keys(pop: Population, by_structure: bool) -> torch.Tensor:
        """``int64[P]`` program keys; ``by_structure``: of the opcodes only (constants ignored), so
        LM with weighted leaves, which re-fits every constant anyway, tunes each structure once."""
        if by_structure:
            pop = Population(pop.ops, torch.zeros_like(pop.consts), pop.length)
        return program_keys(pop)

    def _weights_on(self) -> bool:
        """Weighted leaves need ``mul`` in the function set (the weight is ``mul(w, x)``)."""
        return bool(self.weighted_leaves) and "mul" in self._functions

    def _tune(self, pop: Population, Xo, yo, linear_scaling: bool, steps: int,
              weights: bool) -> tuple[Population, torch.Tensor]:
        """LM on the constants of ``pop`` (K programs), with ``weights`` also on a weight per
        variable leaf (weights left at 1 dropped again; a program whose weighted form breaks
        ``max_length`` / ``max_depth`` is tuned without weights). Returns ``(tuned, improved bool[K])``."""
        if not weights:
            new, sse0, sse1 = optimize_constants(pop, Xo, yo, linear_scaling, steps)
            return new, sse1 < sse0 * (1 - 1e-7)
        wpop, is_w = add_weights(pop.to(Xo.device).trimmed())
        new, sse0, sse1 = optimize_constants(wpop, Xo, yo, linear_scaling, steps)
        new = drop_unit_weights(new, is_w)
        L = int(self.max_length)
        fits = (new.length <= L) & (program_depth(new.ops, new.length) <= int(self.max_depth))
        improved = sse1.to(fits.device) < sse0.to(fits.device) * (1 - 1e-7)
        if new.max_len > L:
            new = Population(new.ops[:, :L], new.consts[:, :L], torch.where(fits, new.length, 1))
        if not bool(fits.all()):  # too big with weights: plain LM for those
            bad = (~fits).nonzero()[:, 0]
            plain, p0, p1 = optimize_constants(pop[bad.to(pop.device)], Xo, yo, linear_scaling, steps)
            plain = plain.to(new.device)
            W = max(new.max_len, plain.max_len)
            ops, consts, length = pad_to(new.ops, W), pad_to(new.consts, W), new.length.clone()
            ops[bad], consts[bad], length[bad] = pad_to(plain.ops, W), pad_to(plain.consts, W), plain.length
            new = Population(ops, consts, length)
            improved[bad] = (p1 < p0 * (1 - 1e-7)).to(improved.device)
        return new.trimmed(), improved

    def _finish(self, archive: _Archive, obj: RegressionObjective, Xo, yo, polish: bool = True,
                val: RegressionObjective | None = None, unit: float = 1.0) -> None:
        pop, loss, front = archive.entries()
        if polish and self.const_optimization and self.const_opt_steps > 0:
            fp = pop[front.nonzero()[:, 0]]
            if (fp.ops == CONST).any() or self._weights_on():
                new, _ = self._tune(fp, Xo, yo, obj.linear_scaling, 3 * int(self.const_opt_steps), self._weights_on())
                new = new.to(archive.loss.device)
                archive.update(Population(pad_to(new.ops, archive.L), pad_to(new.consts, archive.L), new.length),
                               obj.normalized(obj.losses(new)))
                pop, loss, front = archive.entries()
        if polish and self.const_optimization and self.prune_tolerance is not None:
            # only the front entries the model selection could pick (within selection_tolerance of the
            # best, as "accuracy" judges them), on every 16th polish row: pruning is then cheap
            near = front & (loss <= float(loss.min()) * (1 + float(self.selection_tolerance)) + 1e-9)
            idx = near.nonzero()[:, 0]
            step = max(1, Xo.shape[0] // int(self.const_opt_rows))
            pruned, pl, src = self._prune(pop[idx], loss[idx], obj, Xo[::step], yo[::step])
            if pruned is not None:
                # a pruned program replaces its original: at losses near float32 resolution the
                # selection's relative tolerance could otherwise prefer the unpruned one by noise
                archive.loss[pop.length[idx[src.to(pop.device)]].long()] = math.inf
                archive.update(Population(pad_to(pruned.ops, archive.L), pad_to(pruned.consts, archive.L),
                                          pruned.length), pl)
                pop, loss, front = archive.entries()
        a, b = obj.scaling(pop)
        val_loss = val.losses_at(pop, a, b).cpu().tolist() if val is not None else [None] * pop.size
        a, b = (a * unit).cpu().tolist(), (b * unit).cpu().tolist()
        lu = loss_unit(self.loss, unit)
        names = self.variable_names_
        y_spread = math.sqrt(max(obj.syy, 0.0) / obj.N) * unit
        y_scale = abs(obj.ybar) * unit + y_spread
        entries = []
        for i in range(pop.size):
            node = E.row(pop.ops, pop.consts, pop.length, i)
            expr = model_expression(node, a[i], b[i], names, y_scale=y_scale, y_spread=y_spread)
            vl = None if val_loss[i] is None else val_loss[i] * lu
            entries.append(FittedProgram(int(pop.length[i]), float(loss[i]) * obj.scale * lu, expr, a[i], b[i],
                                         pop[i].trimmed().to("cpu"), bool(front[i]), tuple(names), vl))
        self.hall_of_fame_ = entries
        front_entries = [e for e in entries if e.pareto]
        # judged in the fit's units (y / unit), where the losses are finite
        judged = [float(loss[i]) if val is None else val_loss[i] for i in front.nonzero()[:, 0].tolist()]
        pick = select(judged, [e.complexity for e in front_entries], self.model_selection, float(self.selection_tolerance))
        self.pareto_front_ = ParetoFront(front_entries, pick, self.model_selection)
        self._set_model(front_entries[pick])

    def _prune(self, fp: Population, loss: torch.Tensor, obj: RegressionObjective, Xo, yo,
               atol: float = 1e-9) -> tuple[Population | None, torch.Tensor | None, torch.Tensor | None]:
        """Each program of ``fp`` (normalised ``loss float64[K]``) pruned greedily of coefficient
        terms (``tensorgp.sr.prune``): the best one-edit candidate, constants re-fitted by LM, is
        taken while its normalised loss stays within ``prune_tolerance`` (relative, plus ``atol``)
        of the program's own. Returns the pruned programs that changed, their losses and their
        indices in ``fp`` (None, None, None when none changed)."""
        rtol, steps = float(self.prune_tolerance), int(self.const_opt_steps)
        L, D = int(self.max_length), int(self.max_depth)
        out, out_loss, src = [], [], []
        for i in range(fp.size):
            ref = float(loss[i])
            node, changed = E.row(fp.ops, fp.consts, fp.length, i), False
            for _ in range(L):  # each accepted edit shortens the program
                cands = [c for c in P.candidates(node) if E.size(c) <= L and E.depth(c) <= D]
                if not cands:
                    break
                # each candidate as it is and with its constants re-fitted; the unfitted one is preferred
                # when acceptable (the re-fit drifts along redundant directions, e.g. a common scale)
                raw = P.to_population(cands, Xo.device)
                fitted = optimize_constants(raw, Xo, yo, obj.linear_scaling, steps)[0] if bool((raw.ops == CONST).any()) else raw
                both = [(raw, 0), (fitted, 1)]
                losses = [obj.normalized(obj.losses(c.to(obj.device))).cpu() for c, _ in both]
                opts = [(int(c.length[t]), r, float(cl[t]), t, c) for (c, r), cl in zip(both, losses)
                        for t in P.accept(cl, ref, rtol, atol).nonzero()[:, 0].tolist()]
                if not opts:
                    break
                n_, _, last, j, cp = min(opts, key=lambda o: o[:3])  # shortest, then unfitted, then loss
                node, changed = E.row(cp.ops, cp.consts, cp.length, j), True
            if changed:
                out.append(node)
                out_loss.append(last)
                src.append(i)
        if not out:
            return None, None, None
        return (P.to_population(out, fp.device), torch.tensor(out_loss, dtype=torch.float64, device=fp.device),
                torch.tensor(src, dtype=torch.long))

    def _set_model(self, e: FittedProgram) -> None:
        self.program_ = e.program
        self.intercept_ = float(e.intercept)
        self.slope_ = float(e.slope)
        self.loss_ = float(e.loss)
        self.complexity_ = e.complexity
        self.expression_ = e.expression

    def _set_constant_model(self, v: float, seconds: float) -> None:
        prog = Population(torch.tensor([[CONST]], dtype=torch.int32), torch.ones(1, 1), torch.ones(1, dtype=torch.int32))
        e = FittedProgram(1, 0.0, repr(float(v)), float(v), 0.0, prog, True, tuple(self.variable_names_))
        self.hall_of_fame_ = [e]
        self.pareto_front_ = ParetoFront([e], 0, self.model_selection)
        self.history_ = []
        self.n_generations_ = 0
        self._set_model(e)
        self.fit_time_ = seconds

    # ---------------------------------------------------------------- predict / score
    def _raw(self, Xt: torch.Tensor, program: Population | None = None) -> torch.Tensor:
        """``float32[N]`` output of the program, evaluated in row chunks."""
        prog = (self.program_ if program is None else program)
        dev = getattr(self, "_device", torch.device("cpu"))
        backend = getattr(self, "_backend", "auto")
        prog = prog.to(dev)
        out = torch.empty(Xt.shape[0], dtype=torch.float32, device=Xt.device)
        step = int(self.chunk_rows)
        for lo in range(0, Xt.shape[0], step):
            out[lo:lo + step] = evaluate(prog, Xt[lo:lo + step].to(dev), backend)[0].to(out.device)
        return out

    def predict(self, X: Any, index: int | None = None) -> Any:
        """Predictions ``intercept_ + slope_ * program(X)``, or those of ``pareto_front_[index]``:
        float64 numpy array, or a torch tensor on X's device when X is a tensor."""
        Xt = predict_X(self, X)
        prog, a, b = self._model(index)
        with _threads(self.n_jobs):
            f = self._raw(Xt, prog).to(torch.float64)
        pred = a + b * f if b != 0 else torch.full_like(f, a)
        return pred if torch.is_tensor(X) else pred.cpu().numpy()

    def _model(self, index: int | None) -> tuple[Population, float, float]:
        """``(program, intercept, slope)`` of the model (None) or of a Pareto-front entry."""
        check_fitted(self)
        if index is None:
            return self.program_, self.intercept_, self.slope_
        e = self.pareto_front_.entry(index)
        return e.program, e.intercept, e.slope

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2 of ``predict(X)`` (scikit-learn's convention: for a
        constant y, 1.0 when predicted exactly, else 0.0)."""
        Xt = predict_X(self, X)
        yt = fit_y(self, y, Xt.shape[0])
        w = sample_weights(sample_weight, len(yt))
        p = torch.as_tensor(self.predict(X)).to("cpu", torch.float64)
        unit = y_unit(yt)  # R^2 is scale-free; squares of a target near 1e200 would overflow
        yt, p = yt / unit, p / unit
        ss_res = float((w * (yt - p) ** 2).sum())
        ym = float((w * yt).sum() / w.sum())
        ss_tot = float((w * (yt - ym) ** 2).sum())
        if ss_tot == 0:
            return 1.0 if ss_res == 0 else 0.0
        return 1.0 - ss_res / ss_tot

    def to_sympy(self, index: int | None = None):
        """The model (or ``pareto_front_[index]``) as a sympy expression over the variable names
        (``variable_names_``); needs sympy. Protected operators map to their plain forms (see
        ``node_to_sympy``)."""
        prog, a, b = self._model(index)
        return FittedProgram(int(prog.length[0]), math.nan, "", a, b, prog, True, tuple(self.variable_names_)).to_sympy()

    def to_latex(self, index: int | None = None) -> str:
        """LaTeX of ``to_sympy(index)`` (needs sympy)."""
        import sympy as sp

        return sp.latex(self.to_sympy(index))
