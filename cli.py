"""The ``tensorgp`` command: parses arguments, calls the library, presents the results.

Installed as ``tensorgp_cli.cli`` (see pyproject.toml); no logic lives here.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# plain click help: rich help labels every flag with a <bool> type
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="tensorgp: tensorized genetic programming for zero-cost NAS proxies and symbolic regression.")
err = Console(stderr=True, soft_wrap=True)  # messages name paths: never break them mid-word
# piped to a file, rich would wrap tables at 80 columns and cut task names: lay them out wide instead
out = Console() if sys.stdout.isatty() else Console(width=400)


def _version(value: bool) -> None:
    if value:
        from tensorgp import __version__

        print(f"tensorgp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """tensorgp: tensorized genetic programming for zero-cost NAS proxies and symbolic regression."""

MULTI_VALUE_OPTIONS = ("--data",)  # options that take several space-separated values


def _expand_multi(argv: list[str]) -> list[str]:
    """``--data a b --x`` -> ``--data a --data b --x`` (click options take one value each)."""
    res: list[str] = []
    cur: str | None = None
    for a in argv:
        if a in MULTI_VALUE_OPTIONS:
            cur = a
            res.append(a)
            continue
        if cur is not None and not a.startswith("-"):
            if res[-1] != cur:
                res.append(cur)
            res.append(a)
            continue
        cur = None
        res.append(a)
    return res


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _data_paths(data: Optional[List[Path]]) -> list[Path]:
    from tensorgp.nas.data import DataError, find_data_dir

    if data:
        return list(data)
    try:
        return [find_data_dir()]
    except DataError as e:
        _fail(str(e))


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


class _Interrupt:
    """First Ctrl-C asks the run to stop after the current generation; a second one aborts."""

    def __init__(self, patient: bool = False) -> None:
        self.requested = False
        self.patient = patient  # under torchrun the agent forwards Ctrl-C again: never abort

    def __enter__(self) -> "_Interrupt":
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_a) -> None:
        if self.requested and not self.patient:
            raise KeyboardInterrupt
        self.requested = True
        err.print("[yellow]interrupt: finishing the current generation and writing the partial result "
                  "(Ctrl-C again to abort)[/]")

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)


@app.command()
def run(
    ctx: typer.Context,
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero zc_*.json files or directories (several allowed)."),
    train: str = typer.Option("*", help="Comma-separated globs of training tasks."),
    test: Optional[str] = typer.Option(None, help="Comma-separated globs of held-out tasks."),
    proxies: Optional[str] = typer.Option(None, help="Comma-separated proxies to use as terminals (default: all present on every task)."),
    target: Optional[List[Path]] = typer.Option(None, "--for", help="Suite-Zero file(s) of the search space the proxy is for (accuracies not needed, not read): only proxies present on every task there too become terminals."),
    pop: int = typer.Option(1000, "--pop", help="Population size (per run)."),
    gens: int = typer.Option(50, "--gens", help="Generations."),
    runs: int = typer.Option(1, "--runs", help="Independent runs, batched in one population."),
    seed: int = typer.Option(0, help="Random seed."),
    preprocess: str = typer.Option("rank", help="raw | signed-log | rank | zscore (per task)."),
    functions: Optional[str] = typer.Option(None, help="Comma-separated function set (default: the 14 of primitives.DEFAULT_FUNCTIONS; sin, cos, pow and registered user functions on request)."),
    constants: bool = typer.Option(True, help="Allow ephemeral random constants."),
    metric: str = typer.Option("kendall", help="kendall | spearman | kendall-top (mean of the global Kendall and the Kendall among the top 10% by accuracy; kendall-topNN: top NN%)."),
    aggregation: str = typer.Option("auto", help="auto (default: space-mean for training tasks of 3 or more search spaces, else mean; see docs/results.md) | mean | min | mean-std across training tasks; space-mean | space-min | space-softmin | space-geo | space-sample: mean within each search space, then mean | worst | soft minimum | sum of log((1+tau)/2) | worst of G-1 spaces drawn each generation (tensorgp.nas.transfer)."),
    fit_fraction: Optional[float] = typer.Option(None, "--fit-fraction", help="Evolve on a seeded share (e.g. 0.7) of each training task's architectures; report the rest as held-out."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the --fit-fraction split."),
    validation: Optional[str] = typer.Option(None, "--validation", help="Comma-separated globs of validation tasks: scored, never fitted; --select validation picks the formula on them."),
    select: str = typer.Option("auto", "--select", help="Formula reported: auto (default: shrink for training tasks of 3+ search spaces and 2+ runs, else compact) | compact (the smallest on the size/fitness Pareto front within 0.01 of the best, rank-simplified) | train (best training fitness) | validation | parsimony (smallest hall-of-fame entry within 0.01 of the best) | ensemble (mean rank of every run's best) | nested (run r leaves training space r mod G out of its fitness and picks its formula there; the picks' ensemble; needs a space-* aggregation) | shrink (the same runs; their best formulas' ensemble blended with the single proxy of the best mean over training spaces, at the weight the runs' held-out spaces choose) | anchored (the same runs, each scored by its formula's equal-weight rank blend with the single proxy of the best mean over its fitness spaces; the runs' best formulas blended with that proxy at weight 1/2)."),
    protocol: str = typer.Option("split", "--protocol", help="split (train/test globs) | leave-one-space-out (one evolution per search space of the --train tasks, that space held out)."),
    parsimony: float = typer.Option(0.001, help="Selection penalty per program node (the default keeps formulas readable; 0 for none)."),
    tournament: int = typer.Option(7, help="Tournament size."),
    elitism: int = typer.Option(2, help="Programs copied unchanged per generation and run."),
    max_depth: int = typer.Option(8, help="Maximum tree depth."),
    max_len: int = typer.Option(64, help="Maximum program length (nodes)."),
    patience: int = typer.Option(0, help="Stop after this many generations without improvement (0: never)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    backend: str = typer.Option("auto", help="auto | torch | numba | triton."),
    variation: str = typer.Option("auto", "--variation", help="auto (device on CUDA, compiled on the CPU) | compiled | device (fixed-shape, counter-seeded generation without host syncs)."),
    sync_every: int = typer.Option(1, "--sync-every", help="Device path: generations between host reads of the progress (statistics, --patience); the run is the same for every value."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write OUT/result.json (atomically; default: the --checkpoint folder, else runs/<UTC time>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON to stdout."),
    quiet: bool = typer.Option(False, help="No progress display."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Write DIR/checkpoint.pt atomically every --every generations and at the end (the result goes to DIR/result.json unless --out)."),
    every: int = typer.Option(10, "--every", help="Generations between checkpoints (0: only the final one)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run checkpointed in DIR (its saved options apply; only --gens, --patience, --backend, --every, --sync-every may change)."),
    islands: int = typer.Option(1, "--islands", help="Migrating islands batched in this process (under torchrun: per process)."),
    migrate_every: int = typer.Option(5, "--migrate-every", help="Generations between island migrations."),
    migrants: int = typer.Option(2, "--migrants", help="Best programs each island sends to the next island of the ring."),
) -> None:
    """Evolve a zero-cost proxy formula on training tasks; report it on every task next to the best single proxy."""
    from tensorgp.nas.data import DataError
    from tensorgp.engine.evolve import EvolutionConfig
    from tensorgp.nas.experiment import RunSpec, evolve_proxy, prepare
    from tensorgp.runtime.output import check_out_dir, default_run_dir

    try:
        cfg = EvolutionConfig(population=pop, generations=gens, runs=runs, tournament_size=tournament,
                              elitism=elitism, max_depth=max_depth, max_len=max_len,
                              init_depth=(min(2, max_depth), min(5, max_depth)), parsimony=parsimony,
                              patience=patience, seed=seed, variation=variation, sync_every=sync_every)
        spec = RunSpec(data=_data_paths(data) if data or resume is None else [], train=train, test=test,
                       proxies=[p.strip() for p in proxies.split(",") if p.strip()] if proxies else None,
                       preprocess=preprocess, functions=functions, constants=constants, metric=metric,
                       aggregation=aggregation, device=device, backend=backend, config=cfg,
                       fit_fraction=fit_fraction, split_seed=split_seed, validation=validation,
                       select=select, target=list(target) if target else None).validate()
        if protocol != "split":  # several evolutions: tensorgp.nas.protocols drives them
            out_dir = check_out_dir(out_dir if out_dir is not None else default_run_dir())
            return _run_protocol(spec, protocol, checkpoint is not None or resume is not None or islands > 1,
                                 out_dir, as_json, quiet)
        from tensorgp.runtime.distributed import plan_run  # checkpoints, resume, islands (torchrun)

        plan = plan_run(spec, islands=islands, migrate_every=migrate_every, migrants=migrants, checkpoint=checkpoint,
                        every=every, resume=resume, explicit={n for n in ctx.params if getattr(
                            ctx.get_parameter_source(n), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")})
        spec, quiet = plan.spec, quiet or plan.world.rank != 0  # rank 0 alone reports
        prep = prepare(spec)  # first: bad data must not leave an empty output folder behind
        if plan.world.rank == 0:  # the result's folder must work before the run, not after it
            out_dir = check_out_dir(out_dir if out_dir is not None else plan.checkpoint or default_run_dir())
    except (DataError, ValueError) as e:
        _fail(str(e))
    if not quiet:
        err.print(f"[bold]tensorgp run[/]: result goes to {Path(out_dir) / 'result.json'}")
        err.print(f"[bold]tensorgp run[/]: {len(prep.train)} training task(s), {len(prep.test)} test task(s), "
                  f"{prep.train_batch.X.shape[0]} training architectures, terminals: {', '.join(prep.proxies)}")
    progress = Progress(TextColumn("gen {task.completed:>4}/{task.total}"), BarColumn(),
                        TextColumn("best {task.fields[best]:.4f}  mean {task.fields[mean]:.4f}  "
                                   "size {task.fields[size]:.1f}  {task.fields[rate]:.2e} node-evals/s"),
                        TimeElapsedColumn(), console=err, disable=quiet, transient=False)
    bar = progress.add_task("evolve", total=spec.config.generations, best=float("nan"), mean=float("nan"), size=0.0, rate=0.0)

    def on_gen(s) -> None:
        rate = s.nodes / s.eval_s if s.eval_s > 0 else 0.0
        progress.update(bar, completed=s.generation, best=s.best, mean=s.mean, size=s.mean_size, rate=rate)

    with progress, _Interrupt(patient=plan.world.size > 1) as intr:
        try:
            result = evolve_proxy(spec, on_gen, lambda: intr.requested, prepared=prep, **plan.evolve_kwargs())
        except (DataError, ValueError) as e:
            _fail(str(e))
        finally:
            plan.world.close()
    if result is None:  # an island process other than rank 0: rank 0 writes the result
        return
    _emit(result, out_dir, as_json, quiet, _print_run)


def _save(result: dict, path: Path) -> Path:
    """Write ``result`` as JSON to ``path`` atomically; if that fails, the finished result goes to
    stdout before the error, so it is never lost."""
    from tensorgp.runtime.results import dumps, write_json

    try:
        return write_json(path, result)
    except OSError as e:
        print(dumps(result))
        _fail(f"cannot write {path} ({e.strerror or e}); the result JSON is on stdout", 1)


def _deliver(result: dict, out_file: Optional[Path], as_json: bool) -> bool:
    """Write ``result`` to ``out_file`` (if given) and print it as JSON when asked; True when
    it went out as JSON (the caller then shows nothing else)."""
    from tensorgp.runtime.results import dumps

    if out_file is not None:
        _save(result, out_file)
    if as_json:
        print(dumps(result))
    return as_json


def _emit(result: dict, out_dir: Optional[Path], as_json: bool, quiet: bool, show) -> None:
    """Write OUT/result.json (atomically), print JSON or the tables, exit 130 if interrupted."""
    from tensorgp.runtime.results import dumps

    if out_dir is not None:
        path = _save(result, Path(out_dir) / "result.json")  # the folder was checked at the start
        if not quiet:
            err.print(f"wrote {path}")
    if as_json:
        print(dumps(result))
    else:
        show(result)
    if result.get("interrupted"):
        raise typer.Exit(130)


def _print_run(r: dict) -> None:
    out.print(f"[bold]evolved proxy[/] (fitness {r['fitness']:.4f}, {r['metric']} {r['aggregation']}, "
              f"preprocess {r['preprocess']}, {r['generations_run']} generations, {r['time_s']:.1f} s, "
              f"backend {r['backend']}):")
    out.print(f"  [cyan]{_formula_text(r)}[/]  ({r.get('size')} nodes, selection {r.get('selected', 'train')})")
    t = Table(title="Kendall tau per task")
    for c in ("task", "split", "n", "kendall", "spearman", "best single proxy", "its kendall", "delta"):
        # task names are the point of the table: wrap them rather than cut them on narrow terminals
        t.add_column(c, justify="left" if c in ("task", "split", "best single proxy") else "right",
                     overflow="fold" if c == "task" else "ellipsis")
    for name, v in r["tasks"].items():
        bs = v["best_single"]
        delta = None if bs["kendall"] is None or v["kendall"] is None else v["kendall"] - bs["kendall"]
        colour = "green" if delta is not None and delta >= 0 else "red"
        t.add_row(name, v["split"], str(v["n"]), _fmt(v["kendall"]), _fmt(v["spearman"]), str(bs["proxy"]),
                  _fmt(bs["kendall"]), f"[{colour}]{_fmt(delta)}[/]")
    out.print(t)
    for name, why in r.get("undefined_tasks", {}).items():
        out.print(f"[yellow]{name}: Kendall tau undefined ({why}); left out of fitting and of the means[/]")
    mk = r.get("mean_kendall", {})
    out.print("mean kendall: " + ", ".join(f"{s} {_fmt(v)}" for s, v in mk.items()))
    _print_inner_weights(r)
    _print_protocol(r)
    _print_pareto(r)


def _print_inner_weights(r: dict) -> None:
    """For shrink/anchored: how far the runs' inner held-out spaces trust the formulas over the proxy."""
    sel = (r.get("selection") or {}).get(r.get("selected") or "")
    if not sel or not sel.get("weight_scores") or not sel.get("baseline"):
        return
    b, ws = sel["baseline"], {float(k): v for k, v in sel["weight_scores"].items()}
    alone = ws.get(1.0)
    best = max((v for v in ws.values() if v is not None), default=None)
    out.print(f"inner held-out spaces (each run's own, left out of its fitness), mean Kendall of its formula "
              f"blended with {b['proxy']} at weight w: "
              + ", ".join(f"w={w:g} {_fmt(v)}" for w, v in sorted(ws.items()))
              + f"; the predictor's weight on {b['proxy']}: {b['weight']:g}"
              + ("" if alone is None or best is None else
                 f" (the formulas add {best - alone:+.3f} over {b['proxy']} alone there; a new search space can "
                 f"differ more than that, see docs/results.md, fourth round)"))


