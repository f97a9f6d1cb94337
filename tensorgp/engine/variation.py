"""Variation operators over whole batches of programs: subtree crossover, subtree, hoist and
point mutation. Every child is a valid program within the depth and length limits; a child
for which no valid cut is found among a few candidates is a copy of its parent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .population import Population, Structure, arity_of, init_population, pad_to, random_terminals, structure
from .primitives import CONST, PrimitiveSet

N_CANDIDATES = 8  # candidate cut points drawn per child; the first valid one is used


@dataclass(frozen=True)
class Limits:
    max_len: int = 64
    max_depth: int = 8


def _valid_mask(pop: Population) -> torch.Tensor:
    return torch.arange(pop.max_len, device=pop.device)[None, :] < pop.length[:, None]


def sample_points(pop: Population, generator: torch.Generator | None, n: int, func_bias: float = 0.9,
                  u: torch.Tensor | None = None) -> torch.Tensor:
    """``int64[P, n]``: random node positions per program; functions get ``func_bias`` of the
    mass when a program has any (Koza's 90/10 rule keeps cuts from being mostly leaves).
    ``u: float32[P, n]`` uniforms in [0, 1) replace the draws from ``generator``."""
    valid = _valid_mask(pop)
    is_f = (arity_of(pop.ops) > 0) & valid
    n_f = is_f.sum(1, keepdim=True).float()
    n_t = (valid & ~is_f).sum(1, keepdim=True).float()
    w_f = torch.where(n_f > 0, func_bias / n_f.clamp(min=1), torch.zeros_like(n_f))
    w_t = torch.where(n_f > 0, (1 - func_bias) / n_t.clamp(min=1), 1 / n_t.clamp(min=1))
    w = torch.where(is_f, w_f, torch.where(valid, w_t, torch.zeros_like(w_t)))
    # inverse-CDF sampling: one cumsum and a batched searchsorted (multinomial is slow on CPU)
    cw = w.cumsum(1)
    if u is None:
        u = torch.rand(w.shape[0], n, generator=generator, device=w.device)
    idx = torch.searchsorted(cw, u * cw[:, -1:], right=True)
    return torch.minimum(idx, (pop.length.long() - 1)[:, None])


def splice_plan(r_len: torch.Tensor, r_start: torch.Tensor, r_end: torch.Tensor, d_start: torch.Tensor,
                d_end: torch.Tensor, max_len: int, r_width: int, d_width: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each slot of the spliced rows comes from (``splice``'s index work, for any row
    payload): ``(r_src, d_src: int64[K, max_len]`` columns to gather from the recipient / donor,
    ``take_r, in_donor: bool[K, max_len]``, ``new_len: int64[K])``; slots in neither are PAD."""
    K = r_len.shape[0]
    cut = r_end - r_start + 1
    ins = d_end - d_start + 1
    new_len = r_len.long() - cut + ins
    t = torch.arange(max_len, device=r_len.device)[None, :].expand(K, max_len)
    before = t < r_start[:, None]
    in_donor = (~before) & (t < (r_start + ins)[:, None])
    after = (t >= (r_start + ins)[:, None]) & (t < new_len[:, None])
    r_src = torch.where(before, t, t - ins[:, None] + cut[:, None]).clamp(0, r_width - 1)
    d_src = (t - r_start[:, None] + d_start[:, None]).clamp(0, d_width - 1)
    return r_src, d_src, before | after, in_donor, new_len


def splice(recipient: Population, r_start: torch.Tensor, r_end: torch.Tensor,
           donor: Population, d_start: torch.Tensor, d_end: torch.Tensor, max_len: int) -> Population:
    """Replace ``recipient[k, r_start:r_end+1]`` by ``donor[k, d_start:d_end+1]`` for every k.
    All index tensors ``int64[K]``; the caller guarantees the result fits in ``max_len``."""
    r_src, d_src, take_r, in_donor, new_len = splice_plan(recipient.length, r_start, r_end, d_start, d_end, max_len,
                                                          recipient.max_len, donor.max_len)
    r_ops = recipient.ops.gather(1, r_src)
    r_c = recipient.consts.gather(1, r_src)
    d_ops = donor.ops.gather(1, d_src)
    d_c = donor.consts.gather(1, d_src)
    ops = torch.where(take_r, r_ops, torch.where(in_donor, d_ops, torch.zeros_like(r_ops)))
    consts = torch.where(take_r, r_c, torch.where(in_donor, d_c, torch.zeros_like(r_c)))
    return Population(ops.int(), consts, new_len.int())


def _first_valid(ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``ok: bool[K, R]``: (index of the first True per row, whether any is True)."""
    R = ok.shape[1]
    idx = torch.where(ok, torch.arange(R, device=ok.device)[None, :], torch.full_like(ok, R, dtype=torch.long)).amin(1)
    return idx.clamp(max=R - 1), ok.any(1)


def _pick(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return t.gather(1, k[:, None])[:, 0]


def crossover(a: Population, b: Population, generator: torch.Generator, limits: Limits) -> Population:
    """Subtree crossover: a random subtree of each ``a[k]`` is replaced by a random subtree of ``b[k]``."""
    sa, sb = structure(a.ops, a.length), structure(b.ops, b.length)
    ia = sample_points(a, generator, N_CANDIDATES)
    jb = sample_points(b, generator, N_CANDIDATES)
    return _replace(a, sa, ia, b, sb, jb, limits)


def _replace(a: Population, sa: Structure, ia: torch.Tensor, b: Population, sb: Structure, jb: torch.Tensor,
             limits: Limits) -> Population:
    a_start = sa.start.gather(1, ia)
    b_start = sb.start.gather(1, jb)
    new_len = a.length[:, None].long() - (ia - a_start + 1) + (jb - b_start + 1)
    new_depth = sa.depth.gather(1, ia) + sb.height.gather(1, jb)
    ok = (new_len <= limits.max_len) & (new_depth <= limits.max_depth)
    k, any_ok = _first_valid(ok)
    i, j = _pick(ia, k), _pick(jb, k)
    child = splice(a, _pick(sa.start, i), i, b, _pick(sb.start, j), j, limits.max_len)
    return _keep_parent_where(~any_ok, child, a, limits.max_len)


def _keep_parent_where(mask: torch.Tensor, child: Population, parent: Population, max_len: int) -> Population:
    return Population(
        torch.where(mask[:, None], pad_to(parent.ops, max_len), child.ops),
        torch.where(mask[:, None], pad_to(parent.consts, max_len), child.consts),
        torch.where(mask, parent.length, child.length),
    )


def subtree_mutation(a: Population, pset: PrimitiveSet, generator: torch.Generator, limits: Limits,
                     const_prob: float, depth_range: tuple[int, int] = (0, 4)) -> Population:
    """Replace a random subtree by a freshly grown random tree."""
    # donors are small (depth <= 4), so they are grown in short rows
    donors = init_population(a.size, pset, generator, max_len=min(limits.max_len, 2 ** (depth_range[1] + 1)), depth_range=depth_range,
                             const_prob=const_prob, device=a.device, method="grow")
    sa, sd = structure(a.ops, a.length), structure(donors.ops, donors.length)
    ia = sample_points(a, generator, N_CANDIDATES)
    root = (donors.length.long() - 1)[:, None].expand(-1, N_CANDIDATES)
    return _replace(a, sa, ia, donors, sd, root, limits)


def hoist_mutation(a: Population, generator: torch.Generator, limits: Limits) -> Population:
    """Replace a random subtree by one of its own subtrees (shrinks programs against bloat)."""
    sa = structure(a.ops, a.length)
    ia = sample_points(a, generator, 1)[:, 0]
    lo = _pick(sa.start, ia)
    span = ia - lo + 1
    k = lo + (torch.rand(a.size, generator=generator, device=a.device) * span).long().clamp(max=span - 1)
    return splice(a, lo, ia, a, _pick(sa.start, k), k, limits.max_len)


def point_mutation(a: Population, pset: PrimitiveSet, generator: torch.Generator, rate: float,
                   const_prob: float) -> Population:
    """Each node is replaced with probability ``rate`` by a random primitive of the same arity
    (terminals by a random terminal); at least one node of each program changes."""
    dev = a.device
    P, L = a.ops.shape
    valid = _valid_mask(a)
    u = torch.rand(P, L, generator=generator, device=dev)
    forced = torch.multinomial(valid.float(), 1, generator=generator)[:, 0]
    hit = ((u < rate) & valid)
    hit[torch.arange(P, device=dev), forced] = True
    ar = arity_of(a.ops)
    new_ops = a.ops.clone()
    new_c = a.consts.clone()
    for arity in range(0, pset.max_arity + 1):
        sel = hit & (ar == arity)
        if arity == 0:
            term, c = random_terminals((P, L), pset, generator, dev, const_prob)
            new_ops = torch.where(sel, term, new_ops)
            new_c = torch.where(sel, c, new_c)
        else:
            fops = pset.function_ops(arity).to(dev)
            if len(fops) == 0:
                continue
            r = fops[torch.randint(0, len(fops), (P, L), generator=generator, device=dev)]
            new_ops = torch.where(sel & (a.ops < CONST), r, new_ops)
    return Population(new_ops, new_c, a.length.clone())


def tournament(fitness: torch.Tensor, n: int, size: int, generator: torch.Generator | None,
               groups: int = 1, group_size: int | None = None, draw: torch.Tensor | None = None) -> torch.Tensor:
    """``int64[n]``: winners of n tournaments of ``size`` entrants drawn with replacement.

    With ``groups`` > 1 the population is ``groups`` independent runs of ``group_size`` rows and
    tournament k draws its entrants from run ``k * groups // n`` only. NaN fitness never wins
    unless every entrant is NaN. ``draw: int64[n, size]`` in [0, group size) replaces the
    entrants drawn from ``generator``.
    """
    P = fitness.shape[0]
    gs = P if group_size is None else group_size
    entrants = torch.randint(0, gs, (n, size), generator=generator, device=fitness.device) if draw is None else draw
    if groups > 1:
        run = torch.arange(n, device=fitness.device) * groups // n
        entrants = entrants + (run * gs)[:, None]
    f = torch.nan_to_num(fitness, nan=-float("inf"))[entrants]
    return entrants.gather(1, f.argmax(1, keepdim=True))[:, 0]


@dataclass(frozen=True)
class VariationRates:
    crossover: float = 0.8
    subtree: float = 0.05
    hoist: float = 0.05
    point: float = 0.05
    point_rate: float = 0.1  # per-node replacement probability inside a point mutation

    def __post_init__(self) -> None:
        tot = self.crossover + self.subtree + self.hoist + self.point
        if min(self.crossover, self.subtree, self.hoist, self.point) < 0 or tot > 1 + 1e-9:
            raise ValueError(f"variation probabilities must be >= 0 and sum to <= 1 (got {tot:.3f})")


def breed(pop: Population, fitness: torch.Tensor, n: int, pset: PrimitiveSet, generator: torch.Generator,
          limits: Limits, rates: VariationRates, tournament_size: int, const_prob: float,
          groups: int = 1, group_size: int | None = None) -> Population:
    """``n`` children from tournament-selected parents; each child gets one operator (or is a
    copy), and every operator runs once over all children that drew it. With ``groups`` runs,
    children ``k*n/groups ..`` belong to run k and both their parents come from run k."""
    dev = pop.device
    parents = tournament(fitness, n, tournament_size, generator, groups, group_size)
    u = torch.rand(n, generator=generator, device=dev)
    edges = torch.tensor([rates.crossover, rates.subtree, rates.hoist, rates.point], device=dev).cumsum(0)
    kind = torch.bucketize(u, edges, right=True)  # 0 crossover, 1 subtree, 2 hoist, 3 point, 4 copy
    L = limits.max_len
    out = Population(pad_to(pop.ops[parents], L), pad_to(pop.consts[parents], L), pop.length[parents].clone())
    for k in range(4):
        idx = (kind == k).nonzero()[:, 0]
        if len(idx) == 0:
            continue
        a = out[idx]
        if k == 0:
            donors = tournament(fitness, n, tournament_size, generator, groups, group_size)[idx]
            b = Population(pad_to(pop.ops[donors], L), pad_to(pop.consts[donors], L), pop.length[donors])
            child = crossover(a, b, generator, limits)
        elif k == 1:
            child = subtree_mutation(a, pset, generator, limits, const_prob)
        elif k == 2:
            child = hoist_mutation(a, generator, limits)
        else:
            child = point_mutation(a, pset, generator, rates.point_rate, const_prob)
        out.ops[idx], out.consts[idx], out.length[idx] = child.ops, child.consts, child.length
    return out
