"""Bad input, one test per case: a non-zero exit (or a library error) before any long work, with a
message naming the file, task, option or value. Issue 12 ("Hardening")."""
import json
import math
import os
import socket
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tensorgp.nas import data as D
from tensorgp.nas.experiment import RunSpec, evaluate_expression, prepare
from tensorgp.engine.evolve import EvolutionConfig
from tensorgp.runtime import checkpoint as ck
from tensorgp.runtime.lock import DirLock, LockError
from tensorgp_cli.cli import _expand_multi, app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, _expand_multi([str(a) for a in args]))


def rec(acc, **proxies):
    return {"idx": "0", "arch": "a", **{k: {"score": v, "time": 0.1} for k, v in proxies.items()}, "val_accuracy": acc}


def toy(n=12, shift=0.0):
    """A task of n architectures whose nwot ranks them perfectly and whose synflow is noise."""
    g = np.random.default_rng(0)
    return {f"({i},)": rec(50.0 + i + shift, nwot=float(i), synflow=float(g.normal()), jacov=float(-i))
            for i in range(n)}


def write(path, obj=None, raw=None):
    path.write_text(raw if raw is not None else json.dumps(obj))
    return path


@pytest.fixture
def suite(tmp_path):
    """zc_a.json (tasks a/x, a/y) and zc_b.json (task b/z)."""
    d = tmp_path / "data"
    d.mkdir()
    write(d / "zc_a.json", {"x": toy(), "y": toy(shift=1.0)})
    write(d / "zc_b.json", {"z": toy(10)})
    return d


def fails(r, *words, code=None):
    """Non-zero exit and every word in the output."""
    assert r.exit_code != 0, r.output
    if code is not None:
        assert r.exit_code == code, r.output
    text = " ".join(r.output.split())  # rich may wrap long messages
    for w in words:
        assert str(w) in text, (w, r.output)


# ---------------------------------------------------------------- data files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_data_file_is_rejected_before_open(tmp_path):
    f = tmp_path / "zc_pipe.json"
    os.mkfifo(f)  # opening it would block forever
    fails(invoke("eval", "--data", f, "--expr", "nwot"), "zc_pipe.json", "FIFO")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_inside_data_folder_is_rejected(suite):
    os.mkfifo(suite / "zc_c.json")
    fails(invoke("eval", "--data", suite, "--expr", "nwot"), "zc_c.json", "FIFO")


def test_deeply_nested_json_is_a_data_error(tmp_path):
    f = write(tmp_path / "zc_deep.json", raw='{"a": ' * 100_000 + "1" + "}" * 100_000)
    fails(invoke("eval", "--data", f, "--expr", "nwot"), "zc_deep.json", "nested too deeply")


def test_duplicate_architecture_key(tmp_path):
    body = json.dumps(toy(3))[1:-1]
    f = write(tmp_path / "zc_dup.json", raw='{"cifar10": {' + body + ', "(1,)": ' + json.dumps(rec(1.0, nwot=1.0)) + "}}")
    fails(invoke("eval", "--data", f, "--expr", "nwot"), "zc_dup.json", "duplicate key '(1,)'", "cifar10")


def test_duplicate_task_key(tmp_path):
    t = json.dumps(toy(3))
    f = write(tmp_path / "zc_dup.json", raw='{"cifar10": ' + t + ', "cifar10": ' + t + "}")
    fails(invoke("eval", "--data", f, "--expr", "nwot"), "zc_dup.json", "duplicate key 'cifar10'", "top level")


@pytest.mark.parametrize("bad", ["0.5", True, [1.0]])
def test_non_numeric_proxy_score(tmp_path, bad):
    t = toy(4)
    t["(2,)"]["synflow"] = {"score": bad, "time": 0.1}
    f = write(tmp_path / "zc_s.json", {"c10": t})
    with pytest.raises(D.DataError, match=r"zc_s\.json: task s/c10: architecture \(2,\): proxy synflow has a"):
        D.load(f)
    fails(invoke("eval", "--data", f, "--expr", "nwot"), "zc_s.json", "s/c10", "(2,)", "synflow")


def test_nan_proxy_score_counts_as_failed(tmp_path):
    raw = json.dumps({"c": toy(4)}).replace('"nwot": {"score": 1.0', '"nwot": {"score": NaN')
    (t,) = D.load(write(tmp_path / "zc_n.json", raw=raw))
    col = t.column("nwot")
    assert math.isnan(col[1]) and torch.isfinite(col[[0, 2, 3]]).all()  # failed, like -1e8


