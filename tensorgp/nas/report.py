"""A readable report of run results: markdown tables (evolved proxy next to its baselines, train
and held-out sets marked), the formulas, the settings, and optional matplotlib figures.

``write_report(paths, out)`` is what ``tensorgp report`` calls. It accepts results of the split
protocol (``tensorgp run``, possibly with ``--fit-fraction``/``--validation``/``--runs``) and of
``--protocol leave-one-space-out``. Figures need matplotlib (the ``report`` extra); without it the
report says so and keeps everything else.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..runtime.output import check_out_file
from ..runtime.results import write_atomic
from .baselines import METRIC_KEYS

STRATEGY_NAMES = {
    "train": "evolved, best training fitness (--select train)",
    "validation": "evolved, best on validation",
    "parsimony": "evolved, smallest within 0.01 of the best fitness",
    "ensemble": "evolved, mean-rank ensemble of every run's best",
    "compact": "evolved, compact (Pareto front of size against fitness)",
    "nested": "evolved, each run's pick on its inner held-out space (ensemble)",
    "shrink": "evolved, runs' best shrunk toward the best single proxy (weight chosen on inner held-out spaces)",
    "anchored": "evolved to complement the best single proxy (anchored fitness), blended with it at weight 1/2",
}
METRIC_NAMES = {"kendall": "Kendall", "spearman": "Spearman", "top_kendall": "Kendall top 10%",
                "precision5": "precision@5%", "top10_pct": "best of top-10 (pct)"}
SPLIT_ORDER = ("train", "holdout", "validation", "test")


# ----------------------------------------------------------------------------- formatting


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def fmt_iqr(s: dict | None) -> str:
    """``median [q1, q3]`` of a ``selection.summarize`` dict."""
    if not s or not s.get("n"):
        return "–"
    return f"{fmt(s['median'])} [{fmt(s['q1'])}, {fmt(s['q3'])}]"


def md_text(s) -> str:
    """One line of markdown: a line break inside a name (a task named "a\\nb") would end a table row
    or a list item, so it is shown escaped."""
    return str(s).replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(md_text(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def code(expr: str) -> str:
    return f"`{expr}`"


def slug(label: str) -> str:
    """A file-name part for ``label``; a long label keeps a hash of the whole, so labels that differ
    only past the cut still get their own figure files."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
    if len(s) > 48:
        s = s[:40].rstrip("-") + "-" + hashlib.sha1(label.encode()).hexdigest()[:7]
    return s or "result"


