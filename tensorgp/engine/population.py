"""Population representation: postfix program tensors, batched structure queries, initialisation.

A population is three tensors on one device:

    ops:    int32[P, L]    opcodes (see ``primitives``), left-aligned, PAD after ``length``
    consts: float32[P, L]  constant values where ops == CONST, else 0
    length: int32[P]       number of nodes of each program

Postfix order puts a node after its children, so the subtree rooted at position i is the
contiguous span ``start[i] .. i``. Spans, depths and heights are computed for the whole
population at once from prefix sums of stack effects (see ``structure``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .primitives import CONST, FIRST_VAR, PAD, PrimitiveSet, arity_table, table_version


@dataclass
class Population:
    ops: torch.Tensor
    consts: torch.Tensor
    length: torch.Tensor

    @property
    def size(self) -> int:
        return self.ops.shape[0]

    @staticmethod
    def from_rows(rows: "list[tuple[list[int], list[float]]]", device: str | torch.device = "cpu") -> "Population":
        """One program per postfix ``(ops, consts)`` row, left-aligned and PAD-filled to the
        longest (formulas out of results and simplification, not a hot path)."""
        L = max(len(o) for o, _ in rows)
        ops = torch.zeros(len(rows), L, dtype=torch.int32)
        consts = torch.zeros(len(rows), L, dtype=torch.float32)
        for i, (o, c) in enumerate(rows):
            ops[i, :len(o)] = torch.tensor(o, dtype=torch.int32)
            consts[i, :len(c)] = torch.tensor(c, dtype=torch.float32)
        length = torch.tensor([len(o) for o, _ in rows], dtype=torch.int32)
        return Population(ops.to(device), consts.to(device), length.to(device))

    @property
    def max_len(self) -> int:
        return self.ops.shape[1]

    @property
    def device(self) -> torch.device:
        return self.ops.device

    def __getitem__(self, idx) -> "Population":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Population(self.ops[idx], self.consts[idx], self.length[idx])

    def to(self, device: str | torch.device) -> "Population":
        return Population(self.ops.to(device), self.consts.to(device), self.length.to(device))

    def clone(self) -> "Population":
        return Population(self.ops.clone(), self.consts.clone(), self.length.clone())

    @staticmethod
    def cat(pops: list["Population"]) -> "Population":
        L = max(p.max_len for p in pops)
        return Population(
            torch.cat([pad_to(p.ops, L) for p in pops]),
            torch.cat([pad_to(p.consts, L) for p in pops]),
            torch.cat([p.length for p in pops]),
        )

    def trimmed(self) -> "Population":
        """Drop trailing columns that are PAD in every row (narrower tensors evaluate faster)."""
        L = int(self.length.max().item()) if self.size else 1
        return Population(self.ops[:, :L], self.consts[:, :L], self.length)

    def n_nodes(self) -> int:
        return int(self.length.sum().item())


def pad_to(t: torch.Tensor, L: int) -> torch.Tensor:
    """Right-pad ``t[P, L0]`` with zeros (PAD / 0.0) to width L."""
    if t.shape[1] == L:
        return t
    if t.shape[1] > L:
        raise ValueError(f"cannot pad width {t.shape[1]} to {L}")
    return torch.nn.functional.pad(t, (0, L - t.shape[1]))


_KEY_WEIGHTS: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}


def program_keys(pop: Population) -> torch.Tensor:
    """``int64[P]`` hash of each program (opcodes, constant bits, length): equal programs get
    equal keys; distinct ones collide with negligible probability (random 31-bit weights)."""
    L = pop.max_len
    w = _KEY_WEIGHTS.get((pop.device, L))
    if w is None:
        g = torch.Generator(device="cpu").manual_seed(12345)
        w = _KEY_WEIGHTS[(pop.device, L)] = (torch.randint(1, 2**31 - 1, (L,), generator=g).to(pop.device),
                                              torch.randint(1, 2**31 - 1, (L,), generator=g).to(pop.device))
    cbits = pop.consts.contiguous().view(torch.int32).long()
    return (pop.ops.long() * w[0]).sum(1) * 1000003 + (cbits * w[1]).sum(1) + pop.length.long()


def first_of_groups(inverse: torch.Tensor, groups: int) -> torch.Tensor:
    """``int64[G]``: for each group g of ``inverse: int64[n]`` (values 0..G-1, every group
    present, as ``torch.unique(..., return_inverse=True)`` gives), its smallest index."""
    n = len(inverse)
    first = torch.full((groups,), n, dtype=torch.long, device=inverse.device)
    return first.scatter_reduce_(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")


def first_new(keys: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """``int64[m]``, ascending: the index of the first occurrence of each key of ``keys: int64[n]``
    that is not in ``done: int64[d]`` (a batched "skip seen keys" loop)."""
    if len(keys) == 0:
        return torch.zeros(0, dtype=torch.long, device=keys.device)
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = first_of_groups(inverse, len(uniq))
    first = first[~torch.isin(uniq, done.to(uniq.device))]
    return torch.sort(first).values


def unique_programs(pop: Population) -> tuple[Population, torch.Tensor]:
    """Distinct programs of ``pop`` and ``inverse: int64[P]`` with ``pop[i] == uniq[inverse[i]]``."""
    uniq, inverse = torch.unique(program_keys(pop), return_inverse=True)
    return pop[first_of_groups(inverse, len(uniq))], inverse


_ARITY_CACHE: dict[tuple[torch.device, int], torch.Tensor] = {}


def arity_of(ops: torch.Tensor) -> torch.Tensor:
    """``int32[P, L]``: arity of every opcode (features, CONST and PAD have 0)."""
    key = (ops.device, table_version())  # a registered user function makes older tables stale
    table = _ARITY_CACHE.get(key)
    if table is None:  # one extra zero entry stands for every feature opcode
        table = _ARITY_CACHE[key] = torch.cat([arity_table(), torch.zeros(1, dtype=torch.int32)]).to(ops.device)
    return table[ops.clamp(max=FIRST_VAR).long()]


@dataclass
class Structure:
    """Per-node structure of every program (all ``int64[P, L']`` with L' the longest program's
    length; undefined past each ``length``).

    start:  first position of the subtree rooted at each node
    depth:  number of ancestors (root has depth 0)
    height: height of the subtree rooted at each node (a leaf has height 0)
    """

    start: torch.Tensor
    depth: torch.Tensor
    height: torch.Tensor


def structure(ops: torch.Tensor, length: torch.Tensor) -> Structure:
    """Subtree spans, depths and heights for ``ops: int32[P, L]``.

    One pass over positions simulates the evaluation stack for all rows at once, holding for
    each stack slot the position of the node that produced it; a function pops its children,
    which gives spans, parents and heights. A second pass top-down gives depths. Cost O(P L)
    tensor work in 2L steps (no O(L^2) masks), so it is cheap for the variation operators.
    """
    if ops.device.type == "cpu" and ops.shape[0] > 0:
        from . import structure_numba

        if structure_numba.available():
            return Structure(*structure_numba.structure_numba(ops, length))
    return structure_torch(ops, length)


def structure_torch(ops: torch.Tensor, length: torch.Tensor) -> Structure:
    """The tensor-op version of ``structure`` (any device; the reference for the CPU path)."""
    P = ops.shape[0]
    L = int(length.max().item()) if P else 1  # columns past the longest program are all PAD
    ops = ops[:, :L]
    dev = ops.device
    rows = torch.arange(P, device=dev)
    valid = torch.arange(L, device=dev)[None, :] < length[:, None]
    ar = torch.where(valid, arity_of(ops), torch.zeros_like(ops)).long()
    S = L + 1
    slot = torch.zeros(P, S, dtype=torch.long, device=dev)  # position of the node in each stack slot
    sp = torch.zeros(P, dtype=torch.long, device=dev)
    start = torch.zeros(P, L, dtype=torch.long, device=dev)
    height = torch.zeros(P, L, dtype=torch.long, device=dev)
    parent = torch.full((P, L), -1, dtype=torch.long, device=dev)
    max_ar = int(ar.max().item()) if ar.numel() else 0
    for t in range(L):
        a = ar[:, t]
        v = valid[:, t]
        first = (sp - a).clamp(min=0)  # slot of the first (leftmost) child
        st = torch.full((P,), t, dtype=torch.long, device=dev)
        h = torch.zeros(P, dtype=torch.long, device=dev)
        for j in range(max_ar):
            has = v & (a > j)
            child = slot[rows, (first + j).clamp(max=S - 1)]
            if j == 0:
                st = torch.where(has, start.gather(1, child[:, None])[:, 0], st)
            h = torch.where(has, torch.maximum(h, height.gather(1, child[:, None])[:, 0] + 1), h)
            parent.scatter_(1, child[:, None], torch.where(has, t, parent.gather(1, child[:, None])[:, 0])[:, None])
        start[:, t] = st
        height[:, t] = h
        sp = torch.where(v, first, sp)
        slot[rows, sp.clamp(max=S - 1)] = torch.where(v, t, slot[rows, sp.clamp(max=S - 1)])
        sp = sp + v.long()
    depth = torch.zeros(P, L, dtype=torch.long, device=dev)
    for t in range(L - 1, -1, -1):
        par = parent[:, t]
        d = depth.gather(1, par.clamp(min=0)[:, None])[:, 0] + 1
        depth[:, t] = torch.where(par >= 0, d, torch.zeros_like(d))
    pos = torch.arange(L, device=dev)[None, :].expand(P, L)
    start = torch.where(valid, start, pos)
    return Structure(start, depth, height)


def program_depth(ops: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``int64[P]``: depth (height of the root) of each program."""
    st = structure(ops, length)
    return st.height.gather(1, (length.long() - 1).clamp(min=0)[:, None])[:, 0]


def is_valid(ops: torch.Tensor, length: torch.Tensor, n_vars: int) -> torch.Tensor:
    """``bool[P]``: each row is a well-formed postfix program (never underflows, ends at stack 1, PAD after)."""
    P, L = ops.shape
    valid = torch.arange(L, device=ops.device)[None, :] < length[:, None]
    ar = arity_of(ops)
    # a function opcode no function holds (an unregistered user slot) is not known
    known = (ar > 0) | (ops == CONST) | ((ops >= FIRST_VAR) & (ops < FIRST_VAR + n_vars))
    eff = torch.where(valid, 1 - ar, torch.zeros_like(ops)).long()
    S = torch.cumsum(eff, 1)
    # stack before a node of arity a must hold >= a values, i.e. S after it >= 1
    ok = ((S >= 1) | ~valid).all(1)
    ok &= (torch.where(valid, known, ops == PAD)).all(1)
    ok &= (length >= 1) & (length <= L)
    ok &= S.gather(1, (length.long() - 1).clamp(min=0)[:, None])[:, 0] == 1
    return ok


def random_terminals(
    shape: tuple[int, ...], pset: PrimitiveSet, generator: torch.Generator, device: torch.device, const_prob: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random terminal opcodes and their constants: ``(int32[shape], float32[shape])``."""
    var = torch.randint(0, pset.n_vars, shape, generator=generator, device=device)
    c = torch.rand(shape, generator=generator, device=device)
    is_c = torch.rand(shape, generator=generator, device=device) if pset.constants and const_prob > 0 else None
    return make_terminals(var, c, is_c, pset, const_prob)


def make_terminals(var: torch.Tensor, u_value: torch.Tensor, u_const: torch.Tensor | None, pset: PrimitiveSet,
                   const_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Terminals from drawn numbers (all of one shape): ``var`` feature indices in [0, n_vars),
    ``u_value`` uniforms for the constant's value, ``u_const`` uniforms that make a constant
    below ``const_prob`` (None: no constants). Returns ``(int32 opcodes, float32 constants)``."""
    op = var.int() + FIRST_VAR
    lo, hi = pset.const_range
    c = u_value * (hi - lo) + lo
    if u_const is not None and pset.constants and const_prob > 0:
        is_c = u_const < const_prob
        return torch.where(is_c, CONST, op), torch.where(is_c, c, 0.0)
    return op, torch.zeros_like(c)


def random_functions(shape: tuple[int, ...], pset: PrimitiveSet, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    fops = pset.function_ops().to(device)
    return fops[torch.randint(0, len(fops), shape, generator=generator, device=device)]


def init_population(
    n: int,
    pset: PrimitiveSet,
    generator: torch.Generator,
    max_len: int = 64,
    depth_range: tuple[int, int] = (2, 6),
    const_prob: float = 0.1,
    device: str | torch.device = "cpu",
    method: str = "half",
    draws: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
) -> Population:
    """Ramped half-and-half initialisation, generated for all n trees at once.

    Trees are grown in prefix order with a per-tree stack of pending slot depths; reversing a
    prefix row gives a valid postfix row of the mirror-image tree, which has the same
    distribution, so no conversion is needed. A function is only placed where the length limit
    still leaves room for a terminal in every open slot. ``method``: half | full | grow.

    ``draws(t)`` (optional) gives the random numbers of step t instead of ``generator``:
    ``(function index int64[n] into the enabled functions, grow uniform float32[n], terminal
    opcodes int32[n], their constants float32[n])``. Then every one of the ``max_len`` steps
    runs (no early exit), so nothing waits for the host (the device path's initialisation).
    """
    device = torch.device(device)
    lo, hi = depth_range
    if not 0 <= lo <= hi:
        raise ValueError(f"bad depth_range {depth_range}")
    g, dev = generator, device
    target = torch.arange(n, device=dev) % (hi - lo + 1) + lo  # ramp over depths
    if method == "half":
        full = torch.arange(n, device=dev) // (hi - lo + 1) % 2 == 0
    else:
        full = torch.full((n,), method == "full", device=dev)
    fops = pset.function_ops().to(dev)
    ar = arity_table().to(dev)
    n_term = pset.n_vars + (1 if pset.constants and const_prob > 0 else 0)
    # grow: probability of a function at a slot, as in Koza's grow over functions+terminals
    p_func = len(fops) / (len(fops) + max(n_term, 1))
    S = max_len + 1
    stack = torch.zeros(n, S, dtype=torch.long, device=dev)  # pending slot depths
    sp = torch.ones(n, dtype=torch.long, device=dev)  # one pending slot (the root, depth 0)
    ops = torch.zeros(n, max_len, dtype=torch.int32, device=dev)
    consts = torch.zeros(n, max_len, device=dev)
    length = torch.zeros(n, dtype=torch.int32, device=dev)
    rows = torch.arange(n, device=dev)
    for t in range(max_len):
        active = sp > 0
        if draws is None:
            if not bool(active.any()):
                break
            f_idx = torch.randint(0, len(fops), (n,), generator=g, device=dev)
            u_grow = torch.rand(n, generator=g, device=dev)
            term, c = random_terminals((n,), pset, g, dev, const_prob)
        else:
            f_idx, u_grow, term, c = draws(t)
        d = stack[rows, (sp - 1).clamp(min=0)]
        f = fops[f_idx]
        a = ar[f.long()].long()
        room = t + sp + a <= max_len  # after placing f: t+1 nodes, sp-1+a open slots, each needs >= 1 node
        want_f = torch.where(full, d < target, (d < target) & (u_grow < p_func))
        want_f |= (d == 0) & (target > 0)  # the root is a function unless the target depth is 0
        use_f = active & want_f & room
        op = torch.where(use_f, f, term)
        ops[:, t] = torch.where(active, op, torch.zeros_like(op))
        consts[:, t] = torch.where(active & ~use_f, c, torch.zeros_like(c))
        length += active.int()
        sp = sp - active.long()
        # push a slots of depth d + 1
        for j in range(pset.max_arity):
            push = use_f & (a > j)
            stack[rows, sp.clamp(max=S - 1)] = torch.where(push, d + 1, stack[rows, sp.clamp(max=S - 1)])
            sp = sp + push.long()
    # reverse each prefix row into postfix
    L = max_len
    pos = torch.arange(L, device=dev)[None, :]
    src = (length[:, None].long() - 1 - pos).clamp(min=0)
    inside = pos < length[:, None]
    ops = torch.where(inside, ops.gather(1, src), torch.zeros_like(ops))
    consts = torch.where(inside, consts.gather(1, src), torch.zeros_like(consts))
    return Population(ops, consts, length)