def test_no_default_data_folder_lists_the_paths_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORGP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(D, "__file__", str(tmp_path / "a" / "b" / "c" / "data.py"))  # as an installed copy
    r = invoke("eval", "--expr", "nwot")
    fails(r, "no default data folder", str(tmp_path / "shared" / "data" / "suite-zero"),
          str(tmp_path.parent / "shared" / "data" / "suite-zero"), "TENSORGP_DATA")


def test_default_data_folder_found_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORGP_DATA", raising=False)
    d = tmp_path / "shared" / "data" / "suite-zero"
    d.mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert D.find_data_dir() == d  # ../shared/data/suite-zero, whatever the install location


# ---------------------------------------------------------------- values beyond float32, degenerate tasks


def test_proxy_beyond_float32_ranks_correctly(tmp_path):
    t = toy(50)
    for i in range(30, 50):  # the top 40% scaled by 1e300: still a perfect proxy
        t[f"({i},)"]["nwot"]["score"] *= 1e300
    f = write(tmp_path / "zc_big.json", {"c": t})
    for mode in ("rank", "signed-log", "raw"):  # eval computes raw formulas in float64
        res = evaluate_expression("nwot", [f], "*", mode)
        assert res["tasks"]["big/c"]["kendall"] == pytest.approx(1.0, abs=1e-6), mode
    # z-scores squeeze the 30 small values together (inherent), but nothing overflows to a failed value
    assert evaluate_expression("nwot", [f], "*", "zscore")["tasks"]["big/c"]["kendall"] > 0.4
    (task,) = D.load(f)
    with pytest.warns(D.DataWarning, match="big/c: proxy nwot has 20 value.* beyond the float32 range"):
        D.make_batch([task], ["nwot"], "raw")  # evolution runs in float32: raw 1e300 overflows, say so


def test_close_accuracies_are_not_merged(tmp_path):
    from scipy.stats import kendalltau

    g = np.random.default_rng(1)
    acc = 70.0 + np.arange(40) * 1e-6  # distinct in float64, mostly equal in float32
    nw = g.normal(size=40)
    t = {f"({i},)": rec(float(acc[i]), nwot=float(nw[i])) for i in range(40)}
    f = write(tmp_path / "zc_close.json", {"c": t})
    res = evaluate_expression("nwot", [f], "*", "raw")
    assert res["tasks"]["close/c"]["kendall"] == pytest.approx(kendalltau(nw, acc).statistic, abs=1e-6)


def test_all_equal_accuracies_are_undefined_not_zero(suite):
    t = toy(6)
    for r in t.values():
        r["val_accuracy"] = 90.0
    write(suite / "zc_b.json", {"z": t})
    with pytest.warns(D.DataWarning, match="b/z.*undefined.*all 6 accuracies are equal"):
        res = evaluate_expression("nwot", [suite], "*", "rank")
    assert res["tasks"]["b/z"]["kendall"] is None and "equal" in res["tasks"]["b/z"]["undefined"]
    assert res["mean_kendall"] == pytest.approx(1.0)  # the defined tasks only
    with pytest.warns(D.DataWarning, match="b/z \\(train\\).*undefined"):
        prep = prepare(RunSpec(data=[suite], train="*", config=EvolutionConfig(population=20, generations=1)))
    assert [t.name for t in prep.train] == ["a/x", "a/y"] and "b/z" in prep.undefined


def test_single_architecture_task_is_undefined(suite):
    write(suite / "zc_b.json", {"z": toy(1)})
    with pytest.warns(D.DataWarning, match="b/z.*1 architecture"):
        res = evaluate_expression("nwot", [suite], "*", "rank")
    assert res["tasks"]["b/z"]["kendall"] is None


def test_two_architectures_warn(suite):
    write(suite / "zc_b.json", {"z": toy(2)})
    with pytest.warns(D.DataWarning, match="b/z.*only 2 architectures"):
        prepare(RunSpec(data=[suite], train="*", config=EvolutionConfig(population=20, generations=1)))


def test_every_training_task_undefined_is_an_error(suite):
    t = toy(4)
    for r in t.values():
        r["val_accuracy"] = 1.0
    write(suite / "zc_b.json", {"z": t})
    with pytest.warns(D.DataWarning):
        fails(invoke("run", "--data", suite / "zc_b.json", "--pop", 20, "--gens", 1, "--out", suite.parent / "o"),
              "no training task has a defined Kendall tau", "b/z")


