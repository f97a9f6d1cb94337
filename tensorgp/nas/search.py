"""NAS search over a benchmark table driven by a zero-cost proxy formula: the library behind
``tensorgp search``.

The search space is the task's table (every architecture with a known accuracy). The proxy
formula is evaluated once by the engine on the task's preprocessed features, so scoring an
architecture during the search is a table lookup; the searches are tensor work batched over
``R`` independent runs:

* regularized (aging) evolution (Real et al. 2019): population ``int64[R, P]`` of table
  indices kept as a ring buffer (column ``t % P`` is the oldest at step ``t``: ages are
  implicit), tournament of ``S`` members drawn with replacement -> parent, mutation -> one
  child per step, the oldest member is removed;
* random search: ``budget`` distinct architectures drawn uniformly.

Mutation changes one position of the architecture's integer encoding: the child is drawn
uniformly among the table's architectures at Hamming distance 1 from the parent (a
precomputed neighbour table ``int64[n, D * V]``) that the run has not scored yet, so every
step scores exactly one new architecture and the budget counts distinct architectures; where
no such neighbour exists the child is drawn among the unscored architectures nearest to the
parent in Hamming distance. (Letting scored neighbours re-enter the population for free
instead took 29x more steps for the same 1,000 distinct architectures on NB201.)

Accuracy percentile = 100 * fraction of the table's architectures whose accuracy is <= the
found architecture's accuracy (100: the best of the table).

Files without accuracies (Suite-Zero format, no ``val_accuracy``: architectures a user wants to
rank) are searched too: the table is then every architecture of the task, the search runs on the
formula's scores alone, and the result reports the found architectures with their scores and no
accuracy, percentile or accuracy-chosen baseline (``labelled: false``; see ``run_search``).
"""
from __future__ import annotations

import ast
import re
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..engine import expression as E
from ..engine.device import resolve_device
from .data import DataError, DataWarning, Task, load, preprocess as preprocess_features, select
from ..engine.evaluate import evaluate, resolve_backend
from .experiment import program_population
from ..engine.fitness import kendall_tau_b
from .proxy import Proxy, load_proxy

DEFAULT_POPULATION = 50
DEFAULT_SAMPLE_SIZE = 10
_CHUNK = 256  # evolution steps whose random numbers are drawn at once


def _lowest(s: torch.Tensor) -> torch.Tensor:
    """Non-finite scores (NaN, and +inf from an overflow too) as -inf: never preferred, as the
    fitness ranks them (``engine.fitness``); the dtype is kept."""
    return torch.where(torch.isfinite(s), s, torch.full_like(s, -float("inf")))


class SearchError(ValueError):
    """A task or formula the search cannot use; the message names the task and the cause."""


# ----------------------------------------------------------------------------- search space


_INT_KEY = re.compile(r"[\s\d,()\[\]+-]*")
_INT = re.compile(r"-?\d+")


def _flatten(v, key: str, task: str) -> list[int]:
    if isinstance(v, bool) or not isinstance(v, (int, tuple, list)):
        raise SearchError(f"task {task}: architecture key {key!r} is not a (nested) tuple of integers")
    if isinstance(v, int):
        return [v]
    return [x for item in v for x in _flatten(item, key, task)]


def _parse_key(k, task: str) -> list[int]:
    try:
        v = ast.literal_eval(k) if isinstance(k, str) else k
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise SearchError(f"task {task}: cannot parse architecture key {k!r} into an integer encoding "
                          f"(the search needs keys like '(0, 2, 3, 2, 3, 1)')") from None
    return _flatten(v, k, task)


def encodings(task: Task) -> torch.Tensor:
    """``int64[n, D]``: each architecture key of ``task`` (``"(0, 2, 3, 2, 3, 1)"``, nested tuples
    for NB301) parsed as a Python literal and flattened; all keys must give ``D`` integers."""
    keys = task.keys
    if not keys:
        raise SearchError(f"task {task.name}: no architectures")
    if all(isinstance(k, str) and _INT_KEY.fullmatch(k) for k in keys):
        # fast path (literal_eval costs ~0.1 ms a key): the first key checks the syntax, then the
        # integer literals in order are the flattened tuple
        _parse_key(keys[0], task.name)
        rows = [[int(x) for x in _INT.findall(k)] for k in keys]
    else:
        rows = [_parse_key(k, task.name) for k in keys]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1 or 0 in lengths:
        raise SearchError(f"task {task.name}: architecture encodings have different lengths {sorted(lengths)}; "
                          f"the search needs equal-length integer encodings")
    return torch.tensor(rows, dtype=torch.int64)


