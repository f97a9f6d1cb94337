"""Compact formulas: rank-preserving simplification (checked by re-scoring), prunings, the Pareto
front and the compact selection."""
import math

import numpy as np
import pytest
import torch

from tensorgp.engine import expression as E
from tensorgp.engine.compact import UNIT_RANK, UNKNOWN, Range, prunings, rank_simplify, subtrees, value_range
from tensorgp.engine.evaluate import evaluate
from tensorgp.engine.population import Population, init_population
from tensorgp.engine.primitives import PrimitiveSet
from tensorgp.nas import pareto as PF
from tensorgp.nas.data import load, make_batch, preprocess

VARS = ("nwot", "jacov", "params")


def simp(text, ranges=(UNIT_RANK,) * 3):
    return E.to_infix(rank_simplify(E.parse(text, VARS), list(ranges)), VARS)


@pytest.mark.parametrize("text, expected", [
    ("tanh((nwot + nwot))", "nwot"),  # x + x -> 2 * x, then the increasing root wrappers go
    ("inv(inv(nwot))", "nwot"),  # rank quantiles are 0 or > EPS: inv(inv(x)) increases with x
    ("(inv(inv(nwot)) + jacov)", "(inv(inv(nwot)) + jacov)"),  # inside, 1/(1/x) may round off x
    ("(min(jacov, jacov) * params)", "(jacov * params)"),
    ("(exp(nwot) - 3)", "nwot"),
    ("sqrt(square((nwot * jacov)))", "(nwot * jacov)"),
    ("(0.5 * (nwot + 2))", "nwot"),
    ("((nwot * jacov) / 4)", "(nwot * jacov)"),
    ("(-nwot)", "(-nwot)"),  # decreasing: kept
    ("(-0.5 * nwot)", "(-0.5 * nwot)"),  # a negative factor reverses the ranking: kept
    ("log(nwot)", "log(nwot)"),  # nwot may be 0, where the protected log is 0: not increasing
    ("(min(jacov, 0.5) + (min(jacov, 0.5) + nwot))", "(min(jacov, 0.5) + (min(jacov, 0.5) + nwot))"),
])
def test_rank_simplify_rewrites(text, expected):
    assert simp(text) == expected


def test_rank_simplify_needs_the_range_it_relies_on():
    # without rank preprocessing the inputs are unbounded: inv(inv(x)) is not x (|x| <= EPS -> 0),
    # and a wrapper of an unbounded argument may hide an infinity
    assert simp("inv(inv(nwot))", (UNKNOWN,) * 3) == "inv(inv(nwot))"
    assert simp("tanh((nwot * jacov))", (UNKNOWN,) * 3) == "tanh((nwot * jacov))"
    assert simp("inv(inv(nwot))", (Range(0.0, 1.0, False),) * 3) == "inv(inv(nwot))"  # no gap above 0
    # the sum of x and x is folded anywhere (exact in floating point)
    assert simp("tanh((nwot + nwot))", (UNKNOWN,) * 3) == "tanh((2 * nwot))"


def test_value_range_is_conservative_on_random_formulas():
    pset = PrimitiveSet(VARS)
    pop = init_population(300, pset, torch.Generator().manual_seed(3), max_len=24, depth_range=(1, 4))
    X = preprocess(torch.rand(500, 3) * torch.tensor([1.0, 100.0, 1e-3]), "rank")
    X[:5] = 0.0
    pred = evaluate(pop, X, "torch")
    for i in range(pop.size):
        r = value_range(E.row(pop.ops, pop.consts, pop.length, i), [UNIT_RANK] * 3)
        v = pred[i][torch.isfinite(pred[i])].double()
        if v.numel():
            tol = 1e-5 * (1 + max(abs(r.lo), abs(r.hi))) if math.isfinite(r.lo) and math.isfinite(r.hi) else 0
            assert float(v.min()) >= r.lo - tol and float(v.max()) <= r.hi + tol


def _refines(orig: np.ndarray, new: np.ndarray) -> bool:
    """Every pair the original orders strictly (non-finite lowest) keeps its strict order."""
    o = np.where(np.isfinite(orig), orig.astype(np.float64), -np.inf)
    n = np.where(np.isfinite(new), new.astype(np.float64), -np.inf)
    order = np.argsort(o, kind="stable")
    o, n = o[order], n[order]
    starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])  # groups of equal original values
    hi = np.maximum.reduceat(n, starts)
    lo = np.minimum.reduceat(n, starts)
    return bool(np.all(hi[:-1] < lo[1:]))


