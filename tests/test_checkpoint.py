"""Checkpoint/resume: bit-identical continuation, atomic files, resume precedence, and the
``tensorgp run`` kill tests (SIGINT: graceful; SIGKILL: the last checkpoint is intact)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tensorgp.runtime import checkpoint as ck
from tensorgp.runtime.distributed import Checkpointer, Islands, LoopInfo, World, run_loop
from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.nas.experiment import RunSpec
from tensorgp.nas.objective import RankObjective
from tensorgp.engine.primitives import PrimitiveSet
from conftest import data_root
from test_evolve import _toy_batch

REPO = Path(__file__).resolve().parent.parent


def _evolver(gens, runs=1, seed=5):
    pset = PrimitiveSet(("a", "b", "c", "d"), ("add", "sub", "mul", "div", "log"))
    cfg = EvolutionConfig(population=60, generations=gens, runs=runs, seed=seed, max_depth=6, max_len=32,
                          init_depth=(1, 4))
    return Evolver(cfg, pset, RankObjective(_toy_batch()), "cpu", count_rows=360)


def _spec(cfg):
    return RunSpec(data=["toy.json"], train="t*", config=cfg)


def _same_state(a, b):
    assert a.generation == b.generation and a.stale == b.stale
    for x, y in ((a.pop.ops, b.pop.ops), (a.pop.consts, b.pop.consts), (a.pop.length, b.pop.length),
                 (a.hof.pop.ops, b.hof.pop.ops), (a.hof.pop.consts, b.hof.pop.consts)):
        assert torch.equal(x, y)
    assert torch.equal(a.fitness.nan_to_num(-9), b.fitness.nan_to_num(-9))
    assert torch.equal(a.hof.fitness, b.hof.fitness)
    assert [h.best for h in a.history] == [h.best for h in b.history]


@pytest.mark.parametrize("islands", [None, Islands(migrate_every=2, migrants=3)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, islands):
    runs = 3 if islands else 1
    full = _evolver(9, runs)
    run_loop(full, islands=islands)
    part = _evolver(9, runs)
    part.config.generations = 4  # stop early, as an interrupted run would
    saver = Checkpointer(tmp_path, 2, _spec(part.config), World(), islands)
    run_loop(part, islands=islands, saver=saver)
    assert ck.load(tmp_path).generation == 4
    # a fresh evolver (other seed: everything must come from the checkpoint) continues to 9
    resumed = _evolver(9, runs, seed=999)
    c = ck.load(tmp_path)
    resumed.restore(c.state)
    info = run_loop(resumed, islands=islands, info=LoopInfo(migrations=int(c.progress["migrations"])))
    _same_state(full.state, resumed.state)
    if islands:
        assert info.migrations == 4  # generations 2, 4, 6, 8
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())


def test_state_round_trip_and_prev_file(tmp_path):
    ev = _evolver(3)
    ev.run()
    spec = _spec(ev.config)
    ck.save(tmp_path, spec, ev.state, rng_state=ev.generator.get_state(), every=1, progress={"elapsed_s": 1.5})
    ev.step()
    ck.save(tmp_path, spec, ev.state, rng_state=ev.generator.get_state(), every=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
    c = ck.load(tmp_path, spec_type=RunSpec)
    _same_state(c.state, ev.state)
    assert c.spec.config == ev.config and c.spec.train == "t*" and c.run["every"] == 1
    assert Path(c.spec.data[0]).is_absolute()
    assert ck.generations(tmp_path) == {3: tmp_path / "checkpoint.prev.pt", 4: tmp_path / "checkpoint.pt"}
    # a torn newest file (impossible through save, but disks fail) falls back to the previous one
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    assert ck.load(tmp_path).generation == 3
    assert ck.load(tmp_path / "checkpoint.prev.pt").progress["elapsed_s"] == 1.5
    with pytest.raises(ck.CheckpointError, match="cannot read"):
        ck.load(tmp_path / "checkpoint.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ck.CheckpointError, match="no checkpoint"):
        ck.load(empty)


def test_a_failed_write_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    ev = _evolver(2)
    ev.run()
    spec = _spec(ev.config)
    ck.save(tmp_path, spec, ev.state)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    ev.step()
    with pytest.raises(OSError):
        ck.save(tmp_path, spec, ev.state)
    monkeypatch.undo()
    assert ck.load(tmp_path).generation == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_resume_precedence():
    cfg = EvolutionConfig(population=64, generations=10, seed=3)
    saved = ck.run_settings(RunSpec(data=["/d/a.json"], train="nb/*", config=cfg), None, 2)
    given_cfg = EvolutionConfig(population=100, generations=20, seed=0)
    given = ck.run_settings(RunSpec(data=[], train="*", config=given_cfg, backend="torch"), None, 10)
    # nothing explicit: the checkpoint wins everywhere
    m = ck.merge_resume(saved, given, set())
    spec = ck.spec_from_dict(m["spec"], RunSpec)
    assert spec.config.population == 64 and spec.train == "nb/*" and spec.data == ["/d/a.json"] and m["every"] == 2
    # --gens, --backend, --every may change
    m = ck.merge_resume(saved, given, {"gens", "backend", "every", "quiet", "out_dir"})
    spec = ck.spec_from_dict(m["spec"], RunSpec)
    assert spec.config.generations == 20 and spec.backend == "torch" and m["every"] == 10
    assert spec.config.population == 64
    # a contradicting option is an error that names it and the saved value
    with pytest.raises(ck.CheckpointError, match=r"--pop 100 \(checkpoint: 64\).*--train \* \(checkpoint: nb/\*\)"):
        ck.merge_resume(saved, given, {"pop", "train", "gens"})
    # an explicit option equal to the saved value is fine
    same = ck.run_settings(RunSpec(data=["/d/a.json"], train="nb/*", config=EvolutionConfig(population=64)), None, 2)
    assert ck.merge_resume(saved, same, {"pop", "train", "data"})["spec"]["config"]["population"] == 64
    # island options on a run without islands
    with pytest.raises(ck.CheckpointError, match="--migrants"):
        ck.merge_resume(saved, given, {"migrants"})
    # an option of unknown meaning is an error only when it changes something no known option sets
    assert ck.merge_resume(saved, given, {"some_new_flag"})["spec"]["config"]["population"] == 64
    other = ck.run_settings(RunSpec(data=[], train="*", config=EvolutionConfig(const_prob=0.2)), None, 10)
    with pytest.raises(ck.CheckpointError, match=r"--some-new-flag .*const_prob 0.2 vs 0.05"):
        ck.merge_resume(saved, other, {"some_new_flag"})


# ---------------------------------------------------------------- the CLI: kill and resume
G = 12


def _cli(*args):
    return [sys.executable, "-m", "tensorgp_cli.cli", "run", *map(str, args)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _base(suite_zero):
    return ["--data", suite_zero / "zc_nasbench201.json", "--train", "nasbench201/*", "--pop", 150,
            "--gens", G, "--seed", 7, "--quiet"]


def _wait_for_generation(proc, d: Path, g: int, timeout=180.0) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before generation {g}: {proc.stderr.read()}")
        try:
            gen = ck.load(d).generation
            if gen >= g:
                return gen
        except ck.CheckpointError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of generation {g} after {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of G generations (its final checkpoint holds the final population)."""
    suite_zero = data_root() / "suite-zero"
    if not (suite_zero / "zc_nasbench201.json").exists():
        pytest.skip(f"REAL DATA ABSENT: {suite_zero / 'zc_nasbench201.json'} missing (set TENSORGP_DATA)")
    d = tmp_path_factory.mktemp("ref")
    r = subprocess.run(_cli(*_base(suite_zero), "--checkpoint", d, "--every", 100), env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads((d / "result.json").read_text()), ck.load(d)


def _assert_matches(ref, d: Path):
    res_ref, ck_ref = ref
    res = json.loads((d / "result.json").read_text())
    assert res["interrupted"] is False and res["generations_run"] == G
    assert res["expression"] == res_ref["expression"] and res["fitness"] == res_ref["fitness"]
    assert res["hall_of_fame"] == res_ref["hall_of_fame"]
    assert [h["best"] for h in res["history"]] == [h["best"] for h in res_ref["history"]]
    _same_state(ck.load(d).state, ck_ref.state)


def _start_checkpointed_run(suite_zero, d: Path, generation: int) -> subprocess.Popen:
    """The reference run from the command line, checkpointing every generation, once it has saved ``generation``."""
    proc = subprocess.Popen(_cli(*_base(suite_zero), "--checkpoint", d, "--every", 1), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_generation(proc, d, generation)
    return proc


def test_sigint_writes_checkpoint_and_partial_result_then_resume_matches(suite_zero, tmp_path, reference):
    d = tmp_path / "run"
    proc = _start_checkpointed_run(suite_zero, d, 2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    part = json.loads((d / "result.json").read_text())
    assert part["interrupted"] is True and 2 <= part["generations_run"] < G
    assert ck.load(d).generation == part["generations_run"]  # the final checkpoint is where it stopped
    # `--resume DIR` alone continues the saved run
    r = subprocess.run(_cli("--resume", d, "--quiet"), env=_env(), cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_matches(reference, d)
    assert json.loads((d / "result.json").read_text())["checkpoint"]["resumed_from"] == part["generations_run"]


def test_sigkill_leaves_a_resumable_checkpoint_and_resume_matches(suite_zero, tmp_path, reference):
    d = tmp_path / "run"
    proc = _start_checkpointed_run(suite_zero, d, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    c = ck.load(d)  # intact: never a torn file
    assert 3 <= c.generation < G
    assert not (d / "result.json").exists()
    # explicit options equal to the saved ones are accepted; contradicting ones are refused
    bad = subprocess.run(_cli("--resume", d, "--pop", 151, "--quiet"), env=_env(), cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 2 and "--pop 151" in bad.stderr
    r = subprocess.run(_cli("--resume", d, "--pop", 150, "--seed", 7, "--quiet"), env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_matches(reference, d)


@pytest.mark.parametrize("islands", [None, Islands(migrate_every=3, migrants=3)])
def test_device_path_blocks_of_sync_every_keep_checkpoints_migrations_and_resume_identical(tmp_path, islands):
    """Blocks of ``sync_every`` generations are cut at migration and checkpoint generations:
    the run, its migrations and its checkpoints are those of single steps, and a resume from
    a checkpoint written inside a K-block run continues bit-identically."""
    runs = 3 if islands else 1

    def make(K, gens=11, seed=5):
        ev = _evolver(gens, runs, seed=seed)
        ev.config.variation, ev.config.sync_every, ev.config.patience = "device", K, 50
        return Evolver(ev.config, ev.pset, ev.fitness_fn, "cpu", count_rows=360)

    single = make(1)
    info1 = run_loop(single, islands=islands, saver=Checkpointer(tmp_path / "one", 4, _spec(single.config), World(), islands))
    full = make(5)
    seen = []
    info5 = run_loop(full, islands=islands, saver=Checkpointer(tmp_path / "five", 4, _spec(full.config), World(), islands),
                     callback=lambda s: seen.append(s.generation))
    assert seen == list(range(12))  # the initial population, then every generation once
    _same_state(single.state, full.state)
    assert (info5.migrations, info5.checkpoints) == (info1.migrations, info1.checkpoints)
    part = make(5, gens=7)  # checkpoints at 4 and (final) 7
    run_loop(part, islands=islands, saver=Checkpointer(tmp_path / "part", 4, _spec(part.config), World(), islands))
    c = ck.load(tmp_path / "part")
    assert c.generation == 7
    resumed = make(5, seed=999)
    resumed.restore(c.state)
    run_loop(resumed, islands=islands, info=LoopInfo(migrations=int(c.progress["migrations"])))
    _same_state(full.state, resumed.state)


def test_a_checkpointed_run_picks_like_a_plain_one_under_a_resampled_objective(tmp_path):
    """space-sample rescores the hall of fame on every space before the pick, with or without --checkpoint."""
    from tensorgp.nas.experiment import evolve_proxy
    from test_protocols import spec_for, write_suite

    data = write_suite(tmp_path)
    spec = spec_for(data, train="*", runs=2, gens=3, seed=3, aggregation="space-sample", select="train")
    plain = evolve_proxy(spec)
    managed = evolve_proxy(spec, checkpoint=tmp_path / "ck", every=1)
    assert managed["program"] == plain["program"] and managed["hall_of_fame"] == plain["hall_of_fame"]


def test_checkpoint_and_resume_folders_are_checked_before_the_run(tmp_path):
    """A folder holding a run's checkpoint is never overwritten by a fresh run; a file is refused as
    --checkpoint or --resume with a message naming the option."""
    from typer.testing import CliRunner

    from tensorgp_cli.cli import app
    from test_protocols import write_suite

    data = write_suite(tmp_path)
    base = ["run", "--data", str(data), "--train", "alpha/*", "--pop", "20", "--gens", "2", "--quiet"]
    d = tmp_path / "ck"
    assert CliRunner().invoke(app, [*base, "--checkpoint", str(d)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    again = CliRunner().invoke(app, [*base, "--checkpoint", str(d)])
    assert again.exit_code == 2 and "holds another run's checkpoint" in " ".join(again.output.split())
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    (tmp_path / "afile").write_text("x")
    bad = CliRunner().invoke(app, [*base, "--checkpoint", str(tmp_path / "afile"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "--checkpoint" in bad.output and "existing file" in bad.output
    f = next(d.glob("checkpoint*.pt"))
    res = CliRunner().invoke(app, [*base, "--resume", str(f)])
    assert res.exit_code == 2 and "give the checkpoint folder" in " ".join(res.output.split())
    ok = CliRunner().invoke(app, [*base[:-3], "--gens", "3", "--quiet", "--resume", str(d)])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("edit, field", [
    (lambda o: o["state"]["history"].__setitem__(0, {"foo": 1}), "state.history"),
    (lambda o: o["state"].__setitem__("history", []), "state.history"),
    (lambda o: o["state"].__setitem__("rng_state", torch.zeros(10, dtype=torch.uint8)), "state.rng_state"),
    (lambda o: o["run"]["spec"]["config"].__setitem__("population", "x"), "run.spec.config"),
    (lambda o: o["run"]["spec"].pop("train"), "run.spec"),
    (lambda o: o["run"].__setitem__("world_size", "x"), "run.world_size"),
])
def test_an_edited_checkpoint_is_refused_naming_the_file_and_the_field(tmp_path, edit, field):
    from tensorgp.nas.experiment import evolve_proxy
    from test_protocols import spec_for, write_suite

    data = write_suite(tmp_path)
    evolve_proxy(spec_for(data, train="alpha/*", runs=1, gens=2), checkpoint=tmp_path / "ck", every=1)
    f = tmp_path / "ck" / ck.file_name(0)
    obj = torch.load(f, weights_only=True)
    edit(obj)
    torch.save(obj, f)
    with pytest.raises(ck.CheckpointError, match=f"{f.name}.*{field.replace('.', '[.]')}"):
        ck.load(f, spec_type=RunSpec)
