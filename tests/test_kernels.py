"""Triton kernels vs the torch semantics of ``tensorgp.engine.primitives``.

Runs under the Triton interpreter on CPU (tiny inputs). On a CUDA machine run without
TRITON_INTERPRET (bench/gpu_check.sh) and the same tests exercise the compiled kernels.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ON_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_CUDA:
    # must precede the first triton import: triton picks interpreter vs compiler at import time
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before this module could set TRITON_INTERPRET=1 and there is no "
                    "CUDA device: run with TRITON_INTERPRET=1 in the environment", allow_module_level=True)
    os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton", reason="triton is not installed: Triton kernels untested")

from tensorgp.engine.evaluate import evaluate_torch as reference  # the torch reference interpreter
from tensorgp.engine.population import Population
from tensorgp.engine.primitives import CONST, EPS, FIRST_VAR, FUNCTIONS, OPCODE

# The Triton interpreter runs the kernels on numpy arrays, and numpy warns where float32 overflows to
# inf or gives NaN: exactly the IEEE semantics these edge-value tests feed the kernels on purpose (a
# GPU computes the same without a warning), so those warnings of the interpreter say nothing here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(overflow|invalid value) encountered:RuntimeWarning:triton.runtime.interpreter")


def _kernels_module(name: str):
    """``tensorgp.kernels.<name>`` when installed (package-dir mapping), else ``kernels.<name>`` from the checkout."""
    import importlib
    from pathlib import Path

    try:
        return importlib.import_module(f"tensorgp.kernels.{name}")
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        return importlib.import_module(f"kernels.{name}")


evaluate_triton = _kernels_module("eval_kernel").evaluate_triton
max_stack_depth = _kernels_module("eval_kernel").max_stack_depth
DEV = torch.device("cuda" if ON_CUDA else "cpu")
EXACT_OPS = ("add", "sub", "mul", "div", "neg", "abs", "square", "inv", "min", "max")
INEXACT_OPS = ("log", "sqrt", "exp", "tanh", "sin", "cos")  # torch CPU sqrt is not always correctly rounded
RTOL, ATOL = 1e-5, 1e-6  # the documented contract for log/sqrt/exp/tanh


def random_tree(rng: np.random.Generator, depth: int, funcs: list[int], n_vars: int, const_p: float) -> tuple[list[int], list[float]]:
    """Postfix (ops, consts) of a random tree of depth <= depth (grow method)."""
    if depth == 0 or rng.random() < 0.25:
        if rng.random() < const_p:
            return [CONST], [float(rng.choice([rng.uniform(-2, 2), 0.0, 1e-7, -1e-7, 100.0, 3e38]))]
        return [FIRST_VAR + int(rng.integers(n_vars))], [0.0]
    op = int(rng.choice(funcs))
    ops: list[int] = []
    cs: list[float] = []
    for _ in range(FUNCTIONS[op - 1].arity):
        o, c = random_tree(rng, depth - 1, funcs, n_vars, const_p)
        ops += o
        cs += c
    return ops + [op], cs + [0.0]


def population(progs: list[tuple[list[int], list[float]]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-aligned, PAD-filled tensors (plus ``pad`` extra PAD columns)."""
    p = Population.from_rows(progs)
    return F.pad(p.ops, (0, pad)), F.pad(p.consts, (0, pad)), p.length


def edge_X(n_random: int, m: int, seed: int) -> torch.Tensor:
    """Rows mixing random values with the edges of the protected operators, per column."""
    f32 = np.float32
    eps32 = f32(EPS)
    specials = np.array([
        0.0, -0.0, eps32, -eps32, np.nextafter(eps32, f32(1)), np.nextafter(eps32, f32(0)), 1e-7, -1e-7,
        1.0, -1.0, 80.0, 80.5, 88.0, 100.0, -100.0, 1e20, -1e20, 3e38, -3e38, np.inf, -np.inf, np.nan,
    ], dtype=f32)
    rng = np.random.default_rng(seed)
    cols = []
    for j in range(m):
        col = np.concatenate([rng.permutation(specials), (rng.standard_normal(n_random) * 3).astype(f32)])
        cols.append(rng.permutation(col) if j else col)
    return torch.from_numpy(np.stack(cols, 1).astype(f32))


