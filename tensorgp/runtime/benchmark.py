"""``tensorgp bench``: evaluation, fitness and generation throughput, next to the peers a user
would pick instead (gplearn, pyoperon), on the same trees and the same rows.

Units (every number is labelled in the JSON under ``units``):

* ``gpops``: population-equivalent node-evaluations per second = sum of program lengths
  (leaves included, the convention gplearn and operon count in too) x rows / median seconds.
  A backend that evaluates each distinct subtree once (``numba-dedup``) produces exactly the
  same [P, N] output as the plain one, so its ``gpops`` measures the same work done; the nodes
  it actually executes are reported apart as ``executed_nodes`` / ``executed_gpops``.
* fitness: individual-rows per second = programs x rows / seconds (Kendall tau-b, Spearman rho
  against a fixed target split into tasks of ``task_rows`` rows, target prepared once as in a run).
* generations: ``Evolver.step()`` per second (variation + evaluation + fitness) on a synthetic
  batch (or real tasks with ``data``).

Timing: every callable is called once to warm up (numba and Triton compile), then ``repeat``
rounds call each of them once in turn (interleaved, so load on a shared machine hits all of
them alike); the median is reported. Peers run on the CPU with the same trees converted to
their native representation (not timed) and are checked against tensorgp's output.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..engine import fitness as F
from ..engine.evaluate import evaluate_torch, numba_available, resolve_backend, triton_available
from ..engine.evolve import EvolutionConfig, Evolver
from ..engine.population import Population, init_population, program_depth
from ..engine.primitives import CONST, FIRST_VAR, PrimitiveSet, function

CPU_BACKENDS = ("numba", "numba-dedup", "torch")
CUDA_BACKENDS = ("triton", "torch")
ALL_BACKENDS = ("numba", "numba-dedup", "torch", "triton")
PEERS = ("gplearn", "pyoperon")
# Functions each peer has with the same meaning up to its protection thresholds (gplearn protects
# div/inv/log at |x| <= 0.001, operon's div is unprotected): fine for timing, stated in the JSON.
GPLEARN_FUNCTIONS = ("add", "sub", "mul", "div", "neg", "log", "sqrt", "abs", "inv", "min", "max")
OPERON_FUNCTIONS = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "log": "Logabs", "sqrt": "Sqrtabs",
                    "abs": "Abs", "square": "Square", "exp": "Exp", "tanh": "Tanh", "min": "Fmin", "max": "Fmax"}
UNITS = {
    "gpops": "population-equivalent node-evaluations per second: sum of program lengths (leaves included) x rows "
             "/ median seconds",
    "executed_gpops": "node-evaluations actually executed per second (numba-dedup: each distinct subtree once)",
    "ratio": "tensorgp's best backend gpops / the peer's gpops (ratios: per backend)",
    "fitness.rows_per_s": "individual-rows per second: programs x rows / median seconds",
    "generations.gens_per_s": "Evolver.step() calls per second (variation + evaluation + fitness)",
}


@dataclass
class BenchConfig:
    """What ``run_benchmark`` measures. ``backends``: ``"auto"`` (every backend available on
    ``device``) or names from ALL_BACKENDS; ``peers``: ``"auto"`` (those installed), ``"none"``
    or names from PEERS; ``threads``: CPU threads for tensorgp and peers (None: torch's setting);
    ``generations``: Evolver steps timed (0: skip); ``fitness``: time the rank correlations;
    ``data``: Suite-Zero files for the generation benchmark instead of synthetic rows;
    ``fitness_pop`` / ``torch_pop``: cap on the programs used for fitness / the torch backend
    (large GPU populations; None: all)."""

    pop: int = 1000
    rows: int = 5000
    features: int = 10
    depth: int = 6
    functions: tuple[str, ...] = ("add", "sub", "mul", "div")
    device: str = "cpu"
    backends: str | Sequence[str] = "auto"
    peers: str | Sequence[str] = "auto"
    repeat: int = 5
    threads: int | None = None
    generations: int = 3
    fitness: bool = True
    task_rows: int = 700
    const_prob: float = 0.1
    seed: int = 0
    verify: int = 32
    data: list[Path] | None = None
    fitness_pop: int | None = None
    torch_pop: int | None = None

    def __post_init__(self) -> None:
        self.functions = PrimitiveSet.parse_functions(self.functions)
        if self.pop < 1 or self.rows < 1 or self.features < 1:
            raise ValueError("pop, rows and features must be >= 1")
        if not 0 <= self.depth <= 16:
            raise ValueError("depth must be in [0, 16]")
        if self.repeat < 1:
            raise ValueError("repeat must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.generations < 0 or self.task_rows < 2:
            raise ValueError("generations must be >= 0 and task_rows >= 2")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["functions"] = list(self.functions)
        d["backends"] = self.backends if isinstance(self.backends, str) else list(self.backends)
        d["peers"] = self.peers if isinstance(self.peers, str) else list(self.peers)
        d["data"] = None if self.data is None else [str(p) for p in self.data]
        return d


# ------------------------------------------------------------------------------ inputs


def make_pset(cfg: BenchConfig) -> PrimitiveSet:
    return PrimitiveSet(tuple(f"x{i}" for i in range(cfg.features)), cfg.functions)


def make_population(cfg: BenchConfig, pset: PrimitiveSet | None = None) -> Population:
    """Seeded ramped half-and-half trees of depth 1..``depth`` (0 if depth is 0), on ``cfg.device``."""
    pset = pset or make_pset(cfg)
    max_len = 2 ** (cfg.depth + 1) - 1  # a full binary tree of that depth: no tree is cut short
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    pop = init_population(cfg.pop, pset, g, max_len=max(max_len, 1), depth_range=(min(1, cfg.depth), cfg.depth),
                          const_prob=cfg.const_prob, device=cfg.device)
    return pop.trimmed()


def make_rows(cfg: BenchConfig) -> torch.Tensor:
    """``float32[rows, features]`` standard normal, seeded, on ``cfg.device``."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randn(cfg.rows, cfg.features, generator=g).to(cfg.device)


def task_offsets(n: int, task_rows: int) -> torch.Tensor:
    """``int64[T+1]``: n rows split into T = round(n / task_rows) (>= 1) near-equal tasks."""
    T = max(1, round(n / task_rows))
    return torch.tensor([round(i * n / T) for i in range(T + 1)], dtype=torch.int64)


def population_stats(pop: Population) -> dict:
    depth = program_depth(pop.ops, pop.length)
    return {"size": pop.size, "nodes": pop.n_nodes(), "mean_length": pop.n_nodes() / max(pop.size, 1),
            "max_length": int(pop.length.max()), "max_depth": int(depth.max()),
            "constants": int((pop.ops == CONST).sum())}


# ------------------------------------------------------------------------------ timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int, device: torch.device | str = "cpu",
                     pause: float = 0.02) -> dict[str, list[float]]:
    """Seconds of each call: one untimed warm-up each, then ``repeat`` rounds calling every
    function once in turn. ``pause`` lets the previous backend's idle threads (torch's OpenMP
    pool spins for a while) go to sleep before the next one starts."""
    device = torch.device(device)
    for fn in fns.values():
        fn()
        _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------ backends


