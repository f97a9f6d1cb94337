"""The problem ``tensorgp bench`` times whole generations on: the rank objective over Suite-Zero
tasks (``BenchConfig.data``) or over the benchmark's synthetic rows with a random target."""
from __future__ import annotations

import torch

from ..runtime.benchmark import BenchConfig, GenerationProblem, task_offsets
from .data import Batch, common_proxies, load, make_batch
from .objective import RankObjective


def synthetic_batch(cfg: BenchConfig, X: torch.Tensor) -> Batch:
    """``X: float32[N, m]`` cut into tasks of ``cfg.task_rows`` rows with a seeded random target."""
    off = task_offsets(X.shape[0], cfg.task_rows)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    acc = torch.rand(X.shape[0], generator=g).round(decimals=3)
    return Batch(names=[f"synthetic/{i}" for i in range(len(off) - 1)], proxies=[f"x{i}" for i in range(X.shape[1])],
                 X=X, accuracy=acc.to(X.device), offsets=off.to(X.device), preprocess="raw")


def generation_problem(cfg: BenchConfig, X: torch.Tensor, backend: str) -> GenerationProblem:
    """Kendall fitness, mean over tasks: on ``cfg.data`` when given, else on the synthetic rows."""
    if cfg.data:
        tasks = load(cfg.data)
        batch = make_batch(tasks, common_proxies(tasks), "rank", cfg.device)
        source = [str(p) for p in cfg.data]
    else:
        batch = synthetic_batch(cfg, X)
        source = "synthetic (the benchmark rows, random target)"
    obj = RankObjective(batch, "kendall", "mean", backend)
    return GenerationProblem(obj, tuple(batch.proxies), int(batch.X.shape[0]), batch.n_tasks, source)
