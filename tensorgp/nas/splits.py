"""Which rows and tasks a run fits, validates and holds out: search spaces (the task-name prefix
before "/"), seeded architecture splits (``RunSpec.fit_fraction``) and validation tasks
(``RunSpec.validation``), never fitted."""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch

from . import baselines as B
from .data import DataError, Task, select

SPLITS = ("train", "holdout", "validation", "test")
SELECTIONS = ("train", "validation", "parsimony", "ensemble", "compact", "nested", "shrink", "anchored")  # see ``selection``

# ----------------------------------------------------------------------------- splits


def space_of(name: str) -> str:
    """Search space of a task name: everything before its last ``/`` (``nasbench201/cifar10`` ->
    ``nasbench201``; a merged file's ``merged/nb301/cifar10`` -> ``merged/nb301``)."""
    return name.rsplit("/", 1)[0]


def spaces(tasks: Sequence[Task]) -> list[str]:
    """Search spaces of ``tasks`` in order of first appearance."""
    return list(dict.fromkeys(space_of(t.name) for t in tasks))


def split_architectures(tasks: Sequence[Task], fraction: float, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """Per task, a seeded random ``fraction`` of the rows to fit on and the rest held out.

    The permutation of a task depends only on ``seed`` and the task name (not on which other
    tasks are selected), and each part keeps at least 2 rows. Returns ``(fit, held)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fit fraction must be in (0, 1), got {fraction}")
    fit, held = [], []
    for t in tasks:
        n = len(t)
        if n < 4:
            raise DataError(f"task {t.name}: {n} architectures are too few to split")
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(t.name.encode())) % 2**63)
        perm = torch.randperm(n, generator=g)
        k = min(n - 2, max(2, round(fraction * n)))
        fit.append(t.subset(torch.sort(perm[:k]).values))
        held.append(t.subset(torch.sort(perm[k:]).values))
    return fit, held


def split_validation_holdout(spec, tasks: list[Task], train: list[Task],
                             test: list[Task]) -> tuple[list[Task], list[Task], list[Task]]:
    """``(train, validation, holdout)`` for ``experiment.prepare``: validation tasks match
    ``spec.validation`` and are neither train nor test; with ``spec.fit_fraction`` the training
    tasks are cut into the fitted rows and the held-out rows."""
    validation: list[Task] = []
    if spec.validation:
        used = {t.name for t in train + test}
        validation = [t for t in select(tasks, spec.validation) if t.name not in used]
        if not validation:
            raise DataError(f"validation glob {spec.validation!r} selects only training or test tasks")
    holdout: list[Task] = []
    if spec.fit_fraction:
        train, holdout = split_architectures(train, spec.fit_fraction, spec.split_seed)
    if spec.select not in SELECTIONS + ("auto",):  # auto: transfer.resolve_auto
        raise ValueError(f"unknown selection {spec.select!r}; choose from {', '.join(SELECTIONS)}, auto")
    if spec.select == "validation" and not validation:
        raise ValueError("--select validation needs validation tasks (--validation)")
    return train, validation, holdout


def consistent_proxies(tasks: Sequence[Task], proxies: Sequence[str], min_tau: float = 0.0) -> list[str]:
    """The ``proxies`` whose mean Kendall over the tasks of each search space exceeds ``min_tau`` in
    every space of ``tasks`` (training tasks only): terminals whose sign holds across spaces."""
    single = B.single_proxies([(t.name, t) for t in tasks])
    keep = []
    for p in proxies:
        per_space = [finite_mean([single[t.name].get(p, {}).get("kendall") for t in tasks if space_of(t.name) == s])
                     for s in spaces(tasks)]
        if all(v is not None and v > min_tau for v in per_space):
            keep.append(p)
    return keep




def finite_mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None