def _formula_text(r: dict) -> str:
    """The reported predictor of a result: its formula, or an ensemble's formulas."""
    if r.get("expression") is not None:
        return str(r["expression"])
    ens = r.get("ensemble") or {}
    return _ensemble_text(ens.get("expressions") or [], ens.get("weights"))


def _ensemble_text(exprs: list, weights: Optional[list] = None) -> str:
    """An ensemble's formulas, with each one's share when the ensemble is weighted."""
    if len(exprs) == 1:
        return str(exprs[0])
    if not weights:
        return f"ensemble (mean per-task rank) of {len(exprs)}: " + "; ".join(exprs)
    tot = sum(weights)
    return (f"weighted ensemble (mean per-task rank) of {len(exprs)}: "
            + "; ".join(f"{w / tot:.3g} x {e}" for w, e in zip(weights, exprs)))


def _print_pareto(r: dict) -> None:
    """The front of formula size against training fitness, with the other splits' mean Kendall."""
    front = r.get("pareto") or []
    if not front:
        return
    splits = [s for s in ("train", "holdout", "validation", "test") if any(s in p["mean"] for p in front)]
    t = Table(title="Pareto front: formula size against training fitness (mean Kendall per split)")
    for c in ("size", "fitness", *splits, "formula"):
        t.add_column(c, justify="left" if c == "formula" else "right", overflow="fold" if c == "formula" else None)
    for p in front:
        mark = "[bold]" if p["expression"] == r.get("expression") else ""
        t.add_row(str(p["size"]), _fmt(p["fitness"]), *[_fmt(p["mean"].get(s)) for s in splits],
                  f"{mark}{p['expression']}{'[/]' if mark else ''}")
    out.print(t)


