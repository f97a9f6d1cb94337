import pytest
import torch

from reference import edge_matrix, eval_reference, random_pop
from tensorgp.engine.evaluate import evaluate, evaluate_torch, max_stack, resolve_backend


def _same(a, b, rtol=1e-6):
    assert a.shape == b.shape
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    m = ~torch.isnan(a)
    torch.testing.assert_close(a[m], b[m], rtol=rtol, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_matches_recursive_reference(seed):
    pop, _ = random_pop(200, n_vars=5, seed=seed, const_prob=0.3)
    X = edge_matrix(40, 5, seed)
    _same(evaluate_torch(pop.ops, pop.consts, pop.length, X), eval_reference(pop, X))


def test_chunking_gives_the_same_result():
    pop, _ = random_pop(100, seed=7)
    X = torch.randn(33, 4)
    full = evaluate_torch(pop.ops, pop.consts, pop.length, X)
    tiny = evaluate_torch(pop.ops, pop.consts, pop.length, X, chunk_bytes=1)
    assert torch.equal(full.nan_to_num(7.0), tiny.nan_to_num(7.0))


def test_protected_ops_never_nan_on_finite_inputs():
    pop, _ = random_pop(300, seed=8, functions="div,log,sqrt,inv,exp,tanh,neg,abs,square")
    X = torch.tensor([[0.0, 1e-7, -3.0, 50.0], [-1e-8, 2.0, 0.0, -50.0]])
    y = evaluate_torch(pop.ops, pop.consts, pop.length, X)
    assert not bool(torch.isnan(y).any())


def test_max_stack_and_backend_resolution():
    pop, _ = random_pop(50, seed=9)
    assert 1 <= max_stack(pop.ops, pop.length) <= 9
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cpu") in ("numba", "torch")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda-magic", "cpu")


def test_dispatch_backends_agree():
    pop, _ = random_pop(80, seed=10)
    X = edge_matrix(50, 4, 10)
    ref = evaluate(pop, X, "torch")
    # compiled backends may differ from torch by a few ulp in log/exp/tanh
    _same(evaluate(pop, X, "auto"), ref, rtol=1e-5)
