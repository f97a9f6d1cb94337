"""The markdown report and the ``tensorgp report`` command, on small synthetic runs."""
import json
import re

import pytest

from tensorgp.nas import protocols as P
from tensorgp.nas import report as R
from tensorgp.nas.experiment import evolve_proxy
from tests.test_protocols import spec_for, write_suite
from tensorgp_cli.cli import app
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_suite(tmp_path_factory.mktemp("suite"))
    split = evolve_proxy(spec_for(data, train="alpha/*", validation="beta/*", test="gamma/*", fit_fraction=0.7,
                                  select="ensemble"))
    loso = P.leave_one_space_out(spec_for(data, train="*", runs=2, gens=2))
    return split, loso


def rows_of(md: str, first_cell: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    return [r for r in rows if r[0] == first_cell]


def test_split_report_tables_formulas_and_settings(runs, tmp_path):
    split, _ = runs
    md = R.render([("synthetic split", split)])
    assert md.startswith("# tensorgp results")
    assert "## synthetic split" in md and "## Overview" in md
    # per-task table: every scored set once, with its split marked
    for s in split["sets"]:
        row = [r for r in rows_of(md, s["key"]) if len(r) == 9]
        assert len(row) == 1 and row[0][1] == s["split"]
        sel = split["selection"]["ensemble"]["tasks"][s["key"]]
        assert row[0][3] == R.fmt(sel["kendall"]) and row[0][4] == R.fmt(sel["spearman"])
        o = split["baselines"]["oracle"][s["key"]]
        assert row[0][7] == f"{R.fmt(o['kendall'])} / {R.fmt(o['spearman'])} ({o['proxy']})"
    # headline table: the evolved strategies and the three baselines, columns per split
    head = rows_of(md, "predictor")[0]
    assert head[1:] == ["train", "holdout", "validation", "test"]
    bot = split["baselines"]["best_on_train"]["proxy"]
    assert rows_of(md, f"best single proxy on training ({bot})")
    assert "hindsight oracle" in md and "mean-rank ensemble of 3 proxies" in md
    assert "**(reported)**" in md and "mean-rank ensemble of every run's best **(reported)**" in md
    for e in split["selection"]["ensemble"]["expressions"]:
        assert f"`{e}`" in md
    assert f"`{split['selection']['train']['expression']}`" in md
    assert "preprocess `rank`" in md and "3 independent run(s) x population 40 x 3 generations" in md
    assert "fitted on a seeded 70%" in md and "validation tasks (scored, never fitted): beta/task0" in md
    # overview row: held-out set is test, figures of the reported strategy
    ov = rows_of(md, "synthetic split")[0]
    assert ov[1] == "test" and ov[7] == R.fmt(split["selection"]["ensemble"]["mean"]["test"])


def test_loso_report_has_a_row_per_space_and_a_section_per_fold(runs):
    _, loso = runs
    md = R.render([("loso", loso)])
    for s in ("alpha", "beta", "gamma"):
        row = [r for r in rows_of(md, s) if len(r) > 8]
        assert len(row) == 1
        assert row[0][2] == R.fmt(loso["summary"][s]["strategies"]["train"])
        assert f"## loso: {s} held out" in md
    assert rows_of(md, "**mean over spaces**")


def test_figures_written_and_linked(runs, tmp_path):
    pytest.importorskip("matplotlib")
    split, _ = runs
    out = R.write_report(results=[("Split A", split)], out=tmp_path / "docs" / "results.md", figures="figures")
    md = out.read_text()
    pngs = sorted(p.name for p in (tmp_path / "docs" / "figures").glob("*.png"))
    assert pngs == ["fitness-split-a.png", "scatter-split-a.png"]
    for name in pngs:
        assert f"](figures/{name})" in md
        assert (tmp_path / "docs" / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def test_figures_skipped_with_a_note_without_matplotlib(runs, tmp_path, monkeypatch):
    split, _ = runs
    monkeypatch.setattr(R, "_plt", lambda: None)
    out = R.write_report(results=[("s", split)], out=tmp_path / "r.md", figures="figs")
    md = out.read_text()
    assert "figures skipped: matplotlib is not installed" in md
    assert not (tmp_path / "figs").exists() and "![" not in md


def test_report_command(runs, tmp_path):
    split, loso = runs
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "result.json").write_text(json.dumps(split))
    (tmp_path / "loso.json").write_text(json.dumps({**loso, "label": "LOSO study"}))
    res = CliRunner().invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "loso.json"), "--out",
                                   str(tmp_path / "out" / "results.md"), "--figures", "", "--command", "make it"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## a" in md and "## LOSO study" in md and "```bash\nmake it\n```" in md
    assert not re.search(r"!\[", md)
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x.md")])
    assert bad.exit_code == 2 and "no such result file" in bad.output


