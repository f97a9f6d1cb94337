"""Rank-correlation fitness against scipy, across backends, sizes, ties and non-finite values."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from tensorgp.engine import fitness
from tensorgp.engine.fitness import AGGREGATIONS, aggregate, kendall_tau_b, prepare_target, rank_correlations, spearman

BACKENDS = ["torch"] + (["numba"] if fitness.numba_available() else [])
TOL = 1e-6


def scipy_scores(pred: np.ndarray, target: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64[P, T] tau-b and rho from scipy, non-finite predictions mapped below every finite
    one (tied), undefined (constant input, < 2 rows) -> 0."""
    P, T = pred.shape[0], len(offsets) - 1
    tau, rho = np.zeros((P, T)), np.zeros((P, T))
    for i in range(P):
        for t in range(T):
            a, b = offsets[t], offsets[t + 1]
            x, y = pred[i, a:b].astype(np.float64), target[a:b].astype(np.float64)
            if b - a < 2:
                continue
            fin = np.isfinite(x)
            x = np.where(fin, x, x[fin].min() - 1.0 if fin.any() else 0.0)
            if np.all(x == x[0]) or np.all(y == y[0]):
                continue
            tau[i, t] = scipy.stats.kendalltau(x, y, variant="b").statistic
            rho[i, t] = scipy.stats.spearmanr(x, y).statistic
    return tau, rho


def random_case(rng: np.random.Generator, P: int, lengths: list[int], ties: bool, nonfinite: float):
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    N = int(offsets[-1])
    if ties:  # few distinct values in both: heavy ties
        target = rng.integers(0, rng.integers(1, 8), N).astype(np.float32)
        pred = rng.integers(-3, rng.integers(-2, 4), (P, N)).astype(np.float32)
    else:
        target = np.round(rng.normal(size=N), 2).astype(np.float32)
        pred = (target[None] * rng.uniform(-1, 1, (P, 1)) + rng.normal(size=(P, N))).astype(np.float32)
    if P > 1:
        pred[0] = 7.0  # a constant individual
    m = rng.random((P, N)) < nonfinite
    pred[m] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(m.sum()))
    return pred, target, offsets


def run(pred, target, offsets, backend):
    t, r = rank_correlations(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(offsets), backend)
    assert t.dtype == torch.float32 and r.dtype == torch.float32
    assert t.shape == r.shape == (pred.shape[0], len(offsets) - 1)
    return t.numpy().astype(np.float64), r.numpy().astype(np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(12))
