"""The ``tensorgp`` command: parses arguments, calls the library, presents the results.

Installed as ``tensorgp_cli.cli`` (see pyproject.toml); no logic lives here.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="tensorgp: tensorized genetic programming for zero-cost NAS proxies and symbolic regression.")
err = Console(stderr=True)
out = Console()

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
    from tensorgp.data import find_data_dir

    if data:
        return list(data)
    d = find_data_dir()
    if not d.exists():
        _fail(f"no --data given and the default data directory {d} does not exist; "
              f"pass --data PATH or set TENSORGP_DATA")
    return [d]


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


class _Interrupt:
    """First Ctrl-C asks the run to stop after the current generation; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> "_Interrupt":
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_a) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err.print("[yellow]interrupt: finishing the current generation and writing the partial result "
                  "(Ctrl-C again to abort)[/]")

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)


@app.command()
def run(
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero zc_*.json files or directories (several allowed)."),
    train: str = typer.Option("*", help="Comma-separated globs of training tasks."),
    test: Optional[str] = typer.Option(None, help="Comma-separated globs of held-out tasks."),
    proxies: Optional[str] = typer.Option(None, help="Comma-separated proxies to use as terminals (default: all present on every task)."),
    pop: int = typer.Option(1000, "--pop", help="Population size (per run)."),
    gens: int = typer.Option(50, "--gens", help="Generations."),
    runs: int = typer.Option(1, "--runs", help="Independent runs, batched in one population."),
    seed: int = typer.Option(0, help="Random seed."),
    preprocess: str = typer.Option("rank", help="raw | signed-log | rank | zscore (per task)."),
    functions: Optional[str] = typer.Option(None, help="Comma-separated function set (default: all 14)."),
    constants: bool = typer.Option(True, help="Allow ephemeral random constants."),
    metric: str = typer.Option("kendall", help="kendall | spearman."),
    aggregation: str = typer.Option("mean", help="mean | min | mean-std across training tasks."),
    parsimony: float = typer.Option(0.0, help="Selection penalty per program node."),
    tournament: int = typer.Option(7, help="Tournament size."),
    elitism: int = typer.Option(2, help="Programs copied unchanged per generation and run."),
    max_depth: int = typer.Option(8, help="Maximum tree depth."),
    max_len: int = typer.Option(64, help="Maximum program length (nodes)."),
    patience: int = typer.Option(0, help="Stop after this many generations without improvement (0: never)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    backend: str = typer.Option("auto", help="auto | torch | numba | triton."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write OUT/result.json (atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON to stdout."),
    quiet: bool = typer.Option(False, help="No progress display."),
) -> None:
    """Evolve a zero-cost proxy formula on training tasks; report it on every task next to the best single proxy."""
    from tensorgp.data import DataError
    from tensorgp.evolve import EvolutionConfig
    from tensorgp.experiment import RunSpec, evolve_proxy, prepare
    from tensorgp.results import dumps, write_json

    try:
        cfg = EvolutionConfig(population=pop, generations=gens, runs=runs, tournament_size=tournament,
                              elitism=elitism, max_depth=max_depth, max_len=max_len,
                              init_depth=(min(2, max_depth), min(5, max_depth)), parsimony=parsimony,
                              patience=patience, seed=seed)
        spec = RunSpec(data=_data_paths(data), train=train, test=test,
                       proxies=[p.strip() for p in proxies.split(",") if p.strip()] if proxies else None,
                       preprocess=preprocess, functions=functions, constants=constants, metric=metric,
                       aggregation=aggregation, device=device, backend=backend, config=cfg)
        prep = prepare(spec)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if not quiet:
        err.print(f"[bold]tensorgp run[/]: {len(prep.train)} training task(s), {len(prep.test)} test task(s), "
                  f"{prep.train_batch.X.shape[0]} training architectures, terminals: {', '.join(prep.proxies)}")
    progress = Progress(TextColumn("gen {task.completed:>4}/{task.total}"), BarColumn(),
                        TextColumn("best {task.fields[best]:.4f}  mean {task.fields[mean]:.4f}  "
                                   "size {task.fields[size]:.1f}  {task.fields[rate]:.2e} node-evals/s"),
                        TimeElapsedColumn(), console=err, disable=quiet, transient=False)
    bar = progress.add_task("evolve", total=gens, best=float("nan"), mean=float("nan"), size=0.0, rate=0.0)

    def on_gen(s) -> None:
        rate = s.nodes / s.eval_s if s.eval_s > 0 else 0.0
        progress.update(bar, completed=s.generation, best=s.best, mean=s.mean, size=s.mean_size, rate=rate)

    with progress, _Interrupt() as intr:
        try:
            result = evolve_proxy(spec, on_gen, lambda: intr.requested, prepared=prep)
        except (DataError, ValueError) as e:
            _fail(str(e))
    if out_dir is not None:
        path = write_json(Path(out_dir) / "result.json", result)
        if not quiet:
            err.print(f"wrote {path}")
    if as_json:
        print(dumps(result))
    else:
        _print_run(result)
    if result.get("interrupted"):
        raise typer.Exit(130)


