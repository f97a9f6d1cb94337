"""Elites and the hall of fame in fixed-shape tensor work (the device path).

``evolve._update_hof`` loops over runs and keeps distinct programs with ``torch.unique``, whose
output size is data-dependent (a host synchronisation per run). Here the candidates of every
run form one ``[R, M]`` block: duplicates are found by comparing program keys pairwise within a
run (M is a few times the hall's size), marked as empty, and a stable sort does the rest.
"""
from __future__ import annotations

import torch

from .population import Population, program_keys


def elite_rows(fitness: torch.Tensor, runs: int, k: int) -> torch.Tensor:
    """``int64[runs * k]``: the ``k`` fittest rows of each run (NaN lowest), run by run."""
    f = torch.nan_to_num(fitness, nan=-float("inf")).view(runs, -1)
    P = f.shape[1]
    return (torch.topk(f, k, dim=1).indices + torch.arange(0, runs * P, P, device=f.device)[:, None]).reshape(-1)


_EARLIER: dict[tuple[int, str], torch.Tensor] = {}


def _earlier(M: int, device: torch.device) -> torch.Tensor:
    """``bool[M, M]``, True where column < row (built once per size and device)."""
    key = (M, str(device))
    if key not in _EARLIER:
        _EARLIER[key] = torch.ones(M, M, dtype=torch.bool, device=device).tril(-1)
    return _EARLIER[key]


def hall_of_fame_update(hof_pop: Population | None, hof_fit: torch.Tensor | None, pop: Population,
                        fit: torch.Tensor, runs: int, size: int) -> tuple[Population, torch.Tensor]:
    """The best ``size`` distinct programs per run among the hall (``hof_pop`` rows
    ``r*size ..``, ``hof_fit: float32[runs*size]``; None at the start) and the top ``2*size`` of
    ``pop`` (``fit: float32[runs*P]``). Returns ``(Population[runs*size], float32[runs*size])``;
    empty slots are length-0 programs at -inf. Widths: ``pop``'s (the hall must match it)."""
    R, L = runs, pop.max_len
    P = pop.size // R
    f = torch.nan_to_num(fit, nan=-float("inf"))
    top = elite_rows(f, R, min(2 * size, P)).view(R, -1)
    ops, consts, length, cf = pop.ops[top], pop.consts[top], pop.length[top], f[top]  # [R, k, L] / [R, k]
    if hof_pop is not None:
        ops = torch.cat([hof_pop.ops.view(R, size, L), ops], 1)
        consts = torch.cat([hof_pop.consts.view(R, size, L), consts], 1)
        length = torch.cat([hof_pop.length.view(R, size), length], 1)
        cf = torch.cat([hof_fit.view(R, size), cf], 1)
    M = cf.shape[1]
    keys = program_keys(Population(ops.view(R * M, L), consts.view(R * M, L), length.view(-1))).view(R, M)
    order = torch.argsort(cf, dim=1, descending=True, stable=True)
    ks = keys.gather(1, order)
    earlier = _earlier(M, f.device)
    dup = ((ks[:, :, None] == ks[:, None, :]) & earlier).any(2)  # a fitter copy comes first
    fs = torch.where(dup, -float("inf"), cf.gather(1, order))
    keep = torch.argsort(fs, dim=1, descending=True, stable=True)
    if M < size:  # fewer candidates than slots (tiny runs): pad with empty ones
        keep = torch.cat([keep, keep[:, :1].expand(R, size - M)], 1)
    keep = keep[:, :size]
    idx = order.gather(1, keep)
    empty = dup.gather(1, keep)
    if M < size:
        empty[:, M:] = True
    rows = torch.arange(R, device=f.device)[:, None]
    out = Population(torch.where(empty[..., None], 0, ops[rows, idx]).view(R * size, L),
                     torch.where(empty[..., None], 0.0, consts[rows, idx]).view(R * size, L),
                     torch.where(empty, 0, length[rows, idx]).view(-1))
    return out, torch.where(empty, -float("inf"), fs.gather(1, keep)).view(-1)
