"""Rank-correlation objectives: programs -> predictions on every task's rows -> per-task
Kendall/Spearman -> one fitness per program."""
from __future__ import annotations

import time

import torch

from .baselines import task_ranks
from .data import Batch
from ..engine.evaluate import evaluate, resolve_backend
from ..engine.fitness import AGGREGATIONS, aggregate, distinct_rows, kendall_tau_b, spearman, top_kendall
from ..engine.population import Population, unique_programs
from ..engine.primitives import user_opcodes
from .transfer import (ANCHORED, NESTED_SELECTIONS, SPACE_AGGREGATIONS, best_single, inner_mask, inner_space,
                       reduce_spaces, sample_mask, space_weights, task_spaces)

METRICS = ("kendall", "spearman", "kendall-top")


def parse_metric(metric: str) -> tuple[str, float]:
    """``kendall`` | ``spearman`` | ``kendall-top`` (top 10%) | ``kendall-topNN`` (top NN%)
    -> ``(base metric, top fraction or 0)``. ``kendall-top*`` is the mean of the global Kendall
    and the Kendall among the top fraction of each task by accuracy."""
    if metric in ("kendall", "spearman"):
        return metric, 0.0
    if metric.startswith("kendall-top"):
        pct = metric[len("kendall-top"):] or "10"
        try:
            frac = float(pct) / 100.0
        except ValueError:
            frac = -1.0
        if 0.0 < frac <= 1.0:
            return "kendall-top", frac
    raise ValueError(f"unknown metric {metric!r}; choose from kendall, spearman, kendall-top, kendall-topNN (NN in %)")


def correlation(pred: torch.Tensor, batch: Batch, metric: str, rows: torch.Tensor | None = None,
                backend: str = "auto") -> torch.Tensor:
    """``pred float32[P, N]`` -> ``float32[P, T]`` rank correlation per task (``[U, T]`` of the
    rows ``rows: int64[U]`` only, when given); ``backend``: the rank statistics' (``fitness``)."""
    if metric.startswith("kendall-top"):
        frac = parse_metric(metric)[1]
        k = kendall_tau_b(pred, batch.accuracy, batch.offsets, backend, rows=rows)
        return 0.5 * (k + top_kendall(pred, batch.accuracy, batch.offsets, frac, backend, rows=rows))
    if metric == "kendall":
        return kendall_tau_b(pred, batch.accuracy, batch.offsets, backend, rows=rows)
    if metric == "spearman":
        return spearman(pred, batch.accuracy, batch.offsets, backend, rows=rows)
    raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