def available_backends(device: str | torch.device) -> list[str]:
    """Backends ``auto`` benchmarks on ``device``: those that run natively there."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return [b for b in CUDA_BACKENDS if b != "triton" or triton_available()]
    return [b for b in CPU_BACKENDS if not b.startswith("numba") or numba_available()]


def resolve_backends(spec: str | Sequence[str], device: str | torch.device) -> list[str]:
    if isinstance(spec, str):
        if spec == "auto":
            return available_backends(device)
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = list(dict.fromkeys(spec))
    for b in names:
        if b not in ALL_BACKENDS:
            raise ValueError(f"unknown backend {b!r}; choose from auto, {', '.join(ALL_BACKENDS)}")
        resolve_backend("numba" if b == "numba-dedup" else b, device)  # raises if impossible here
    if not names:
        raise ValueError("no backend to benchmark")
    return names


def backend_call(name: str, pop: Population, X: torch.Tensor, threads: int | None,
                 stats: list | None = None) -> Callable[[], torch.Tensor]:
    """A zero-argument callable evaluating ``pop`` on ``X`` with backend ``name`` -> float32[P, N].
    The numba output buffer is allocated once (a run reuses it too); ``stats`` collects
    numba-dedup's ``DedupStats``."""
    if name in ("numba", "numba-dedup"):
        from ..engine.eval_numba import evaluate_numba

        out = torch.empty(pop.size, X.shape[0], dtype=torch.float32)
        dedup = name == "numba-dedup"

        def call() -> torch.Tensor:
            return evaluate_numba(pop.ops, pop.consts, pop.length, X, out=out, n_threads=threads, dedup=dedup,
                                  stats=stats)
        return call
    if name == "triton":
        from ..kernels.eval_kernel import evaluate_triton

        return lambda: evaluate_triton(pop.ops, pop.consts, pop.length, X)
    if name == "torch":
        return lambda: evaluate_torch(pop.ops, pop.consts, pop.length, X)
    raise ValueError(f"unknown backend {name!r}")


