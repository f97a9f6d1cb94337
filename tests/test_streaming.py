"""Fits streamed from a memmap or an iterator of chunks: bounded reads, full-data figures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorgp import SymbolicRegressor
from tensorgp.sr.regressor import model_expression
from tensorgp.sr.streaming import ArraySource, ChunkSource, as_source, fit_source

N, M = 60_000, 3


@pytest.fixture
def memmap_data(tmp_path):
    rng = np.random.default_rng(0)
    X = np.memmap(tmp_path / "X.f32", np.float32, "w+", shape=(N, M))
    X[:] = rng.uniform(1, 3, (N, M)).astype(np.float32)
    y = np.memmap(tmp_path / "y.f32", np.float32, "w+", shape=(N,))
    y[:] = X[:, 0] * X[:, 1] + 0.5
    X.flush()
    y.flush()
    return (np.memmap(tmp_path / "X.f32", np.float32, "r", shape=(N, M)),
            np.memmap(tmp_path / "y.f32", np.float32, "r", shape=(N,)))


def small_est(**kw) -> SymbolicRegressor:
    return SymbolicRegressor(population_size=100, generations=4, random_state=0, chunk_rows=4096,
                             function_set=("add", "mul", "sub"), n_jobs=1, **kw)


def test_memmap_fit_reads_bounded_chunks_and_scores_all_rows(memmap_data) -> None:
    X, y = memmap_data
    src = ArraySource(X, y)
    est = fit_source(small_est(), src, model_expression, sample_rows=5000)
    st = est.stream_stats_
    assert st["rows"] == N and st["sample_rows"] == 5000
    # no read larger than a chunk, and the full pass read every row
    assert max(src.reads) <= 4096 and sum(r for r in src.reads if r > 64) >= N
    assert st["r2_all_rows"] > 0.9999 and est.score(np.array(X[:1000]), np.array(y[:1000])) > 0.9999


_RSS_SCRIPT = """
import resource, sys, numpy as np, torch
from tensorgp.engine.expression import parse, to_postfix
from tensorgp.engine.population import Population
from tensorgp.sr.streaming import ArraySource, front_moments
rows, d = int(sys.argv[1]), sys.argv[2]
with open(d + "/X", "wb") as fx, open(d + "/y", "wb") as fy:
    for lo in range(0, rows, 1 << 20):
        x = np.full((min(1 << 20, rows - lo), 2), 1.5, np.float32)
        fx.write(x.tobytes()); fy.write((x[:, 0] * x[:, 1]).tobytes())
