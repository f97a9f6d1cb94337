import pytest
import torch
from hypothesis import given, settings, strategies as st

from reference import random_pop
from tensorgp.engine.population import Population, is_valid, program_depth
from tensorgp.engine.variation import (Limits, VariationRates, breed, crossover, hoist_mutation, point_mutation,
                                subtree_mutation, tournament)


def _check(child: Population, limits: Limits, n_vars: int):
    assert bool(is_valid(child.ops, child.length, n_vars).all())
    assert int(child.length.max()) <= limits.max_len
    assert int(program_depth(child.ops, child.length).max()) <= limits.max_depth


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), max_len=st.integers(8, 64), max_depth=st.integers(3, 9))
def test_every_operator_gives_valid_children_within_limits(seed, max_len, max_depth):
    lim = Limits(max_len, max_depth)
    pop, pset = random_pop(128, seed=seed, max_len=max_len, depth=(1, min(3, max_depth)))
    other, _ = random_pop(128, seed=seed + 1, max_len=max_len, depth=(1, min(3, max_depth)))
    g = torch.Generator().manual_seed(seed)
    from tensorgp.engine.population import pad_to
    a = Population(pad_to(pop.ops, max_len), pad_to(pop.consts, max_len), pop.length)
    b = Population(pad_to(other.ops, max_len), pad_to(other.consts, max_len), other.length)
    _check(crossover(a, b, g, lim), lim, 4)
    _check(subtree_mutation(a, pset, g, lim, 0.2), lim, 4)
    _check(hoist_mutation(a, g, lim), lim, 4)
    _check(point_mutation(a, pset, g, 0.2, 0.2), lim, 4)


def test_crossover_children_are_made_of_parent_pieces():
    pop, pset = random_pop(200, seed=3, depth=(2, 4))
    g = torch.Generator().manual_seed(0)
    lim = Limits(64, 8)
    from tensorgp.engine.population import pad_to
    a = Population(pad_to(pop.ops, 64), pad_to(pop.consts, 64), pop.length)
    b = a[torch.randperm(200, generator=g)]
    child = crossover(a, b, g, lim)
    changed = (child.ops != a.ops).any(1) | (child.length != a.length)
    assert int(changed.sum()) > 100  # most children differ from their recipient
    # every child's prefix before the cut equals the recipient's
    for i in torch.nonzero(changed)[:20, 0].tolist():
        k = int((child.ops[i] != a.ops[i]).nonzero()[0]) if bool((child.ops[i] != a.ops[i]).any()) else 0
        assert torch.equal(child.ops[i, :k], a.ops[i, :k])


def test_hoist_never_grows_and_point_keeps_shape():
    pop, pset = random_pop(200, seed=4, depth=(2, 5))
    g = torch.Generator().manual_seed(1)
    lim = Limits(64, 8)
    h = hoist_mutation(pop, g, lim)
    assert bool((h.length <= pop.length).all())
    p = point_mutation(pop, pset, g, 0.3, 0.2)
    assert torch.equal(p.length, pop.length)
    from tensorgp.engine.population import arity_of
    assert torch.equal(arity_of(p.ops), arity_of(pop.ops))  # same arity at every position
    assert bool(((p.ops != pop.ops) | (p.consts != pop.consts)).any(1).float().mean() > 0.8)


def test_tournament_prefers_fit_and_respects_groups():
    g = torch.Generator().manual_seed(0)
    fit = torch.arange(100, dtype=torch.float32)
    w = tournament(fit, 1000, 7, g)
    assert float(fit[w].mean()) > 80
    fit_nan = fit.clone()
    fit_nan[50:] = float("nan")
    # a NaN wins only when all 5 entrants are NaN (probability 1/32)
    assert float((tournament(fit_nan, 2000, 5, g) >= 50).float().mean()) < 0.06
    # 4 runs of 25: tournament k only draws from run k*4//n
    w = tournament(fit, 400, 3, g, groups=4, group_size=25)
    run = torch.arange(400) * 4 // 400
    assert bool(((w // 25) == run).all())


def test_breed_is_seeded_and_valid():
    pop, pset = random_pop(300, seed=6)
    fit = torch.rand(300, generator=torch.Generator().manual_seed(0))
    lim = Limits(48, 7)
    kids = [breed(pop, fit, 300, pset, torch.Generator().manual_seed(9), lim, VariationRates(), 5, 0.1) for _ in range(2)]
    assert torch.equal(kids[0].ops, kids[1].ops) and torch.equal(kids[0].consts, kids[1].consts)
    _check(kids[0], lim, 4)


def test_rates_validated():
    with pytest.raises(ValueError):
        VariationRates(crossover=0.9, subtree=0.2)