# ------------------------------------------------------------------------------ peers


def _prefix(ops: list[int], consts: list[float]) -> list[tuple[int, float]]:
    """One postfix program -> its tokens ``(op, const)`` in prefix order (function, then its
    arguments left to right)."""
    stack: list[list[tuple[int, float]]] = []
    for op, c in zip(ops, consts):
        if op >= CONST:
            stack.append([(op, c)])
        else:
            k = function(op).arity
            args = stack[len(stack) - k:]
            del stack[len(stack) - k:]
            stack.append([(op, 0.0)] + [t for a in args for t in a])
    if len(stack) != 1:
        raise ValueError("not a valid postfix program")
    return stack[0]


def prefix_programs(pop: Population) -> list[list[tuple[int, float]]]:
    """Every program in prefix order (setup for the peers; a Python loop, not timed)."""
    ops, consts, length = pop.ops.cpu().tolist(), pop.consts.cpu().tolist(), pop.length.cpu().tolist()
    return [_prefix(o[:n], c[:n]) for o, c, n in zip(ops, consts, length)]


def unsupported(peer: str, functions: Sequence[str]) -> list[str]:
    have = GPLEARN_FUNCTIONS if peer == "gplearn" else tuple(OPERON_FUNCTIONS)
    return [f for f in functions if f not in have]


def peer_available(peer: str) -> str | None:
    """None if ``peer`` imports, else why not."""
    try:
        if peer == "gplearn":
            import gplearn._program  # noqa: F401
        elif peer == "pyoperon":
            import pyoperon  # noqa: F401
        else:
            return f"unknown peer {peer!r}"
    except Exception as e:  # not installed or broken: skipped with the reason
        return f"not installed ({type(e).__name__}: {e}); pip install 'tensorgp[bench]'"
    return None


def gplearn_programs(prefix: list[list[tuple[int, float]]]) -> list:
    """gplearn ``_Program`` objects (only ``.program`` is set: ``execute`` reads nothing else):
    prefix lists of ``_Function`` (from gplearn's own function map), int features, float constants."""
    from gplearn._program import _Program
    from gplearn.functions import _function_map

    progs = []
    for toks in prefix:
        p = object.__new__(_Program)
        p.program = [float(c) if op == CONST else op - FIRST_VAR if op >= FIRST_VAR else _function_map[function(op).name]
                     for op, c in toks]
        progs.append(p)
    return progs


def gplearn_call(progs: list, X: np.ndarray, threads: int) -> Callable[[], list]:
    """Every program's ``execute(X)``; with threads > 1, a thread pool over program chunks
    (numpy releases the GIL inside its loops), which is the best gplearn's execution can do."""
    if threads <= 1:
        return lambda: [p.execute(X) for p in progs]
    chunks = [progs[i::threads] for i in range(threads)]
    pool = ThreadPoolExecutor(threads)

    def call() -> list:
        return list(pool.map(lambda ps: [p.execute(X) for p in ps], chunks))
    call.pool = pool  # type: ignore[attr-defined]  # kept alive with the callable
    return call


def operon_trees(prefix: list[list[tuple[int, float]]], dataset) -> list:
    """pyoperon ``Tree``s. Operon stores a tree in postfix order with the first argument of a
    function right before it, so its node list is our prefix order reversed; a variable is
    ``weight * x`` (weight 1) identified by the dataset's variable hash."""
    import pyoperon as op

    hashes = {v.Index: v.Hash for v in dataset.Variables}
    types = {name: getattr(op.NodeType, t) for name, t in OPERON_FUNCTIONS.items()}
    trees = []
    for toks in prefix:
        nodes = []
        for o, c in reversed(toks):
            if o == CONST:
                n = op.Node(op.NodeType.Constant)
                n.Value = float(c)
            elif o >= FIRST_VAR:
                n = op.Node(op.NodeType.Variable)
                n.Value = 1.0
                n.HashValue = hashes[o - FIRST_VAR]
            else:
                n = op.Node(types[function(o).name])
            nodes.append(n)
        trees.append(op.Tree(nodes).UpdateNodes())
    return trees