def _print_run(r: dict) -> None:
    out.print(f"[bold]evolved proxy[/] (fitness {r['fitness']:.4f}, {r['metric']} {r['aggregation']}, "
              f"preprocess {r['preprocess']}, {r['generations_run']} generations, {r['time_s']:.1f} s, "
              f"backend {r['backend']}):")
    out.print(f"  [cyan]{r['expression']}[/]")
    t = Table(title="Kendall tau per task")
    for c in ("task", "split", "n", "kendall", "spearman", "best single proxy", "its kendall", "delta"):
        t.add_column(c, justify="left" if c in ("task", "split", "best single proxy") else "right")
    for name, v in r["tasks"].items():
        bs = v["best_single"]
        delta = None if bs["kendall"] is None else v["kendall"] - bs["kendall"]
        colour = "green" if delta is not None and delta >= 0 else "red"
        t.add_row(name, v["split"], str(v["n"]), _fmt(v["kendall"]), _fmt(v["spearman"]), str(bs["proxy"]),
                  _fmt(bs["kendall"]), f"[{colour}]{_fmt(delta)}[/]")
    out.print(t)
    mk = r.get("mean_kendall", {})
    out.print(f"mean kendall: train {_fmt(mk.get('train'))}, test {_fmt(mk.get('test'))}")


@app.command("eval")
def eval_cmd(
    expr: str = typer.Option(..., "--expr", help="The formula, e.g. \"(nwot + log(synflow))\"."),
    data: Optional[List[Path]] = typer.Option(None, help="Suite-Zero zc_*.json files or directories."),
    tasks: str = typer.Option("*", help="Comma-separated task globs."),
    preprocess: str = typer.Option("rank", help="raw | signed-log | rank | zscore."),
    device: str = typer.Option("cpu"),
    backend: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score a formula (Kendall, Spearman) on tasks."""
    from tensorgp.data import DataError
    from tensorgp.experiment import evaluate_expression
    from tensorgp.results import dumps

    try:
        res = evaluate_expression(expr, _data_paths(data), tasks, preprocess, device, backend)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if as_json:
        print(dumps(res))
        return
    t = Table(title=f"{res['expression']}  (preprocess {preprocess})")
    for c in ("task", "n", "kendall", "spearman"):
        t.add_column(c, justify="left" if c == "task" else "right")
    for name, v in res["tasks"].items():
        if "error" in v:
            t.add_row(name, str(v["n"]), f"[red]{v['error']}[/]", "")
        else:
            t.add_row(name, str(v["n"]), _fmt(v["kendall"]), _fmt(v["spearman"]))
    out.print(t)
    out.print(f"mean kendall: {_fmt(res['mean_kendall'])}")


def main() -> None:
    sys.argv[1:] = _expand_multi(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
