"""Rank-correlation objectives: programs -> predictions on every task's rows -> per-task
Kendall/Spearman -> one fitness per program."""
from __future__ import annotations

import time

import torch

from .data import Batch
from .evaluate import evaluate, resolve_backend
from .fitness import aggregate, kendall_tau_b, spearman
from .population import Population

METRICS = ("kendall", "spearman")


def correlation(pred: torch.Tensor, batch: Batch, metric: str) -> torch.Tensor:
    """``pred float32[P, N]`` -> ``float32[P, T]`` rank correlation per task."""
    if metric == "kendall":
        return kendall_tau_b(pred, batch.accuracy, batch.offsets)
    if metric == "spearman":
        return spearman(pred, batch.accuracy, batch.offsets)
    raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


class RankObjective:
    """Fitness of a population on a batch of tasks: the aggregated per-task rank correlation.

    Programs are evaluated in chunks of ``chunk`` rows so that ``pred`` stays bounded for large
    populations (R runs x P programs x N architectures). ``last_split`` holds the seconds spent
    in evaluation and in the rank statistics during the last call.
    """

    def __init__(self, batch: Batch, metric: str = "kendall", aggregation: str = "mean",
                 backend: str = "auto", chunk: int = 4096):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        self.batch = batch
        self.metric = metric
        self.aggregation = aggregation
        self.backend = resolve_backend(backend, batch.X.device)
        self.chunk = chunk
        self.last_split = (0.0, 0.0)
        aggregate(torch.zeros(1, max(batch.n_tasks, 1)), aggregation)  # validates the name early

    def scores(self, pop: Population) -> torch.Tensor:
        """``float32[P, T]`` per-task correlation of every program."""
        te = tf = 0.0
        outs = []
        for lo in range(0, pop.size, self.chunk):
            part = pop[lo:lo + self.chunk]
            t0 = time.perf_counter()
            pred = evaluate(part, self.batch.X, self.backend)
            t1 = time.perf_counter()
            outs.append(correlation(pred, self.batch, self.metric))
            tf += time.perf_counter() - t1
            te += t1 - t0
        self.last_split = (te, tf)
        if not outs:
            return torch.zeros(0, self.batch.n_tasks, device=self.batch.X.device)
        return torch.cat(outs)

    def __call__(self, pop: Population) -> torch.Tensor:
        return aggregate(self.scores(pop), self.aggregation)
