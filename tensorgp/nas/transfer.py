"""Fitness and selection designed for transfer to unseen search spaces.

A search space is the task-name prefix before "/" (``splits.space_of``). Every space-aware
aggregation first averages the per-task correlations within each space (so a space with 7 tasks
does not outvote one with 1), then reduces the ``[P, G]`` per-space means to one fitness:

* ``space-mean``: mean over spaces;
* ``space-min``: the worst space;
* ``space-softmin``: ``-T log mean exp(-m / T)`` (``SOFTMIN_T``), between the worst space and
  the mean, with a gradient from every space;
* ``space-geo``: ``sum log((1 + m) / 2)``, a log-scale sum in the spirit of AZ-NAS's sum of log
  ranks: any weak space costs much, a strong one cannot make up for it. On the absolute
  correlation, not on ranks within the population, so fitness stays comparable across
  generations (elites and the hall of fame keep theirs);
* ``space-sample``: the worst of ``k`` spaces drawn anew each generation (EZNAS's minimum over
  randomly sampled spaces), ``k = G - 1``; the draw depends only on (seed, generation), so a run
  resumed from a checkpoint sees the same draws. Outside a generation (baselines, final
  scoring) it is the worst of all spaces.

Nested selection (``--select nested``): run ``r`` of the R batched runs leaves training space
``r mod G`` out of its fitness (an inner leave-one-space-out across the runs, at the cost of one
evolution); each run's formula is then picked on its own inner held-out space, never on an outer
held-out one, and the picks form a mean-rank ensemble.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from .splits import space_of

SPACE_AGGREGATIONS = ("space-mean", "space-min", "space-softmin", "space-geo", "space-sample")
SOFTMIN_T = 0.05  # temperature of space-softmin: a space 0.05 below another weighs e times more
_SAMPLE_SALT = 0x5EED  # separates the space draws' stream from the evolution's
AUTO = "auto"
# What ``auto`` means (``resolve_auto``): for training tasks of at least ``MULTI_SPACE_MIN``
# search spaces, the setting the leave-one-space-out study of docs/results.md chose by its inner
# held-out score (training spaces only); otherwise the task mean and the compact formula. With two
# training spaces a nested run would fit one space alone, the opposite of what transfer needs.
MULTI_SPACE_MIN = 3
MULTI_SPACE_DEFAULT = {"aggregation": "space-mean", "select": "nested"}
SINGLE_SPACE_DEFAULT = {"aggregation": "mean", "select": "compact"}


def task_spaces(names: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Search spaces of task ``names`` in order of first appearance and ``int64[T]`` space of each task."""
    spaces = list(dict.fromkeys(space_of(n) for n in names))
    return spaces, torch.tensor([spaces.index(space_of(n)) for n in names], dtype=torch.int64)


def space_weights(names: Sequence[str], device: str | torch.device = "cpu") -> tuple[list[str], torch.Tensor]:
    """``(spaces, W float32[T, G])``: ``scores[P, T] @ W`` is the mean within each space."""
    spaces, idx = task_spaces(names)
    w = torch.nn.functional.one_hot(idx, len(spaces)).float()
    return spaces, (w / w.sum(0, keepdim=True)).to(device)


def inner_space(run: int, n_spaces: int) -> int:
    """The training space run ``run`` leaves out under nested selection."""
    return run % n_spaces


def inner_mask(n_rows: int, runs: int, n_spaces: int, device: str | torch.device = "cpu") -> torch.Tensor | None:
    """``bool[N, G]``, True where a space counts in a row's fitness: rows are grouped by run
    (run r owns rows ``r*N/R .. (r+1)*N/R``, as the evolver batches them) and run r leaves out
    space ``inner_space(r, G)``. None when ``n_rows`` is not a multiple of ``runs`` (rows that
    are not a population, e.g. the single-proxy baselines: every space counts)."""
    if runs <= 1 or n_spaces < 2 or n_rows % runs:
        return None
    run = torch.arange(n_rows, device=device) // (n_rows // runs)
    out = run[:, None] % n_spaces != torch.arange(n_spaces, device=device)[None, :]
    return out