def test_matches_scipy_random(backend, seed):
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.choice([0, 1, 2, 3, 5, 17, 40, 64, 65, 130], size=rng.integers(1, 6))]
    pred, target, offsets = random_case(rng, int(rng.integers(1, 7)), lengths, ties=seed % 2 == 0,
                                        nonfinite=[0.0, 0.05, 0.5][seed % 3])
    tau, rho = run(pred, target, offsets, backend)
    ref_tau, ref_rho = scipy_scores(pred, target, offsets)
    np.testing.assert_allclose(tau, ref_tau, atol=TOL, rtol=0)
    np.testing.assert_allclose(rho, ref_rho, atol=TOL, rtol=0)
    # the single-score entry points agree with the combined one
    np.testing.assert_array_equal(kendall_tau_b(torch.from_numpy(pred), torch.from_numpy(target),
                                                torch.from_numpy(offsets), backend).numpy(), tau.astype(np.float32))
    np.testing.assert_array_equal(spearman(torch.from_numpy(pred), torch.from_numpy(target),
                                           torch.from_numpy(offsets), backend).numpy(), rho.astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_values_and_nonfinite_rank_last(backend):
    target = np.array([1, 2, 3, 4, 5, 6], np.float32)
    nan, inf = np.nan, np.inf
    pred = np.array([
        [10, 20, 30, 40, 50, 60],  # same order: 1
        [6, 5, 4, 3, 2, 1],  # reversed: -1
        [nan, 1, 2, 3, 4, 5],  # NaN ranks last, here where the lowest target is: 1
        [-inf, inf, 2, 3, 4, 5],  # +-inf tie with each other at the bottom
        [3, 3, 3, 3, 3, 3],  # constant: 0, not NaN
        [nan, nan, nan, nan, nan, nan],  # all failed: 0
        [-0.0, 0.0, 1, 1, 2, 2],  # -0 ties with +0
    ], np.float32)
    off = np.array([0, 6])
    tau, rho = run(pred, target, off, backend)
    assert tau[0, 0] == pytest.approx(1.0) and rho[0, 0] == pytest.approx(1.0)
    assert tau[1, 0] == pytest.approx(-1.0) and rho[1, 0] == pytest.approx(-1.0)
    assert tau[2, 0] == pytest.approx(1.0) and rho[2, 0] == pytest.approx(1.0)
    ref_tau, ref_rho = scipy_scores(pred, target, off)
    np.testing.assert_allclose(tau, ref_tau, atol=TOL)
    np.testing.assert_allclose(rho, ref_rho, atol=TOL)
    assert tau[3, 0] < 1.0 and tau[4, 0] == 0.0 and tau[5, 0] == 0.0 and rho[4, 0] == 0.0
    assert tau[6, 0] == pytest.approx(scipy.stats.kendalltau([0, 0, 1, 1, 2, 2], target).statistic)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_target_and_tiny_segments_give_zero(backend):
    target = np.array([5, 5, 5, 1, 2, 3], np.float32)  # tasks: [5 5 5], [], [1], [2 3]
    off = np.array([0, 3, 3, 4, 6])
    pred = np.array([[1, 2, 3, 4, 5, 6], [3, 2, 1, 0, 9, 8]], np.float32)
    tau, rho = run(pred, target, off, backend)
    np.testing.assert_array_equal(tau[:, :3], 0.0)
    np.testing.assert_array_equal(rho[:, :3], 0.0)
    np.testing.assert_allclose(tau[:, 3], [1.0, -1.0])
    np.testing.assert_allclose(rho[:, 3], [1.0, -1.0])


@pytest.mark.parametrize("n", [10_000, 40_000])
def test_large_segment_exact(n):
    """Pair counts far above 2**24 (float32-exact integers); n > 2048 takes the numba
    superblock path (n > 32768: with a Fenwick tree), n > 16383 the torch int32-index path."""
    rng = np.random.default_rng(n)
    target = np.round(rng.normal(size=n), 2).astype(np.float32)  # ties in the target
    pred = np.stack([
        target + rng.normal(scale=0.5, size=n),
        np.round(rng.normal(size=n) * 3),  # many ties in the prediction
        -target + rng.normal(scale=2.0, size=n),
    ]).astype(np.float32)
    pred[0, rng.random(n) < 0.01] = np.nan
    off = np.array([0, n])
    ref_tau, ref_rho = scipy_scores(pred, target, off)
    for backend in BACKENDS:
        tau, rho = run(pred, target, off, backend)
        np.testing.assert_allclose(tau, ref_tau, atol=TOL, rtol=0, err_msg=backend)
        np.testing.assert_allclose(rho, ref_rho, atol=TOL, rtol=0, err_msg=backend)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="numba is not installed")
def test_backends_agree_many_tasks():
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(0, 300, 9)] + [1, 2]
    pred, target, offsets = random_case(rng, 40, lengths, ties=False, nonfinite=0.02)
    pred[1:10] = np.round(pred[1:10])  # some tied individuals
    a = run(pred, target, offsets, "numba")
    b = run(pred, target, offsets, "torch")
    for x, y in zip(a, b):  # the same integer counts through the same formulas: bit-identical
        np.testing.assert_array_equal(x, y)