def value_codes(enc: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``int64[n, D]`` -> (values numbered per position ``int64[n, D]``, number of values per position)."""
    cols = [torch.unique(enc[:, d], return_inverse=True) for d in range(enc.shape[1])]
    return torch.stack([c[1] for c in cols], 1), [len(c[0]) for c in cols]


def _row_groups(codes: torch.Tensor, card: list[int]) -> torch.Tensor:
    """``int64[n]``: equal for equal rows of ``codes`` (a mixed-radix key when it fits in int64,
    else ``torch.unique(dim=0)``, which is much slower on CPU)."""
    if codes.shape[1] == 0:
        return torch.zeros(codes.shape[0], dtype=torch.int64)
    total = 1
    for c in card:
        total *= max(c, 1)
    if total < 2 ** 62:
        key = torch.zeros(codes.shape[0], dtype=torch.int64)
        for j, c in enumerate(card):
            key = key * max(c, 1) + codes[:, j]
        return torch.unique(key, return_inverse=True)[1]
    return torch.unique(codes, dim=0, return_inverse=True)[1]


def neighbour_table(enc: torch.Tensor) -> torch.Tensor:
    """``enc: int64[n, D]`` -> ``int64[n, D * V]``: entry ``d * V + v`` of row ``i`` is the table index
    of the architecture equal to ``i`` except that position ``d`` holds its ``v``-th value
    (values numbered per position, ``V`` = most values at any position), -1 where no such
    architecture is in the table or it is ``i`` itself. Built per position by grouping the rows
    that agree everywhere else."""
    enc = enc.cpu()
    n, D = enc.shape
    codes, card = value_codes(enc)
    V = max(card)
    ar = torch.arange(n)
    parts = []
    for d in range(D):
        keep = [j for j in range(D) if j != d]
        group = _row_groups(codes[:, keep], [card[j] for j in keep])
        G = int(group.max()) + 1
        slot = torch.full((G * V,), -1, dtype=torch.int64)
        # amax: a deterministic choice if the table holds duplicate encodings
        slot.scatter_reduce_(0, group * V + codes[:, d], ar, reduce="amax")
        parts.append(slot.view(G, V).index_select(0, group))  # [n, V]
    out = torch.stack(parts, 1)
    return torch.where(out == ar[:, None, None], -1, out).view(n, D * V)


# ----------------------------------------------------------------------------- objective


def formula_scores(task: Task, expr: str, preprocess: str = "rank", device: str | torch.device = "cpu",
                   backend: str = "auto") -> torch.Tensor:
    """``float[n]``: the formula evaluated by the engine on the task's proxies (preprocessed per
    task with ``preprocess``; see ``formula_values`` for the precision); NaN becomes -inf (never
    preferred). A proxy the formula needs that the task lacks (absent or mostly failed, see
    ``Task.present``) raises ``SearchError``. ``backend="auto"`` means torch here: for one
    program the compiled backends only add their start-up cost (loading numba's cache,
    compiling a Triton kernel)."""
    names = E.names_in(expr)
    missing = [p for p in names if not task.present(p)]
    if missing:
        raise SearchError(f"task {task.name} lacks proxy {', '.join(map(repr, missing))} needed by the formula "
                          f"(absent or mostly failed values); proxies present: "
                          f"{', '.join(p for p in task.proxies if task.present(p))}")
    variables = names or [task.proxies[0]]
    X = task.features[:, [task.proxies.index(p) for p in variables]]
    return formula_values(expr, variables, X, preprocess, device, backend)


def formula_values(expr: str, variables: Sequence[str], X: torch.Tensor, preprocess: str = "rank",
                   device: str | torch.device = "cpu", backend: str = "auto") -> torch.Tensor:
    """``float[n]``: ``expr`` over the columns ``X float[n, len(variables)]`` preprocessed as one
    task (to float32, as evolution saw them); NaN and +-inf become -inf (never preferred, as the
    fitness ranks non-finite values). With ``backend``
    ``auto`` or ``torch`` the formula is computed in float64 by the torch interpreter, as
    ``Proxy.score`` and the exports compute it (``float64[n]``); ``numba`` or ``triton`` compute
    it in float32 (``float32[n]``), evolution's arithmetic, on that backend."""
    node = E.parse(expr, list(variables))
    X = preprocess_features(X, preprocess).to(device)
    if backend in ("auto", "torch"):
        X = X.double()
    s = evaluate(program_population(node, device), X, "torch" if backend == "auto" else backend)[0]
    return _lowest(s)