def test_eval_exits_non_zero_when_every_task_errors(suite):
    write(suite / "zc_b.json", {"z": {k: {**v, "nwot": {"score": -1e8}} for k, v in toy(6).items()}})
    fails(invoke("eval", "--data", suite / "zc_b.json", "--expr", "nwot"), "no selected task can be scored",
          "b/z lacks proxy nwot")


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("args, words", [
    (["--fit-fraction", 0], ["--fit-fraction 0"]),
    (["--fit-fraction", 1.5], ["--fit-fraction 1.5"]),
    (["--patience", -1], ["--patience", "-1"]),
    (["--parsimony", -1], ["--parsimony", "-1"]),
    (["--parsimony", "nan"], ["--parsimony", "nan"]),
    (["--tournament", 50, "--pop", 20], ["--tournament", "50", "--pop", "20"]),
    (["--functions", "add,add,mul"], ["listed more than once", "add"]),
    (["--test", "a/*"], ["--test 'a/*'", "a/x", "a/y"]),
    (["--device", "bogus"], ["--device", "bogus"]),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "bogus"], ["--device"]),
    (["--device", "meta"], ["--device", "meta"]),
    (["--select", "anchored", "--runs", 1], ["--select anchored", "--runs 2 or more"]),
    (["--select", "nested", "--runs", 1], ["--select nested", "--runs 2 or more"]),
])
def test_run_option_is_rejected(suite, tmp_path, args, words):
    fails(invoke("run", "--data", suite, "--train", "a/*", "--pop", 20, "--gens", 1, "--out", tmp_path / "o",
                 "--quiet", *args), *words, code=2)


@pytest.mark.parametrize("cmd", [["eval", "--expr", "nwot"], ["search", "--task", "a/x", "--expr", "nwot"]])
def test_eval_and_search_reject_an_unavailable_device(suite, cmd):
    fails(invoke(*cmd, "--data", suite, "--device", "cuda:7" if not torch.cuda.is_available() else "bogus"),
          "device", code=2)