def run(ops, consts, length, X, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, torch reference), both computed on DEV, returned on the CPU."""
    args = [t.to(DEV) for t in (ops, consts, length, X)]
    return evaluate_triton(*args, **kw).cpu(), reference(*args).cpu()


def assert_exact(got: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", [f.name for f in FUNCTIONS])
def test_each_operator_on_edge_values(name: str) -> None:
    op = OPCODE[name]
    X = edge_X(10, 2, seed=op)
    args = [[FIRST_VAR], [FIRST_VAR + 1]][: FUNCTIONS[op - 1].arity]
    # the operator on (x0[, x1]) and on (x1[, x0]): both argument orders
    progs = [(sum(args, []) + [op], [0.0] * (len(args) + 1)), (sum(args[::-1], []) + [op], [0.0] * (len(args) + 1))]
    if FUNCTIONS[op - 1].arity == 1:
        progs[1] = ([FIRST_VAR + 1, op], [0.0, 0.0])
    got, ref = run(*population(progs), X)
    if name in EXACT_OPS:
        assert_exact(got, ref)
    else:  # atol only for log: its absolute error near |x| = 1 is what is bounded
        torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL if name == "log" else 0.0, equal_nan=True)


@pytest.mark.parametrize("precise", [None, False] if ON_CUDA else [None])  # False: tl.exp/tl.log, not libdevice
@pytest.mark.parametrize("name", INEXACT_OPS)
def test_inexact_operators_relative_accuracy(name: str, precise: bool | None) -> None:
    # a sweep across the tanh switch point (0.55), log near 1, exp up to its clamp
    x = torch.cat([torch.linspace(-4, 4, 161), torch.logspace(-30, 1.9, 63), -torch.logspace(-30, 1.9, 63)])
    x = torch.cat([x, torch.tensor([0.5499999, 0.55, 0.5500001, 1.0000001, 0.9999999])]).float()[:, None]
    got, ref = run(*population([([FIRST_VAR, OPCODE[name]], [0.0, 0.0])]), x, precise=precise)
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL if name == "log" else 0.0, equal_nan=True)


def test_argument_order_and_constants() -> None:
    # x0 - x1, x0 / 2.5, min(c, x1) with c = NaN propagates, max(x0, c)
    X = torch.tensor([[1.0, 4.0], [-3.0, 0.5], [float("nan"), 2.0]])
    progs = [
        ([FIRST_VAR, FIRST_VAR + 1, OPCODE["sub"]], [0, 0, 0]),
        ([FIRST_VAR, CONST, OPCODE["div"]], [0, 2.5, 0]),
        ([CONST, FIRST_VAR + 1, OPCODE["min"]], [float("nan"), 0, 0]),
        ([FIRST_VAR, CONST, OPCODE["max"]], [0, -1.0, 0]),
    ]
    got = evaluate_triton(*(t.to(DEV) for t in population(progs)), X.to(DEV)).cpu()
    nan = float("nan")
    expect = torch.tensor([[-3.0, -3.5, nan], [0.4, -1.2, nan], [nan, nan, nan], [1.0, -1.0, nan]])
    assert_exact(got, expect)


def test_random_programs_exact_ops() -> None:
    rng = np.random.default_rng(0)
    funcs = [OPCODE[f] for f in EXACT_OPS]
    progs = [random_tree(rng, 5, funcs, 3, 0.3) for _ in range(16)]
    X = edge_X(18, 3, seed=0)  # 40 rows: two row blocks of 32 in the interpreter, one partial
    ops, consts, length = population(progs, pad=2)
    got, ref = run(ops, consts, length, X)
    assert np.isnan(ref.numpy()).any() and np.isfinite(ref.numpy()).any()  # the edges are exercised
    assert_exact(got, ref)


def test_random_programs_all_ops() -> None:
    rng = np.random.default_rng(100)
    funcs = list(range(1, len(FUNCTIONS) + 1))
    progs = [random_tree(rng, 5, funcs, 3, 0.3) for _ in range(16)]
    assert set(funcs) <= {o for p, _ in progs for o in p}
    X = edge_X(18, 3, seed=1)
    got, ref = run(*population(progs), X)
    # log/sqrt/exp/tanh may round differently (1 ulp), deep compositions amplify that, and a
    # value within rounding of an EPS threshold may take the other branch: allow 1% of entries
    # (NaN vs number included) outside the per-operator tolerance.
    close = torch.isclose(got, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
    assert (~close).sum() <= close.numel() // 100, f"{(~close).sum()} of {close.numel()} entries differ"


def test_deep_stack_and_block_sizes() -> None:
    # right-leaning chain x0 (x1 (x2 ... (x11 + x0)))): stack depth 13 -> S = 16 register slots
    names = ["add", "sub", "mul", "min", "max", "div"]
    k = 12
    ops = [FIRST_VAR + (i % 3) for i in range(k)] + [FIRST_VAR] + [OPCODE[names[i % len(names)]] for i in range(k)]
    progs = [(ops, [0.0] * len(ops)), ([FIRST_VAR + 2], [0.0]), ([CONST], [0.75])]
    pop = population(progs, pad=3)
    assert max_stack_depth(pop[0]) == k + 1
    X = edge_X(40, 3, seed=7)
    ref = reference(*(t.to(DEV) for t in pop), X.to(DEV)).cpu()
    for kw in ({}, {"block_n": 16}, {"block_n": 64}, {"max_stack": 20}):
        got = evaluate_triton(*(t.to(DEV) for t in pop), X.to(DEV), **kw).cpu()
        assert_exact(got, ref)
    assert_exact(ref[2], torch.full((X.shape[0],), 0.75))


def test_max_stack_depth() -> None:
    v0, v1, v2 = FIRST_VAR, FIRST_VAR + 1, FIRST_VAR + 2
    progs = [([v0, v1, 1], [0.0] * 3), ([v0, v1, v2, 1, 1], [0.0] * 5), ([v0, 5, 6], [0.0] * 3)]
    assert max_stack_depth(population(progs, pad=4)[0]) == 3
    assert max_stack_depth(torch.zeros(0, 4, dtype=torch.int32)) == 0


def test_empty_and_invalid_inputs() -> None:
    pop = population([([FIRST_VAR], [0.0])])
    assert evaluate_triton(*(t.to(DEV) for t in pop), torch.zeros(0, 1, device=DEV)).shape == (1, 0)
    with pytest.raises(ValueError):
        evaluate_triton(pop[0].to(DEV), pop[1][:, :0].to(DEV), pop[2].to(DEV), torch.zeros(3, 1, device=DEV))


# ---- Kendall tau-b --------------------------------------------------------------------------


def _kendall_reference(pred: np.ndarray, target: np.ndarray, offsets: np.ndarray, high: bool) -> np.ndarray:
    from scipy.stats import kendalltau

    fill = np.inf if high else -np.inf
    pred = np.where(np.isfinite(pred), pred, fill)
    target = np.where(np.isfinite(target), target, fill)
    out = np.zeros((pred.shape[0], len(offsets) - 1))
    for p in range(pred.shape[0]):
        for t in range(len(offsets) - 1):
            x, y = pred[p, offsets[t]:offsets[t + 1]], target[offsets[t]:offsets[t + 1]]
            # constant input: tau undefined, 0 by the engine's convention (scipy would warn and give NaN)
            if len(x) >= 2 and not (np.all(x == x[0]) or np.all(y == y[0])):
                out[p, t] = kendalltau(x, y, variant="b").statistic
    return out


def test_kendall_tau_b_matches_scipy() -> None:
    pytest.importorskip("scipy")
    kendall_tau_b_triton = _kernels_module("kendall_kernel").kendall_tau_b_triton
    rng = np.random.default_rng(3)
    sizes = [37, 0, 1, 45, 2]  # 45 rows: 2 tile rows of 32, the triangle crosses tiles
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    N = int(offsets[-1])
    target = np.round(rng.standard_normal(N), 1).astype(np.float32)  # ties in the target
    target[5] = np.nan  # a non-finite target value ties with nothing finite
    pred = np.round(target + rng.standard_normal((6, N)), 0).astype(np.float32)  # correlated, many ties
    pred[1, rng.random(N) < 0.2] = np.nan
    pred[1, rng.random(N) < 0.1] = np.inf
    pred[1, rng.random(N) < 0.1] = -np.inf
    pred[2] = 3.0  # constant -> 0
    pred[3] = np.nan  # all non-finite: constant -> 0
    pred[4] = target * 2 + 1  # perfectly concordant where finite
    pred[5] = -target  # discordant

    def tau(pred: np.ndarray, high: bool) -> np.ndarray:
        return kendall_tau_b_triton(torch.from_numpy(pred).to(DEV), torch.from_numpy(target).to(DEV),
                                    torch.from_numpy(offsets).to(DEV), block=32, nonfinite_high=high).cpu().numpy()

    got = tau(pred, False)  # the default: non-finite ranks lowest, as in tensorgp.engine.fitness
    ref = _kendall_reference(pred, target, offsets, False)
    assert got.shape == (6, len(sizes)) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert (got[2] == 0).all() and (got[3] == 0).all() and got[4, 0] == pytest.approx(1.0)
    assert np.abs(ref[0, [0, 3]]).min() > 0.2 and np.abs(ref[:2, [0, 3]]).max() < 1  # non-trivial cases
    # non-finite values ranked highest instead: the row holding them changes
    high = tau(pred[1:2], True)
    np.testing.assert_allclose(high, _kendall_reference(pred[1:2], target, offsets, True), rtol=1e-6, atol=1e-7)
    assert not np.allclose(high, got[1:2])


def test_kendall_matches_fitness_module() -> None:
    fitness = pytest.importorskip("tensorgp.engine.fitness", reason="tensorgp.engine.fitness not present yet")
    kendall_tau_b_triton = _kernels_module("kendall_kernel").kendall_tau_b_triton
    rng = np.random.default_rng(5)
    offsets = torch.tensor([0, 40, 41, 90])
    target = torch.from_numpy(np.round(rng.random(90), 1).astype(np.float32))
    pred = torch.from_numpy(np.round(rng.standard_normal((5, 90)), 1).astype(np.float32))
    pred[0, ::3] = float("nan")
    pred[1, ::4] = float("-inf")
    pred[2, ::5] = float("inf")
    pred[3] = 1.0
    got = kendall_tau_b_triton(pred.to(DEV), target.to(DEV), offsets.to(DEV), block=32).cpu()
    ref = fitness.kendall_tau_b(pred, target, offsets).cpu()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


def test_kendall_counts_are_exact_integers() -> None:
    kendall = _kernels_module("kendall_kernel")
    # x = [1, 2, 2, 3], y = [1, 3, 2, 2]: pairs (i<j) -> sx*sy: 12:+1 13:+1 14:+1 23:0 24:-1 34:0 -> S = 2
    # untied in x: all but (2,3) -> 5; untied in y: all but (3,4) -> 5; tau_b = 2/5
    pred = torch.tensor([[1.0, 2.0, 2.0, 3.0]], device=DEV)
    target = torch.tensor([1.0, 3.0, 2.0, 2.0], device=DEV)
    off = torch.tensor([0, 4], device=DEV)
    c = kendall.kendall_counts_triton(pred, target, off, block=2).cpu()
    assert c.dtype == torch.int64 and c.tolist() == [[[2, 5, 5]]]
    assert kendall.kendall_tau_b_triton(pred, target, off).item() == pytest.approx(0.4)


# ---------------------------------------------------------------- rank kernel: fused wavelet passes


def _sorted_target_ranks(fitness, pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor):
    """(s, table) as ``fitness._torch_counts`` builds them: dense target ranks in prediction order."""
    rt = fitness.prepare_target(target, offsets)
    tab = rt.tables(pred.device)
    P, T = pred.shape[0], rt.n_tasks
    x = pred.index_select(1, tab.gidx.view(-1)).view(P, T, tab.W)
    torch.nan_to_num_(x, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)
    x.masked_fill_(tab.pad, np.inf)
    idx = torch.sort(x, dim=-1, stable=True)[1]
    return tab.s_tab.expand(P, T, tab.W).gather(-1, idx), tab


@pytest.mark.parametrize("grid_cap", [2048, 3])  # 3: each program takes several rows in turn
def test_wavelet_kernel_equals_the_torch_passes(monkeypatch, grid_cap) -> None:
    from tensorgp.engine import fitness

    rank_kernel = _kernels_module("rank_kernel")
    monkeypatch.setattr(rank_kernel, "GRID_CAP", grid_cap)
    rng = np.random.default_rng(7)
    offsets = torch.tensor([0, 37, 38, 38, 101, 104])
    target = torch.from_numpy(rng.integers(0, 9, 104).astype(np.float32))  # many target ties
    pred = torch.from_numpy(rng.integers(0, 5, (6, 104)).astype(np.float32))  # many prediction ties
    pred[0, ::3] = float("nan")
    pred[1, ::4] = float("inf")
    s, tab = _sorted_target_ranks(fitness, pred, target, offsets)
    ref = fitness._wavelet_sums(s.clone(), tab)
    for dt in (torch.int16, torch.int32):
        got = rank_kernel.wavelet_sums_triton(s.to(dt).to(DEV), tab.nz_m1.to(DEV), tab.bits).cpu()
        assert got.dtype == torch.int64 and torch.equal(got, ref)
    assert (ref - tab.ref).max() > 0  # inversions were counted


def test_wavelet_kernel_rejects_bad_shapes() -> None:
    rank_kernel = _kernels_module("rank_kernel")
    with pytest.raises(ValueError, match="int16/int32"):
        rank_kernel.wavelet_sums_triton(torch.zeros(2, 3, dtype=torch.int32, device=DEV), torch.zeros(1, 1), 1)
    with pytest.raises(ValueError, match="nz_m1"):
        rank_kernel.wavelet_sums_triton(torch.zeros(2, 3, 4, dtype=torch.int32, device=DEV), torch.zeros(2, 1), 1)


@pytest.mark.parametrize("backend", ["triton", "pairs"])
def test_rank_correlations_triton_backends_equal_the_reference(backend) -> None:
    """tau-b and rho through the Triton backends equal the torch path (and numba on the CPU) on
    data with many ties, non-finite values, a constant row, empty and 1-row tasks."""
    from tensorgp.engine import fitness

    rng = np.random.default_rng(11)
    sizes = [40, 0, 1, 70, 2, 33]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]))
    N = int(offsets[-1])
    target = torch.from_numpy(np.round(rng.random(N), 1).astype(np.float32))
    pred = torch.from_numpy(np.round(rng.standard_normal((9, N)), 1).astype(np.float32))
    pred[0, ::3] = float("nan")
    pred[1, ::4] = float("-inf")
    pred[2, ::5] = float("inf")
    pred[3] = 1.0
    pred[4] = -0.0
    pred[5] = target * 3 - 1
    pred[6] = -target
    pred[7, rng.random(N) < 0.5] = 0.0
    ref_t, ref_r = fitness.rank_correlations(pred, target, offsets, "torch")
    got_t, got_r = fitness.rank_correlations(pred.to(DEV), target.to(DEV), offsets.to(DEV), backend)
    torch.testing.assert_close(got_t.cpu(), ref_t, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_r.cpu(), ref_r, rtol=1e-6, atol=1e-7)
    rows = torch.tensor([6, 0, 0, 5], device=DEV)
    sub = fitness.kendall_tau_b(pred.to(DEV), target.to(DEV), offsets.to(DEV), backend, rows=rows).cpu()
    torch.testing.assert_close(sub, ref_t[rows.cpu()], rtol=1e-6, atol=1e-7)
    if fitness.numba_available():
        torch.testing.assert_close(ref_t, fitness.rank_correlations(pred, target, offsets, "numba")[0])
    from tensorgp.runtime.op_count import OpCounter

    rt = fitness.prepare_target(target.to(DEV), offsets.to(DEV))
    with OpCounter() as c:  # (tables built above) nothing waits for the host
        fitness.rank_correlations(pred.to(DEV), rt, backend=backend)
    assert c.syncs == 0, dict(c.sync_ops)
    assert ref_t[5, 0] == pytest.approx(1.0) and ref_t[6, 0] == pytest.approx(-1.0) and (ref_t[3] == 0).all()


def test_a_device_generation_with_the_sync_free_nas_objective_reads_nothing_on_the_host() -> None:
    """Device variation + ``RankObjective(sync_free=True)`` (Triton evaluation with a static
    stack bound, the batched rank statistics, no deduplication): ``advance()`` dispatches no
    operation that waits for the host, and the fitness equals the deduplicating objective's."""
    from tensorgp.engine.evolve import EvolutionConfig, Evolver
    from tensorgp.engine.primitives import PrimitiveSet
    from tensorgp.nas.objective import RankObjective
    from tensorgp.runtime.op_count import OpCounter
    from test_evolve import _toy_batch

    batch = _toy_batch(n=40)
    batch.X, batch.accuracy, batch.offsets = batch.X.to(DEV), batch.accuracy.to(DEV), batch.offsets.to(DEV)
    pset = PrimitiveSet(("a", "b", "c", "d"), ("add", "sub", "mul", "div"))
    cfg = EvolutionConfig(population=16, generations=3, seed=2, max_depth=4, max_len=16, init_depth=(1, 3),
                          variation="device")
    obj = RankObjective(batch, backend="triton", sync_free=True, max_stack=cfg.max_depth + 1, fitness_backend="torch")
    ev = Evolver(cfg, pset, obj, DEV, count_rows=120)
    ev.initialize()
    ev.step()
    with OpCounter() as c:
        ev.advance()
    assert c.syncs == 0, dict(c.sync_ops)
    ref = RankObjective(batch, backend="triton", fitness_backend="torch")
    torch.testing.assert_close(obj(ev.state.pop), ref(ev.state.pop))
    with pytest.raises(ValueError, match="max_stack"):
        RankObjective(batch, sync_free=True)