def proxy_scores(task: Task, proxy: str) -> torch.Tensor:
    """``float32[n]``: one proxy as the objective (failed values -> -inf)."""
    if not task.present(proxy):
        raise SearchError(f"task {task.name} lacks proxy {proxy!r} (absent or mostly failed values); proxies "
                          f"present: {', '.join(p for p in task.proxies if task.present(p))}")
    s = task.column(proxy).clone()
    s[~torch.isfinite(s)] = -float("inf")  # +inf too: a failed value, not a great architecture
    return s


def dense_rank(scores: torch.Tensor) -> torch.Tensor:
    """``float[n] -> int64[n]`` in 1..k, equal scores equal ranks (NaN and +-inf = -inf, lowest): the
    searches compare integers, so a -inf score still ranks above "not scored" (0)."""
    s = _lowest(scores.double())
    return torch.unique(s, return_inverse=True)[1] + 1


def accuracy_percentile(accuracy: torch.Tensor) -> torch.Tensor:
    """``float[n] -> float64[n]``: 100 * fraction of the table with accuracy <= each accuracy."""
    a = accuracy.double()
    srt = torch.sort(a).values
    return 100.0 * torch.searchsorted(srt, a, right=True).double() / a.numel()


# ----------------------------------------------------------------------------- searches


@dataclass
class SearchTrace:
    """Outcome of ``R`` batched searches: ``best int64[R]`` (table index of the incumbent: the
    first architecture scored with the run's highest objective), ``evaluations int64[R]``
    (distinct architectures scored), ``visited bool[R, n]``, ``steps`` (mutation steps)."""

    best: torch.Tensor
    evaluations: torch.Tensor
    visited: torch.Tensor
    steps: int