def test_auto_backend_and_numba_optional(monkeypatch):
    rng = np.random.default_rng(3)
    pred, target, offsets = random_case(rng, 5, [30, 12], ties=False, nonfinite=0.1)
    ref = run(pred, target, offsets, "torch")
    got = run(pred, target, offsets, "auto")
    np.testing.assert_allclose(got[0], ref[0], atol=1e-7)
    monkeypatch.setattr(fitness, "_HAVE_NUMBA", False)  # tensorgp without numba: auto -> torch
    got = run(pred, target, offsets, "auto")
    np.testing.assert_array_equal(got[0], ref[0])
    with pytest.raises(RuntimeError):
        run(pred, target, offsets, "numba")
    with pytest.raises(ValueError):
        run(pred, target, offsets, "cuda-magic")


def test_float64_predictions_keep_their_precision():
    """auto sends float64 to the torch path, which ranks the float64 values themselves."""
    target = torch.tensor([1.0, 2.0, 3.0])
    pred = torch.tensor([[1.0, 1.0 + 1e-12, 1.0 + 2e-12]], dtype=torch.float64)  # equal in float32
    off = torch.tensor([0, 3])
    assert kendall_tau_b(pred, target, off).item() == pytest.approx(1.0)
    assert kendall_tau_b(pred.float(), target, off).item() == 0.0
    with pytest.raises(TypeError):
        kendall_tau_b(torch.ones(1, 3, dtype=torch.int64), target, off)


def test_prepare_target_cached_and_validated():
    y = torch.tensor([3.0, 1.0, 2.0, 2.0])
    off = torch.tensor([0, 2, 4])
    rt = prepare_target(y, off)
    assert prepare_target(y.clone(), off.clone()) is rt  # keyed on content, not identity
    assert prepare_target(y + 1, off) is not rt
    np.testing.assert_array_equal(rt.trank, [0, 1, 0, 0])
    np.testing.assert_array_equal(rt.ytie, [0, 1])
    p = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(kendall_tau_b(p, rt, None).numpy(), kendall_tau_b(p, y, off).numpy())
    for bad in ([0, 5], [1, 4], [0, 3, 2, 4]):
        with pytest.raises(ValueError):
            prepare_target(y, torch.tensor(bad))
    with pytest.raises(ValueError):
        prepare_target(torch.tensor([1.0, float("nan")]), torch.tensor([0, 2]))
    with pytest.raises(ValueError):
        kendall_tau_b(torch.zeros(2, 3), y, off)  # wrong N


def test_aggregate():
    s = torch.tensor([[0.5, 0.1, 0.3], [-1.0, 1.0, 0.0]])

    def close(got, want):
        assert got.dtype == torch.float32 and got.shape == (len(want),)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)

    close(aggregate(s, "mean"), [0.3, 0.0])
    close(aggregate(s), [0.3, 0.0])
    close(aggregate(s, "min"), [0.1, -1.0])
    close(aggregate(s, "mean-std"), [0.3 - np.std([0.5, 0.1, 0.3]), 0.0 - np.std([-1.0, 1.0, 0.0])])
    close(aggregate(s[:, :1], "mean-std"), s[:, 0].numpy())  # one task: its score
    assert set(AGGREGATIONS) == {"mean", "min", "mean-std"}
    with pytest.raises(ValueError):
        aggregate(s, "median")


# ----------------------------------------------------------------------------- distinct rows