def test_out_is_an_existing_file(suite, tmp_path):
    f = write(tmp_path / "taken", raw="x")
    fails(invoke("run", "--data", suite, "--pop", 20, "--gens", 1, "--out", f, "--json"), str(f),
          "is an existing file", code=2)
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_out_is_not_writable(suite, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    fails(invoke("run", "--data", suite, "--pop", 20, "--gens", 1, "--out", ro / "sub"), str(ro / "sub"),
          "cannot write", code=2)


def test_out_under_a_file_is_not_writable(suite, tmp_path):
    f = write(tmp_path / "file", raw="x")
    fails(invoke("run", "--data", suite, "--pop", 20, "--gens", 1, "--out", f / "sub"), str(f / "sub"),
          "cannot write", code=2)


def test_run_without_out_keeps_its_result_in_a_default_folder(suite, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("run", "--data", suite, "--train", "a/*", "--test", "b/*", "--pop", 20, "--gens", 1, "--json")
    assert r.exit_code == 0, r.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["generations"] == 1
    assert f"result goes to {run_dir.relative_to(tmp_path)}" in " ".join(r.output.split())


def test_version():
    from tensorgp import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"tensorgp {__version__}"


def test_flags_have_no_bool_label():
    r = invoke("run", "--help")
    assert r.exit_code == 0 and "<bool>" not in r.output and "--json" in r.output


# ---------------------------------------------------------------- checkpoints


def _checkpointed(suite, tmp_path, gens=2):
    d = tmp_path / "ck"
    r = invoke("run", "--data", suite, "--train", "a/*", "--pop", 20, "--gens", gens, "--checkpoint", d,
               "--every", 1, "--quiet", "--seed", 3)
    assert r.exit_code == 0, r.output
    return d


def _tamper(d, fn):
    obj = torch.load(d / "checkpoint.pt", weights_only=True)
    fn(obj)
    torch.save(obj, d / "checkpoint.pt")
    (d / "checkpoint.prev.pt").unlink()


@pytest.mark.parametrize("fn, words", [
    (lambda o: o["state"]["pop"]["ops"].fill_(-5), ["state.pop.ops", "opcode -5"]),
    (lambda o: o["state"]["pop"]["ops"].__setitem__((0, 0), 99), ["state.pop.ops", "opcode 99", "terminal"]),
    (lambda o: o["state"]["pop"]["length"].fill_(1000), ["state.pop.length", "1000"]),
    (lambda o: o["state"]["pop"]["length"].fill_(0), ["state.pop.length", "0"]),
    (lambda o: o["state"]["hof"]["ops"][:, 0].fill_(1), ["state.hof.ops", "well-formed postfix"]),
    (lambda o: o["state"].__setitem__("fitness", torch.zeros(3)), ["state.fitness", "3 values"]),
    (lambda o: o["state"]["pop"].__setitem__("consts", torch.zeros(2, 2, dtype=torch.float64)), ["state.pop.consts"]),
    (lambda o: o["state"].pop("rng_state"), ["state.rng_state", "missing"]),
    (lambda o: o["run"].pop("spec"), ["run.spec", "missing"]),
    (lambda o: o["state"].__setitem__("generation", "2"), ["state.generation", "str"]),
])
def test_crafted_checkpoint_is_rejected_before_the_structure_pass(suite, tmp_path, fn, words):
    d = _checkpointed(suite, tmp_path)
    _tamper(d, fn)
    fails(invoke("run", "--resume", d, "--quiet"), str(d / "checkpoint.pt"), *words, code=2)


def test_truncated_checkpoint_falls_back_with_a_note(suite, tmp_path):
    d = _checkpointed(suite, tmp_path, gens=2)
    raw = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.warns(ck.CheckpointWarning, match="checkpoint.pt is unreadable.*resuming from checkpoint.prev.pt"):
        r = invoke("run", "--resume", d, "--gens", 3, "--quiet", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads((d / "result.json").read_text())
    assert res["checkpoint"]["resumed_from"] == 1 and "checkpoint.pt is unreadable" in res["checkpoint"]["fallback"]


def test_resume_with_fewer_generations_than_done(suite, tmp_path):
    d = _checkpointed(suite, tmp_path, gens=3)
    fails(invoke("run", "--resume", d, "--gens", 2, "--quiet"), "--gens 2", "3 generations", code=2)


def test_resume_notices_changed_data(suite, tmp_path):
    d = _checkpointed(suite, tmp_path)
    write(suite / "zc_a.json", {"x": toy(), "y": toy(shift=2.0)})  # same names and sizes, other values
    fails(invoke("run", "--resume", d, "--gens", 3, "--quiet"), "contents changed", "train_data_sha256", code=2)


def test_a_second_run_on_a_locked_checkpoint_folder(tmp_path):
    with DirLock(tmp_path):
        with pytest.raises(LockError, match=f"in use by another run \\(pid {os.getpid()} on host"):
            DirLock(tmp_path).acquire()
    assert not (tmp_path / "checkpoint.lock").exists()  # released


def test_cli_run_on_a_locked_checkpoint_folder(suite, tmp_path):
    d = tmp_path / "ck"
    with DirLock(d):
        fails(invoke("run", "--data", suite, "--pop", 20, "--gens", 1, "--checkpoint", d, "--quiet"),
              str(d / "checkpoint.lock"), "in use by another run", code=2)


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    import subprocess

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that is no longer running
    (tmp_path / "checkpoint.lock").write_text(json.dumps({"pid": p.pid, "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match=f"took over the stale lock .* of pid {p.pid}"):
        lock = DirLock(tmp_path).acquire()
    assert json.loads((tmp_path / "checkpoint.lock").read_text())["pid"] == os.getpid()
    lock.release()


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize("expr", ["(" * 250 + "nwot" + ")" * 250, " + ".join(["nwot"] * 500),
                                  "(nwot + " * 300 + "jacov" + ")" * 300, "log(" * 260 + "nwot" + ")" * 260])
def test_deep_and_long_formulas_evaluate(suite, expr):
    r = invoke("eval", "--data", suite, "--tasks", "a/x", "--expr", expr, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["tasks"]["a/x"]["kendall"] is not None


@pytest.mark.parametrize("expr, words", [("(" * 600 + "nwot" + ")" * 600, ["more than 500 levels"]),
                                         (" + ".join(["nwot"] * 1200), ["1199 levels deep", "at most 1000"])])
def test_too_deep_formula_is_a_parse_error(suite, expr, words):
    fails(invoke("eval", "--data", suite, "--expr", expr), *words, code=2)


def test_raw_kendall_equals_scipy_on_every_suite_zero_task(suite_zero):
    """``tensorgp eval --preprocess raw`` path (float64 batch, engine evaluation, rank statistics)
    against scipy on the file's values, every present proxy of every task; failed values rank last."""
    from scipy.stats import kendalltau

    from tensorgp.engine.evaluate import evaluate
    from tensorgp.engine.population import Population
    from tensorgp.engine.primitives import FIRST_VAR
    from tensorgp.nas.objective import correlation

    tasks = D.load(suite_zero)
    assert len(tasks) >= 11
    for t in tasks:
        ps = [p for p in t.proxies if t.present(p)]
        b = D.make_batch([t], ps, "raw", dtype=torch.float64)
        n = len(ps)
        pop = Population(torch.arange(FIRST_VAR, FIRST_VAR + n, dtype=torch.int32)[:, None], torch.zeros(n, 1),
                         torch.ones(n, dtype=torch.int32))
        k = correlation(evaluate(pop, b.X), b, "kendall")[:, 0]
        for j, p in enumerate(ps):
            x = t.column(p).numpy().copy()
            x[~np.isfinite(x)] = -np.inf
            assert float(k[j]) == pytest.approx(kendalltau(x, t.accuracy.numpy()).statistic, abs=1e-6), (t.name, p)
    # the example through the library call behind `tensorgp eval`
    res = evaluate_expression("nwot", [suite_zero / "zc_nasbench201.json"], "nasbench201/cifar100", "raw")
    (t,) = [t for t in tasks if t.name == "nasbench201/cifar100"]
    x = t.column("nwot").numpy().copy()
    x[~np.isfinite(x)] = -np.inf
    assert res["tasks"][t.name]["kendall"] == pytest.approx(kendalltau(x, t.accuracy.numpy()).statistic, abs=1e-6)


# ---------------------------------------------------------------- the report


def test_newline_in_a_task_name_keeps_the_markdown_table(tmp_path):
    from tensorgp.nas import report as R

    md = R.table(["task", "kendall"], [["evil\ntask|x", "0.5"], ["ok", "0.1"]])
    lines = md.splitlines()
    assert len(lines) == 4 and lines[2] == "| evil\\ntask\\|x | 0.5 |"


def test_report_scatter_shows_every_test_task(tmp_path):
    pytest.importorskip("matplotlib")
    from tensorgp.nas import report as R
    from tensorgp.nas.experiment import evolve_proxy

    d = tmp_path / "data"
    d.mkdir()
    write(d / "zc_a.json", {"x": toy()})
    write(d / "zc_t.json", {f"t{i}": toy(shift=i) for i in range(5)})
    res = evolve_proxy(RunSpec(data=[d], train="a/*", test="t/*", config=EvolutionConfig(population=20, generations=1)))
    assert sorted(res["scatter"]) == [f"t/t{i}" for i in range(5)]
    fig = R.figure_scatter(res, tmp_path / "s.png", "all tasks")
    assert fig is not None and fig.stat().st_size > 0


def test_piped_tables_keep_long_task_names_whole(tmp_path):
    import subprocess

    name = "a_rather_long_task_name_that_would_wrap_at_eighty_columns_" + "x" * 40
    f = write(tmp_path / "zc_long.json", {name: toy()})
    r = subprocess.run([sys.executable, "-m", "tensorgp_cli.cli", "eval", "--data", str(f), "--expr", "nwot"],
                       capture_output=True, text=True, timeout=300)  # stdout is a pipe, not a tty
    assert r.returncode == 0, r.stderr
    assert f"long/{name}" in r.stdout


# ----------------------------------------------------------------- review: outputs checked first, values refused


def test_outputs_are_checked_before_the_work_and_bad_values_are_refused(tmp_path, monkeypatch):
    from tensorgp.nas.proxy import Proxy
    from tensorgp_cli.cli import app
    from test_protocols import write_suite

    data = write_suite(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = CliRunner()
    Proxy(["p0"], ["p0"]).save(tmp_path / "p.json")
    (tmp_path / "d.csv").mkdir()
    res = r.invoke(app, ["score", "--from", str(tmp_path / "p.json"), "--data", str(data), "--out", str(tmp_path / "d.csv")])
    assert res.exit_code == 2 and "is a folder" in res.output
    from test_search import grid_task, write_suite_zero

    grid = write_suite_zero(tmp_path / "zc_toy.json", [grid_task("toy/a")])
    base = ["search", "--data", str(grid), "--task", "toy/a", "--expr", "good", "--budget", "20", "--runs", "2"]
    ok = r.invoke(app, [*base, "--out", str(tmp_path / "s.json")])
    assert ok.exit_code == 0 and json.loads((tmp_path / "s.json").read_text())["task"] == "toy/a", ok.output
    for bad in (["--population", "0"], ["--sample-size", "30", "--population", "10"]):
        res = r.invoke(app, [*base, *bad])
        assert res.exit_code == 2 and "sample size <= population" in " ".join(res.output.split())
    res = r.invoke(app, ["eval", "--data", str(data), "--expr", "p0 + 1e400"])
    assert res.exit_code == 2 and "beyond float32" in res.output
    res = r.invoke(app, ["eval", "--data", str(data), "--from", str(tmp_path / "p.json"), "--preprocess", "raw"])
    assert res.exit_code == 2 and "--preprocess is for --expr" in " ".join(res.output.split())
    res = r.invoke(app, ["run", "--data", str(data), "--train", "nope/*", "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and not (tmp_path / "never").exists()