def _first_best(idx: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``idx int64[R, k]`` in scoring order -> (``int64[R]`` first index with the highest rank, its rank)."""
    r = rank[idx]
    j = r.argmax(1, keepdim=True)  # argmax returns the first maximal position
    return idx.gather(1, j).squeeze(1), r.gather(1, j).squeeze(1)


def random_search(scores: torch.Tensor, budget: int, runs: int, seed: int) -> SearchTrace:
    """``R`` runs each scoring ``budget`` distinct architectures drawn uniformly."""
    rank = dense_rank(scores)
    n = rank.numel()
    budget = max(1, min(int(budget), n))
    g = torch.Generator(rank.device).manual_seed(int(seed))
    pick = torch.rand(runs, n, generator=g, device=rank.device).argsort(1)[:, :budget]
    visited = torch.zeros(runs, n, dtype=torch.bool, device=rank.device).scatter_(1, pick, True)
    ev = torch.full((runs,), budget, dtype=torch.int64, device=rank.device)
    return SearchTrace(_first_best(pick, rank)[0], ev, visited, 0)


def one_hot(enc: torch.Tensor) -> torch.Tensor:
    """``int64[n, D] -> float32[n, D * V]`` (values numbered per position): ``D - a @ b.T`` is the
    Hamming distance."""
    codes, card = value_codes(enc)
    V, D = max(card), enc.shape[1]
    pos = codes + V * torch.arange(D, device=enc.device)
    return torch.zeros(enc.shape[0], D * V, device=enc.device).scatter_(1, pos, 1.0)


def _nearest(onehot: torch.Tensor, parent: torch.Tensor, excluded: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``int64[k]``: for each parent an architecture drawn uniformly among those not excluded
    (``bool[k, n]``) at the smallest Hamming distance from it."""
    sim = onehot.index_select(0, parent) @ onehot.T  # [k, n] positions in common: -Hamming distance + D
    sim += torch.rand(sim.shape, generator=g, device=sim.device)  # uniform tie-break, < 1
    return sim.masked_fill_(excluded, -1.0).argmax(1)


def regularized_evolution(scores: torch.Tensor | None, enc: torch.Tensor, budget: int, runs: int, seed: int,
                          population: int = DEFAULT_POPULATION, sample_size: int = DEFAULT_SAMPLE_SIZE,
                          neighbours: torch.Tensor | None = None, objective=None) -> SearchTrace:
    """``R`` batched runs of regularized evolution over the table (``scores float[n]``, ``enc
    int64[n, D]``, ``neighbours`` from ``neighbour_table(enc)``, computed if omitted). Each run
    scores ``min(budget, n)`` distinct architectures: ``population`` drawn uniformly, then one
    unscored child per step (so all runs end at the same step).

    ``objective`` (instead of ``scores``): scores computed as the search goes, an object with
    ``observe(idx int64[R, k])`` (the runs score these architectures now) and ``values(idx
    int64[R, k]) -> float[R, k]`` (each run's current objective of architectures it scored;
    it may change as the run scores more, e.g. ranks against everything scored so far)."""
    live = objective is not None
    dev = enc.device if live else scores.device
    rank = None if live else dense_rank(scores)
    n = enc.shape[0] if live else rank.numel()
    if enc.shape[0] != n:
        raise SearchError(f"{enc.shape[0]} encodings for {n} scores")
    nb = (neighbour_table(enc.cpu()) if neighbours is None else neighbours).to(dev)
    hot = one_hot(enc.to(dev))
    budget = max(1, min(int(budget), n))
    P = max(1, min(int(population), budget))
    S = max(1, min(int(sample_size), P))
    R = int(runs)
    g = torch.Generator(dev).manual_seed(int(seed))

    pop = torch.rand(R, n, generator=g, device=dev).argsort(1)[:, :P]  # [R, P] distinct per run
    visited = torch.zeros(R, n, dtype=torch.bool, device=dev).scatter_(1, pop, True)
    if live:
        objective.observe(pop)
    pop_rank = objective.values(pop) if live else rank[pop]
    first = pop.clone()
    steps = budget - P
    children = torch.empty(steps, R, dtype=torch.int64, device=dev)  # scoring order, for the incumbent
    K = nb.shape[1]
    for step in range(steps):
        c = step % _CHUNK
        if c == 0:  # random numbers for the next steps in two calls (the loop is op-overhead bound)
            m = min(_CHUNK, steps - step)
            draws = torch.randint(0, P, (m, R, S), generator=g, device=dev)
            noise_all = torch.rand(m, R, K, generator=g, device=dev)
        # tournament: S members drawn with replacement (Real et al. 2019, Alg. 1); the best is the parent
        cand = draws.select(0, c)
        win = cand.gather(1, pop_rank.gather(1, cand).argmax(1, keepdim=True))
        parent = pop.gather(1, win).squeeze(1)  # [R]
        # mutation: an unscored neighbour at Hamming distance 1, drawn uniformly
        nbr = nb.index_select(0, parent)  # [R, K] (index_select/scatter: plain indexing is slow here)
        ok = (nbr >= 0) & ~visited.gather(1, nbr.clamp(min=0))
        j = torch.where(ok, noise_all.select(0, c), -1.0).argmax(1, keepdim=True)  # (Tensor.max(dim) is slow on CPU)
        child = nbr.gather(1, j).squeeze(1)
        lost = ~ok.gather(1, j).squeeze(1)
        if bool(lost.any()):  # no unscored neighbour: the nearest unscored architecture
            k = lost.nonzero().squeeze(1)
            child.index_copy_(0, k, _nearest(hot, parent.index_select(0, k), visited.index_select(0, k), g))
        visited.scatter_(1, child[:, None], True)
        children.select(0, step).copy_(child)
        # the child replaces the oldest member (ring buffer)
        pop.select(1, step % P).copy_(child)
        if live:
            objective.observe(child[:, None])
            pop_rank = objective.values(pop)
        else:
            pop_rank.select(1, step % P).copy_(rank.index_select(0, child))
    order = torch.cat([first, children.T], 1)  # scoring order
    if live:  # the first architecture with the run's highest final objective
        best = order.gather(1, objective.values(order).argmax(1, keepdim=True)).squeeze(1)
    else:
        best = _first_best(order, rank)[0]
    return SearchTrace(best, visited.sum(1), visited, steps)


# ----------------------------------------------------------------------------- reports


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def search(task: Task, scores: torch.Tensor, budget: int = 1000, runs: int = 10, seed: int = 0,
           method: str = "evolution", population: int = DEFAULT_POPULATION,
           sample_size: int = DEFAULT_SAMPLE_SIZE,
           enc: torch.Tensor | None = None, neighbours: torch.Tensor | None = None) -> dict:
    """Run ``runs`` batched searches of ``task``'s table maximising ``scores float[n]`` (on their
    device) and report, per run and as medians, the best architecture by the objective, its
    score, its accuracy and accuracy percentile (when ``task`` is labelled: every accuracy
    finite; an unlabelled task, all NaN, reports neither), and the evaluations. ``time_s`` is the
    wall time of the batched search (all runs together; each run's own wall time is the same)."""
    if scores.shape != (len(task),):
        raise SearchError(f"task {task.name}: {tuple(scores.shape)} scores for {len(task)} architectures")
    if runs < 1 or budget < 1:
        raise SearchError(f"budget and runs must be >= 1 (got budget {budget}, runs {runs})")
    if population < 1 or sample_size < 1 or sample_size > population:
        raise SearchError(f"the tournament needs 1 <= sample size <= population (got population {population}, "
                          f"sample size {sample_size})")
    t0 = time.perf_counter()
    if method == "evolution":
        if enc is None:
            enc = encodings(task)
        tr = regularized_evolution(scores, enc, budget, runs, seed, population, sample_size, neighbours)
    elif method == "random":
        tr = random_search(scores, budget, runs, seed)
    else:
        raise SearchError(f"unknown search method {method!r}; methods: evolution, random")
    best = tr.best.cpu()
    if scores.is_cuda:
        torch.cuda.synchronize(scores.device)
    dt = time.perf_counter() - t0
    labelled = task.labelled
    pct = accuracy_percentile(task.accuracy) if labelled else None
    s = scores.cpu()
    per_run = []
    for r, i in enumerate(best.tolist()):
        row = {"run": r, "arch": task.keys[i], "index": i, "score": float(s[i])}
        if labelled:
            row.update(accuracy=float(task.accuracy[i]), percentile=float(pct[i]))
        per_run.append({**row, "evaluations": int(tr.evaluations[r])})
    median = {"score": _median([x["score"] for x in per_run])}
    if labelled:
        median.update(accuracy=_median([x["accuracy"] for x in per_run]),
                      percentile=_median([x["percentile"] for x in per_run]))
    median.update(evaluations=_median([x["evaluations"] for x in per_run]), time_s=dt)
    return {
        "method": method,
        "budget": min(budget, len(task)),
        "runs": runs,
        "seed": seed,
        "steps": tr.steps,
        "labelled": labelled,
        "per_run": per_run,
        "median": median,
        "time_s": dt,
    }


def single_kendall(task: Task, proxy: str) -> float:
    """Kendall tau-b of one proxy against accuracy over the architectures where it is finite
    (torch backend: one column does not pay for loading numba)."""
    c = task.column(proxy)
    f = torch.isfinite(c)
    k = int(f.sum())
    if k < 2:
        return float("nan")
    return float(kendall_tau_b(c[f][None], task.accuracy[f], torch.tensor([0, k]), backend="torch")[0, 0])


def best_single_proxy(task: Task, candidates: Sequence[str] | None = None) -> str:
    """Of ``candidates`` present on ``task`` (default: every proxy it has), the one with the highest
    Kendall tau against accuracy: the strongest single-proxy search a user could run in hindsight
    (which proxy that is differs by space and task: flops on NB101, jacov on most TNB-micro tasks)."""
    cands = [p for p in (task.proxies if candidates is None else candidates) if task.present(p)]
    if not cands:
        raise SearchError(f"task {task.name}: no proxy is present")
    taus = {p: single_kendall(task, p) for p in cands}
    return max(cands, key=lambda p: (taus[p] == taus[p], taus[p]))  # NaN last


def read_result(path: str | Path) -> tuple[str | Proxy, str]:
    """``(formula, preprocess)`` of a ``tensorgp run`` result.json (split or leave-one-space-out)
    or a saved proxy: the formula is the infix text, or the ``Proxy`` for an ensemble."""
    try:
        p = load_proxy(path)
    except DataError as e:
        raise SearchError(f"cannot read a formula from {path}: {e}") from None
    return (p if p.is_ensemble else p.expressions[0]), p.preprocess


def pick_task(tasks: list[Task], name: str) -> Task:
    """The one task named ``name`` (or matched by the glob ``name``)."""
    exact = [t for t in tasks if t.name == name]
    if exact:
        return exact[0]
    hits = select(tasks, name)
    if len(hits) != 1:
        raise SearchError(f"task {name!r} matches {len(hits)} tasks ({', '.join(t.name for t in hits)}); name one")
    return hits[0]


def search_table(data: Sequence[str | Path], name: str) -> Task:
    """The task ``name`` of the files as a search table, accuracies optional. A task where some
    architectures have a finite ``val_accuracy`` is labelled: the table is those architectures
    (the others are left out with a ``DataWarning``, as ``load`` does). A task without any (a file
    of architectures to rank) is unlabelled: every architecture, accuracies all NaN."""
    t = pick_task(load(data, labels=False), name)
    known = torch.isfinite(t.accuracy)
    if bool(known.any()) and not bool(known.all()):
        warnings.warn(f"task {t.name}: {int((~known).sum())} of {len(t)} architectures have no finite val_accuracy; "
                      f"the search table is the {int(known.sum())} with one", DataWarning, stacklevel=2)
        t = t.subset(known)
    return t


@contextmanager
def cpu_threads(n: int | None):
    """Temporarily ``torch.set_num_threads(n)`` (``None``: unchanged)."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def run_search(data: Sequence[str | Path], task: str, expr: str, preprocess: str = "rank", budget: int = 1000,
               runs: int = 10, seed: int = 0, population: int = DEFAULT_POPULATION,
               sample_size: int = DEFAULT_SAMPLE_SIZE, baseline_proxy: str | None = None,
               device: str = "cpu", backend: str = "auto", threads: int | None = 1) -> dict:
    """The ``tensorgp search`` result: regularized evolution driven by the formula, and as baselines
    with the same budget and seed, random search scored by the formula and the same evolution
    driven by the best single proxy (``baseline_proxy``, default: the best by Kendall tau on the
    task, ``best_single_proxy``). ``threads``: torch CPU threads meanwhile; the tensors here are
    small (<= runs x table), so more threads gain nothing, and on a busy 2-core machine their
    spinning made the formula and the neighbour table 10-30x slower (measured).

    A task without accuracies (``search_table``) is searched on the formula's scores alone
    (``labelled: false``): each run reports the architecture found (key, table index) and its
    score, the medians are the score and the evaluations, and the baselines are compared by the
    formula's score: random search always; the single-proxy search only when ``baseline_proxy``
    is given (nothing can choose it without accuracies), each of its runs reporting the
    architecture found, its own proxy's value (``score``) and the formula's (``formula_score``)."""
    resolve_device(device)  # a clear error before the data is read
    with cpu_threads(threads):
        return _run_search(data, task, expr, preprocess, budget, runs, seed, population, sample_size,
                           baseline_proxy, device, backend)


def _run_search(data, task, expr, preprocess, budget, runs, seed, population, sample_size, baseline_proxy,
                device, backend) -> dict:
    t0 = time.perf_counter()
    t = search_table(data, task)
    labelled = t.labelled
    t_load = time.perf_counter() - t0
    enc = encodings(t)
    nb = neighbour_table(enc)
    t1 = time.perf_counter()
    t_prep = t1 - t0 - t_load
    if isinstance(expr, str):
        scores = formula_scores(t, expr, preprocess, device, backend)
    else:  # a Proxy (nas.proxy): an ensemble or a loaded formula, with its own preprocessing
        scores = torch.from_numpy(np.asarray(expr.score_task(t), dtype=np.float64)).to(device)
        scores = _lowest(scores)
        preprocess = expr.preprocess
    t_score = time.perf_counter() - t1
    kw = dict(budget=budget, runs=runs, seed=seed, population=population, sample_size=sample_size,
              enc=enc, neighbours=nb)
    main = search(t, scores, method="evolution", **kw)
    rnd = search(t, scores, method="random", **kw)
    proxy = baseline_proxy or (best_single_proxy(t) if labelled else None)
    bp = search(t, proxy_scores(t, proxy).to(device), method="evolution", **kw) if proxy else None
    pct = accuracy_percentile(t.accuracy) if labelled else None
    s = scores.cpu()
    top = int(torch.argmax(s))  # ties: the lowest table index

    def brief(r: dict, **extra) -> dict:
        out = {**extra, "score": r["median"]["score"]}
        if labelled:
            out.update(accuracy=r["median"]["accuracy"], percentile=r["median"]["percentile"])
        return {**out, "time_s": r["time_s"], "per_run": r["per_run"]}

    baselines = {"random": brief(rnd, method="random search scored by the formula")}
    if bp is not None:
        for x in bp["per_run"]:  # the formula's score of the architecture the single proxy found
            x["formula_score"] = float(s[x["index"]])
        b = brief(bp, method=f"regularized evolution driven by {proxy}", proxy=proxy)
        if not labelled:  # its "score" is the formula's, as for the other searches
            b["score"] = _median([x["formula_score"] for x in bp["per_run"]])
        baselines["best_proxy"] = b
    if isinstance(expr, str):
        node = E.parse(expr, E.names_in(expr) or [t.proxies[0]])
        shown = E.to_infix(node, E.names_in(expr) or [t.proxies[0]])
    else:
        shown = expr.expressions[0] if not expr.is_ensemble else "ensemble: " + "; ".join(expr.expressions)
    argmax = {"arch": t.keys[top], "score": float(s[top])}
    median = {"score": main["median"]["score"]}
    if labelled:
        argmax.update(accuracy=float(t.accuracy[top]), percentile=float(pct[top]))
        median.update(accuracy=main["median"]["accuracy"], percentile=main["median"]["percentile"])
    median.update(evaluations=main["median"]["evaluations"], time_s=main["time_s"])
    res = {
        "task": t.name,
        "expression": shown,
        "preprocess": preprocess,
        "labelled": labelled,
        "budget": main["budget"],
        "runs": runs,
        "seed": seed,
        # the effective sizes (regularized_evolution's clamps): with budget <= population the
        # evolution takes no step and is random search
        "population": max(1, min(int(population), main["budget"])),
        "sample_size": max(1, min(int(sample_size), int(population), main["budget"])),
        "table_size": len(t),
    }
    if labelled:
        res["table_best_accuracy"] = float(t.accuracy.max())
    else:
        res["note"] = (f"task {t.name} has no val_accuracy: searched on the formula's scores alone; no accuracy, "
                       f"percentile or accuracy-chosen baseline" +
                       ("" if proxy else " (give baseline_proxy / --baseline-proxy for a single-proxy search, "
                                         "compared by the formula's score)"))
    res.update({
        "formula_argmax": argmax,
        "median": median,
        "per_run": main["per_run"],
        "baselines": baselines,
        "timing": {"load_s": t_load, "prepare_s": t_prep, "score_s": t_score, "search_s": main["time_s"],
                   "baselines_s": rnd["time_s"] + (bp["time_s"] if bp else 0.0), "total_s": time.perf_counter() - t0},
        "device": str(device),
        "backend": "torch" if backend == "auto" or not isinstance(expr, str) else resolve_backend(backend, device),
        "dtype": "float64" if backend in ("auto", "torch") or not isinstance(expr, str) else "float32",
    })
    return res


def top_k_percentile(pred: torch.Tensor, percentile: torch.Tensor, k: int = 10) -> torch.Tensor:
    """``pred float[P, n]``, ``percentile float[n]`` -> ``float32[P]``: mean accuracy percentile of each
    row's top ``k`` architectures (NaN and +-inf lowest; ties at the k-th value count with their mean, i.e.
    the expectation under random tie-breaking). What a search driven by the row can find at best:
    a formula for search should score high here, whatever its Kendall tau."""
    s = _lowest(pred.double())
    pct = percentile.double().to(s.device)
    k = max(1, min(int(k), s.shape[1]))
    thr = s.topk(k, dim=1).values[:, -1:]
    above, at = s > thr, s == thr
    sum_above = (above * pct).sum(1)
    mean_at = (at * pct).sum(1) / at.sum(1).clamp(min=1)
    return ((sum_above + (k - above.sum(1)) * mean_at) / k).float()