def unique_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` with a repeated one numbered (``run1``, ``run1 (2)``): each result its own section and figures."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _keys(r: dict, split: str) -> list[str]:
    return [s["key"] for s in r.get("sets", []) if s["split"] == split]


def _splits(r: dict) -> list[str]:
    have = {s["split"] for s in r.get("sets", [])}
    return [s for s in SPLIT_ORDER if s in have]


def held_out_split(r: dict) -> str:
    """The split that measures generalization best: test, else validation, else held-out rows."""
    sp = _splits(r)
    for s in ("test", "validation", "holdout", "train"):
        if s in sp:
            return s
    return "train"


# ----------------------------------------------------------------------------- figures


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        return None


def figure_fitness(r: dict, path: Path, title: str) -> Path | None:
    """Best training fitness per generation: one thin line per run, the median bold."""
    plt = _plt()
    hist = r.get("history_runs") or [[h["best"]] for h in r.get("history", [])]
    if plt is None or not hist:
        return None
    gens = [h["generation"] for h in r["history"]] if r.get("history") else list(range(len(hist)))
    runs = list(zip(*hist))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for line in runs:
        ax.plot(gens, line, color="tab:blue", alpha=0.25, lw=0.8)
    med = [sorted(h)[len(h) // 2] if len(h) % 2 else 0.5 * (sorted(h)[len(h) // 2 - 1] + sorted(h)[len(h) // 2])
           for h in hist]
    ax.plot(gens, med, color="tab:blue", lw=2, label=f"median of {len(runs)} run(s)")
    mean = [h["mean"] for h in r.get("history", [])]
    if mean:
        ax.plot(gens, mean, color="tab:gray", lw=1, ls="--", label="population mean")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"fitness ({r.get('metric')}, {r.get('aggregation')})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SCATTER_COLUMNS = 4  # many tasks: a grid of this many panels per row, one panel per task


def figure_scatter(r: dict, path: Path, title: str) -> Path | None:
    """Evolved proxy (per-task rank quantile) vs accuracy on every task of the most held-out split,
    one panel per task in rows of ``SCATTER_COLUMNS``."""
    plt = _plt()
    sc = r.get("scatter") or {}
    if plt is None or not sc:
        return None
    cols = min(SCATTER_COLUMNS, len(sc))
    rows = math.ceil(len(sc) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(sc):]:
        ax.set_visible(False)
    for ax, (key, pts) in zip(axes.flat, sc.items()):
        ax.scatter(pts["x"], pts["y"], s=3, alpha=0.5)
        k = r["selection"].get(r.get("selected", "train"), {}).get("tasks", {}).get(key, {}).get("kendall")
        ax.set_title(f"{key}\n({pts['split']}, Kendall {fmt(k)})", fontsize=8)
        ax.set_xlabel("evolved proxy, rank within task", fontsize=8)
        ax.set_ylabel("val accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- one split result


def predictor_means(r: dict, split: str, metric: str = "kendall") -> list[tuple[str, float | None]]:
    """``[(predictor name, mean of metric over the split's tasks)]`` for every evolved strategy
    and every baseline of a split-protocol result."""
    keys = _keys(r, split)
    b = r["baselines"]
    rows = []
    for name, v in r.get("selection", {}).items():
        rows.append((STRATEGY_NAMES.get(name, name), _mean([v["tasks"][k][metric] for k in keys])))
    bot = b["best_on_train"]
    rows.append((f"best single proxy on training ({bot['proxy']})", _mean([bot["tasks"][k][metric] for k in keys])))
    rows.append(("best single proxy per task, hindsight oracle", _mean([b["oracle"][k][metric] for k in keys])))
    rows.append((f"mean-rank ensemble of {len(b['mean_rank']['proxies'])} proxies",
                 _mean([b["mean_rank"]["tasks"][k][metric] for k in keys])))
    return rows


def _settings(r: dict) -> str:
    c = r.get("config") or {}
    lines = [
        f"- train tasks: {md_text(', '.join(r.get('train_tasks', [])))}"
        + (f" (fitted on a seeded {r['fit_fraction']:.0%} of each task's architectures, split seed "
           f"{r['split_seed']}; the rest is reported as *held-out*)" if r.get("fit_fraction") else ""),
    ]
    if r.get("validation_tasks"):
        lines.append(f"- validation tasks (scored, never fitted): {md_text(', '.join(r['validation_tasks']))}")
    if r.get("target_tasks"):
        lines.append(f"- terminals restricted to the proxies of (--for): {md_text(', '.join(r['target_tasks']))}")
    if r.get("test_tasks"):
        lines.append(f"- test tasks (held out): {md_text(', '.join(r['test_tasks']))}")
    lines += [
        f"- terminals: {', '.join(r.get('proxies', []))}; functions: {', '.join(r.get('functions', []))}",
        f"- preprocess `{r.get('preprocess')}`, fitness `{r.get('metric')}` aggregated by `{r.get('aggregation')}`"
        f" over training tasks, parsimony {c.get('parsimony', 0)}, max depth {c.get('max_depth')}, "
        f"max length {c.get('max_len')}",
        f"- {r.get('runs', 1)} independent run(s) x population {r.get('population')} x {r.get('generations')} "
        f"generations ({r.get('generations_run')} run), seed {r.get('seed')}, tournament {c.get('tournament_size')}, "
        f"elitism {c.get('elitism')}; {fmt(r.get('time_s'), 1)} s on {r.get('device')} ({r.get('backend')})",
        f"- formula reported: `{r.get('selected', 'train')}` strategy",
    ]
    return "\n".join(lines)


def render_split(r: dict, label: str, figures: Path | None, fig_rel: str | None, level: int = 2,
                 full: bool = True) -> str:
    """One split-protocol result; ``full=False`` leaves out the single-proxy table and the figures."""
    h = "#" * level
    out = [f"{h} {label}", "", _settings(r), ""]
    splits = _splits(r)
    held = held_out_split(r)
    # headline: mean Kendall per split
    rows = []
    for name, v in r.get("selection", {}).items():
        rows.append([STRATEGY_NAMES.get(name, name) + (" **(reported)**" if name == r.get("selected") else "")]
                    + [fmt(v["mean"].get(s)) for s in splits])
    summ = r.get("summary", {}).get("splits", {})
    if r.get("runs", 1) > 1:
        rows.append([f"evolved, each run's best: median [IQR] of {r['runs']} runs"] + [fmt_iqr(summ.get(s)) for s in splits])
    per_split = {s: dict(predictor_means(r, s)) for s in splits}
    for name, _ in predictor_means(r, splits[0])[len(r.get("selection", {})):]:
        rows.append([name] + [fmt(per_split[s].get(name)) for s in splits])
    out += [f"Mean Kendall tau per split ({', '.join(f'{s}: {len(_keys(r, s))} task(s)' for s in splits)}):", "",
            table(["predictor"] + splits, rows), ""]

    # per task, the reported formula next to the baselines
    sel_name = r.get("selected", "train")
    sel = r["selection"].get(sel_name, {})
    b = r["baselines"]
    trows = []
    for s in r.get("sets", []):
        k = s["key"]
        m = sel.get("tasks", {}).get(k, {})
        rs = r.get("summary", {}).get("tasks", {}).get(k)
        o = b["oracle"][k]
        bt = b["best_on_train"]["tasks"][k]
        mr = b["mean_rank"]["tasks"][k]
        trows.append([k, s["split"], s["n"], fmt(m.get("kendall")), fmt(m.get("spearman")),
                      fmt_iqr(rs) if r.get("runs", 1) > 1 else "–", f"{fmt(bt['kendall'])} / {fmt(bt['spearman'])}",
                      f"{fmt(o['kendall'])} / {fmt(o['spearman'])} ({o['proxy']})",
                      f"{fmt(mr['kendall'])} / {fmt(mr['spearman'])}"])
    out += [f"Per task, Kendall τ and Spearman ρ (evolved = the reported `{sel_name}` formula; best-on-train = "
            f"{b['best_on_train']['proxy']}; runs = each run's best formula):", "",
            table(["task", "split", "n", "evolved τ", "evolved ρ", "runs τ median [IQR]",
                   "best-on-train τ / ρ", "oracle τ / ρ (proxy)", "mean-rank τ / ρ"], trows, "llrrrrrrr"), ""]

    # search quality on the held-out split
    q = {m: dict(predictor_means(r, held, m)) for m in METRIC_KEYS}
    qrows = [[name] + [fmt(q[m][name], 3 if m != "top10_pct" else 1) for m in METRIC_KEYS] for name in q["kendall"]]
    out += [f"Search quality on the {held} split (means over its tasks; see `tensorgp/nas/baselines.py` for the "
            f"definitions):", "", table(["predictor"] + [METRIC_NAMES[m] for m in METRIC_KEYS], qrows), ""]

    # single proxies
    proxies = sorted({p for per in b["single"].values() for p in per})
    srows = []
    for s in r.get("sets", []):
        per = b["single"][s["key"]]
        best = max(per, key=lambda p: per[p]["kendall"]) if per else None
        srows.append([s["key"], s["split"]] + [("**" + fmt(per[p]["kendall"]) + "**" if p == best else fmt(per[p]["kendall"]))
                                               if p in per else "–" for p in proxies])
    if full:
        out += ["<details><summary>Kendall tau of every single proxy (bold: best on the task)</summary>", "",
                table(["task", "split"] + proxies, srows, "ll" + "r" * len(proxies)), "", "</details>", ""]

    # formulas
    out += ["Formulas:", ""]
    for name, v in r.get("selection", {}).items():
        if "expression" in v:
            run = "" if v.get("run") is None else f", run {v['run']}"
            out.append(f"- {name} (size {v['size']}, fitness {fmt(v['fitness'], 4)}{run}): {code(v['expression'])}")
        else:
            out.append(f"- {name}: mean per-task rank of {len(v['expressions'])} formulas (listed per run below)")
    if r.get("runs_detail"):
        out += ["", "<details><summary>Best formula of each run</summary>", "",
                table(["run", "fitness", "size"] + [f"{s} τ" for s in splits] + ["formula"],
                      [[d["run"], fmt(d["fitness"], 4), d["size"]] + [fmt(d["mean"].get(s)) for s in splits]
                       + [code(d["expression"])] for d in r["runs_detail"]], "rrr" + "r" * len(splits) + "l"),
                "", "</details>"]
    out += pareto_section(r, splits)
    out.append("")
    # figures
    if figures is not None and full:
        sl = slug(label)
        f1 = figure_fitness(r, figures / f"fitness-{sl}.png", label)
        f2 = figure_scatter(r, figures / f"scatter-{sl}.png", f"{label}: reported formula")
        if f1 is None and f2 is None and _plt() is None:
            out += ["*(figures skipped: matplotlib is not installed; `pip install tensorgp[report]`)*", ""]
        for f in (f1, f2):
            if f is not None:
                out += [f"![{f.stem}]({(fig_rel or str(figures)).rstrip('/')}/{f.name})", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- leave one space out


def render_loso(r: dict, label: str, figures: Path | None, fig_rel: str | None, level: int = 2,
                full: bool = True) -> str:
    h = "#" * level
    c = r.get("config") or {}
    out = [f"{h} {label}", "",
           f"- leave-one-space-out over {', '.join(r['spaces'])}: one evolution per space, that space's tasks held out",
           f"- preprocess `{r.get('preprocess')}`, fitness `{r.get('metric')}` aggregated by `{r.get('aggregation')}`; "
           f"{c.get('runs')} run(s) x population {c.get('population')} x {c.get('generations')} generations per fold, "
           f"seed {c.get('seed')}, parsimony {c.get('parsimony')}; {fmt(r.get('time_s'), 1)} s in all",
           f"- formula reported: `{r.get('selected', 'train')}` strategy", ""]
    strategies = list(next(iter(r["summary"].values()), {}).get("strategies", {}))
    rows = []
    for s, v in r["summary"].items():
        if not v:
            continue
        bs = max(v["single"], key=lambda p: v["single"][p] if v["single"][p] is not None else -9)
        rows.append([s, len(v["tasks"])] + [fmt(v["strategies"].get(k)) for k in strategies]
                    + [fmt_iqr(v.get("runs")), f"{fmt(v['best_on_train']['kendall'])} ({v['best_on_train']['proxy']})",
                       fmt(v["oracle"]), fmt(v["mean_rank"]), f"{fmt(v['single'][bs])} ({bs})",
                       ", ".join(v["beaten_by"]) or "none"])
    means = ["**mean over spaces**", ""] + [fmt(_mean([v["strategies"].get(k) for v in r["summary"].values() if v]))
                                            for k in strategies]
    means += [fmt(_mean([v["runs"]["median"] for v in r["summary"].values() if v and v.get("runs")])),
              fmt(_mean([v["best_on_train"]["kendall"] for v in r["summary"].values() if v])),
              fmt(_mean([v["oracle"] for v in r["summary"].values() if v])),
              fmt(_mean([v["mean_rank"] for v in r["summary"].values() if v])), "", ""]
    rows.append(means)
    out += ["Mean Kendall tau on the held-out space (evolved by each selection strategy; runs = median [IQR] of "
            "each run's best; *loses to* = single proxies whose mean on the held-out space beats the reported formula):",
            "", table(["held-out space", "tasks"] + strategies + ["runs", "best-on-train", "oracle", "mean-rank",
                                                                   "best single (hindsight)", "loses to"], rows,
                      "lr" + "r" * (len(strategies) + 5) + "l"), ""]
    whole = r.get("all_spaces")
    if whole and whole.get("expression"):
        out += [f"Formula evolved on every space (what `score --from` and `search --from` use; size "
                f"{whole.get('size')}, fitness {fmt(whole.get('fitness'), 4)}): {code(whole['expression'])}", ""]
    for s, fold in r["folds"].items():
        out.append(render_split(fold, f"{label}: {s} held out", figures, fig_rel, level + 1, full))
    return "\n".join(out)


def pareto_section(r: dict, splits: Sequence[str]) -> list[str]:
    """The front of formula size against training fitness (``nas.pareto``), bold: the reported formula."""
    front = r.get("pareto") or []
    if not front:
        return []
    rows = [[p["size"], fmt(p["fitness"], 4)] + [fmt(p["mean"].get(s)) for s in splits]
            + [("**" if p["expression"] == r.get("expression") else "") + code(p["expression"])
               + ("**" if p["expression"] == r.get("expression") else "")] for p in front]
    return ["", "<details><summary>Pareto front: formula size against training fitness</summary>", "",
            table(["size", "fitness"] + [f"{s} τ" for s in splits] + ["formula"], rows, "rr" + "r" * len(splits) + "l"),
            "", "</details>"]


# ----------------------------------------------------------------------------- overview and files


def headline(r: dict) -> dict:
    """One row of figures for the overview: held-out means of the reported formula, runs and baselines."""
    if r.get("protocol") == "leave-one-space-out":
        v = [x for x in r["summary"].values() if x]
        return {"split": "held-out spaces (mean)", "selected": _mean([x["selected"] for x in v]),
                "train_pick": _mean([x["strategies"].get("train") for x in v]),
                "runs": _mean([x["runs"]["median"] for x in v if x.get("runs")]),
                "best_on_train": _mean([x["best_on_train"]["kendall"] for x in v]),
                "oracle": _mean([x["oracle"] for x in v]), "mean_rank": _mean([x["mean_rank"] for x in v])}
    s = held_out_split(r)
    keys = _keys(r, s)
    b = r["baselines"]
    sel = r["selection"].get(r.get("selected", "train"), {})
    return {"split": s, "selected": sel.get("mean", {}).get(s),
            "train_pick": r["selection"].get("train", {}).get("mean", {}).get(s),
            "runs": (r.get("summary", {}).get("splits", {}).get(s) or {}).get("median"),
            "best_on_train": _mean([b["best_on_train"]["tasks"][k]["kendall"] for k in keys]),
            "oracle": _mean([b["oracle"][k]["kendall"] for k in keys]),
            "mean_rank": _mean([b["mean_rank"]["tasks"][k]["kendall"] for k in keys])}


def overview(results: Sequence[tuple[str, dict]]) -> str:
    rows = []
    for label, r in results:
        h = headline(r)
        cfg = r.get("config") or {}
        rows.append([label, h["split"], r.get("preprocess"), r.get("aggregation"), r.get("metric"), r.get("selected"),
                     f"{cfg.get('runs')}x{cfg.get('population')}x{cfg.get('generations')}",
                     fmt(h["selected"]), fmt(h["train_pick"]), fmt(h["runs"]), fmt(h["best_on_train"]),
                     fmt(h["oracle"]), fmt(h["mean_rank"])])
    return table(["result", "held-out set", "preprocess", "aggregation", "fitness", "pick", "runs x pop x gens",
                  "evolved (pick)", "evolved (train pick)", "runs median", "best-on-train", "oracle", "mean-rank"],
                 rows, "llllllr" + "r" * 6)


def render(results: Sequence[tuple[str, dict]], figures: Path | None = None, fig_rel: str | None = None,
           title: str = "tensorgp results", command: str | None = None, intro: str | None = None,
           full: Sequence[str] | None = None) -> str:
    """The whole markdown report for ``[(label, result)]``; ``full``: the labels that get the
    single-proxy tables and the figures (None: every result)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    labels = unique_labels([lab for lab, _ in results])
    versions = sorted({str(r.get("version")) for _, r in results})
    out = [f"# {title}", "", f"Generated {now} by tensorgp {', '.join(versions)}"
           + (f" with:\n\n```bash\n{command}\n```" if command else "."), ""]
    if intro:
        out += [intro.strip(), ""]
    out += ["## Overview", "", "Mean Kendall tau on each result's held-out set (test tasks, else validation "
            "tasks, else held-out architectures).", "", overview(list(zip(labels, (r for _, r in results)))), ""]
    for (orig, r), label in zip(results, labels):
        f = full is None or orig in full
        if r.get("protocol") == "leave-one-space-out":
            out.append(render_loso(r, label, figures, fig_rel, full=f))
        else:
            out.append(render_split(r, label, figures, fig_rel, full=f))
    return "\n".join(out).rstrip() + "\n"


def load_results(paths: Sequence[str | Path]) -> list[tuple[str, dict]]:
    """``[(label, result)]``: a directory means its ``result.json``; the label is the result's
    ``label`` field, else the file stem (or the directory name for ``result.json``)."""
    out = []
    for p in map(Path, paths):
        f = p / "result.json" if p.is_dir() else p
        try:
            r = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{f}: not a readable result ({e})") from None
        if not isinstance(r, dict):
            raise ValueError(f"{f}: not a tensorgp result (its top level is not a JSON object)")
        need = ("folds", "summary") if r.get("protocol") == "leave-one-space-out" else ("sets", "baselines", "tasks")
        missing = [k for k in need if k not in r]
        if missing:
            raise ValueError(f"{f}: not a tensorgp run result this version can report (no {', '.join(missing)}; "
                             f"written by an older tensorgp or another program?)")
        label = r.get("label") or (f.parent.name if f.name == "result.json" else f.stem)
        out.append((label, r))
    return out


def write_report(paths: Sequence[str | Path] | None = None, out: str | Path = "results.md",
                 figures: str | Path | None = "figures", results: Sequence[tuple[str, dict]] | None = None,
                 title: str = "tensorgp results", command: str | None = None, intro: str | None = None,
                 full: Sequence[str] | None = None) -> Path:
    """Write the markdown report of result files ``paths`` (or ``results``) to ``out``; figures
    (PNG) go to ``figures`` (relative to ``out``'s folder when relative; None: no figures)."""
    out = check_out_file(out)
    res = list(results or []) + (load_results(paths) if paths else [])
    if not res:
        raise ValueError("no results to report")
    fig_dir = None
    fig_rel = None
    if figures is not None:
        fig_dir = Path(figures) if Path(figures).is_absolute() else out.parent / figures
        fig_rel = str(figures) if not Path(figures).is_absolute() else str(fig_dir)
        if fig_dir.exists() and not fig_dir.is_dir():
            raise ValueError(f"--figures {fig_dir}: is a file, not a folder")
    text = render(res, fig_dir, fig_rel, title, command, intro, full)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, text)
