import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tensorgp_cli.cli import _expand_multi, app

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, _expand_multi([str(a) for a in args]))


def test_expand_multi_value_options():
    assert _expand_multi(["run", "--data", "a", "b", "--train", "x"]) == ["run", "--data", "a", "--data", "b", "--train", "x"]


def test_run_and_eval_on_suite_zero(suite_zero, tmp_path):
    out = tmp_path / "res"
    r = invoke(["run", "--data", suite_zero / "zc_nasbench201.json", suite_zero / "zc_transbench101_micro.json",
                "--train", "nasbench201/*", "--test", "transbench101_micro/jigsaw,transbench101_micro/normal",
                "--pop", 60, "--gens", 3, "--seed", 1, "--preprocess", "rank", "--out", out, "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    for k in ("expression", "fitness", "preprocess", "seed", "population", "generations", "time_s", "device",
              "backend", "tasks"):
        assert k in res
    assert res["population"] == 60 and res["generations"] == 3 and res["seed"] == 1
    assert set(res["tasks"]) == {"nasbench201/cifar10", "nasbench201/cifar100", "nasbench201/ImageNet16-120",
                                 "transbench101_micro/jigsaw", "transbench101_micro/normal"}
    t = res["tasks"]["transbench101_micro/jigsaw"]
    assert t["split"] == "test" and t["n"] == 711 and -1 <= t["kendall"] <= 1
    assert t["best_single"]["proxy"] in res["proxies"] or t["best_single"]["proxy"] == "epe_nas"
    assert res["tasks"]["nasbench201/cifar10"]["split"] == "train"
    # the training fitness is the mean Kendall of the printed formula on the training tasks
    train = [v["kendall"] for v in res["tasks"].values() if v["split"] == "train"]
    assert abs(sum(train) / len(train) - res["fitness"]) < 1e-5

    e = invoke(["eval", "--data", suite_zero, "--tasks", "nasbench201/*,transbench101_micro/jigsaw",
                "--expr", res["expression"], "--preprocess", "rank", "--json"])
    assert e.exit_code == 0, e.output
    ev = json.loads(e.output)
    for name in ("nasbench201/cifar10", "nasbench201/cifar100", "nasbench201/ImageNet16-120"):
        assert abs(ev["tasks"][name]["kendall"] - res["tasks"][name]["kendall"]) < 1e-6
    assert set(ev) >= {"expression", "tasks", "mean_kendall"}


def test_eval_reports_missing_proxy_as_error(suite_zero):
    e = invoke(["eval", "--data", suite_zero, "--tasks", "transbench101_micro/class_scene,transbench101_micro/jigsaw",
                "--expr", "(epe_nas + nwot)", "--json"])
    assert e.exit_code == 0, e.output
    ev = json.loads(e.output)
    assert "error" in ev["tasks"]["transbench101_micro/class_scene"]
    assert "epe_nas" in ev["tasks"]["transbench101_micro/class_scene"]["error"]
    assert "kendall" in ev["tasks"]["transbench101_micro/jigsaw"]
    assert ev["mean_kendall"] == pytest.approx(ev["tasks"]["transbench101_micro/jigsaw"]["kendall"])


def test_eval_single_proxy_matches_scipy(suite_zero):
    import numpy as np
    from scipy.stats import kendalltau

    from tensorgp.nas.data import load, select
    e = invoke(["eval", "--data", suite_zero, "--tasks", "nasbench201/cifar10", "--expr", "synflow",
                "--preprocess", "raw", "--json"])
    ev = json.loads(e.output)
    t = select(load([suite_zero]), "nasbench201/cifar10")[0]
    x = t.column("synflow").numpy().astype(np.float64)
    x = np.where(np.isfinite(x), x, -np.inf)
    want = kendalltau(x, t.accuracy.numpy(), variant="b").statistic
    assert ev["tasks"]["nasbench201/cifar10"]["kendall"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("args, msg", [
    (["eval", "--tasks", "nope/*", "--expr", "nwot"], "nope"),
    (["eval", "--tasks", "nasbench201/*", "--expr", "nwot +"], "end of formula"),
    (["eval", "--tasks", "nasbench201/*", "--expr", "bogus_proxy"], "bogus_proxy"),
    (["run", "--train", "nasbench201/*", "--proxies", "nwot,zzz", "--gens", "1", "--pop", "10"], "zzz"),
    (["run", "--train", "nasbench201/*", "--preprocess", "weird", "--gens", "1", "--pop", "10"], "weird"),
])
def test_bad_input_gives_clear_error(suite_zero, args, msg):
    r = invoke(args[:1] + ["--data", suite_zero] + args[1:])
    assert r.exit_code == 2
    assert msg in r.output


def test_missing_data_file_named(tmp_path):
    r = invoke(["eval", "--data", tmp_path / "zc_missing.json", "--expr", "nwot"])
    assert r.exit_code == 2 and "zc_missing.json" in r.output


def test_installed_command_runs():
    r = subprocess.run([sys.executable, "-c", "from tensorgp_cli.cli import main; main()", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "run" in r.stdout and "eval" in r.stdout
