"""Evolve a zero-cost proxy on training tasks and score formulas on tasks: the library behind
``tensorgp run`` and ``tensorgp eval``. Returns plain dicts (the result JSON); presentation is
the CLI's job."""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch

from .. import __version__
from ..engine import expression as E
from .data import Batch, DataError, DataWarning, Task, common_proxies, load, make_batch, select
from .data_digest import training_digest
from .spec_checks import check_spec
from ..engine.device import resolve_device
from ..engine.evaluate import evaluate, resolve_backend
from ..engine.evolve import EvolutionConfig, Evolver, GenStats
from .objective import correlation, objective_for
from .selection import extend_result  # per-run figures, selection strategies, baselines
from .splits import split_validation_holdout
from .transfer import resolve_auto
from ..engine.population import Population
from ..engine.primitives import PrimitiveSet
from ..runtime.distributed import World, evolve_managed


@dataclass
class RunSpec:
    data: Sequence[str | Path]
    train: str
    test: str | None = None
    proxies: Sequence[str] | None = None
    preprocess: str = "rank"
    functions: Sequence[str] | None = None
    constants: bool = True
    metric: str = "kendall"
    aggregation: str = "mean"
    device: str = "cpu"
    backend: str = "auto"
    config: EvolutionConfig = field(default_factory=EvolutionConfig)
    # protocols (tensorgp.nas.protocols): evolve on a seeded share of each training task's rows and
    # report the rest as "holdout"; tasks matching ``validation`` are scored but never fitted
    # (they choose the formula when ``select == "validation"``)
    fit_fraction: float | None = None
    split_seed: int = 0
    validation: str | None = None
    select: str = "compact"
    # Suite-Zero files of the search space the proxy is meant for (accuracies never read): the
    # terminals are restricted to the proxies present on every task there too (``run --for``)
    target: Sequence[str | Path] | None = None

    def validate(self) -> "RunSpec":
        """``ValueError`` naming the option of an invalid setting (see ``spec_checks``); self otherwise."""
        check_spec(self)
        return self


@dataclass
class Prepared:
    train: list[Task]
    test: list[Task]
    proxies: list[str]
    pset: PrimitiveSet
    train_batch: Batch
    holdout: list[Task] = field(default_factory=list)  # the unfitted rows of each training task
    validation: list[Task] = field(default_factory=list)
    # tasks whose rank correlation is undefined (< 2 architectures, all accuracies equal):
    # {name: (split, reason, architectures)}; left out of fitting and of every mean, reported as undefined
    undefined: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    target: list[str] = field(default_factory=list)  # names of the --for tasks that restricted the terminals


def split_tasks(tasks: list[Task], train: str, test: str | None) -> tuple[list[Task], list[Task]]:
    """Train tasks match ``train``; test tasks match ``test``. A task matching both is a
    ``DataError`` (it would silently leave the test set)."""
    tr = select(tasks, train)
    names = {t.name for t in tr}
    te = select(tasks, test) if test else []
    both = [t.name for t in te if t.name in names]
    if both:
        raise DataError(f"--test {test!r} selects training task(s) {', '.join(both)} (--train {train!r}); "
                        f"a task is either fitted or held out: narrow --train or --test")
    return tr, te


def drop_undefined(tasks: list[Task], split: str, undefined: dict) -> list[Task]:
    """``tasks`` whose rank correlation is defined; the others go to ``undefined`` with a warning.
    Two architectures give a warning too (their Kendall is +-1 or 0)."""
    keep = []
    for t in tasks:
        why = t.undefined()
        if why is not None:
            undefined[t.name] = (split, why, len(t))
            warnings.warn(f"task {t.name} ({split}): Kendall tau is undefined ({why}); left out of fitting and "
                          f"of every mean", DataWarning, stacklevel=2)
            continue
        if len(t) == 2:
            warnings.warn(f"task {t.name} ({split}): only 2 architectures, so its Kendall tau is -1, 0 or 1",
                          DataWarning, stacklevel=2)
        keep.append(t)
    return keep


def prepare(spec: RunSpec) -> Prepared:
    spec.validate()
    tasks = load(spec.data)
    train, test = split_tasks(tasks, spec.train, spec.test)
    undefined: dict = {}
    train = drop_undefined(train, "train", undefined)
    test = drop_undefined(test, "test", undefined)
    if not train:
        raise DataError("no training task has a defined Kendall tau: "
                        + "; ".join(f"{n}: {w}" for n, (_, w, _) in undefined.items()))
    train, validation, holdout = split_validation_holdout(spec, tasks, train, test)
    validation = drop_undefined(validation, "validation", undefined)
    target = load(spec.target, labels=False) if spec.target else []
    proxies = common_proxies(train + test + validation + target, list(spec.proxies) if spec.proxies else None)
    if not proxies:
        raise DataError(f"no proxy is present on every selected task"
                        f"{' and every task of --for' if target else ''} "
                        f"({', '.join(t.name for t in train + test + target)})")
    pset = PrimitiveSet(tuple(proxies), PrimitiveSet.parse_functions(spec.functions), spec.constants)
    batch = make_batch(train, proxies, spec.preprocess, spec.device)
    return Prepared(train, test, proxies, pset, batch, holdout, validation, undefined, [t.name for t in target])


