"""Compact formulas: the Pareto front of formula size against training fitness, and the
``compact`` selection (the smallest formula within ``COMPACT_TOLERANCE`` of the best fitness).

The candidates are every finite hall-of-fame entry, every program of the final population,
every subtree of the hall of fame's formulas and the prunings found by a greedy descent from
the best formulas (replace one node by one of its children while the fitness stays within the
tolerance). Each candidate is first reduced by ``engine.compact.rank_simplify`` (rank-preserving
rewrites) and then *re-scored* with the run's own objective, so every size and fitness on the
front is measured, never assumed. Scoring a batch of candidates is one batched evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..engine import expression as E
from ..engine.compact import UNIT_RANK, UNKNOWN, Range, prunings, rank_simplify, subtrees
from ..engine.population import Population

COMPACT_TOLERANCE = 0.01  # training fitness the compact formula may give up against the best
PRUNE_FROM = 3  # greedy pruning descents, from this many of the best distinct formulas


@dataclass
class Candidate:
    node: E.Node
    fitness: float
    size: int
    source: str  # hall-of-fame | population | subtree | pruned


def variable_ranges(preprocess: str, n_vars: int) -> list[Range]:
    """What the preprocessing guarantees about every input (rank: quantiles in [0, 1])."""
    return [UNIT_RANK if preprocess == "rank" else UNKNOWN] * n_vars


class CandidatePool:
    """Distinct (by infix) rank-simplified trees with their re-scored training fitness."""

    def __init__(self, objective, variables: Sequence[str], ranges: Sequence[Range], device) -> None:
        self.objective = objective
        self.variables = tuple(variables)
        self.ranges = list(ranges)
        self.device = device
        self.items: dict[str, Candidate] = {}

    def add(self, nodes: Sequence[E.Node], source: str) -> list[Candidate]:
        """Simplify, score the new ones in one batch, and return the candidates of ``nodes``."""
        simple = [rank_simplify(E.simplify(n), self.ranges) for n in nodes]
        keys = [E.to_infix(n, self.variables) for n in simple]
        fresh: dict[str, E.Node] = {}
        for k, n in zip(keys, simple):
            if k not in self.items and k not in fresh:
                fresh[k] = n
        if fresh:
            fit = self.objective(Population.from_rows([E.to_postfix(n) for n in fresh.values()], self.device)).cpu().tolist()
            for (k, n), f in zip(fresh.items(), fit):
                self.items[k] = Candidate(n, float(f), E.size(n), source)
        return [self.items[k] for k in keys]

    def best(self) -> float:
        fs = [c.fitness for c in self.items.values() if math.isfinite(c.fitness)]
        return max(fs) if fs else -math.inf

    def descend(self, start: E.Node, floor: float) -> None:
        """Greedy pruning: replace one node by a child, keeping the best such tree while its
        fitness stays >= floor; every tree tried joins the pool."""
        cur = start
        while E.size(cur) > 1:
            tried = [c for c in self.add(prunings(cur), "pruned") if c.fitness >= floor and c.size < E.size(cur)]
            if not tried:
                return
            cur = max(tried, key=lambda c: (c.fitness, -c.size)).node


def front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Non-dominated candidates by (smaller size, higher fitness), smallest first."""
    best_at: dict[int, Candidate] = {}
    for c in cands:
        if math.isfinite(c.fitness) and (c.size not in best_at or c.fitness > best_at[c.size].fitness):
            best_at[c.size] = c
    out: list[Candidate] = []
    for s in sorted(best_at):
        if not out or best_at[s].fitness > out[-1].fitness:
            out.append(best_at[s])
    return out


def compact_choice(front_: Sequence[Candidate], tolerance: float = COMPACT_TOLERANCE) -> Candidate | None:
    """The smallest front member within ``tolerance`` of the front's best fitness."""
    if not front_:
        return None
    best = max(c.fitness for c in front_)
    return min((c for c in front_ if c.fitness >= best - tolerance), key=lambda c: c.size)


def build_pool(state, objective, variables: Sequence[str], preprocess: str, device,
               tolerance: float = COMPACT_TOLERANCE) -> CandidatePool:
    """The candidates of a finished evolution (``state``: ``engine.evolve.EvolutionState``)."""
    pool = CandidatePool(objective, variables, variable_ranges(preprocess, len(variables)), device)
    hof, pop = state.hof, state.pop
    fin = [i for i in range(hof.fitness.numel()) if math.isfinite(float(hof.fitness[i]))]
    hof_nodes = [E.row(hof.pop.ops, hof.pop.consts, hof.pop.length, i) for i in fin]
    pool.add(hof_nodes, "hall-of-fame")
    pool.add([E.row(pop.ops, pop.consts, pop.length, i) for i in range(pop.size)], "population")
    pool.add(list(dict.fromkeys(s for n in hof_nodes for s in subtrees(n))), "subtree")
    floor = pool.best() - tolerance
    ranked = sorted(pool.items.values(), key=lambda c: -c.fitness if math.isfinite(c.fitness) else math.inf)
    for c in ranked[:PRUNE_FROM]:
        pool.descend(c.node, floor)
    return pool