def _distinct(pred: torch.Tensor, fast: bool, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    monkeypatch.setattr(fitness, "_HAVE_NUMBA", fast and fitness.numba_available())
    return fitness.distinct_rows(pred)


@pytest.mark.parametrize("fast", [False, True])
def test_distinct_rows_groups_exactly_the_rows_scored_alike(fast, monkeypatch):
    inf, nan = float("inf"), float("nan")
    rows = torch.tensor([
        [1.0, 2.0, 0.0, -inf],
        [1.0, 2.0, -0.0, nan],   # same as row 0 for every statistic: -0 is 0, non-finite ties
        [1.0, 2.0, 0.0, inf],    # +inf ranks last too
        [1.0, 2.0, 0.0, 5.0],    # differs
        [2.0, 1.0, 0.0, -inf],   # same values, other order: differs
        [1.0, 2.0, 0.0, 5.0],
    ])
    keep, inverse = _distinct(rows, fast, monkeypatch)
    assert inverse.tolist()[:3] == [inverse[0].item()] * 3
    assert inverse[3] == inverse[5] != inverse[0]
    assert len(set(inverse.tolist())) == 3 == len(keep)
    assert torch.equal(keep[inverse][[0, 3, 4]], torch.tensor([0, 3, 4]))  # groups keep their first row
    target = torch.tensor([1.0, 3.0, 2.0, 0.5])
    off = torch.tensor([0, 4])
    full = kendall_tau_b(rows, target, off)
    assert torch.equal(kendall_tau_b(rows[keep], target, off)[inverse], full)


@pytest.mark.parametrize("fast", [False, True])
def test_distinct_rows_survive_hash_collisions(fast, monkeypatch):
    """Every row hashing alike must still be told apart by the full comparison."""
    monkeypatch.setattr(torch, "unique", lambda h, return_inverse: (h[:1], torch.zeros_like(h)))
    if fast and fitness.numba_available():
        monkeypatch.setattr(fitness, "_nb_row_hashes", lambda bits, out: out.fill(7))
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.normal(size=(4, 30)).astype(np.float32))
    pred = base[[0, 1, 0, 2, 3, 1]]
    keep, inverse = _distinct(pred, fast, monkeypatch)
    assert torch.equal(pred[keep][inverse], pred)
    assert inverse[0] == inverse[2]  # the group's first row still absorbs its true copies
    assert len(keep) == 5  # rows 1, 3, 4, 5 each kept on their own after failing the check


@pytest.mark.parametrize("fast", [False, True])
def test_distinct_rows_random_population_scores_unchanged(fast, monkeypatch):
    rng = np.random.default_rng(1)
    pred, target, offsets = random_case(rng, 40, [50, 30, 2], ties=True, nonfinite=0.05)
    pred = np.concatenate([pred, pred[::3]])  # copies
    p = torch.from_numpy(pred)
    keep, inverse = _distinct(p, fast, monkeypatch)
    assert len(keep) <= 40
    args = (torch.from_numpy(target), torch.from_numpy(offsets))
    assert torch.equal(spearman(p[keep], *args, "torch")[inverse], spearman(p, *args, "torch"))
    assert torch.equal(kendall_tau_b(p[keep], *args, "torch")[inverse], kendall_tau_b(p, *args, "torch"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_argument_scores_a_subset_in_place(backend):
    rng = np.random.default_rng(2)
    pred, target, offsets = random_case(rng, 12, [40, 25], ties=True, nonfinite=0.05)
    p, y, o = torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(offsets)
    rows = torch.tensor([5, 0, 5, 11, 3])
    t, r = rank_correlations(p, y, o, backend, rows=rows)
    t2, r2 = rank_correlations(p[rows], y, o, backend)
    assert torch.equal(t, t2) and torch.equal(r, r2)
    assert torch.equal(fitness.top_kendall(p, y, o, 0.3, backend, rows=rows), fitness.top_kendall(p[rows], y, o, 0.3, backend))
    assert rank_correlations(p, y, o, backend, rows=torch.zeros(0, dtype=torch.int64))[0].shape == (0, 2)


def test_auto_routes_by_device_dtype_task_length_and_statistic(monkeypatch):
    cpu = "numba" if fitness.numba_available() else "torch"
    assert fitness.route("cpu", torch.float32, 700) == cpu
    assert fitness.route("cpu", torch.float64, 700) == "torch"
    monkeypatch.setattr(fitness, "_triton_ok", lambda device: True)
    short = fitness.PAIRS_MAX_ROWS
    assert fitness.route("cuda", torch.float32, short, tau=True, rho=False) == "pairs"
    assert fitness.route("cuda", torch.float32, short) == "triton"  # Spearman too: the sort path
    assert fitness.route("cuda", torch.float32, short + 1, rho=False) == "triton"
    assert fitness.route("cuda", torch.float64, short, rho=False) == "triton"  # pairs ranks float32 values
    monkeypatch.setattr(fitness, "_triton_ok", lambda device: False)
    assert fitness.route("cuda", torch.float32, short, rho=False) == "torch"
    with pytest.raises(ValueError, match="triton"):
        rank_correlations(torch.zeros(1, 3), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 3]), "triton")
    with pytest.raises(ValueError, match="unknown backend"):
        rank_correlations(torch.zeros(1, 3), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 3]), "fast")


