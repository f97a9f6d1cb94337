"""Breeding on the device: fixed-shape, mask-based, counter-seeded (``EvolutionConfig.variation="device"``).

``variation.breed`` gives each operator the children that drew it (``nonzero`` index sets, one
launch storm per operator) and draws from a stateful generator. Here every child goes through
one path whatever its operator, so a generation is a fixed sequence of tensor operations whose
number depends neither on the population nor on the programs, with no host synchronisation:

* crossover, subtree mutation and hoist mutation are one subtree replacement that differs only
  in the donor: the tournament-selected second parent, a fresh random tree, or the parent itself
  (the donor point then lies inside the cut subtree, so the child shrinks);
* point mutation is computed for every child and kept where the child drew it (its recipient
  is then the point-mutated parent and no cut is made);
* programs travel as one ``int32[., L, 2]`` tensor (opcode, constant bits), so each gather or
  select moves both at once;
* all random numbers of the generation come from one ``counter_rng.random_bits`` call (a pure
  function of the run's seed and the generation), laid out in columns per purpose.

Subtree-mutation donors are uniform random trees (not Koza's grow): a random multiset of
arities, shuffled by one sort, then rotated to the one cyclic shift that is a valid postfix
program (the cycle lemma: with stack effects ``1 - arity <= 1`` summing to 1, exactly the
rotation after the last minimum of the prefix sums keeps every prefix sum positive), with at
most ``MAX_FUNCTIONS`` functions per arity; the graft is a random subtree of it (Koza's 90/10
point rule, as for crossover), so donors range from one terminal to the whole tree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .counter_rng import below, uniform
from .device_random import random_bits
from .population import Population, arity_of, make_terminals
from .primitives import PrimitiveSet, arity_table, table_version
from .structure_dense import structure_table
from .variation import N_CANDIDATES, Limits, VariationRates, _first_valid, _pick, sample_points, splice_plan, tournament

STREAM_BREED = 1
# subtree-mutation donors: at most this many functions of each arity (arity >= 3: 2), so a donor
# has at most 1 + sum(arity * count) nodes (3 unary + 7 binary: 18)
MAX_FUNCTIONS = {1: 3, 2: 7}


@dataclass(frozen=True)
class DeviceTables:
    """What breeding needs of the primitive set and the rates, as tensors on one device (built once).

    ``functions[k, i]``: the i-th enabled function of arity k (row 0 unused); ``n_functions[k]``
    how many (0 where none: such a node keeps its opcode under point mutation; 1 for arity 0,
    whose draws are terminals)."""

    arities: torch.Tensor  # int64[A]: the arities >= 1 that have functions
    complete: bool  # every arity up to the largest of any primitive has functions
    caps: torch.Tensor  # int64[A]: MAX_FUNCTIONS per arity, plus one (the draw's range)
    functions: torch.Tensor  # int32[max_arity + 1, F]
    n_functions: torch.Tensor  # int64[max_arity + 1]
    edges: torch.Tensor  # float32[4]: cumulative operator probabilities
    tree_width: int  # slots of a subtree-mutation donor
    n_vars: int

    @staticmethod
    def build(pset: PrimitiveSet, rates: VariationRates, device: torch.device) -> "DeviceTables":
        top = int(arity_table().max())  # rows for every arity a (foreign) program may hold
        by_arity = [(k, pset.function_ops(k)) for k in range(1, top + 1)]
        complete = all(len(f) for _, f in by_arity)
        by_arity = [(k, f) for k, f in by_arity if len(f)]
        caps = [MAX_FUNCTIONS.get(k, 2) for k, _ in by_arity]
        F = max(len(f) for _, f in by_arity)
        functions = torch.zeros(top + 1, F, dtype=torch.int32)
        n_functions = torch.zeros(top + 1, dtype=torch.int64)
        n_functions[0] = 1
        for k, f in by_arity:
            functions[k, :len(f)] = f
            n_functions[k] = len(f)
        edges = torch.tensor([rates.crossover, rates.subtree, rates.hoist, rates.point]).cumsum(0)
        return DeviceTables(torch.tensor([k for k, _ in by_arity], device=device), complete,
                            torch.tensor(caps, device=device) + 1, functions.to(device), n_functions.to(device),
                            edges.to(device), 1 + sum(k * c for (k, _), c in zip(by_arity, caps)), pset.n_vars)


_TABLES: dict[tuple, DeviceTables] = {}


def device_tables(pset: PrimitiveSet, rates: VariationRates, device: torch.device) -> DeviceTables:
    key = (pset, rates, str(device), table_version())  # a re-registered function changes arities
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES[key] = DeviceTables.build(pset, rates, device)
    return t


_RANGES: dict[tuple[int, int, str], torch.Tensor] = {}


def _range(a: int, b: int, device: torch.device) -> torch.Tensor:
    """``torch.arange(a, b)`` on ``device``, built once (shapes are static across generations)."""
    key = (a, b, str(device))
    if key not in _RANGES:
        _RANGES[key] = torch.arange(a, b, device=device)
    return _RANGES[key]


class Columns:
    """Column ranges of one ``[n, width]`` block of random values, handed out per purpose."""

    def __init__(self, spec: tuple[tuple[str, int], ...]) -> None:
        self.spans: dict[str, tuple[int, int]] = {}
        self.width = 0
        for name, k in spec:
            self.spans[name] = (self.width, self.width + k)
            self.width += k

    def of(self, block: torch.Tensor, name: str) -> torch.Tensor:
        a, b = self.spans[name]
        return block[:, a:b]


def pack(pop: Population) -> torch.Tensor:
    """``int32[P, L, 2]``: opcodes and the bits of their constants side by side."""
    return torch.stack([pop.ops, pop.consts.view(torch.int32)], -1)


def unpack(prog: torch.Tensor, length: torch.Tensor) -> Population:
    return Population(prog[..., 0].contiguous(), prog[..., 1].contiguous().view(torch.float32), length)


def draw_symbols(arity: torch.Tensor, choice: torch.Tensor, value: torch.Tensor, const: torch.Tensor,
                 pset: PrimitiveSet, tab: DeviceTables, const_prob: float) -> torch.Tensor:
    """``int32[n, W, 2]`` random primitives of the given ``arity: int64[n, W]`` (a terminal where
    0, a function of that arity elsewhere) from draws of the same shape: ``choice`` 32-bit,
    ``value``, ``const`` uniforms."""
    term, c = make_terminals(below(choice, tab.n_vars), value, const, pset, const_prob)
    fn = tab.functions[arity, below(choice, tab.n_functions[arity])]
    leaf = arity == 0
    return torch.stack([torch.where(leaf, term, fn), torch.where(leaf, c, 0.0).view(torch.int32)], -1)


def random_tree_arities(counts: torch.Tensor, perm: torch.Tensor, tab: DeviceTables) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random tree shapes from draws (``counts: [n, A]`` 32-bit, ``perm: [n, W]`` uniforms):
    ``(arity int64[n, W]`` in postfix order, 0 past the end; ``length int64[n])``."""
    n, W = perm.shape
    pos = _range(0, W, perm.device)
    c = below(counts, tab.caps)  # functions of each arity
    length = 1 + (c * tab.arities).sum(1)
    inside = pos < length[:, None]
    # the sorted slots hold the functions arity by arity, then the terminals
    sorted_arity = torch.cat([tab.arities, tab.arities.new_zeros(1)])[
        torch.searchsorted(c.cumsum(1), pos.expand(n, W).contiguous(), right=True)]
    order = torch.sort(torch.where(inside, perm, 2.0), dim=1, stable=True).indices
    arity = torch.empty_like(sorted_arity).scatter_(1, order, sorted_arity)  # shuffled; pads stay last
    step = torch.where(inside, 1 - arity, 0)
    low = torch.where(inside, (step.cumsum(1) - step) * (W + 1) - pos, W * (W + 2)).argmin(1, keepdim=True)
    src = torch.where(inside, (pos + low) % length[:, None], pos)  # rotate to start after the last minimum
    return torch.where(inside, arity.gather(1, src), 0), length