def program_population(node: E.Node, device: str | torch.device = "cpu") -> Population:
    ops, consts = E.to_postfix(node)
    return Population(torch.tensor([ops], dtype=torch.int32, device=device),
                      torch.tensor([consts], dtype=torch.float32, device=device),
                      torch.tensor([len(ops)], dtype=torch.int32, device=device))


def task_scores(pop: Population, tasks: list[Task], proxies: list[str], preprocess: str,
                device: str = "cpu", backend: str = "auto",
                dtype: torch.dtype = torch.float32) -> dict[str, dict[str, float]]:
    """Kendall and Spearman of each program row on each task -> ``{task: {kendall, spearman, n}}`` for row 0."""
    batch = make_batch(tasks, proxies, preprocess, device, dtype)
    pred = evaluate(pop, batch.X, backend)
    k = correlation(pred, batch, "kendall")[0].tolist()
    s = correlation(pred, batch, "spearman")[0].tolist()
    return {t.name: {"n": len(t), "kendall": k[i], "spearman": s[i]} for i, t in enumerate(tasks)}


def single_proxy_scores(tasks: list[Task], proxies: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Kendall of every proxy used as is, on every task where it is present: ``{task: {proxy: tau}}``.
    Rank statistics ignore monotone preprocessing, so raw values are used."""
    out: dict[str, dict[str, float]] = {}
    for t in tasks:
        names = [p for p in (proxies or t.proxies) if t.present(p)]
        if not names:
            out[t.name] = {}
            continue
        cols = torch.stack([t.column(p) for p in names])  # [k, n] one "program" per proxy
        off = torch.tensor([0, len(t)])
        taus = correlation(cols, Batch([t.name], names, cols.t(), t.accuracy, off), "kendall")[:, 0].tolist()
        out[t.name] = dict(zip(names, taus))
    return out


def best_single(scores: dict[str, float]) -> dict:
    if not scores:
        return {"proxy": None, "kendall": float("nan")}
    p = max(scores, key=lambda k: scores[k])
    return {"proxy": p, "kendall": scores[p]}


def evolve_proxy(spec: RunSpec, callback: Callable[[GenStats], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, prepared: Prepared | None = None, *,
                 checkpoint: str | Path | None = None, every: int = 0, resume: str | Path | None = None,
                 islands=None, world=None) -> dict | None:
    """Evolve a proxy formula on the training tasks; score it and every single proxy on all tasks.

    ``checkpoint``/``every``/``resume``/``islands`` (``runtime.distributed.Islands``)/``world``
    (``runtime.distributed.init_world``): see ``evolve_proxy_managed``; with any of them the
    result is None on ranks other than 0."""
    if checkpoint is not None or resume is not None or islands is not None or world is not None:
        return evolve_proxy_managed(spec, callback, should_stop, prepared, world=world, islands=islands,
                                    checkpoint=checkpoint, every=every, resume=resume)
    t_start = time.perf_counter()
    prep = prepared or prepare(spec)
    spec = resolve_auto(spec, [t.name for t in prep.train])  # aggregation/select "auto"
    objective = objective_for(spec, prep.train_batch)
    evolver = Evolver(spec.config, prep.pset, objective, spec.device, count_rows=prep.train_batch.X.shape[0])
    evolver.run(callback, should_stop)
    evolver.rescore_hall_of_fame(None)  # a resampled objective: the final pick sees every space
    return build_result(spec, prep, evolver, objective.backend, time.perf_counter() - t_start,
                        interrupted=not evolver.done())


def evolve_proxy_managed(spec: RunSpec, callback: Callable[[GenStats], None] | None = None,
                         should_stop: Callable[[], bool] | None = None, prepared: Prepared | None = None, *,
                         world: World | None = None, islands=None, checkpoint: str | Path | None = None,
                         every: int = 0, resume: str | Path | None = None) -> dict | None:
    """``evolve_proxy`` with islands, checkpoints and resume (``runtime.distributed.evolve_managed``).

    ``spec.device`` must be this process's device (``init_world(...).device``). ``resume``: a
    checkpoint directory (the ranks agree on the newest generation they all hold). Returns the
    result dict on rank 0 (with ``islands`` and ``checkpoint`` blocks) and None elsewhere."""
    t_start = time.perf_counter()
    world = world or World(device=torch.device(spec.device))
    prep = prepared or prepare(spec)
    spec = resolve_auto(spec, [t.name for t in prep.train])
    objective = objective_for(spec, prep.train_batch)
    cfg = dataclasses.replace(spec.config, seed=spec.config.seed + world.rank)
    evolver = Evolver(cfg, prep.pset, objective, spec.device, count_rows=prep.train_batch.X.shape[0])
    # the data digest makes --resume notice a training file whose contents changed under the same task names
    problem = {"proxies": list(prep.proxies), "train_tasks": [t.name for t in prep.train],
               "train_data_sha256": training_digest(prep.train, prep.proxies)}
    digest = [list(prep.pset.functions), int(prep.train_batch.X.shape[0]), spec.metric, spec.aggregation,
              spec.preprocess]
    run = evolve_managed(evolver, spec, world=world, islands=islands, checkpoint=checkpoint, every=every,
                         resume=resume, problem=problem, digest=digest, callback=callback, should_stop=should_stop)
    if run is None:
        return None
    view = SimpleNamespace(state=dataclasses.replace(evolver.state, hof=run.hof), count_rows=evolver.count_rows)
    res = build_result(dataclasses.replace(spec, config=dataclasses.replace(spec.config, runs=run.islands)), prep,
                       view, objective.backend, run.elapsed0 + time.perf_counter() - t_start,
                       interrupted=run.info.interrupted)
    res["timing"].update(run.timing)
    res.update(run.blocks)
    return res


def build_result(spec: RunSpec, prep: Prepared, evolver: Evolver, backend: str, time_s: float,
                 interrupted: bool = False) -> dict:
    state = evolver.state
    cfg = spec.config
    R = cfg.runs
    H = state.hof.size
    run_best = state.hof.fitness.view(R, H)[:, 0]
    best_run = int(torch.argmax(torch.nan_to_num(run_best, nan=-float("inf"))))
    best_pop, best_fit = state.hof.best(best_run)
    node = E.row(best_pop.ops, best_pop.consts, best_pop.length, 0)
    simple = E.simplify(node)
    expr = E.to_infix(simple, prep.pset.variables)
    prog = program_population(simple, spec.device)
    all_tasks = prep.train + prep.test
    scores = task_scores(prog, all_tasks, prep.proxies, spec.preprocess, spec.device, spec.backend)
    singles = single_proxy_scores(all_tasks)
    tasks = {}
    for t in all_tasks:
        split = "train" if t in prep.train else "test"
        sc = scores[t.name]
        tasks[t.name] = {"split": split, "n": sc["n"], "kendall": sc["kendall"], "spearman": sc["spearman"],
                         "best_single": best_single(singles[t.name]), "single": singles[t.name]}
    for name, (split, why, n) in prep.undefined.items():
        tasks[name] = {"split": split, "n": n, "kendall": None, "spearman": None, "undefined": why,
                       "best_single": {"proxy": None, "kendall": None}, "single": {}}
    hof = []
    for r in range(R):
        for h in range(H):
            f = float(state.hof.fitness[r * H + h])
            if not math.isfinite(f):
                continue
            n = E.simplify(E.row(state.hof.pop.ops, state.hof.pop.consts, state.hof.pop.length, r * H + h))
            hof.append({"run": r, "expression": E.to_infix(n, prep.pset.variables), "fitness": f, "size": E.size(n)})
    hist = state.history
    eval_s = sum(h.eval_s for h in hist)
    fit_s = sum(h.fitness_s for h in hist)
    var_s = sum(h.variation_s for h in hist)
    nodes = sum(h.nodes for h in hist)
    split_means = {}
    for split in ("train", "test"):
        ks = [v["kendall"] for v in tasks.values() if v["split"] == split and v["kendall"] is not None]
        split_means[split] = sum(ks) / len(ks) if ks else None
    res = {
        "version": __version__,
        "expression": expr,
        "expression_raw": E.to_infix(node, prep.pset.variables),
        "program": {"ops": E.to_postfix(simple)[0], "consts": E.to_postfix(simple)[1]},
        "size": E.size(simple),
        "depth": E.depth(simple),
        "fitness": best_fit,
        "metric": spec.metric,
        "aggregation": spec.aggregation,
        "preprocess": spec.preprocess,
        "seed": cfg.seed,
        "population": cfg.population,
        "generations": cfg.generations,
        "generations_run": state.generation,
        "runs": R,
        "run_fitness": run_best.tolist(),
        "interrupted": interrupted,
        "time_s": time_s,
        "device": str(spec.device),
        "backend": backend,
        "proxies": prep.proxies,
        "functions": list(prep.pset.functions),
        "train_tasks": [t.name for t in prep.train],
        "test_tasks": [t.name for t in prep.test],
        "mean_kendall": split_means,
        "tasks": tasks,
        "undefined_tasks": {n: why for n, (_, why, _) in prep.undefined.items()},
        "hall_of_fame": hof,
        "timing": {"eval_s": eval_s, "fitness_s": fit_s, "variation_s": var_s,
                   "node_evals": nodes, "node_evals_per_s": nodes / eval_s if eval_s > 0 else None,
                   "arch_evals": sum(h.programs for h in hist) * evolver.count_rows,
                   "arch_evals_per_s": sum(h.programs for h in hist) * evolver.count_rows / (eval_s + fit_s)
                   if eval_s + fit_s > 0 else None},
        "history": [{"generation": h.generation, "best": h.best, "mean": h.mean, "mean_size": h.mean_size,
                     "seconds": h.seconds} for h in hist],
        "config": cfg.to_dict(),
    }
    return extend_result(res, spec, prep, state)


def scorable(t: Task, needs: Sequence[str]) -> tuple[Task, dict | None]:
    """The task's architectures with an accuracy, and None; or the entry that reports why the task
    cannot be correlated (no accuracies, a needed proxy absent or mostly failed: ``error``;
    Kendall undefined: ``undefined``, with a warning)."""
    if not t.labelled:
        return t, {"n": len(t), "error": f"task {t.name} has no val_accuracy to correlate with "
                                         f"(rank its architectures with `tensorgp score`)"}
    missing = [p for p in needs if not t.present(p)]
    t = t.subset(torch.isfinite(t.accuracy))
    if missing:
        return t, {"n": len(t), "error": f"task {t.name} lacks proxy {', '.join(missing)} "
                                         f"(absent or mostly failed values)"}
    why = t.undefined()
    if why is not None:
        warnings.warn(f"task {t.name}: Kendall tau is undefined ({why}); left out of the mean", DataWarning,
                      stacklevel=3)
        return t, {"n": len(t), "kendall": None, "spearman": None, "undefined": why}
    return t, None


def scored_mean(out: dict[str, dict]) -> float | None:
    """Mean Kendall over the scored tasks of ``out``; ``DataError`` when none could be scored."""
    if all("error" in v or "undefined" in v for v in out.values()):
        raise DataError("no selected task can be scored: " + "; ".join(
            f"{n}: {v.get('error') or 'undefined, ' + v['undefined']}" for n, v in out.items()))
    ks = [v["kendall"] for v in out.values() if "error" not in v and "undefined" not in v]
    return sum(ks) / len(ks) if ks else None


def evaluate_expression(text: str, data: Sequence[str | Path], tasks_glob: str, preprocess: str = "rank",
                        device: str = "cpu", backend: str = "auto") -> dict:
    """Score one formula on tasks. A task lacking a proxy the formula names is reported with
    ``error`` and left out of the mean, never scored silently; so is a task without accuracies
    (``tensorgp score`` ranks those; architectures without accuracy are left out) and a task whose
    Kendall tau is undefined (``undefined``: the reason). ``DataError`` when no task can be scored.
    With ``raw`` preprocessing the formula is computed in float64 (torch interpreter), so its
    Kendall equals scipy's on the file's values: a float32 cast would merge close values and
    overflow 1e300."""
    resolve_device(device)
    tasks = select(load(data, labels=False), tasks_glob)
    names = E.names_in(text)
    all_proxies = sorted({p for t in tasks for p in t.proxies})
    unknown = [n for n in names if n not in all_proxies]
    if unknown:
        raise E.ParseError(f"unknown proxy {', '.join(map(repr, unknown))} in the formula; "
                           f"proxies in the selected tasks: {', '.join(all_proxies)}")
    node = E.parse(text, names or all_proxies[:1])
    variables = names or all_proxies[:1]
    prog = program_population(node, device)
    dtype = torch.float64 if preprocess == "raw" else torch.float32
    out: dict[str, dict] = {}
    for t in tasks:
        t, problem = scorable(t, names)
        if problem is not None:
            out[t.name] = problem
            continue
        out.update(task_scores(prog, [t], variables, preprocess, device, backend, dtype))
    return {"expression": E.to_infix(node, variables), "preprocess": preprocess, "tasks": out,
            "mean_kendall": scored_mean(out),
            "backend": "torch" if dtype == torch.float64 else resolve_backend(backend, device),
            "dtype": str(dtype).removeprefix("torch.")}