def sample_mask(seed: int, generation: int, n_spaces: int, k: int | None = None,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """``bool[G]``: the ``k`` spaces (default ``G - 1``, at least 1) drawn for ``generation``,
    a pure function of (seed, generation)."""
    k = max(1, n_spaces - 1) if k is None else k
    if not 1 <= k <= n_spaces:
        raise ValueError(f"sampled spaces k={k} must be in [1, {n_spaces}]")
    g = torch.Generator().manual_seed((seed * 1_000_003 + generation * 7919 + _SAMPLE_SALT) % 2**63)
    m = torch.zeros(n_spaces, dtype=torch.bool)
    m[torch.randperm(n_spaces, generator=g)[:k]] = True
    return m.to(device)


def reduce_spaces(m: torch.Tensor, how: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``m float32[P, G]`` per-space means -> ``float32[P]``, over the spaces where ``mask``
    (``bool[P, G]`` or ``bool[G]``; None: all) is True."""
    if mask is None:
        mask = torch.ones_like(m, dtype=torch.bool)
    mask = mask.expand_as(m)
    n = mask.sum(1).clamp_min(1)
    if how == "space-mean":
        return torch.where(mask, m, 0.0).sum(1) / n
    if how in ("space-min", "space-sample"):
        return torch.where(mask, m, math.inf).min(1).values
    if how == "space-softmin":
        z = torch.where(mask, -m / SOFTMIN_T, -math.inf)
        return -SOFTMIN_T * (torch.logsumexp(z, 1) - torch.log(n.float()))
    if how == "space-geo":
        return torch.where(mask, torch.log((1.0 + m).clamp_min(1e-6) / 2.0), 0.0).sum(1)
    raise ValueError(f"unknown space aggregation {how!r}; expected one of {', '.join(SPACE_AGGREGATIONS)}")


def nested_picks(cands: Sequence[dict], val: Sequence[Sequence[float | None]], runs: int) -> list[int]:
    """Nested selection: for each run, the index into ``cands`` (dicts with ``run`` and
    ``fitness``) of its candidate with the best Kendall on the run's inner held-out space.
    ``val[i][g]`` is candidate i's mean Kendall on training space g; ties go to training fitness."""
    picks = []
    for r in range(runs):  # a loop over runs' hall-of-fame entries, not over a population
        mine = [i for i, c in enumerate(cands) if c["run"] == r]
        if not mine:
            continue
        g = inner_space(r, len(val[mine[0]]))

        def key(i: int) -> tuple[float, float]:
            v = val[i][g]
            return (v if v is not None and math.isfinite(v) else -math.inf, cands[i]["fitness"])
        picks.append(max(mine, key=key))
    return picks


def resolve_auto(spec, train_names: Sequence[str]):
    """``spec`` with ``aggregation``/``select`` equal to ``auto`` replaced by the default for its
    training tasks: ``MULTI_SPACE_DEFAULT`` when they span at least ``MULTI_SPACE_MIN`` search
    spaces, else ``SINGLE_SPACE_DEFAULT``. Nested selection needs at least 2 runs; with one run
    ``auto`` selects the compact formula."""
    multi = len({space_of(n) for n in train_names}) >= MULTI_SPACE_MIN
    d = MULTI_SPACE_DEFAULT if multi else SINGLE_SPACE_DEFAULT
    agg = d["aggregation"] if spec.aggregation == AUTO else spec.aggregation
    sel = spec.select
    if sel == AUTO:
        sel = d["select"]
        if sel == "nested" and (spec.config.runs < 2 or agg not in SPACE_AGGREGATIONS):
            sel = "ensemble" if spec.config.runs > 1 else "compact"
    if (agg, sel) == (spec.aggregation, spec.select):
        return spec
    return dataclasses.replace(spec, aggregation=agg, select=sel)