def operon_call(trees: list, dataset, rows: int, threads: int) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """pyoperon's batch evaluation ``EvaluateTrees`` into a preallocated float32[P, N]."""
    import pyoperon as op

    out = np.zeros((len(trees), rows), dtype=np.float32)
    rng = op.Range(0, rows)

    def call() -> np.ndarray:
        op.EvaluateTrees(trees, dataset, rng, out, nthread=threads)
        return out
    return call, out


def agreement(peer: np.ndarray, ours: np.ndarray, rtol: float = 1e-3, atol: float = 1e-4) -> float:
    """Share of entries where the peer's value is close to ours (both non-finite counts as equal)."""
    a = np.asarray(peer, dtype=np.float64)
    b = np.asarray(ours, dtype=np.float64)
    close = np.isclose(a, b, rtol=rtol, atol=atol) | (~np.isfinite(a) & ~np.isfinite(b))
    return float(close.mean()) if close.size else 1.0


def resolve_peers(spec: str | Sequence[str]) -> list[str]:
    if isinstance(spec, str):
        if spec == "auto":
            return list(PEERS)
        if spec == "none":
            return []
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [p for p in spec if p not in PEERS]
    if bad:
        raise ValueError(f"unknown peer(s) {bad}; choose from auto, none, {', '.join(PEERS)}")
    return list(dict.fromkeys(spec))


# ------------------------------------------------------------------------------ sections