def _check_rescored(X: torch.Tensor, offsets: list[int], n_formulas: int, seed: int) -> int:
    """Rank-simplify random formulas and re-score them on each task: every ranking is kept."""
    pset = PrimitiveSet(tuple(f"x{i}" for i in range(X.shape[1])))
    pop = init_population(n_formulas, pset, torch.Generator().manual_seed(seed), max_len=32,
                          depth_range=(1, 5), const_prob=0.2)
    nodes = [E.row(pop.ops, pop.consts, pop.length, i) for i in range(pop.size)]
    simple = [rank_simplify(n, [UNIT_RANK] * X.shape[1]) for n in nodes]
    changed = [i for i in range(len(nodes)) if simple[i] != nodes[i]]
    assert all(E.size(simple[i]) <= E.size(nodes[i]) for i in range(len(nodes)))
    a = evaluate(Population.from_rows([E.to_postfix(nodes[i]) for i in changed]), X, "torch").numpy()
    b = evaluate(Population.from_rows([E.to_postfix(simple[i]) for i in changed]), X, "torch").numpy()
    for k in range(len(changed)):
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            assert _refines(a[k, lo:hi], b[k, lo:hi]), (E.to_infix(nodes[changed[k]], pset.variables),
                                                        E.to_infix(simple[changed[k]], pset.variables))
    return len(changed)


def test_rank_simplification_keeps_every_ranking_on_synthetic_rank_data():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(300, 4, generator=g)
    raw[::7, 1] = 0.0  # ties
    raw[3, 2] = float("nan")  # a failed value
    X = preprocess(raw, "rank")
    assert _check_rescored(X, [0, 300], 400, seed=1) > 40


def test_rank_simplification_keeps_every_ranking_on_suite_zero(suite_zero):
    tasks = load(suite_zero)
    names = sorted(p for p in tasks[0].proxies if all(p in t.proxies for t in tasks))
    b = make_batch(tasks, names, "rank")
    assert _check_rescored(b.X, b.offsets.tolist(), 300, seed=2) > 30


def test_subtrees_and_prunings():
    n = E.parse("(min(nwot, jacov) * tanh(params))", VARS)
    assert [E.to_infix(s, VARS) for s in subtrees(n)][:3] == ["(min(nwot, jacov) * tanh(params))",
                                                               "min(nwot, jacov)", "nwot"]
    got = {E.to_infix(p, VARS) for p in prunings(n)}
    assert got == {"min(nwot, jacov)", "tanh(params)", "(nwot * tanh(params))", "(jacov * tanh(params))",
                   "(min(nwot, jacov) * params)"}


def test_front_and_compact_choice():
    c = lambda f, s: PF.Candidate(E.Node(16), f, s, "t")
    cands = [c(0.5, 1), c(0.6, 3), c(0.55, 5), c(0.69, 9), c(0.70, 20), c(0.65, 30), c(float("nan"), 2)]
    fr = PF.front(cands)
    assert [(x.size, x.fitness) for x in fr] == [(1, 0.5), (3, 0.6), (9, 0.69), (20, 0.70)]
    assert PF.compact_choice(fr).size == 9  # within 0.01 of 0.70
    assert PF.compact_choice(fr, tolerance=0.0).size == 20
    assert PF.compact_choice([]) is None


@pytest.mark.parametrize("text", ["exp((nwot - 200.0))", "tanh((nwot * 20.0))", "tanh(square((nwot * 10.0)))",
                                  "square((nwot * 1e20))", "(nwot + 1e8)"])
def test_rank_simplify_keeps_wrappers_that_tie_values_in_float32(text):
    """Where a wrapper saturates, underflows, overflows or swallows its argument in float32, dropping
    it would change the ranking: the simplified formula must rank 101 rank quantiles as the original."""
    from scipy.stats import kendalltau

    from tensorgp.engine.evaluate import evaluate
    from tensorgp.engine.population import Population

    names = ("nwot", "jacov", "snip")
    x = torch.linspace(0, 1, 101)
    X = torch.stack([x, x, x], 1)
    node = E.parse(text, names)
    out = rank_simplify(E.simplify(node), [UNIT_RANK] * 3)
    a, b = (evaluate(Population.from_rows([E.to_postfix(n)]), X, "torch")[0].numpy() for n in (node, out))
    ta, tb = kendalltau(a, np.arange(101)).statistic, kendalltau(b, np.arange(101)).statistic
    assert (np.isnan(ta) and np.isnan(tb)) or ta == pytest.approx(tb, abs=1e-12), (text, E.to_infix(out, names))