def test_torch_path_is_a_fixed_number_of_launches_without_host_syncs():
    """The batched path a GPU runs: the same torch operations for 20 or 400 programs (one chunk),
    none of which reads a result on the host."""
    from tensorgp.runtime.op_count import OpCounter

    rng = np.random.default_rng(4)
    pred, target, offsets = (torch.from_numpy(a) for a in random_case(rng, 400, [300, 1, 250, 0], True, 0.1))
    rt = prepare_target(target, offsets)
    rank_correlations(pred[:2], rt, backend="torch")  # builds the per-device tables once
    counts = {}
    for P in (20, 400):
        with OpCounter() as c:
            t, r = rank_correlations(pred[:P], rt, backend="torch")
        counts[P] = (c.launches, c.syncs)
        assert t.shape == r.shape == (P, 4)
    assert counts[20] == counts[400] and counts[20][1] == 0 and counts[20][0] < 200
    print("launches, syncs:", counts)


def test_the_same_target_tensors_again_are_not_read(monkeypatch):
    """A generation passes the same target tensors every time: the second call must not copy
    them to the host (a sync on a GPU), and an in-place change of the target is seen."""
    y = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2])
    off = torch.tensor([0, 3, 5])
    rt = prepare_target(y, off)

    def no_host_copy(*a, **k):
        raise AssertionError("the target was read again")

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "cpu", no_host_copy)
        assert prepare_target(y, off) is rt
    y[0] = 0.95  # in place: a new version, a new RankTarget
    rt2 = prepare_target(y, off)
    assert rt2 is not rt and rt2.perm[:3].tolist() == [2, 1, 0] and rt.perm[:3].tolist() == [0, 2, 1]
    assert prepare_target(y.clone(), off.clone()) is rt2  # other tensors, equal bytes


@pytest.mark.skipif(not fitness.numba_available(), reason="numba is not installed")
def test_explicit_numba_keeps_float64_precision_and_checks_rows():
    """numba ranks float32 values: float64 predictions go to the exact torch path instead of being
    cast (1e300 would become inf and rank last; 1 and 1 + 1e-12 would tie)."""
    pred = torch.tensor([[1e300, 1, 2, 3], [1, 1 + 1e-12, 2, 3]], dtype=torch.float64)
    target, off = torch.tensor([4.0, 1, 2, 3]), torch.tensor([0, 4])
    tau, rho = rank_correlations(pred, target, off, backend="numba")
    for k in range(2):
        assert float(tau[k, 0]) == pytest.approx(scipy.stats.kendalltau(pred[k], target).statistic, abs=1e-6)
        assert float(rho[k, 0]) == pytest.approx(scipy.stats.spearmanr(pred[k], target).statistic, abs=1e-6)
    p32 = torch.randn(2, 4)
    with pytest.raises(IndexError, match="rows out of range"):
        kendall_tau_b(p32, target, off, backend="numba", rows=torch.tensor([2]))
    assert torch.equal(kendall_tau_b(p32, target, off, backend="numba", rows=torch.tensor([-1])),
                       kendall_tau_b(p32, target, off, backend="torch", rows=torch.tensor([-1])))