def bench_eval(cfg: BenchConfig, pop: Population, X: torch.Tensor, backends: list[str], peers: list[str],
               threads: int, log: Callable[[str], None]) -> tuple[dict, dict, dict, torch.Tensor | None]:
    """Evaluation throughput of every backend and peer, timed interleaved on the same trees and
    rows. Returns (eval, peers, peers_skipped, a prediction float32[P, N] for the fitness part)."""
    dev = torch.device(cfg.device)
    N = X.shape[0]
    nodes = pop.n_nodes()
    sub = {b: (pop[: cfg.torch_pop] if b == "torch" and cfg.torch_pop and cfg.torch_pop < pop.size else pop)
           for b in backends}
    dedup_stats: list = []
    fns = {b: backend_call(b, sub[b], X, threads, dedup_stats if b == "numba-dedup" else None) for b in backends}

    skipped: dict[str, str] = {}
    peer_fns: dict[str, Callable] = {}
    peer_info: dict[str, dict] = {}
    if peers:
        Xn = X.detach().cpu().numpy()
        prefix = prefix_programs(pop)
        for p in peers:
            why = peer_available(p) or (f"function(s) {unsupported(p, cfg.functions)} not in {p}"
                                        if unsupported(p, cfg.functions) else None)
            if why:
                skipped[p] = why
                continue
            if p == "gplearn":
                progs = gplearn_programs(prefix)
                Xf = np.asfortranarray(Xn)  # gplearn reads columns X[:, i]: contiguous in Fortran order
                peer_fns["gplearn"] = gplearn_call(progs, Xf, 1)
                if threads > 1:
                    peer_fns["gplearn-threads"] = gplearn_call(progs, Xf, threads)
                peer_info["gplearn"] = {"programs": progs, "X": Xf}
            else:
                import pyoperon as op

                Xf = np.asfortranarray(Xn)
                ds = op.Dataset(Xf)  # may view Xf's memory: Xf must outlive it (kept in peer_info)
                trees = operon_trees(prefix, ds)
                call, out = operon_call(trees, ds, N, threads)
                peer_fns["pyoperon"] = call
                peer_info["pyoperon"] = {"out": out, "dataset": ds, "X": Xf}
    log(f"timing {', '.join(list(fns) + list(peer_fns))}: {pop.size} programs ({nodes} nodes) x {N} rows, "
        f"{cfg.repeat} rounds")
    # peers run on the CPU: with a CUDA device the GPU sync is harmless for them
    times = time_interleaved({**fns, **peer_fns}, cfg.repeat, dev)
    for fn in peer_fns.values():
        if hasattr(fn, "pool"):
            fn.pool.shutdown()

    ev: dict[str, dict] = {}
    for b in backends:
        med = statistics.median(times[b])
        n_b = sub[b].n_nodes()
        r = {"gpops": n_b * N / med, "seconds": med, "population": sub[b].size, "rows": N, "nodes": n_b,
             "threads": threads if dev.type == "cpu" and b != "triton" else None, "times": times[b]}
        if b == "numba-dedup" and dedup_stats:
            s = dedup_stats[-1]
            r.update(executed_nodes=s.executed_nodes, executed_gpops=s.executed_nodes * N / med,
                     instructions=s.instructions,
                     label="gpops: population-equivalent (same [P, N] output as numba); executed_gpops: "
                           "distinct subtrees, each evaluated once per row block")
        if sub[b].size != pop.size:
            r["label"] = f"timed on the first {sub[b].size} programs"
        ev[b] = r
    full = [b for b in backends if ev[b]["population"] == pop.size]
    best = max(ev, key=lambda k: ev[k]["gpops"])
    pred = fns[max(full, key=lambda k: ev[k]["gpops"])]() if full else None  # for the fitness part
    ref = None if pred is None or not peer_info else pred.detach().cpu().numpy()

    res_peers: dict[str, dict] = {}
    k = min(cfg.verify, pop.size)
    for p, info in peer_info.items():
        if p == "gplearn":
            modes = {"serial": times["gplearn"]}
            if "gplearn-threads" in times:
                modes[f"{threads} threads"] = times["gplearn-threads"]
            mode = min(modes, key=lambda m: statistics.median(modes[m]))
            med = statistics.median(modes[mode])
            got = np.stack([pr.execute(info["X"]) for pr in info["programs"][:k]]) if k else np.zeros((0, N))
            extra = {"mode": mode, "seconds_by_mode": {m: statistics.median(v) for m, v in modes.items()},
                     "note": "gplearn _Program.execute on gplearn's own function objects; its div/inv/log protect "
                             "|x| <= 0.001 (tensorgp: 1e-6); float32 X in Fortran order, constants make float64"}
        else:
            med = statistics.median(times["pyoperon"])
            got = info["out"][:k]
            extra = {"threads": threads, "mode": f"EvaluateTrees, {threads} threads",
                     "note": "pyoperon.EvaluateTrees (operon's batch interpreter); operon's div is unprotected, "
                             "a variable node is weight * x"}
        gp = nodes * N / med
        res_peers[p] = {"gpops": gp, "ratio": ev[best]["gpops"] / gp,
                        "ratios": {b: ev[b]["gpops"] / gp for b in backends}, "seconds": med,
                        "population": pop.size, "rows": N, "times": modes[mode] if p == "gplearn" else times[p],
                        "verified_programs": k,
                        "agreement": agreement(got, ref[:k]) if ref is not None else None, **extra}
    return ev, res_peers, skipped, pred


def bench_fitness(cfg: BenchConfig, pred: torch.Tensor, log: Callable[[str], None]) -> dict:
    """Rank-correlation throughput on ``pred: float32[P, N]`` against a seeded random target
    (3 decimals, so with ties like accuracies) split into tasks of ~``task_rows`` rows."""
    dev = pred.device
    if cfg.fitness_pop and cfg.fitness_pop < pred.shape[0]:
        pred = pred[: cfg.fitness_pop]
    P, N = pred.shape
    off = task_offsets(N, cfg.task_rows).to(dev)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    target = torch.rand(N, generator=g).round(decimals=3).to(dev)
    rt = F.prepare_target(target, off)
    fns: dict[str, Callable] = {}
    fbackends = ["numba", "torch"] if dev.type == "cpu" and F.numba_available() else ["torch"]
    for fb in fbackends:
        fns[f"kendall/{fb}"] = lambda fb=fb: F.kendall_tau_b(pred, target, off, fb)
        fns[f"spearman/{fb}"] = lambda fb=fb: F.spearman(pred, target, off, fb)
        fns[f"both/{fb}"] = lambda fb=fb: F.rank_correlations(pred, rt, backend=fb)
    if dev.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton  # noqa: F401

            # triton: the sort path with the fused wavelet kernel; pairs: the all-pairs kernel
            fns["kendall/triton"] = lambda: F.kendall_tau_b(pred, target, off, "triton")
            fns["both/triton"] = lambda: F.rank_correlations(pred, rt, backend="triton")
            fns["kendall/pairs"] = lambda: F.kendall_tau_b(pred, target, off, "pairs")
        except ImportError as e:  # triton missing: the other backends still report
            log(f"fitness triton/pairs skipped: {e!r}")
    log(f"timing fitness {', '.join(fns)}: {P} programs x {N} rows in {len(off) - 1} tasks")
    times = time_interleaved(fns, cfg.repeat, dev)
    res: dict = {"population": P, "rows": N, "tasks": len(off) - 1, "target": "seeded uniform, 3 decimals"}
    for name, ts in times.items():
        metric, fb = name.split("/")
        med = statistics.median(ts)
        res.setdefault(metric, {})[fb] = {"rows_per_s": P * N / med, "seconds": med, "times": ts}
    return res