def test_sync_free_objective_scores_user_functions_with_their_own_code() -> None:
    """Triton has no code for a user function: the sync-free objective must not send it there."""
    from tensorgp.engine.primitives import register_function, unregister_function
    from tensorgp.nas.objective import RankObjective
    from test_evolve import _toy_batch

    batch = _toy_batch(n=40)
    batch.X, batch.accuracy, batch.offsets = batch.X.to(DEV), batch.accuracy.to(DEV), batch.offsets.to(DEV)
    hyp = register_function("hyp_objective", 2, lambda a, b: torch.sqrt(a * a + b * b))
    try:
        ops = torch.tensor([[FIRST_VAR, FIRST_VAR + 1, hyp], [FIRST_VAR, FIRST_VAR + 1, OPCODE["sub"]]],
                           dtype=torch.int32)
        pop = Population(ops.to(DEV), torch.zeros(2, 3, device=DEV), torch.tensor([3, 3], dtype=torch.int32, device=DEV))
        obj = RankObjective(batch, backend="triton", sync_free=True, max_stack=3, fitness_backend="torch")
        want = RankObjective(batch, backend="torch", fitness_backend="torch")
        with pytest.warns(UserWarning, match="hyp_objective"):
            got = obj(pop)
        torch.testing.assert_close(got, want(pop))
    finally:
        unregister_function("hyp_objective")