def breed_device(pop: Population, fitness: torch.Tensor, key: torch.Tensor, n: int, pset: PrimitiveSet,
                 limits: Limits, rates: VariationRates, tournament_size: int, const_prob: float,
                 groups: int = 1, group_size: int | None = None) -> Population:
    """``n`` children of ``pop`` (``fitness: float32[P]``, higher better), as ``variation.breed``
    (same operators, rates, limits and run grouping), in a fixed sequence of tensor operations
    seeded by ``key: int64[2]`` (``counter_rng.key_tensor``). ``pop`` must be ``limits.max_len``
    wide."""
    dev = pop.device
    P, L = pop.size, limits.max_len
    if pop.max_len != L:
        raise ValueError(f"breed_device: population width {pop.max_len} != max_len {L}")
    tab = device_tables(pset, rates, dev)
    K, TS, TW = N_CANDIDATES, tournament_size, tab.tree_width
    cols = Columns((("entrants", 2 * TS), ("counts", len(tab.arities)), ("perm", TW), ("kind", 1),
                    ("cut", K), ("graft", K), ("hoist", K), ("hit", L), ("forced", 1),
                    ("choice", TW + L), ("value", TW + L), ("const", TW + L)))
    bits = random_bits(key, STREAM_BREED, (n, cols.width))
    u = uniform(bits)
    gs = P if group_size is None else group_size
    # 2n tournaments, child k's two in rows 2k, 2k+1: both map to child k's run (k * groups // n)
    winners = tournament(fitness, 2 * n, TS, None, groups, group_size,
                         draw=below(cols.of(bits, "entrants"), gs).view(2 * n, TS)).view(n, 2)
    parents, donors = winners[:, 0], winners[:, 1]
    kind = (cols.of(u, "kind") >= tab.edges).sum(1, keepdim=True)  # [n, 1]: 0 x, 1 sub, 2 hoist, 3 point, 4 copy

    # random primitives for the donor trees' slots and for point mutation, in one draw
    tree_arity, tree_len = random_tree_arities(cols.of(bits, "counts"), cols.of(u, "perm"), tab)
    a_arity = arity_of(pop.ops[parents])
    new = draw_symbols(torch.cat([tree_arity, a_arity], 1), cols.of(bits, "choice"), cols.of(u, "value"),
                       cols.of(u, "const"), pset, tab, const_prob)
    tree_slot = _range(0, TW, dev) < tree_len[:, None]
    tree = torch.nn.functional.pad(torch.where(tree_slot[..., None], new[:, :TW], 0), (0, 0, 0, L - TW))

    # one structure pass over the population and the trees; rows P + k are child k's tree
    progs = torch.cat([pack(pop), tree])
    lengths = torch.cat([pop.length, tree_len.int()])
    st = structure_table(progs[..., 0], lengths)  # int64[P + n, L, 3]: start, depth, height
    kind1 = kind[:, 0]
    d_rows = torch.where(kind1 == 0, donors, torch.where(kind1 == 1, _range(P, P + n, dev), parents))
    a, d = progs[parents], progs[d_rows]
    a_len, d_len = lengths[parents], lengths[d_rows]
    a_st, d_st = st[parents], st[d_rows]
    a_start, a_depth = a_st[..., 0], a_st[..., 1]
    d_start, d_height = d_st[..., 0], d_st[..., 2]

    # point mutation (kind 3): the recipient is the mutated parent, and no cut is made
    pos = _range(0, L, dev)
    hit = (cols.of(u, "hit") < rates.point_rate) | (pos == below(cols.of(bits, "forced"), a_len[:, None]))
    hit &= (pos < a_len[:, None]) & (kind == 3)
    if not tab.complete:  # a node of an arity without functions keeps its opcode
        hit &= tab.n_functions[a_arity] > 0
    a = torch.where(hit[..., None], new[:, TW:], a)

    # subtree replacement: cut candidates in a, graft candidates in the donor (hoist: inside the cut)
    both = Population(torch.cat([a[..., 0], d[..., 0]]), torch.empty(0), torch.cat([a_len, d_len]))
    pts = sample_points(both, None, K, u=torch.cat([cols.of(u, "cut"), cols.of(u, "graft")]))
    cut, graft = pts[:n], pts[n:]
    cut_start = a_start.gather(1, cut)
    span = cut - cut_start + 1
    hoist = cut_start + (cols.of(u, "hoist") * span).long().clamp(max=span - 1)
    j = torch.where(kind == 2, hoist, graft)
    j_start = d_start.gather(1, j)
    new_len = a_len[:, None] - span + (j - j_start + 1)
    ok = (new_len <= L) & (a_depth.gather(1, cut) + d_height.gather(1, j) <= limits.max_depth) & (kind < 3)
    k, any_ok = _first_valid(ok)
    r_src, d_src, take_r, in_donor, child_len = splice_plan(a_len, _pick(cut_start, k), _pick(cut, k),
                                                            _pick(j_start, k), _pick(j, k), L, L, L)
    child = torch.where(take_r[..., None], a.gather(1, r_src[..., None].expand(n, L, 2)),
                        torch.where(in_donor[..., None], d.gather(1, d_src[..., None].expand(n, L, 2)), 0))
    out = torch.where(any_ok[:, None, None], child, a)
    return unpack(out, torch.where(any_ok, child_len.int(), a_len))