# make_objective(cfg, X, backend) -> GenerationProblem: the application's fitness for the timed
# generations (``tensorgp.nas.bench.generation_problem`` for ``tensorgp bench``)
@dataclass
class GenerationProblem:
    objective: object  # anything with the Evolver's objective interface
    variables: tuple[str, ...]  # terminal names
    rows: int
    tasks: int
    source: object  # what the rows are, for the result


def bench_generations(cfg: BenchConfig, X: torch.Tensor, backend: str, log: Callable[[str], None],
                      make_objective: Callable[[BenchConfig, torch.Tensor, str], GenerationProblem]) -> dict:
    """``Evolver.step()`` per second on ``make_objective``'s problem, ``cfg.pop`` programs, init
    depth up to ``cfg.depth``; the first step (initialisation + compile) is not timed."""
    prob = make_objective(cfg, X, backend)
    pset = PrimitiveSet(tuple(prob.variables), cfg.functions)
    d = max(cfg.depth, 1)
    ec = EvolutionConfig(population=max(cfg.pop, 2), generations=cfg.generations + 1, init_depth=(min(2, d), d),
                         max_depth=max(d, 8), max_len=max(64, 2 ** (min(d, 6) + 1)), seed=cfg.seed)
    ev = Evolver(ec, pset, prob.objective, cfg.device, count_rows=prob.rows)
    log(f"timing {cfg.generations} generation(s): {ec.population} programs x {prob.rows} rows, {backend}")
    ev.initialize()
    dev = torch.device(cfg.device)
    steps, walls = [], []
    for _ in range(cfg.generations):
        _sync(dev)
        t0 = time.perf_counter()
        steps.append(ev.step())
        _sync(dev)
        walls.append(time.perf_counter() - t0)
    tot = sum(walls)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return {"backend": backend, "generations": len(steps), "population": ec.population, "rows": prob.rows,
            "tasks": prob.tasks, "data": prob.source, "gens_per_s": len(steps) / tot, "seconds_per_gen": med(walls),
            "eval_s": med([s.eval_s for s in steps]), "fitness_s": med([s.fitness_s for s in steps]),
            "variation_s": med([s.variation_s for s in steps]),
            "eval_gpops": sum(s.nodes for s in steps) / max(sum(s.eval_s for s in steps), 1e-12),
            "mean_length": med([s.mean_size for s in steps])}


# ------------------------------------------------------------------------------ driver