# ---------------------------------------------------------------- device generation kernels


def test_structure_kernel_matches_the_dense_torch_reference() -> None:
    from tensorgp.engine.population import init_population
    from tensorgp.engine.primitives import PrimitiveSet
    from tensorgp.engine.structure_dense import structure_dense_torch

    structure_triton = _kernels_module("structure_kernel").structure_triton
    pset = PrimitiveSet(("a", "b", "c"), ("add", "mul", "neg", "log"))
    pop = init_population(6, pset, torch.Generator().manual_seed(3), max_len=24, depth_range=(0, 4))
    pop.length[0] = 1  # a lone terminal
    pop.ops[0, 1:] = 0
    ref = structure_dense_torch(pop.ops, pop.length)
    got = structure_triton(pop.ops.to(DEV), pop.length.to(DEV)).cpu()
    assert got.shape == (6, 24, 3) and got.dtype == torch.int64
    assert torch.equal(got, ref)
    assert int(ref[..., 2].max()) >= 2  # non-trivial heights were compared


def test_pairs_kernel_launches_tasks_past_the_grid_limit_in_slices(monkeypatch) -> None:
    kk = _kernels_module("kendall_kernel")
    g = torch.Generator().manual_seed(0)
    off = torch.tensor([0, 3, 3, 7, 8, 12, 16])
    pred, target = torch.randn(2, 16, generator=g).round(), torch.randn(16, generator=g).round()
    want = kk.kendall_counts_triton(pred.to(DEV), target.to(DEV), off.to(DEV)).cpu()
    monkeypatch.setattr(kk, "GRID_Y", 2)
    assert torch.equal(kk.kendall_counts_triton(pred.to(DEV), target.to(DEV), off.to(DEV)).cpu(), want)