def test_report_names_a_bad_result_file_and_a_bad_output(runs, tmp_path):
    split, _ = runs
    files = {"text.json": "not json", "list.json": "[1]", "old.json": json.dumps({"expression": "nwot"})}
    why = {"text.json": "not a readable result", "list.json": "top level is not a JSON object",
           "old.json": "no sets, baselines, tasks"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
        res = CliRunner().invoke(app, ["report", str(tmp_path / name), "--out", str(tmp_path / "r.md"), "--figures", ""])
        assert res.exit_code == 2 and name in res.output and why[name] in " ".join(res.output.split()), res.output
    (tmp_path / "good.json").write_text(json.dumps(split))
    (tmp_path / "isdir.md").mkdir()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "good.json"), "--out", str(tmp_path / "isdir.md"), "--figures", ""])
    assert res.exit_code == 2 and "is a folder" in res.output
    assert not list(tmp_path.glob("*.tmp"))


def test_results_with_the_same_label_keep_their_own_sections_and_figures(runs, tmp_path):
    pytest.importorskip("matplotlib")
    split, _ = runs
    long = "nb201 cifar10 rank mean pop40 gens6 runs2 seed0 split "
    out = R.write_report(results=[("run1", split), ("run1", split), (long + "A", split), (long + "B", split)],
                         out=tmp_path / "r.md", figures="figs")
    md = out.read_text()
    assert "## run1\n" in md and "## run1 (2)" in md
    assert len(list((tmp_path / "figs").glob("fitness-*.png"))) == 4


def test_written_results_follow_the_umask(tmp_path):
    import os

    from tensorgp.runtime.results import write_json

    old = os.umask(0o022)
    try:
        assert (write_json(tmp_path / "r.json", {"a": 1}).stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def _quality_module():
    """bench/quality.py, a script outside the package, loaded fresh (tests monkeypatch its globals)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_bench", path)
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    return q


def test_quality_study_driver_quick(suite_zero, tmp_path):
    """bench/quality.py end to end at a tiny scale: stored results, then the study report."""
    q = _quality_module()
    out, rep = tmp_path / "runs", tmp_path / "docs" / "results.md"
    assert q.main(["--data", str(suite_zero.parent), "--out", str(out), "--report", str(rep), "--scale", "0.02",
                   "--only", "main"]) == 0
    r = json.loads((out / "main.json").read_text())
    assert {k: r["study"][k] for k in ("name", "group", "scale")} == {"name": "main", "group": "main", "scale": 0.02}
    assert r["runs"] == q.BUDGET["runs"] and r["study"]["load_before"] >= 0
    md = rep.read_text()
    assert "Quick look: every population and generation count scaled by 0.02" in md
    assert "--scale 0.02" in md and "### Targets" in md and "| ≥ 0.45 |" in md
    assert R.fmt(r["selection"][r["selected"]]["mean"]["test"]) in rows_of(md, "NB201+NB301 -> 7 TNB-micro tasks, mean "
                                                                           "Kendall (reported formula)")[0]


def test_quality_study_seed_and_attainability_sections(suite_zero, tmp_path, monkeypatch):
    """The seed-robust comparison and the attainability analysis, shrunk, end to end into the report."""
    q = _quality_module()
    monkeypatch.setattr(q, "VARIANTS", q.VARIANTS[:2])
    monkeypatch.setattr(q, "SEEDS", 2)
    monkeypatch.setattr(q, "LOSO_SEEDS", 1)
    for e in q.EXPERIMENTS:
        if e["name"] == "attainable":
            monkeypatch.setitem(e, "seeds", 1)
    out, rep = tmp_path / "runs", tmp_path / "results.md"
    assert q.main(["--data", str(suite_zero.parent), "--out", str(out), "--report", str(rep), "--scale", "0.02",
                   "--only", "main,seeds,attainable"]) == 0
    seeds = json.loads((out / "seeds.json").read_text())
    assert list(seeds["variants"]) == ["default", "depth4"]
    assert [len(v["seeds"]) for v in seeds["variants"].values()] == [2, 2]
    assert [len(v["loso"]) for v in seeds["variants"].values()] == [1, 1]  # both are LOSO variants
    att = json.loads((out / "attainable.json").read_text())
    shares = [x["share"] for x in att["rows"]]
    assert shares == [1.0, 0.1, 0.01, 0.001] and att["rows"][0]["n"] == att["programs"] > 0
    assert all(a["test_max"] >= b["test_max"] for a, b in zip(att["rows"], att["rows"][1:]))  # nested subsets
    md = rep.read_text()
    assert "### Seed-robust comparison" in md and "### What any selection rule could reach" in md
    assert len(rows_of(md, "max depth 4")) == 1 and "**Over several seeds**" in md
    assert "## Every program the evolutions produced" not in md  # study tables get no per-result section