@app.command("eval")
def eval_cmd(
    expr: Optional[str] = typer.Option(None, "--expr", help="The formula, e.g. \"(nwot + log(synflow))\"."),
    from_result: Optional[Path] = typer.Option(None, "--from", help="Instead of --expr: a `tensorgp run` result.json (or its directory), a leave-one-space-out result, or a saved proxy (a formula or a weighted ensemble), with its own preprocessing."),
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero zc_*.json files or directories."),
    tasks: str = typer.Option("*", help="Comma-separated task globs."),
    preprocess: Optional[str] = typer.Option(None, help="raw | signed-log | rank | zscore (--expr only; default rank: a saved proxy keeps its own)."),
    device: str = typer.Option("cpu"),
    backend: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score a formula or a saved proxy (Kendall, Spearman) on labelled tasks."""
    from tensorgp.nas.data import DataError
    from tensorgp.nas.experiment import evaluate_expression
    from tensorgp.nas.scoring import evaluate_proxy
    from tensorgp.runtime.results import dumps

    if (expr is None) == (from_result is None):
        _fail("give exactly one of --expr and --from")
    if from_result is not None and preprocess is not None:
        _fail("--preprocess is for --expr: a saved proxy is scored with the preprocessing it was evolved with")
    try:
        res = (evaluate_expression(expr, _data_paths(data), tasks, preprocess or "rank", device, backend)
               if expr is not None
               else evaluate_proxy(from_result, _data_paths(data), tasks))
    except (DataError, ValueError) as e:
        _fail(str(e))
    if as_json:
        print(dumps(res))
        return
    title = res["expression"] if expr is not None else res["proxy"] or _ensemble_text(res["ensemble"], res["weights"])
    t = Table(title=f"{title}  (preprocess {res['preprocess']})")
    for c in ("task", "n", "kendall", "spearman"):
        t.add_column(c, justify="left" if c == "task" else "right", overflow="fold" if c == "task" else "ellipsis")
    for name, v in res["tasks"].items():
        if "error" in v:
            t.add_row(name, str(v["n"]), f"[red]{v['error']}[/]", "")
        elif "undefined" in v:
            t.add_row(name, str(v["n"]), f"[yellow]undefined: {v['undefined']}[/]", "")
        else:
            t.add_row(name, str(v["n"]), _fmt(v["kendall"]), _fmt(v["spearman"]))
    out.print(t)
    out.print(f"mean kendall: {_fmt(res['mean_kendall'])}")


@app.command("score")
def score_cmd(
    from_result: Path = typer.Option(..., "--from", help="A `tensorgp run` result.json (or its directory), a leave-one-space-out result, or a saved proxy."),
    data: List[Path] = typer.Option(..., "--data", help="Suite-Zero-format file(s) or directories; val_accuracy not needed."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write every architecture's task, rank, arch, score (and accuracy if known) to FILE.csv or FILE.json (atomically)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Score against a fixed reference set instead of the scored set: 'train' (the training architectures saved with the proxy) or a Suite-Zero file."),
    top: int = typer.Option(10, "--top", help="Architectures shown per task."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON (with every row) to stdout."),
) -> None:
    """Score and rank every architecture of every task of a file with an evolved proxy (no accuracy needed)."""
    from tensorgp.nas.data import DataError
    from tensorgp.nas.scoring import score_file
    from tensorgp.runtime.results import dumps

    if top < 0:
        _fail(f"--top must be >= 0, got {top}")
    try:
        res = score_file(from_result, list(data), reference=reference, out=out_file, top=top)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if as_json:
        print(dumps(res))
        return
    formula = res["proxy"] if res["proxy"] is not None else _ensemble_text(res["ensemble"], res.get("weights"))
    out.print(f"[bold]proxy[/] [cyan]{formula}[/] (preprocess {res['preprocess']}"
              + (f", against reference {res['reference']})" if res["reference"] else
                 ", scores relative to each task's set)" if res["set_dependent"] else ")"))
    for name, v in res["tasks"].items():
        t = Table(title=f"{name}: top {min(top, v['n'])} of {v['n']} architectures")
        for c in ("rank", "architecture", "score"):
            t.add_column(c, justify="left" if c == "architecture" else "right")
        for i, (arch, sc) in enumerate(v["top"][:top]):
            t.add_row(str(i + 1), arch, "-" if sc is None else f"{sc:.6g}")
        out.print(t)
    if out_file is not None:
        err.print(f"wrote {out_file} ({len(res['rows'])} architectures)")


def _print_protocol(r: dict) -> None:
    """Selection strategies and baselines of one split-protocol result, as mean Kendall per split."""
    from tensorgp.nas.report import predictor_means

    if not r.get("selection") or not r.get("sets"):
        return
    splits = [s for s in ("train", "holdout", "validation", "test") if any(x["split"] == s for x in r["sets"])]
    t = Table(title=f"mean Kendall tau per split (reported: {r.get('selected')})")
    t.add_column("predictor")
    for s in splits:
        t.add_column(s, justify="right")
    cols = {s: predictor_means(r, s) for s in splits}
    for i, (name, _) in enumerate(cols[splits[0]]):
        t.add_row(name, *[_fmt(cols[s][i][1]) for s in splits])
    summ = r.get("summary", {}).get("splits", {})
    if r.get("runs", 1) > 1:
        t.add_row(f"each run's best, median [IQR] of {r['runs']}",
                  *[f"{_fmt(summ[s]['median'])} [{_fmt(summ[s]['q1'])}, {_fmt(summ[s]['q3'])}]" if s in summ else "-"
                    for s in splits])
    out.print(t)


def _run_protocol(spec, protocol: str, managed: bool, out_dir: Optional[Path], as_json: bool, quiet: bool) -> None:
    """``run --protocol leave-one-space-out``: one evolution per search space."""
    from tensorgp.nas.data import DataError
    from tensorgp.nas.protocols import leave_one_space_out
    from tensorgp.nas.report import fmt, fmt_iqr

    if protocol != "leave-one-space-out":
        _fail(f"unknown protocol {protocol!r}; choose split or leave-one-space-out")
    if managed:
        _fail("--protocol leave-one-space-out does not take --checkpoint, --resume or --islands")
    progress = Progress(TextColumn("{task.fields[fold]} gen {task.completed:>4}/{task.total}"), BarColumn(),
                        TextColumn("best {task.fields[best]:.4f}"), TimeElapsedColumn(), console=err,
                        disable=quiet, transient=False)
    bar = progress.add_task("evolve", total=spec.config.generations, best=float("nan"), fold="")

    def on_fold(space: str, i: int, k: int) -> None:
        label = "every space (the formula to take away)" if space == "all" else f"{space} held out"
        progress.reset(bar, total=spec.config.generations, best=float("nan"), fold=f"[{i + 1}/{k + 1}] {label}")

    with progress, _Interrupt() as intr:
        try:
            result = leave_one_space_out(spec, lambda s: progress.update(bar, completed=s.generation, best=s.best),
                                         lambda: intr.requested, on_fold)
        except (DataError, ValueError) as e:
            _fail(str(e))
    def show(result: dict) -> None:
        picks = sorted({r.get("selected", spec.select) for r in result["folds"].values()})
        t = Table(title=f"leave-one-space-out: mean Kendall tau on the held-out space (reported: {', '.join(picks)})")
        for c in ("held-out space", "evolved", "runs median [IQR]", "best-on-train", "oracle", "mean-rank", "loses to"):
            t.add_column(c, justify="left" if c in ("held-out space", "loses to") else "right")
        for s, v in result["summary"].items():
            if v:
                t.add_row(s, fmt(v["selected"]), fmt_iqr(v["runs"]),
                          f"{fmt(v['best_on_train']['kendall'])} ({v['best_on_train']['proxy']})", fmt(v["oracle"]),
                          fmt(v["mean_rank"]), ", ".join(v["beaten_by"]) or "none")
        out.print(t)
        for s, r in result["folds"].items():
            sel = r["selection"].get(r.get("selected"), r["selection"]["train"])
            text = sel.get("expression") or _ensemble_text(sel.get("expressions", []), sel.get("weights"))
            base = sel.get("baseline")
            note = (f" (best single proxy {base['proxy']} at weight {base['weight']:g}, chosen on the inner "
                    f"held-out spaces)") if base else ""
            out.print(f"{s} held out: [cyan]{text}[/]{note}")
        whole = result.get("all_spaces")
        if whole:
            out.print(f"evolved on every space (the formula `score --from` and `search --from` use): "
                      f"[bold cyan]{_formula_text(whole)}[/]")
            _print_pareto(whole)

    _emit(result, out_dir, as_json, quiet, show)


@app.command("report")
def report_cmd(
    results: List[Path] = typer.Argument(..., help="result.json files (or run directories holding one), from run."),
    out_file: Path = typer.Option(Path("results.md"), "--out", help="Markdown file to write."),
    figures: str = typer.Option("figures", "--figures", help="PNG folder, relative to --out's folder ('' for none; needs matplotlib)."),
    title: str = typer.Option("tensorgp results", "--title", help="Report title."),
    command: Optional[str] = typer.Option(None, "--command", help="The command that produced the results, shown in the header."),
) -> None:
    """Write a markdown report (tables per task, evolved vs baselines, formulas, settings, figures) of run results."""
    from tensorgp.nas.report import write_report

    missing = [str(p) for p in results if not (p / "result.json" if p.is_dir() else p).exists()]
    if missing:
        _fail(f"no such result file: {', '.join(missing)}")
    try:
        path = write_report(results, out_file, figures or None, title=title, command=command)
    except (ValueError, KeyError, OSError) as e:
        _fail(f"cannot report these results: {e}")
    err.print(f"wrote {path}")


@app.command("search")
def search_cmd(
    task: Optional[str] = typer.Option(None, "--task", help="The task whose table is the search space, e.g. nasbench201/cifar10 (with --live: the table giving accuracies, optional)."),
    expr: Optional[str] = typer.Option(None, "--expr", help="The proxy formula to maximise."),
    from_result: Optional[Path] = typer.Option(None, "--from", help="A `tensorgp run` result.json: use its formula and preprocessing."),
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero zc_*.json files or directories (val_accuracy optional: without it, no accuracy figures)."),
    preprocess: Optional[str] = typer.Option(None, help="raw | signed-log | rank | zscore (default: the --from result's, else rank; with --live, raw; an ensemble from --from always uses its own)."),
    budget: int = typer.Option(1000, help="Distinct architectures scored per search."),
    runs: int = typer.Option(10, help="Independent searches, batched."),
    seed: int = typer.Option(0, help="Random seed (the baselines use the same)."),
    population: Optional[int] = typer.Option(None, help="Regularized-evolution population (default 50)."),
    sample_size: Optional[int] = typer.Option(None, help="Tournament sample size (default 10)."),
    baseline_proxy: Optional[str] = typer.Option(None, help="Single proxy of the baseline search (default: the best by Kendall tau on the task; on a file without accuracies none unless given, compared by the formula's score)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    backend: str = typer.Option("auto", help="auto | torch | numba | triton (formula evaluation)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON to stdout."),
    live: bool = typer.Option(False, "--live", help="Compute each candidate's proxies on the device as the search goes (needs --space and --batch)."),
    space: Optional[str] = typer.Option(None, "--space", help="With --live: the search space (nb201)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="With --live: the data batch (.npz/.pt with x and y, or .npy with --labels)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="With --live and a .npy batch: its labels (.npy)."),
    pack: Optional[int] = typer.Option(None, "--pack", help="With --live: architectures measured together per pass (default: 1 on the CPU, 32 on CUDA)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the result JSON here (atomically)."),
) -> None:
    """Regularized-evolution NAS over a task's table driven by a proxy formula, next to random search and a single-proxy search."""
    from tensorgp.nas.data import DataError
    from tensorgp.runtime.results import dumps
    from tensorgp.nas.search import read_result, run_search
    from tensorgp.runtime.output import check_out_file

    if (expr is None) == (from_result is None):
        _fail("give exactly one of --expr and --from")
    if live:
        _live_search(space, expr, from_result, preprocess, batch, labels, data, task, budget, runs, seed, population,
                     sample_size, pack, device, as_json, out_file)
        return
    if task is None:
        _fail("--task is required (or --live with --space)")
    try:
        if out_file is not None:
            check_out_file(out_file)
        if from_result is not None:
            expr, pre = read_result(from_result)
            preprocess = preprocess or pre
        kw = {k: v for k, v in (("population", population), ("sample_size", sample_size)) if v is not None}
        res = run_search(_data_paths(data), task, expr, preprocess or "rank", budget, runs, seed,
                         baseline_proxy=baseline_proxy, device=device, backend=backend, **kw)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if _deliver(res, out_file, as_json):
        return
    fa = res["formula_argmax"]
    labelled = res.get("labelled", True)
    table = (f"{res['table_size']} architectures, best accuracy {res['table_best_accuracy']:.2f}" if labelled
             else f"{res['table_size']} architectures, no accuracies")
    out.print(f"[bold]search[/] {res['task']} ({table}); budget {res['budget']}, {res['runs']} runs, seed {res['seed']}, "
              f"population {res['population']}, sample {res['sample_size']}, preprocess {res['preprocess']}")
    at = f"accuracy {fa['accuracy']:.2f}, percentile {fa['percentile']:.2f}" if labelled else f"score {fa['score']:.4g}"
    out.print(f"  objective [cyan]{res['expression']}[/]; its maximum over the whole table: {fa['arch']} ({at})")
    if res.get("note"):
        out.print(f"[yellow]{res['note']}[/]")
    t = Table(title="regularized evolution driven by the formula, per run")
    cols = ["run", "architecture", "score"] + (["accuracy", "percentile"] if labelled else []) + ["evaluations"]
    for c in cols:
        t.add_column(c, justify="left" if c == "architecture" else "right")
    for r in res["per_run"]:
        acc = [f"{r['accuracy']:.2f}", f"{r['percentile']:.2f}"] if labelled else []
        t.add_row(str(r["run"]), r["arch"], f"{r['score']:.4g}", *acc, str(r["evaluations"]))
    out.print(t)
    m = res["median"]
    if labelled:
        s = Table(title="medians over runs (percentile: share of the table with accuracy <= the found one)")
        for c in ("search", "accuracy", "percentile", "time (all runs)"):
            s.add_column(c, justify="left" if c == "search" else "right")
        s.add_row("evolution, formula", f"{m['accuracy']:.2f}", f"[bold]{m['percentile']:.2f}[/]", f"{m['time_s']:.2f} s")
        for b in res["baselines"].values():
            colour = "green" if m["percentile"] >= b["percentile"] else "red"
            s.add_row(b["method"].replace("regularized ", ""), f"{b['accuracy']:.2f}",
                      f"[{colour}]{b['percentile']:.2f}[/]", f"{b['time_s']:.2f} s")
    else:
        s = Table(title="medians over runs of the formula's score of the architecture found (no accuracies)")
        for c in ("search", "formula score", "time (all runs)"):
            s.add_column(c, justify="left" if c == "search" else "right")
        s.add_row("evolution, formula", f"[bold]{m['score']:.4g}[/]", f"{m['time_s']:.2f} s")
        for b in res["baselines"].values():
            colour = "green" if m["score"] >= b["score"] else "red"
            s.add_row(b["method"].replace("regularized ", ""), f"[{colour}]{b['score']:.4g}[/]", f"{b['time_s']:.2f} s")
    out.print(s)
    tm = res["timing"]
    out.print(f"total {tm['total_s']:.2f} s (load {tm['load_s']:.2f} s, encodings {tm['prepare_s']:.2f} s, "
              f"formula {tm['score_s']:.2f} s, "
              f"search {tm['search_s']:.2f} s, baselines {tm['baselines_s']:.2f} s)")


def _live_search(space, expr, from_result, preprocess, batch, labels, data, task, budget, runs, seed, population,
                 sample_size, pack, device, as_json, out_file) -> None:
    """``search --live``: regularized evolution whose candidates' proxies are computed as it goes."""
    from tensorgp.engine.device import resolve_device
    from tensorgp.nas.data import DataError
    from tensorgp.nas.live_proxies import load_batch
    from tensorgp.nas.live_search import run_live_search
    from tensorgp.nas.search import read_result
    from tensorgp.nas.spaces import get_space
    from tensorgp.runtime.output import check_out_file

    if space is None:
        _fail("--live needs --space (nb201)")
    if batch is None:
        _fail("--live needs --batch DATA (.npz/.pt with x and y, or .npy with --labels)")
    try:
        dev = resolve_device(device)
        space = get_space(space)  # before reading the batch: a typo fails first
        if out_file is not None:
            check_out_file(out_file)  # before the measuring
        if from_result is not None:
            expr, pre = read_result(from_result)
            preprocess = preprocess or pre
            if not isinstance(expr, str):
                _fail(f"{from_result} holds an ensemble; --live takes one formula (--expr, or a single-formula result)")
        x, y = load_batch(batch, labels)
        kw = {k: v for k, v in (("population", population), ("sample_size", sample_size)) if v is not None}
        with Progress(TextColumn("live search"), BarColumn(), TextColumn("{task.completed} architectures measured"),
                      TimeElapsedColumn(), console=err, disable=as_json) as bar:
            job = bar.add_task("measure", total=None)
            # --task names a table of accuracies: the default data, as without --live, when --data is not given
            res = run_live_search(space, expr, x, y, preprocess or "raw", budget, runs, seed,
                                  data=_data_paths(data) if task else (list(data) if data else None), task=task,
                                  pack=pack, device=str(dev),
                                  progress=lambda k: bar.update(job, completed=k), **kw)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if _deliver(res, out_file, as_json):
        return
    out.print(f"[bold]live search[/] {res['space']} ({res['candidates']} candidates"
              f"{', table ' + res['task'] if res['task'] else ''}); budget {res['budget']}, {res['runs']} runs, "
              f"objective [cyan]{res['expression']}[/] ({res['preprocess']}; {res['rank_growth']})")
    t = Table(title="best architecture per run")
    labelled = res.get("labelled", bool(res["task"]))
    cols = ["run", "architecture", "score", *res["proxies_computed"]] + (["accuracy", "percentile"] if labelled else [])
    for c in cols:
        t.add_column(c, justify="left" if c == "architecture" else "right")
    for r in res["per_run"]:
        row = [str(r["run"]), r["arch"], f"{r['score']:.4g}", *[f"{r['proxies'][n]:.4g}" for n in res["proxies_computed"]]]
        if labelled:
            row += [f"{r['accuracy']:.2f}", f"{r['percentile']:.2f}"]
        t.add_row(*row)
    out.print(t)
    m = res["median"]
    if "percentile" in m:
        out.print(f"median accuracy {m['accuracy']:.2f}, percentile [bold]{m['percentile']:.2f}[/] "
                  f"(table best {res['table_best_accuracy']:.2f})")
    tm = res["timing"]
    out.print(f"{res['architectures_measured']} architectures measured; total {tm['total_s']:.1f} s (proxies "
              f"{tm['proxies_s']:.1f} s, formula {tm['formula_s']:.2f} s, search loop {tm['search_loop_s']:.2f} s, "
              f"prepare {tm['prepare_s']:.2f} s)")
    if res["failures"]:
        out.print(f"[yellow]{len(res['failures'])} proxy failures[/] (failed values score -inf), e.g. {res['failures'][0]}")


@app.command("proxies")
def proxies_cmd(
    space: str = typer.Option("nb201", "--space", help="The search space (nb201)."),
    archs: Optional[Path] = typer.Option(None, "--archs", help="A file of architecture keys (one a line, or a JSON list)."),
    sample: Optional[int] = typer.Option(None, "--sample", help="N architectures drawn uniformly (with --seed)."),
    all_archs: bool = typer.Option(False, "--all", help="Every architecture of the space."),
    batch: Path = typer.Option(..., "--batch", help="The data batch: .npz/.pt with x [N, C, H, W] and y [N], or .npy with --labels."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels (.npy) for a .npy batch."),
    out_path: Path = typer.Option(..., "--out", help="The Suite-Zero-format JSON to write (e.g. zc_mine.json)."),
    names: str = typer.Option("all", "--proxies", help="Proxies: all, cheap (params,flops,synflow,nwot,jacov) or a,b,c."),
    task: str = typer.Option("cifar10", "--task", help="Task name inside the file."),
    accuracy: Optional[List[Path]] = typer.Option(None, "--accuracy", help="A Suite-Zero table whose val_accuracy is joined (e.g. nb201-final)."),
    accuracy_task: Optional[str] = typer.Option(None, "--accuracy-task", help="The task of --accuracy to join (default: --task)."),
    pack: Optional[int] = typer.Option(None, "--pack", help="Architectures measured together per pass, halved on out-of-memory (default: 1 on the CPU, where batching measured slower, 32 on CUDA)."),
    classes: Optional[int] = typer.Option(None, "--classes", help="Outputs of the network's head (default: largest label + 1)."),
    seed: int = typer.Option(0, help="Seed of the sample and of every architecture's initialisation."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary JSON to stdout."),
) -> None:
    """Compute the zero-cost proxies of a search space's architectures on a data batch; write a Suite-Zero file."""
    from tensorgp.engine.device import resolve_device
    from tensorgp.nas.data import DataError
    from tensorgp.nas.live_proxies import run_proxies
    from tensorgp.runtime.results import dumps

    try:
        dev = resolve_device(device)
        with Progress(TextColumn("proxies"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, disable=as_json) as bar:
            job = bar.add_task("measure", total=None)
            res = run_proxies(space, out_path, batch, labels=labels, archs_file=archs, sample=sample, all_archs=all_archs,
                              names=names, task=task, accuracy=list(accuracy) if accuracy else None,
                              accuracy_task=accuracy_task, pack=pack, seed=seed, device=str(dev), num_classes=classes,
                              progress=lambda d, n: bar.update(job, completed=d, total=n))
    except (DataError, ValueError) as e:
        _fail(str(e))
    if as_json:
        print(dumps(res))
        return
    out.print(f"[bold]proxies[/] {res['architectures']} {res['space']} architectures x {len(res['proxies'])} proxies "
              f"on a batch {res['batch_shape']} in {res['wall_s']:.1f} s ({res['per_second']:.2f} architectures/s); "
              f"wrote {res['out']} (task {res['task']}, {res['with_accuracy']} with accuracy)")
    if res["failures"]:
        out.print(f"[yellow]{len(res['failures'])} failed values[/] (written as -1e8), e.g. {res['failures'][0]}")


@app.command("bench")
def bench_cmd(
    pop: int = typer.Option(1000, "--pop", help="Programs (ramped half-and-half, seeded)."),
    rows: int = typer.Option(5000, "--rows", help="Rows of X (standard normal, seeded)."),
    features: int = typer.Option(10, "--features", help="Columns of X."),
    depth: int = typer.Option(6, "--depth", help="Maximum tree depth."),
    functions: str = typer.Option("add,sub,mul,div", "--functions", help="Comma-separated function set."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    backends: str = typer.Option("auto", "--backends", help="auto | comma-separated: numba, numba-dedup, torch, triton."),
    peers: str = typer.Option("auto", "--peers", help="auto (installed ones) | none | comma-separated: gplearn, pyoperon."),
    repeat: int = typer.Option(5, "--repeat", help="Timed rounds (median reported) after one warm-up."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for tensorgp and the peers (default: torch's)."),
    generations: int = typer.Option(3, "--generations", help="Evolver steps timed (0: skip)."),
    fitness: bool = typer.Option(True, "--fitness/--no-fitness", help="Time Kendall/Spearman fitness."),
    task_rows: int = typer.Option(700, "--task-rows", help="Rows per task for the fitness and generation parts."),
    torch_pop: Optional[int] = typer.Option(None, "--torch-pop", help="Time the torch backend on the first N programs only."),
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero files: the generation part evolves on them instead of synthetic rows."),
    seed: int = typer.Option(0, help="Random seed."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result to stdout."),
    quiet: bool = typer.Option(False, help="No progress messages."),
) -> None:
    """Throughput of evaluation (node-evals/s per backend), fitness and generations, next to gplearn and pyoperon on the same trees and rows."""
    from tensorgp.nas.bench import generation_problem
    from tensorgp.runtime.benchmark import BenchConfig, run_benchmark, tables
    from tensorgp.nas.data import DataError

    try:
        cfg = BenchConfig(pop=pop, rows=rows, features=features, depth=depth, functions=functions, device=device,
                          backends=backends, peers=peers, repeat=repeat, threads=threads, generations=generations,
                          fitness=fitness, task_rows=task_rows, torch_pop=torch_pop, data=data, seed=seed)
        res = run_benchmark(cfg, None if quiet else (lambda m: err.print(f"[dim]{m}[/]")), generation_problem)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if not _deliver(res, out_file, as_json):
        for t in tables(res):
            out.print(t)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line for a person (not Python's file, line and source line)."""
    err.print(f"warning: {message}", markup=False, highlight=False, style="yellow")  # paths may hold [ ]


def main() -> None:
    import warnings

    sys.argv[1:] = _expand_multi(sys.argv[1:])
    warnings.showwarning = _show_warning  # the command line only: library users keep Python's own
    app()


if __name__ == "__main__":
    main()
