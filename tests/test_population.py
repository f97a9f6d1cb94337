import pytest
import torch
from hypothesis import given, settings, strategies as st

from reference import random_pop
from tensorgp.engine import expression as E
from tensorgp.engine.population import init_population, is_valid, program_depth, structure, structure_torch
from tensorgp.engine.primitives import CONST, FIRST_VAR, PrimitiveSet


def _tree_spans(node, pos=None):
    """(start, depth, height) per postfix position, computed recursively."""
    out = []

    def walk(n, d):
        first = len(out)
        hs = [walk(c, d + 1) for c in n.children]
        h = 1 + max(hs) if hs else 0
        out.append((first, d, h))
        return h

    walk(node, 0)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.integers(0, 3), span=st.integers(0, 4), max_len=st.integers(3, 64))
def test_init_valid_within_limits(seed, lo, span, max_len):
    pset = PrimitiveSet(("a", "b", "c"))
    g = torch.Generator().manual_seed(seed)
    pop = init_population(64, pset, g, max_len=max_len, depth_range=(lo, lo + span))
    assert bool(is_valid(pop.ops, pop.length, 3).all())
    assert int(pop.length.max()) <= max_len
    assert int(program_depth(pop.ops, pop.length).max()) <= lo + span


def test_init_ramps_depths_and_is_seeded():
    pset = PrimitiveSet(("a", "b"))
    p1 = init_population(200, pset, torch.Generator().manual_seed(3), max_len=64, depth_range=(2, 6))
    p2 = init_population(200, pset, torch.Generator().manual_seed(3), max_len=64, depth_range=(2, 6))
    assert torch.equal(p1.ops, p2.ops) and torch.equal(p1.consts, p2.consts)
    d = program_depth(p1.ops, p1.length)
    assert set(d.tolist()) >= {2, 3, 4, 5, 6}  # the full half reaches every target depth


@pytest.mark.parametrize("impl", [structure, structure_torch])
def test_structure_matches_recursive(impl):
    pop, _ = random_pop(300, seed=1)
    s = impl(pop.ops, pop.length)
    for i in range(pop.size):
        n = int(pop.length[i])
        ref = _tree_spans(E.row(pop.ops, pop.consts, pop.length, i))
        assert s.start[i, :n].tolist() == [r[0] for r in ref]
        assert s.depth[i, :n].tolist() == [r[1] for r in ref]
        assert s.height[i, :n].tolist() == [r[2] for r in ref]


def test_is_valid_rejects_broken_rows():
    pop, _ = random_pop(10, seed=2, depth=(2, 3))
    assert bool(is_valid(pop.ops, pop.length, 4).all())
    bad = pop.ops.clone()
    bad[:, 0] = 1  # a binary function first: stack underflow
    assert not bool(is_valid(bad, pop.length, 4).any())
    short = pop.length - 1  # drops the root: more than one value left
    assert not bool(is_valid(pop.ops, short.clamp(min=1), 4)[pop.length > 1].any())
    unknown = pop.ops.clone()
    unknown[:, 0] = FIRST_VAR + 4  # feature 4 does not exist
    assert not bool(is_valid(unknown, pop.length, 4).any())


def test_unique_programs_finds_duplicates():
    from tensorgp.engine.population import Population, program_keys, unique_programs

    pop, _ = random_pop(50, seed=11)
    doubled = Population.cat([pop, pop[torch.arange(0, 50, 2)]])
    uniq, inv = unique_programs(doubled)
    assert uniq.size <= 50
    assert torch.equal(uniq.ops[inv], doubled.ops) and torch.equal(uniq.length[inv], doubled.length)
    keys = program_keys(pop)
    other = pop.clone()
    other.consts[:, 0] += 1.0  # a different constant is a different program
    changed = pop.ops[:, 0] == CONST
    assert bool((program_keys(other)[changed] != keys[changed]).all())


def test_first_new_matches_a_skip_seen_loop():
    """first_new is the batched form of "walk the keys in order, skip those done or seen"."""
    from tensorgp.engine.population import first_new

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        keys = torch.randint(0, 12, (int(torch.randint(0, 40, (1,), generator=g)),), generator=g)
        done = torch.randint(0, 12, (int(torch.randint(0, 6, (1,), generator=g)),), generator=g)
        want, seen = [], set(done.tolist())
        for i, k in enumerate(keys.tolist()):
            if k not in seen:
                seen.add(k)
                want.append(i)
        assert first_new(keys, done).tolist() == want
