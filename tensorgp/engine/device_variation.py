"""Breeding on the device: fixed-shape, mask-based, counter-seeded (``EvolutionConfig.variation="device"``).

``variation.breed`` gives each operator the children that drew it (``nonzero`` index sets, one
launch storm per operator) and draws from a stateful generator. Here every child goes through
one path whatever its operator, so a generation is a fixed sequence of tensor operations whose
number depends neither on the population nor on the programs, with no host synchronisation:

* crossover, subtree mutation and hoist mutation are one subtree replacement that differs only
  in the donor: the tournament-selected second parent, a fresh random tree, or the parent itself
  (the donor point then lies inside the cut subtree, so the child shrinks);
* point mutation is computed for every child and selected by mask;
* all random numbers of the generation come from one ``counter_rng.random_bits`` call (a pure
  function of the run's seed and the generation), laid out in columns per purpose.

Subtree-mutation donors are uniform random trees (not Koza's grow): a random multiset of
arities, shuffled by one sort, then rotated to the one cyclic shift that is a valid postfix
program (the cycle lemma: with stack effects ``1 - arity <= 1`` summing to 1, exactly the
rotation after the last minimum of the prefix sums keeps every prefix sum positive).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .counter_rng import below, random_bits, uniform
from .population import Population, arity_of, make_terminals, pad_to
from .primitives import PrimitiveSet
from .structure_dense import structure_dense
from .variation import N_CANDIDATES, Limits, VariationRates, _first_valid, _keep_parent_where, _pick, sample_points, \
    splice, tournament

STREAM_INIT = 0
STREAM_BREED = 1
# subtree-mutation donors: at most this many functions of each arity (arity >= 3: 2), so a donor
# has at most 1 + sum(arity * count) nodes (3 unary + 7 binary: 18)
MAX_FUNCTIONS = {1: 3, 2: 7}


@dataclass(frozen=True)
class DeviceTables:
    """What breeding needs of the primitive set, as tensors on one device (built once)."""

    by_arity: tuple[tuple[int, torch.Tensor], ...]  # (arity, int32[k] opcodes of that arity), arity >= 1
    caps: tuple[int, ...]  # MAX_FUNCTIONS per entry of by_arity
    tree_width: int  # slots of a subtree-mutation donor
    n_vars: int

    @staticmethod
    def build(pset: PrimitiveSet, device: torch.device) -> "DeviceTables":
        by_arity = []
        for k in range(1, pset.max_arity + 1):
            f = pset.function_ops(k)
            if len(f):
                by_arity.append((k, f.to(device)))
        caps = tuple(MAX_FUNCTIONS.get(k, 2) for k, _ in by_arity)
        width = 1 + sum(k * c for (k, _), c in zip(by_arity, caps))
        return DeviceTables(tuple(by_arity), caps, width, pset.n_vars)


_TABLES: dict[tuple, DeviceTables] = {}


def device_tables(pset: PrimitiveSet, device: torch.device) -> DeviceTables:
    key = (pset, str(device))
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES[key] = DeviceTables.build(pset, device)
    return t


_EDGES: dict[tuple, torch.Tensor] = {}


def _rate_edges(rates: VariationRates, device: torch.device) -> torch.Tensor:
    """``float32[4]``: cumulative operator probabilities, on the device once (no copy per generation)."""
    key = (rates, str(device))
    if key not in _EDGES:
        _EDGES[key] = torch.tensor([rates.crossover, rates.subtree, rates.hoist, rates.point], device=device).cumsum(0)
    return _EDGES[key]


class Columns:
    """Column ranges of one ``[n, width]`` block of random bits, handed out per purpose."""

    def __init__(self) -> None:
        self.width = 0
        self.spans: dict[str, tuple[int, int]] = {}

    def take(self, name: str, k: int) -> None:
        self.spans[name] = (self.width, self.width + k)
        self.width += k

    def of(self, bits: torch.Tensor, name: str) -> torch.Tensor:
        a, b = self.spans[name]
        return bits[:, a:b]


def random_trees(counts: torch.Tensor, perm: torch.Tensor, choice: torch.Tensor, value: torch.Tensor,
                 const: torch.Tensor, pset: PrimitiveSet, tab: DeviceTables, const_prob: float) -> Population:
    """Uniform random trees, one per row, from 32-bit draws: ``counts: [n, len(by_arity)]``,
    the rest ``[n, tree_width]``. Returns programs ``[n, tree_width]``."""
    n, W = perm.shape
    dev = perm.device
    pos = torch.arange(W, device=dev)
    m = torch.ones(n, dtype=torch.int64, device=dev)  # nodes: 1 + sum(arity * count)
    arity_sorted = torch.zeros(n, W, dtype=torch.int64, device=dev)
    lo = torch.zeros(n, 1, dtype=torch.int64, device=dev)
    for i, ((k, _), cap) in enumerate(zip(tab.by_arity, tab.caps)):
        c = below(counts[:, i:i + 1], cap + 1)
        arity_sorted += k * ((pos >= lo) & (pos < lo + c))
        lo = lo + c
        m += k * c[:, 0]
    inside = pos < m[:, None]
    keys = torch.where(inside, uniform(perm), 2.0)  # real slots shuffled, pads last
    order = torch.sort(keys, dim=1, stable=True).indices
    arity = torch.empty_like(arity_sorted).scatter_(1, order, arity_sorted)
    step = torch.where(inside, 1 - arity, 0)
    before = step.cumsum(1) - step
    kstar = torch.where(inside, before * (W + 1) - pos, W * (W + 2)).argmin(1, keepdim=True)
    src = torch.where(inside, (pos + kstar) % m[:, None], pos)
    arity = torch.where(inside, arity.gather(1, src), 0)
    ops, consts = make_terminals(below(choice, tab.n_vars), uniform(value), uniform(const), pset, const_prob)
    for k, f in tab.by_arity:
        ops = torch.where(arity == k, f[below(choice, len(f))], ops)
    ops = torch.where(inside, ops, 0)
    consts = torch.where(inside & (arity == 0), consts, 0.0)
    return Population(ops, consts, m.int())


def point_mutate(a: Population, hit_u: torch.Tensor, forced: torch.Tensor, choice: torch.Tensor, value: torch.Tensor,
                 const: torch.Tensor, pset: PrimitiveSet, tab: DeviceTables, rate: float,
                 const_prob: float) -> Population:
    """``variation.point_mutation`` from drawn bits (``[n, L]`` each, ``forced: [n, 1]``): each node
    is replaced with probability ``rate`` (and one uniform node surely) by a random primitive of
    its arity."""
    L = a.max_len
    pos = torch.arange(L, device=a.device)
    valid = pos < a.length[:, None]
    hit = ((uniform(hit_u) < rate) | (pos == below(forced, a.length[:, None].long()))) & valid
    ar = arity_of(a.ops)
    term, c = make_terminals(below(choice, tab.n_vars), uniform(value), uniform(const), pset, const_prob)
    leaf = hit & (ar == 0)
    ops = torch.where(leaf, term, a.ops)
    consts = torch.where(leaf, c, a.consts)
    for k, f in tab.by_arity:
        ops = torch.where(hit & (ar == k), f[below(choice, len(f))], ops)
    return Population(ops, consts, a.length)


def breed_device(pop: Population, fitness: torch.Tensor, key: torch.Tensor, n: int, pset: PrimitiveSet,
                 limits: Limits, rates: VariationRates, tournament_size: int, const_prob: float,
                 groups: int = 1, group_size: int | None = None) -> Population:
    """``n`` children of ``pop`` (``fitness: float32[P]``, higher better), as ``variation.breed``
    (same operators, rates, limits and run grouping), in a fixed sequence of tensor operations
    seeded by ``key: int64[2]`` (``counter_rng.key_tensor``). ``pop`` must be ``limits.max_len``
    wide."""
    dev = pop.device
    L = limits.max_len
    if pop.max_len != L:
        raise ValueError(f"breed_device: population width {pop.max_len} != max_len {L}")
    tab = device_tables(pset, dev)
    K, TS, TW = N_CANDIDATES, tournament_size, tab.tree_width
    cols = Columns()
    for name, k in (("parent", TS), ("donor", TS), ("kind", 1), ("cut", K), ("graft", K), ("hoist", K),
                    ("t_counts", len(tab.by_arity)), ("t_perm", TW), ("t_choice", TW), ("t_value", TW),
                    ("t_const", TW), ("p_hit", L), ("p_forced", 1), ("p_choice", L), ("p_value", L), ("p_const", L)):
        cols.take(name, k)
    bits = random_bits(key, STREAM_BREED, (n, cols.width))
    gs = pop.size if group_size is None else group_size
    parents = tournament(fitness, n, TS, None, groups, group_size, draw=below(cols.of(bits, "parent"), gs))
    donors = tournament(fitness, n, TS, None, groups, group_size, draw=below(cols.of(bits, "donor"), gs))
    edges = _rate_edges(rates, dev)
    kind = torch.bucketize(uniform(cols.of(bits, "kind")), edges, right=True)  # [n, 1]: 0 x, 1 sub, 2 hoist, 3 point, 4 copy

    tree = random_trees(*(cols.of(bits, c) for c in ("t_counts", "t_perm", "t_choice", "t_value", "t_const")),
                        pset, tab, const_prob)
    # one structure pass over the population and the random trees (only a tree's root height is used)
    both = structure_dense(torch.cat([pop.ops, pad_to(tree.ops, L)]), torch.cat([pop.length, tree.length]))
    P = pop.size
    a = Population(pop.ops[parents], pop.consts[parents], pop.length[parents])
    b = Population(pop.ops[donors], pop.consts[donors], pop.length[donors])
    a_start, a_depth, a_height = both.start[parents], both.depth[parents], both.height[parents]
    tree_root = (tree.length.long() - 1)[:, None]
    tree_height = both.height[P:].gather(1, tree_root)

    cut = sample_points(a, None, K, u=uniform(cols.of(bits, "cut")))
    graft = sample_points(b, None, K, u=uniform(cols.of(bits, "graft")))
    cut_start = a_start.gather(1, cut)
    span = cut - cut_start + 1
    hoist = cut_start + (uniform(cols.of(bits, "hoist")) * span).long().clamp(max=span - 1)
    is_x, is_sub = kind == 0, kind == 1
    j = torch.where(is_x, graft, torch.where(is_sub, tree_root, hoist))
    j_start = torch.where(is_x, both.start[donors].gather(1, graft), torch.where(is_sub, 0, a_start.gather(1, hoist)))
    j_height = torch.where(is_x, both.height[donors].gather(1, graft),
                           torch.where(is_sub, tree_height, a_height.gather(1, hoist)))
    new_len = a.length[:, None].long() - span + (j - j_start + 1)
    ok = (new_len <= L) & (a_depth.gather(1, cut) + j_height <= limits.max_depth)
    k, any_ok = _first_valid(ok)
    donor_ops = torch.where(is_x, b.ops, torch.where(is_sub, pad_to(tree.ops, L), a.ops))
    donor_consts = torch.where(is_x, b.consts, torch.where(is_sub, pad_to(tree.consts, L), a.consts))
    donor_len = torch.where(is_x[:, 0], b.length, torch.where(is_sub[:, 0], tree.length, a.length))
    i_pick, j_pick = _pick(cut, k), _pick(j, k)
    child = splice(a, _pick(cut_start, k), i_pick, Population(donor_ops, donor_consts, donor_len),
                   _pick(j_start, k), j_pick, L)
    child = _keep_parent_where(~any_ok, child, a, L)

    pointed = point_mutate(a, *(cols.of(bits, c) for c in ("p_hit", "p_forced", "p_choice", "p_value", "p_const")),
                           pset, tab, rates.point_rate, const_prob)
    replaced, point = kind < 3, kind == 3
    return Population(
        torch.where(replaced, child.ops, torch.where(point, pointed.ops, a.ops)),
        torch.where(replaced, child.consts, torch.where(point, pointed.consts, a.consts)),
        torch.where(replaced[:, 0], child.length, torch.where(point[:, 0], pointed.length, a.length)),
    )