class RankObjective:
    """Fitness of a population on a batch of tasks: the aggregated per-task rank correlation.

    Programs are evaluated in chunks of ``chunk`` rows so that ``pred`` stays bounded for large
    populations (R runs x P programs x N architectures). ``last_split`` holds the seconds spent
    in evaluation and in the rank statistics during the last call.

    Space-aware aggregations (``transfer.SPACE_AGGREGATIONS``): ``inner_runs = R > 1`` makes run
    r of a population of R runs leave training space ``r mod G`` out (nested selection);
    ``seed`` seeds the per-generation space draws of ``space-sample`` (``begin_generation``).

    ``anchors`` (``transfer``, "Anchored fitness"): ``(per-run proxy columns, the proxy column for
    rows that are not a population of R runs)``; a program is then scored by the equal-weight mean
    rank of its predictions and its run's anchor proxy, within each task.
    """

    def __init__(self, batch: Batch, metric: str = "kendall", aggregation: str = "mean",
                 backend: str = "auto", chunk: int = 4096, inner_runs: int = 1, seed: int = 0,
                 sync_free: bool = False, max_stack: int | None = None, fitness_backend: str = "auto",
                 anchors: tuple[list[int], int] | None = None):
        parse_metric(metric)  # validates the name early
        if sync_free and (max_stack is None or max_stack < 1):
            raise ValueError("sync_free needs max_stack >= 1: a bound on the programs' stack depth "
                             "(max_depth + 1 for trees of depth <= max_depth)")
        self.batch = batch
        self.sync_free = sync_free
        self.max_stack = max_stack
        self.fitness_backend = fitness_backend
        self.metric = metric
        self.aggregation = aggregation
        self.backend = resolve_backend(backend, batch.X.device)
        self.chunk = chunk
        self.last_split = (0.0, 0.0)
        self.space_weights = None
        self.inner_runs = inner_runs
        self.seed = seed
        self.sample = None  # bool[G]: the spaces space-sample draws this generation (None: all)
        if aggregation in SPACE_AGGREGATIONS:
            self.spaces, self.space_weights = space_weights(batch.names, batch.X.device)  # [T, G]
        elif aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; expected one of "
                             f"{', '.join(AGGREGATIONS + SPACE_AGGREGATIONS)}")
        self.anchor_ranks = None  # float32[A, N]: 0-based per-task ranks of each distinct anchor proxy
        if anchors is not None:
            per_run, whole = anchors
            cols = sorted(set(per_run) | {whole})
            self.anchor_slot_run = [cols.index(c) for c in per_run]
            self.anchor_slot_all = cols.index(whole)
            self._off = batch.offsets.to(batch.X.device)  # task_ranks reads it where pred lives: no copy per call
            self.anchor_ranks = task_ranks(batch.X[:, cols].T, self._off, quantile=False).float()
        if inner_runs > 1 and (self.space_weights is None or len(self.spaces) < 2):
            raise ValueError(f"nested selection (a held-out training space per run) needs a space-aware "
                             f"aggregation ({', '.join(SPACE_AGGREGATIONS)}) and tasks of at least 2 search "
                             f"spaces; got aggregation {aggregation!r}")

    @property
    def capturable(self) -> bool:
        """A generation with this objective may be captured in a CUDA graph
        (``EvolutionConfig.cuda_graph``): no host reads (``sync_free`` with Triton evaluation)
        and an objective that does not change with the generation."""
        return self.sync_free and self.backend == "triton" and self.aggregation != "space-sample"

    def begin_generation(self, generation: int | None) -> bool:
        """Called by the evolver before each generation's evaluation (None: outside evolution).
        Returns True when the fitness of a program changes with the generation (space-sample),
        so that the evolver re-scores the programs it carries over."""
        if self.aggregation != "space-sample":
            return False
        self.sample = None if generation is None else sample_mask(
            self.seed, generation, len(self.spaces), device=self.batch.X.device)
        return True

    def scores(self, pop: Population, anchor: int | None = None) -> torch.Tensor:
        """``float32[P, T]`` per-task correlation of every program (of its blend with anchor slot
        ``anchor`` when given). Identical programs (elites'
        copies, reproduction, crossovers that swap equal subtrees) are evaluated once, and
        programs with identical predictions (``fitness.distinct_rows``) are ranked once.

        ``sync_free``: every program is evaluated and ranked (both deduplications read their
        group counts on the host), untrimmed, with the Triton evaluator given ``max_stack``
        (no stack-depth read) when the backend is triton: a generation on a GPU then never waits
        for the host here. The scores are the same (both deduplications are exact)."""
        if self.sync_free:
            return self._scores(pop, dedup=False, anchor=anchor)
        if pop.size > 1:
            uniq, inverse = unique_programs(pop)
            if uniq.size < pop.size:
                return self._scores(uniq, anchor=anchor)[inverse]
        return self._scores(pop, anchor=anchor)

    def _predict(self, part: Population) -> torch.Tensor:
        # user functions have no Triton code: then evaluate() checks the programs (a host read)
        if self.sync_free and self.backend == "triton" and not user_opcodes():
            from ..kernels.eval_kernel import evaluate_triton

            return evaluate_triton(part.ops, part.consts, part.length, self.batch.X, max_stack=self.max_stack)
        return evaluate(part, self.batch.X, self.backend)

    def _scores(self, pop: Population, dedup: bool = True, anchor: int | None = None) -> torch.Tensor:
        te = tf = 0.0
        outs = []
        fb = self.fitness_backend
        for lo in range(0, pop.size, self.chunk):
            part = pop[lo:lo + self.chunk]
            t0 = time.perf_counter()
            pred = self._predict(part)
            if anchor is not None:
                # ranked as the selection's blends rank (non-finite lowest); 0-based half-integer ranks: exact sums
                pred = task_ranks(pred, self._off, quantile=False).float() + self.anchor_ranks[anchor]
            t1 = time.perf_counter()
            keep, inverse = distinct_rows(pred) if dedup else (None, None)
            if keep is not None and len(keep) < len(pred):
                outs.append(correlation(pred, self.batch, self.metric, rows=keep, backend=fb)[inverse])
            else:
                outs.append(correlation(pred, self.batch, self.metric, backend=fb))
            tf += time.perf_counter() - t1
            te += t1 - t0
        self.last_split = (te, tf)
        if not outs:
            return torch.zeros(0, self.batch.n_tasks, device=self.batch.X.device)
        return torch.cat(outs)

    def anchored_scores(self, pop: Population) -> torch.Tensor:
        """``float32[P, T]``: each row scored with its run's anchor (rows grouped by run as the
        evolver batches them; the whole-training anchor for rows that are not R runs' population)."""
        R, n = len(self.anchor_slot_run), pop.size
        if R <= 1 or n % R:
            return self.scores(pop, self.anchor_slot_all)
        slot = torch.tensor(self.anchor_slot_run).repeat_interleave(n // R)  # host arithmetic: no device read
        out = torch.empty(n, self.batch.n_tasks, device=self.batch.X.device)
        te = tf = 0.0
        for a in sorted(set(self.anchor_slot_run)):  # a loop over at most G distinct anchors
            rows = torch.nonzero(slot == a)[:, 0].to(out.device)  # a host tensor: no device read
            out[rows] = self.scores(pop[rows], a)
            te, tf = te + self.last_split[0], tf + self.last_split[1]
        self.last_split = (te, tf)
        return out

    def __call__(self, pop: Population) -> torch.Tensor:
        s = self.scores(pop) if self.anchor_ranks is None else self.anchored_scores(pop)
        if self.space_weights is None:
            return aggregate(s, self.aggregation)
        m = s @ self.space_weights  # [P, T] -> [P, G] per-space means
        mask = inner_mask(len(m), self.inner_runs, m.shape[1], m.device)
        if self.sample is not None:
            both = self.sample[None, :] if mask is None else mask & self.sample[None, :]
            # a run whose inner held-out space leaves no drawn space keeps its other spaces
            mask = both if mask is None else torch.where(both.any(1, keepdim=True), both, mask)
        return reduce_spaces(m, self.aggregation, mask)


def objective_for(spec, batch: Batch) -> RankObjective:
    """The training objective of a ``RunSpec``: nested selection (``select`` in ``NESTED_SELECTIONS``) gives
    each of the ``config.runs`` runs its own inner held-out training space."""
    inner = spec.config.runs if spec.select in NESTED_SELECTIONS else 1
    anchors = anchors_for(batch, inner) if spec.select == ANCHORED else None
    return RankObjective(batch, spec.metric, spec.aggregation, spec.backend, inner_runs=inner, seed=spec.config.seed,
                         anchors=anchors)


def anchors_for(batch: Batch, runs: int) -> tuple[list[int], int]:
    """The anchored fitness's proxies (``transfer``): for each of ``runs`` runs the proxy column
    with the best space-mean Kendall over the run's fitness spaces (its inner held-out space left
    out when ``runs > 1``), and that of all spaces of ``batch``."""
    k = kendall_tau_b(batch.X.T.contiguous(), batch.accuracy, batch.offsets).double().cpu()  # [J, T]
    spaces, space = task_spaces(batch.names)
    per_run = [best_single(k, space, inner_space(r, len(spaces)) if runs > 1 else None) for r in range(max(1, runs))]
    return per_run, best_single(k, space)

