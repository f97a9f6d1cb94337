"""Plain recursive reference evaluator and random-program helpers for the tests."""
from __future__ import annotations

import torch

from tensorgp.engine import expression as E
from tensorgp.engine.primitives import CONST, FIRST_VAR, PrimitiveSet, function
from tensorgp.engine.population import Population, init_population


def eval_tree(node: E.Node, X: torch.Tensor) -> torch.Tensor:
    """float32[N]: the tree evaluated recursively with the primitives' torch functions."""
    if node.op == CONST:
        return torch.full((X.shape[0],), node.value, dtype=torch.float32)
    if node.op >= FIRST_VAR:
        return X[:, node.op - FIRST_VAR].to(torch.float32)
    return function(node.op).fn(*[eval_tree(c, X) for c in node.children])


def eval_reference(pop: Population, X: torch.Tensor) -> torch.Tensor:
    return torch.stack([eval_tree(E.row(pop.ops, pop.consts, pop.length, i), X) for i in range(pop.size)])


def random_pop(n: int, n_vars: int = 4, seed: int = 0, max_len: int = 48, depth=(0, 6), functions=None,
               const_prob: float = 0.2) -> tuple[Population, PrimitiveSet]:
    pset = PrimitiveSet(tuple(f"x{i}" for i in range(n_vars)), PrimitiveSet.parse_functions(functions))
    g = torch.Generator().manual_seed(seed)
    return init_population(n, pset, g, max_len=max_len, depth_range=depth, const_prob=const_prob), pset


def edge_matrix(n_rows: int, n_vars: int, seed: int = 0) -> torch.Tensor:
    """Inputs that exercise the protected operators: zeros, tiny, negative, huge, NaN, inf."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_rows, n_vars, generator=g) * 3
    special = torch.tensor([0.0, 1e-7, -1e-7, 1e-6, -2.0, 1e30, -1e30, 100.0, float("nan"), float("inf"), -float("inf")])
    k = min(n_rows, len(special))
    for j in range(n_vars):
        X[:k, j] = special[torch.randperm(len(special), generator=g)[:k]]
    return X