def test_structure_kernel_sees_functions_registered_after_its_first_call() -> None:
    from tensorgp.engine.primitives import register_function, unregister_function
    from tensorgp.engine.structure_dense import structure_dense_torch

    kern = _kernels_module("structure_kernel")
    add = torch.tensor([[FIRST_VAR, FIRST_VAR + 1, OPCODE["add"]]], dtype=torch.int32)
    ln = torch.tensor([3], dtype=torch.int32)
    kern.structure_triton(add.to(DEV), ln.to(DEV))  # fills the arity table of the device
    hyp = register_function("hyp_structure", 2, lambda a, b: torch.sqrt(a * a + b * b))
    try:
        ops = torch.tensor([[FIRST_VAR, FIRST_VAR + 1, hyp]], dtype=torch.int32)
        assert torch.equal(kern.structure_triton(ops.to(DEV), ln.to(DEV)).cpu(), structure_dense_torch(ops, ln))
    finally:
        unregister_function("hyp_structure")


def test_structure_kernel_refuses_programs_wider_than_its_tile_and_auto_falls_back() -> None:
    from tensorgp.engine.structure_dense import structure_dense_torch, structure_table

    kern = _kernels_module("structure_kernel")
    ops = torch.zeros(1, kern.MAX_L + 1, dtype=torch.int32)
    ops[0, 0] = FIRST_VAR
    ln = torch.tensor([1], dtype=torch.int32)
    with pytest.raises(ValueError, match="at most 1024 positions"):
        kern.structure_triton(ops.to(DEV), ln.to(DEV))
    assert torch.equal(structure_table(ops.to(DEV), ln.to(DEV)).cpu(), structure_dense_torch(ops, ln))


def test_pad_inside_length_is_a_no_op_as_in_numba() -> None:
    from tensorgp.engine.eval_numba import evaluate_numba

    ops = torch.tensor([[FIRST_VAR, 0, 0]], dtype=torch.int32)
    consts, ln = torch.zeros(1, 3), torch.tensor([3], dtype=torch.int32)
    X = torch.tensor([[3.0], [-2.0], [0.5]])
    got = evaluate_triton(ops.to(DEV), consts.to(DEV), ln.to(DEV), X.to(DEV), max_stack=2).cpu()
    assert torch.equal(got, evaluate_numba(ops, consts, ln, X)) and torch.equal(got, X.T)


def test_rng_kernel_gives_the_torch_bits() -> None:
    from tensorgp.engine.counter_rng import key_tensor, random_bits_torch as random_bits

    random_bits_triton = _kernels_module("rng_kernel").random_bits_triton
    key = key_tensor(11, 4, DEV)
    for stream, shape in ((0, (3, 700)), (1, (1500,))):  # several blocks, a partial last one
        ref = random_bits(key.cpu(), stream, shape)
        assert torch.equal(random_bits_triton(key, stream, shape).cpu(), ref)