X = np.memmap(d + "/X", np.float32, "r", shape=(rows, 2)); y = np.memmap(d + "/y", np.float32, "r", shape=(rows,))
o, c = to_postfix(parse("(x0 * x1) + sin(x0)", ["x0", "x1"]))
pop = Population(torch.tensor([o], dtype=torch.int32), torch.tensor([c]), torch.tensor([len(o)], dtype=torch.int32))
src = ArraySource(X, y)
src.sample(100_000, np.random.default_rng(0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fm = front_moments(pop, src, 1 << 16, torch.device("cpu"), "auto", 2.25)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert fm.rows == rows
print((after - before) / 1024, (X.nbytes + y.nbytes) / 2**20)
"""


def test_full_pass_memory_does_not_grow_with_the_data(tmp_path) -> None:
    import subprocess
    import sys

    # 24M rows: 288 MB on disk; the pass holds one 64k-row chunk and its predictions
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(24_000_000), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grew_mb, data_mb = map(float, out.stdout.split())
    assert data_mb > 250 and grew_mb < 40, (grew_mb, data_mb)


def test_memmap_rows_read_from_file_match_the_mapping(memmap_data) -> None:
    X, y = memmap_data
    src = ArraySource(X, y)
    got = np.concatenate([c for c, _ in src.chunks(7000)])
    assert np.array_equal(got, np.asarray(X))
    view = ArraySource(X[100:], y[100:])  # a view: read through the mapping, offsets stay right
    assert np.array_equal(next(view.chunks(10))[0], np.asarray(X[100:110]))
    Xs, ys = src.sample(1000, np.random.default_rng(0))
    assert Xs.shape == (1000, M) and np.allclose(ys, Xs[:, 0] * Xs[:, 1] + 0.5, rtol=1e-6)


def test_regressor_streams_a_memmap_and_a_chunk_source(memmap_data) -> None:
    X, y = memmap_data
    est = small_est().fit(X, y)  # fit() hands a memmap to the streaming path
    assert est.stream_stats_["rows"] == N

    def chunks():
        for lo in range(0, N, 10_000):
            yield np.asarray(X[lo:lo + 10_000]), np.asarray(y[lo:lo + 10_000])

    est2 = small_est().fit(ChunkSource(chunks))
    assert est2.stream_stats_["rows"] == N and est2.stream_stats_["r2_all_rows"] > 0.9999
    # full-data loss and scaling agree with an in-memory evaluation of the chosen model
    pred = est2.predict(np.asarray(X))
    assert abs(float(np.mean((pred - np.asarray(y, np.float64)) ** 2)) - est2.loss_) <= 1e-6 + 1e-3 * est2.loss_


def test_streaming_errors() -> None:
    with pytest.raises(TypeError, match="one-shot iterator"):
        as_source(iter([(np.ones((2, 1)), np.ones(2))]))
    with pytest.raises(TypeError, match="callable"):
        ChunkSource([(np.ones((2, 1)), np.ones(2))])
    with pytest.raises(ValueError, match="chunk 1"):
        ChunkSource(lambda: iter([(np.ones((2, 1)), np.ones(2)), (np.ones((2, 2)), np.ones(2))]))
    src = ChunkSource(lambda: iter([(np.ones((4, 1)), np.arange(4.0))]))
    with pytest.raises(ValueError, match="kendall"):
        SymbolicRegressor(loss="kendall").fit(src)
    assert as_source(np.ones((3, 2)), np.ones(3)) is None and as_source(torch.ones(3, 2), None) is None


def _quadratic(n: int = 3000, scale: float = 1.0):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(n, 2))
    return X, (X[:, 0] ** 2 + 0.5 * X[:, 1] + 3) * scale


def test_streaming_checks_every_row_and_names_the_row_of_the_data() -> None:
    X, y = _quadratic()
    bad_y = y.copy()
    bad_y[192] = np.nan  # outside the 1000-row sample of seed 0
    with pytest.raises(ValueError, match="y contains a non-finite value .* at row 192 of the data"):
        fit_source(small_est(), ArraySource(X, bad_y), model_expression, sample_rows=1000)
    bad_x = X.copy()
    bad_x[2500, 1] = 1e39  # beyond float32: inf once the programs read it
    with pytest.raises(ValueError, match="X contains .*float32 range.* at row 2500, column 1 of the data"):
        fit_source(small_est(), ArraySource(bad_x, y), model_expression, sample_rows=1000)


@pytest.mark.parametrize("scale", [1e-170, 1e200])
def test_streaming_rescales_extreme_targets_as_the_in_memory_fit(scale) -> None:
    X, y = _quadratic(scale=scale)
    est = fit_source(small_est(), ArraySource(X, y), model_expression, sample_rows=1000)
    assert est.score(X, y) > 0.999 and est.stream_stats_["r2_all_rows"] == pytest.approx(est.score(X, y), abs=1e-9)


def test_streaming_takes_numpy_random_states_and_a_refit_drops_its_statistics() -> None:
    X, y = _quadratic()
    est = SymbolicRegressor(population_size=100, generations=4, random_state=np.random.RandomState(0), n_jobs=1)
    est = fit_source(est, ArraySource(X, y), model_expression, sample_rows=1000)
    assert est.score(X, y) > 0.99 and "stream_stats_" in vars(est)
    est.fit(X[:500], y[:500])
    assert "stream_stats_" not in vars(est)