def _machine(device: torch.device, threads: int) -> dict:
    m = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
         "threads": threads, "torch": torch.__version__}
    try:
        m["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("numba", "triton", "gplearn", "pyoperon"):
        try:
            m[mod] = version(mod)
        except PackageNotFoundError:
            m[mod] = None
    if device.type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(device)
    return m


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None,
                  make_objective: Callable[[BenchConfig, torch.Tensor, str], GenerationProblem] | None = None) -> dict:
    """Run every section and return the result (JSON-ready; see the module docstring for units).

    Keys: ``config``, ``machine``, ``units``, ``population`` (size, nodes, ...), ``eval`` (per
    backend: gpops, seconds, population, rows, nodes, times; numba-dedup adds executed_*),
    ``best`` (backend with the highest gpops), ``peers`` (per peer run: gpops, ratio, ratios,
    agreement, ...), ``peers_skipped`` (peer -> reason), ``fitness``, ``generations``.
    """
    log = log or (lambda s: None)
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device} requested but torch sees no CUDA device")
    backends = resolve_backends(cfg.backends, dev)
    peers = resolve_peers(cfg.peers)
    prev_threads = torch.get_num_threads()
    threads = cfg.threads or prev_threads
    torch.set_num_threads(threads)
    nb_prev = None
    try:
        import numba

        nb_prev = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # numba missing: nothing to set
        pass
    try:
        pset = make_pset(cfg)
        pop = make_population(cfg, pset)
        X = make_rows(cfg)
        res: dict = {"config": cfg.to_dict(), "machine": _machine(dev, threads), "units": UNITS,
                     "population": population_stats(pop)}
        ev, pe, skipped, pred = bench_eval(cfg, pop, X, backends, peers, threads, log)
        res["eval"] = ev
        res["best"] = max(ev, key=lambda k: ev[k]["gpops"])
        res["peers"] = pe
        res["peers_skipped"] = skipped
        if cfg.fitness and pred is not None:
            res["fitness"] = bench_fitness(cfg, pred, log)
        del pred
        if cfg.generations and make_objective is not None:
            gb = "numba" if res["best"] == "numba-dedup" else res["best"]  # runs evaluate through evaluate()
            res["generations"] = bench_generations(cfg, X, gb, log, make_objective)
        return res
    finally:
        torch.set_num_threads(prev_threads)
        if nb_prev is not None:
            import numba

            numba.set_num_threads(nb_prev)


# ------------------------------------------------------------------------------ presentation


def tables(res: dict) -> list:
    """Rich tables of a ``run_benchmark`` result (evaluation and peers, fitness, generations)."""
    from rich.table import Table

    c = res["config"]
    ps = res["population"]
    t = Table(title=f"evaluation: {ps['size']} programs ({ps['nodes']} nodes, mean length {ps['mean_length']:.1f}) x "
                    f"{c['rows']} rows, {', '.join(c['functions'])}, {res['machine']['threads']} thread(s)")
    for col in ("backend / peer", "node-evals/s", "seconds", "best / peer", "notes"):
        t.add_column(col, justify="left" if col in ("backend / peer", "notes") else "right")
    for b, r in res["eval"].items():
        note = "best" if b == res["best"] else ""
        if "executed_gpops" in r:
            note = (note + "; " if note else "") + (f"population-equivalent; executed {r['executed_gpops']:.2e}/s "
                                                   f"({r['executed_nodes']}/{r['nodes']} nodes)")
        if r["population"] != ps["size"]:
            note = (note + "; " if note else "") + f"first {r['population']} programs"
        t.add_row(b, f"{r['gpops']:.3e}", f"{r['seconds']:.4f}", "", note)
    for p, r in res["peers"].items():
        ag = r.get("agreement")
        t.add_row(f"peer {p}", f"{r['gpops']:.3e}", f"{r['seconds']:.4f}", f"{r['ratio']:.2f}x",
                  f"{r['mode']}; output agrees on {'-' if ag is None else f'{ag:.1%}'} of {r['verified_programs']} programs")
    for p, why in res.get("peers_skipped", {}).items():
        t.add_row(f"peer {p}", "-", "-", "-", f"skipped: {why}")
    out = [t]
    f = res.get("fitness")
    if f:
        ft = Table(title=f"fitness: {f['population']} programs x {f['rows']} rows in {f['tasks']} tasks")
        for col in ("metric", "backend", "individual-rows/s", "seconds"):
            ft.add_column(col, justify="left" if col in ("metric", "backend") else "right")
        for metric in ("kendall", "spearman", "both"):
            for fb, r in f.get(metric, {}).items():
                ft.add_row(metric, fb, f"{r['rows_per_s']:.3e}", f"{r['seconds']:.4f}")
        out.append(ft)
    g = res.get("generations")
    if g:
        gt = Table(title=f"generations: {g['population']} programs x {g['rows']} rows ({g['data']}), {g['backend']}")
        for col in ("gens/s", "s/gen", "eval s", "fitness s", "variation s", "eval node-evals/s"):
            gt.add_column(col, justify="right")
        gt.add_row(f"{g['gens_per_s']:.2f}", f"{g['seconds_per_gen']:.4f}", f"{g['eval_s']:.4f}", f"{g['fitness_s']:.4f}",
                   f"{g['variation_s']:.4f}", f"{g['eval_gpops']:.3e}")
        out.append(gt)
    return out
