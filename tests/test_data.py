"""Tests for tensorgp.nas.data: layouts, names, malformed input, selection, preprocessing, batching, real data."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from tensorgp.nas import data as D
from tensorgp.nas.data import DataError, DataWarning, load, select

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("TENSORGP_DATA", REPO.parent / "shared" / "data"))
SUITE = DATA_ROOT / "suite-zero" if (DATA_ROOT / "suite-zero").is_dir() else DATA_ROOT
NB201_FINAL = DATA_ROOT / "nb201-final" / "zc_nasbench201.json"


def write(tmp_path: Path, name: str, obj, raw: str | None = None) -> Path:
    p = tmp_path / name
    p.write_text(raw if raw is not None else json.dumps(obj))
    return p


def rec(acc, score_dict=True, **proxies):
    """An architecture record; proxies as {"score", "time"} dicts or bare numbers."""
    r = {"idx": "0", "arch": "a"}
    for k, v in proxies.items():
        r[k] = {"score": v, "time": 0.1} if score_dict else v
    r["val_accuracy"] = acc
    return r


def task_obj(n=4, score_dict=True, offset=0.0):
    return {f"({i},)": rec(50.0 + i, score_dict, synflow=float(i) + offset, nwot=10.0 - i) for i in range(n)}


# ----------------------------------------------------------------------------- layouts and names


def test_top_level_tasks_score_dicts(tmp_path):
    p = write(tmp_path, "zc_nasbench201.json", {"cifar10": task_obj(3), "cifar100": task_obj(5)})
    tasks = D.load([p])
    assert [t.name for t in tasks] == ["nasbench201/cifar10", "nasbench201/cifar100"]
    t = tasks[0]
    assert t.source == str(p)
    assert t.keys == ["(0,)", "(1,)", "(2,)"]
    assert t.proxies == ["nwot", "synflow"]
    assert t.features.dtype == torch.float64 and t.features.shape == (3, 2)  # float64 until preprocessing
    assert torch.equal(t.column("synflow"), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(t.column("nwot"), torch.tensor([10.0, 9.0, 8.0]))
    assert torch.equal(t.accuracy, torch.tensor([50.0, 51.0, 52.0]))
    assert len(tasks[1]) == 5


def test_bare_numbers(tmp_path):
    p = write(tmp_path, "zc_old.json", {"cifar10": task_obj(3, score_dict=False)})
    (t,) = D.load([p])
    assert t.name == "old/cifar10" and t.proxies == ["nwot", "synflow"]
    assert torch.equal(t.column("synflow"), torch.tensor([0.0, 1.0, 2.0]))


def test_mixed_score_dicts_and_bare_numbers(tmp_path):
    obj = {"c": {"a": rec(1.0, synflow=3.0), "b": rec(2.0, False, synflow=4)}}
    (t,) = D.load([write(tmp_path, "zc_x.json", obj)])
    assert torch.equal(t.column("synflow"), torch.tensor([3.0, 4.0]))


def test_under_space_key_equal_to_stem(tmp_path):
    p = write(tmp_path, "zc_nasbench101.json", {"nasbench101": {"cifar10": task_obj(3)}})
    assert [t.name for t in D.load([p])] == ["nasbench101/cifar10"]


def test_deeper_merged_file(tmp_path):
    obj = {
        "nasbench201": {"cifar10": task_obj(2), "cifar100": task_obj(3)},
        "transbench101_micro": {"jigsaw": task_obj(4)},
        "meta": {"version": 2},  # a dict with neither tasks nor records is ignored
        "note": "bare metadata values are ignored",
    }
    tasks = D.load([write(tmp_path, "zc_merged.json", obj)])
    assert [t.name for t in tasks] == [
        "merged/nasbench201/cifar10", "merged/nasbench201/cifar100", "merged/transbench101_micro/jigsaw",
    ]
    assert [len(t) for t in tasks] == [2, 3, 4]


def test_file_that_is_a_task(tmp_path):
    (t,) = D.load([write(tmp_path, "zc_single.json", task_obj(3))])
    assert t.name == "single" and len(t) == 3


def test_stem_without_zc_prefix(tmp_path):
    (t,) = D.load([write(tmp_path, "scores.json", {"cifar10": task_obj(2)})])
    assert t.name == "scores/cifar10"


def test_proxy_missing_on_some_archs(tmp_path):
    obj = {"c": {"a": rec(1.0, synflow=1.0, nwot=2.0), "b": rec(2.0, synflow=3.0), "c": rec(3.0, synflow=5.0, nwot=6.0)}}
    (t,) = D.load([write(tmp_path, "zc_x.json", obj)])
    nwot = t.column("nwot")
    assert nwot[0] == 2.0 and math.isnan(nwot[1]) and nwot[2] == 6.0
    assert t.present("nwot")  # 2 of 3 finite


def test_proxy_missing_on_whole_task(tmp_path):
    obj = {"a": task_obj(3), "b": {k: rec(r["val_accuracy"], nwot=1.0) for k, r in task_obj(3).items()}}
    a, b = D.load([write(tmp_path, "zc_x.json", obj)])
    assert b.proxies == ["nwot"] and not b.present("synflow")
    assert torch.isnan(b.column("synflow")).all() and b.column("synflow").shape == (3,)
    assert D.common_proxies([a, b]) == ["nwot"]


def test_failed_values_become_nan(tmp_path):
    raw = (
        '{"c": {'
        '"a": {"p": {"score": -100000000.0}, "q": 1, "val_accuracy": 1.0},'
        '"b": {"p": {"score": -Infinity}, "q": 2, "val_accuracy": 2.0},'
        '"c": {"p": {"score": NaN}, "q": 3, "val_accuracy": 3.0},'
        '"d": {"p": {"score": Infinity}, "q": 4, "val_accuracy": 4.0},'
        '"e": {"p": {"score": -9999999.0}, "q": 5, "val_accuracy": 5.0},'
        '"f": {"p": {"score": 1e300}, "q": 6, "val_accuracy": 6.0},'
        '"g": {"p": {"score": null}, "q": NaN, "val_accuracy": 7.0},'
        '"i": {"p": {"time": 1.0}, "q": null, "val_accuracy": 9.0}'
        "}}"
    )
    (t,) = D.load([write(tmp_path, "zc_x.json", None, raw)])
    p, q = t.column("p"), t.column("q")
    assert p[4] == -9999999.0  # above the -1e7 threshold: a real value
    assert p[5] == 1e300  # beyond float32 but a real value: kept (float64 until preprocessing)
    assert torch.isnan(p[[0, 1, 2, 3, 6, 7]]).all()
    assert q[:6].tolist() == [1, 2, 3, 4, 5, 6] and torch.isnan(q[6:]).all()  # NaN/None: failed
    assert not t.present("p") and t.present("q")


def test_non_proxy_keys_ignored(tmp_path):
    r = rec(90.0, synflow=1.0)
    r.update(test_accuracy=89.0, train_accuracy=99.0, train_time=12.0, epochs=200, valid_accuracy=90.0,
             val_loss=0.3, note="text", flags=[1, 2], cfg={"depth": 3})
    (t,) = D.load([write(tmp_path, "zc_x.json", {"c": {"a": r, "b": rec(80.0, synflow=2.0)}})])
    assert t.proxies == ["synflow"]


def test_proxies_sorted_and_union_over_records(tmp_path):
    obj = {"c": {"a": rec(1.0, zeta=1.0, alpha=2.0), "b": rec(2.0, mid=3.0)}}
    (t,) = D.load([write(tmp_path, "zc_x.json", obj)])
    assert t.proxies == ["alpha", "mid", "zeta"]
    assert torch.isnan(t.features[1, [0, 2]]).all() and t.features[1, 1] == 3.0


def test_few_records_without_accuracy_dropped_with_warning(tmp_path):
    obj = task_obj(5)
    del obj["(1,)"]["val_accuracy"]
    obj["junk"] = "not a record"
    with pytest.warns(DataWarning, match=r"zc_x\.json.*x/c.*dropped 2"):
        (t,) = D.load([write(tmp_path, "zc_x.json", {"c": obj})])
    assert t.keys == ["(0,)", "(2,)", "(3,)", "(4,)"]


def test_non_finite_accuracy_dropped_with_warning(tmp_path):
    obj = task_obj(4)
    obj["(2,)"]["val_accuracy"] = None
    obj["(3,)"]["val_accuracy"] = float("nan")
    with pytest.warns(DataWarning, match=r"zc_x\.json.*x/c.*dropped 2.*val_accuracy"):
        (t,) = D.load([write(tmp_path, "zc_x.json", {"c": obj})])
    assert t.keys == ["(0,)", "(1,)"] and torch.equal(t.accuracy, torch.tensor([50.0, 51.0]))
    assert torch.equal(t.column("synflow"), torch.tensor([0.0, 1.0]))  # rows stay aligned


def test_directory_loads_zc_files_sorted(tmp_path):
    write(tmp_path, "zc_b.json", {"t": task_obj(2)})
    write(tmp_path, "zc_a.json", {"t": task_obj(3)})
    write(tmp_path, "other.json", {"t": task_obj(3)})  # not zc_*: ignored
    assert [t.name for t in D.load([tmp_path])] == ["a/t", "b/t"]
    assert [t.name for t in D.load(str(tmp_path))] == ["a/t", "b/t"]  # a single path is accepted
    assert [t.name for t in D.load([tmp_path, tmp_path / "zc_a.json"])] == ["a/t", "b/t"]  # same file once


def test_duplicate_task_names_name_both_files(tmp_path):
    d1, d2 = tmp_path / "one", tmp_path / "two"
    d1.mkdir(), d2.mkdir()
    p1 = write(d1, "zc_nasbench201.json", {"cifar10": task_obj(2)})
    p2 = write(d2, "zc_nasbench201.json", {"nasbench201": {"cifar10": task_obj(2)}})
    with pytest.raises(DataError, match="nasbench201/cifar10") as e:
        D.load([p1, p2])
    assert str(p1) in str(e.value) and str(p2) in str(e.value)


# ----------------------------------------------------------------------------- malformed input


def test_missing_file(tmp_path):
    p = tmp_path / "zc_nope.json"
    with pytest.raises(DataError, match="no such file") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_directory_without_zc_files(tmp_path):
    write(tmp_path, "other.json", {"t": task_obj(2)})
    with pytest.raises(DataError, match="no zc_") as e:
        D.load([tmp_path])
    assert str(tmp_path) in str(e.value)


def test_no_paths():
    with pytest.raises(DataError, match="no data paths"):
        D.load([])


def test_not_json_names_file_and_line(tmp_path):
    p = write(tmp_path, "zc_bad.json", None, '{"c": {\n"a": {"val_accuracy": 1.0,,}\n}}')
    with pytest.raises(DataError, match=r"not valid JSON \(line 2") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_not_utf8(tmp_path):
    p = tmp_path / "zc_bin.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not valid JSON") as e:
        D.load([p])
    assert str(p) in str(e.value)


@pytest.mark.parametrize("top", [[1, 2], "text", 3, None])
def test_top_level_not_object(tmp_path, top):
    p = write(tmp_path, "zc_list.json", top)
    with pytest.raises(DataError, match="expected an object") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_empty_task(tmp_path):
    p = write(tmp_path, "zc_e.json", {"cifar10": task_obj(2), "cifar100": {}})
    with pytest.raises(DataError, match="cifar100 is empty") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_empty_file_object(tmp_path):
    p = write(tmp_path, "zc_e.json", {})
    with pytest.raises(DataError, match="empty") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_no_task_in_file(tmp_path):
    p = write(tmp_path, "zc_meta.json", {"version": 1, "info": {"author": "x"}})
    with pytest.raises(DataError, match="no task with val_accuracy found in") as e:
        D.load([p])
    assert str(p) in str(e.value)


@pytest.mark.parametrize("score_dict", [True, False])
def test_task_mostly_without_accuracy(tmp_path, score_dict):
    obj = task_obj(4, score_dict)
    for k in list(obj)[:3]:
        del obj[k]["val_accuracy"]
    p = write(tmp_path, "zc_x.json", {"cifar10": obj})
    with pytest.raises(DataError, match=r"task cifar10: 3 of 4 architecture records lack val_accuracy") as e:
        D.load([p])
    assert str(p) in str(e.value)


def test_all_accuracies_non_finite(tmp_path):
    obj = task_obj(2)
    for r in obj.values():
        r["val_accuracy"] = "n/a"
    p = write(tmp_path, "zc_x.json", {"c": obj})
    with pytest.raises(DataError, match=r"x/c: no architecture has a finite") as e:
        D.load([p])
    assert str(p) in str(e.value)


# ----------------------------------------------------------------------------- Task methods


def test_subset_indices_and_mask(tmp_path):
    (t,) = D.load([write(tmp_path, "zc_x.json", {"c": task_obj(5)})])
    s = t.subset(torch.tensor([4, 1]))
    assert s.keys == ["(4,)", "(1,)"] and s.name == t.name and s.proxies == t.proxies
    assert torch.equal(s.accuracy, torch.tensor([54.0, 51.0]))
    assert torch.equal(s.features, t.features[[4, 1]])
    m = t.subset(torch.tensor([True, False, True, False, False]))
    assert m.keys == ["(0,)", "(2,)"]
    with pytest.raises(DataError, match="out of range"):
        t.subset(torch.tensor([5]))
    with pytest.raises(DataError, match="mask"):
        t.subset(torch.tensor([True]))


def test_present_threshold_is_strictly_more_than_half(tmp_path):
    obj = {"c": {str(i): rec(float(i), p=(1.0 if i < 2 else -1e8)) for i in range(4)}}
    (t,) = D.load([write(tmp_path, "zc_x.json", obj)])
    assert not t.present("p")  # exactly half finite
    assert not t.present("unknown")


# ----------------------------------------------------------------------------- selection


@pytest.fixture
def four_tasks(tmp_path):
    write(tmp_path, "zc_nasbench201.json", {"cifar10": task_obj(2), "cifar100": task_obj(3), "ImageNet16-120": task_obj(2)})
    write(tmp_path, "zc_nasbench301.json", {"cifar10": task_obj(4)})
    return D.load([tmp_path])


def test_select_globs_keep_task_order(four_tasks):
    names = lambda ts: [t.name for t in ts]  # noqa: E731
    assert names(D.select(four_tasks, "nasbench301/*,nasbench201/cifar10")) == ["nasbench201/cifar10", "nasbench301/cifar10"]
    assert names(D.select(four_tasks, ["*/cifar10", " nasbench201/cifar1?? "])) == [
        "nasbench201/cifar10", "nasbench201/cifar100", "nasbench301/cifar10",
    ]
    assert names(D.select(four_tasks, "*")) == names(four_tasks)
    assert names(D.select(four_tasks, "*/cifar10,nasbench*/cifar10")) == ["nasbench201/cifar10", "nasbench301/cifar10"]


def test_select_is_case_sensitive_and_unknown_glob_lists_names(four_tasks):
    with pytest.raises(DataError, match=r"'nasbench201/imagenet\*' matches no task") as e:
        D.select(four_tasks, "nasbench201/cifar10,nasbench201/imagenet*")
    assert "nasbench201/ImageNet16-120" in str(e.value) and "nasbench301/cifar10" in str(e.value)
    with pytest.raises(DataError, match="empty task selection"):
        D.select(four_tasks, " , ")


def test_common_proxies_candidates(tmp_path):
    obj = {
        "a": {str(i): rec(float(i), x=1.0, y=2.0, z=3.0) for i in range(3)},
        "b": {str(i): rec(float(i), x=1.0, y=-1e8, z=3.0) for i in range(3)},
        "c": {str(i): rec(float(i), x=1.0, z=3.0) for i in range(3)},
    }
    tasks = D.load([write(tmp_path, "zc_s.json", obj)])
    assert D.common_proxies(tasks) == ["x", "z"]
    assert D.common_proxies(tasks, ["z", "x"]) == ["z", "x"]
    with pytest.raises(DataError, match=r"'y'.*s/b, s/c"):
        D.common_proxies(tasks, ["x", "y"])
    with pytest.raises(DataError, match=r"unknown proxy 'w'.*x, y, z"):
        D.common_proxies(tasks, ["w"])
    with pytest.raises(DataError, match="more than once"):
        D.common_proxies(tasks, ["x", "x"])
    with pytest.raises(DataError, match="no tasks"):
        D.common_proxies([])


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_unknown_mode():
    with pytest.raises(ValueError, match="raw, signed-log, rank, zscore"):
        D.preprocess(torch.zeros(3, 2), "log")


def test_preprocess_raw_identity():
    x = torch.tensor([[1.0, float("nan")], [-2.0, 3.0]])
    assert torch.allclose(D.preprocess(x, "raw"), x, equal_nan=True)


def test_signed_log_values():
    x = torch.tensor([[-(math.e - 1), 0.0, math.e - 1, float("nan")]]).T
    y = D.preprocess(x, "signed-log")[:, 0]
    assert torch.allclose(y[:3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6) and math.isnan(y[3])


def test_rank_ties_constant_and_nan():
    nan = float("nan")
    x = torch.tensor([[3.0, 5.0, nan], [1.0, 5.0, 2.0], [3.0, 5.0, nan], [nan, 5.0, nan], [7.0, 5.0, nan]])
    y = D.preprocess(x, "rank")
    # column 0: finite [3, 1, 3, 7] -> ranks [2.5, 1, 2.5, 4] -> (r-1)/3
    assert torch.allclose(y[[0, 1, 2, 4], 0], torch.tensor([0.5, 0.0, 0.5, 1.0]))
    assert math.isnan(y[3, 0])
    assert torch.equal(y[:, 1], torch.full((5,), 0.5))  # constant column
    assert y[1, 2] == 0.5 and torch.isnan(y[[0, 2, 3, 4], 2]).all()  # single finite value


def test_zscore_constant_column_is_zero():
    x = torch.tensor([[2.0, 1.0], [2.0, float("nan")], [2.0, 3.0]])
    y = D.preprocess(x, "zscore")
    assert torch.equal(y[:, 0], torch.zeros(3))
    assert torch.allclose(y[[0, 2], 1], torch.tensor([-1.0, 1.0])) and math.isnan(y[1, 1])


def test_all_nan_column_and_empty_shapes():
    x = torch.full((4, 1), float("nan"))
    for mode in D.PREPROCESS_MODES:
        assert torch.isnan(D.preprocess(x, mode)).all()
        assert D.preprocess(torch.zeros(3, 0), mode).shape == (3, 0)


_vals = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
    st.just(float("nan")),
    st.sampled_from([0.0, 1.0, -1.0]),  # forces ties
)


@st.composite
def matrices(draw):
    n = draw(st.integers(1, 30))
    m = draw(st.integers(1, 4))
    return torch.tensor(draw(st.lists(st.lists(_vals, min_size=m, max_size=m), min_size=n, max_size=n)), dtype=torch.float32)


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_preprocess_properties(x):
    nan = torch.isnan(x)
    for mode in D.PREPROCESS_MODES:
        y = D.preprocess(x, mode)
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert torch.equal(torch.isnan(y), nan), mode  # NaN stays NaN, nothing else becomes NaN
    r = D.preprocess(x, "rank")
    s = D.preprocess(x, "signed-log")
    z = D.preprocess(x, "zscore")
    for j in range(x.shape[1]):
        f = ~nan[:, j]
        xv, rv, sv, zv = x[f, j], r[f, j], s[f, j], z[f, j]
        if xv.numel() == 0:
            continue
        assert ((rv >= 0) & (rv <= 1)).all()
        # rank: matches scipy average ranks; monotone with the raw order (ties get equal ranks)
        if xv.numel() > 1 and xv.unique().numel() > 1:
            ref = (rankdata(xv.double().numpy(), method="average") - 1) / (xv.numel() - 1)
            assert np.allclose(rv.numpy(), ref, atol=1e-6)
        else:
            assert (rv == 0.5).all()
        dx = xv[:, None] - xv[None, :]
        for out in (rv, sv):
            do = out[:, None] - out[None, :]
            assert (do[dx > 0] >= 0).all() and (do[dx == 0] == 0).all()
        assert (rv[:, None] - rv[None, :])[dx > 0].gt(0).all()  # rank is strictly monotone
        # zscore: mean 0, population std 1 (or all 0 for a constant column)
        if xv.unique().numel() > 1:
            assert abs(float(zv.double().mean())) < 1e-4
            assert abs(float(zv.double().std(unbiased=False)) - 1) < 1e-4
        else:
            assert (zv == 0).all()


def test_preprocess_columns_independent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g) * torch.tensor([1.0, 1e3, 1e-3])
    x[::7, 1] = float("nan")
    for mode in D.PREPROCESS_MODES:
        full = D.preprocess(x, mode)
        for j in range(3):
            assert torch.allclose(full[:, j], D.preprocess(x[:, j : j + 1], mode)[:, 0], equal_nan=True)


# ----------------------------------------------------------------------------- batching


def test_make_batch(four_tasks):
    b = D.make_batch(four_tasks, ["synflow", "nwot"], "rank")
    assert b.names == [t.name for t in four_tasks] and b.proxies == ["synflow", "nwot"] and b.preprocess == "rank"
    assert b.X.shape == (11, 2) and b.X.dtype == torch.float32 and b.accuracy.shape == (11,)
    assert b.offsets.dtype == torch.int64 and b.offsets.tolist() == [0, 2, 5, 7, 11]
    assert b.task_index().tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3]
    for t, task in enumerate(four_tasks):
        sl = b.task_slice(t)
        assert torch.equal(b.accuracy[sl], task.accuracy)
        ref = D.preprocess(task.features[:, [task.proxies.index("synflow"), task.proxies.index("nwot")]], "rank")
        assert torch.equal(b.X[sl], ref)  # preprocessed per task, not over the concatenation
    raw = D.make_batch(four_tasks, ["nwot"])
    assert raw.preprocess == "raw" and torch.equal(raw.X[raw.task_slice(1), 0], four_tasks[1].column("nwot"))


def test_make_batch_errors(four_tasks):
    with pytest.raises(DataError, match=r"task nasbench201/cifar10: no column.*'zen'"):
        D.make_batch(four_tasks, ["nwot", "zen"])
    with pytest.raises(DataError, match="duplicate"):
        D.make_batch(four_tasks, ["nwot", "nwot"])
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        D.make_batch(four_tasks, ["nwot"], "nope")
    with pytest.raises(DataError, match="no tasks"):
        D.make_batch([], ["nwot"])


def test_find_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TENSORGP_DATA", str(tmp_path))
    assert D.find_data_dir() == tmp_path
    (tmp_path / "suite-zero").mkdir()
    assert D.find_data_dir() == tmp_path / "suite-zero"  # the data root also works
    write(tmp_path, "zc_a.json", {"t": task_obj(2)})
    assert D.find_data_dir() == tmp_path  # a directory holding zc files is used as is
    monkeypatch.delenv("TENSORGP_DATA")
    assert D.find_data_dir() == REPO.parent / "shared" / "data" / "suite-zero"


# ----------------------------------------------------------------------------- real data


TNB_TASKS = ["class_scene", "class_object", "autoencoder", "normal", "jigsaw", "room_layout", "segmentsemantic"]
SUITE_NAMES = [
    "nasbench201/cifar10", "nasbench201/cifar100", "nasbench201/ImageNet16-120", "nasbench301/cifar10",
    *(f"transbench101_macro/{t}" for t in TNB_TASKS),
    *(f"transbench101_micro/{t}" for t in TNB_TASKS),
]
SUITE_SIZES = [724, 725, 724, 725] + [662, 662] + [725] * 5 + [711] * 7
MICRO = slice(11, 18)
PROXIES_12 = ["epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip", "synflow"]


@pytest.fixture(scope="module")
def suite():
    if not any(SUITE.glob("zc_*.json")):
        pytest.skip(f"REAL DATA ABSENT: no zc_*.json in {SUITE} (set TENSORGP_DATA); real-data tests skipped")
    return D.load([SUITE])


def test_real_suite_zero_tasks(suite):
    assert [t.name for t in suite] == SUITE_NAMES
    assert [len(t) for t in suite] == SUITE_SIZES
    for t in suite[:4]:
        assert t.proxies == PROXIES_12
    for t in suite[4:]:
        assert t.proxies == [p for p in PROXIES_12 if p != "synflow"]
    for t in suite:
        assert torch.isfinite(t.accuracy).all()
        assert not torch.isinf(t.features).any() and (t.features[torch.isfinite(t.features)] > -1e7).all()


def test_real_pathologies(suite):
    by = {t.name: t for t in suite}
    assert not by["transbench101_micro/class_scene"].present("epe_nas")
    assert torch.isnan(by["transbench101_micro/class_scene"].column("epe_nas")).all()
    assert by["transbench101_micro/jigsaw"].present("epe_nas")
    # TNB-macro: epe_nas failed (-1e8) everywhere but on part of jigsaw
    for name in SUITE_NAMES[4:11]:
        assert by[name].present("epe_nas") == name.endswith("jigsaw")
    assert int(torch.isfinite(by["transbench101_macro/jigsaw"].column("epe_nas")).sum()) == 406
    assert int(torch.isnan(by["nasbench201/cifar10"].column("nwot")).sum()) == 1
    assert D.common_proxies(suite) == ["fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip"]
    with pytest.raises(DataError, match="'synflow'.*transbench101_micro/class_scene"):
        D.common_proxies(suite, ["nwot", "synflow"])
    b = D.make_batch(suite, D.common_proxies(suite), "rank")
    assert b.X.shape == (sum(SUITE_SIZES), 10) and b.offsets[-1] == sum(SUITE_SIZES)


def test_real_select(suite):
    assert [t.name for t in D.select(suite, "transbench101_micro/*")] == SUITE_NAMES[MICRO]
    assert [t.name for t in D.select(suite, "transbench101_macro/*")] == SUITE_NAMES[4:11]
    assert [t.name for t in D.select(suite, "*/cifar10")] == ["nasbench201/cifar10", "nasbench301/cifar10"]


def test_real_nb201_final_loads_fast():
    if not NB201_FINAL.exists():
        pytest.skip(f"REAL DATA ABSENT: {NB201_FINAL} missing (set TENSORGP_DATA); real-data test skipped")
    t0 = time.perf_counter()
    tasks = D.load([NB201_FINAL])
    elapsed = time.perf_counter() - t0
    assert [t.name for t in tasks] == ["nasbench201/cifar10", "nasbench201/ImageNet16-120"]
    assert [len(t) for t in tasks] == [9445, 9445]
    assert tasks[0].proxies == sorted(PROXIES_12 + ["zen"])
    # a guard against a pathological (e.g. quadratic) loader, not a speed test: about 2 s idle here
    assert elapsed < 30.0, f"loading {NB201_FINAL} took {elapsed:.2f}s"
    if any(SUITE.glob("zc_*.json")):
        with pytest.raises(DataError, match="duplicate task nasbench201/cifar10"):
            D.load([SUITE, NB201_FINAL])


def test_integers_beyond_float64_are_failed_values_not_a_crash(tmp_path):
    recs = {f"a{i}": {"p": 10 ** 400 if i == 0 else i, "q": {"score": i}, "val_accuracy": float(i)} for i in range(6)}
    f = tmp_path / "zc_big.json"
    f.write_text(json.dumps({"t": recs}))
    t = load(f)[0]
    assert math.isnan(float(t.features[0, t.proxies.index("p")])) and float(t.features[1, 0]) == 1.0


def test_spaces_of_a_merged_file_are_its_second_level_keys(tmp_path):
    from tensorgp.nas.splits import spaces

    task = {f"a{i}": {"p": float(i), "val_accuracy": float(i)} for i in range(6)}
    f = tmp_path / "zc_merged.json"
    f.write_text(json.dumps({"nb201": {"cifar10": task}, "nb301": {"cifar10": task}}))
    assert spaces(load(f)) == ["merged/nb201", "merged/nb301"]


def test_a_task_name_with_glob_characters_selects_itself(tmp_path):
    task = {f"a{i}": {"p": float(i), "val_accuracy": float(i)} for i in range(6)}
    f = tmp_path / "zc_s.json"
    f.write_text(json.dumps({"cifar[10]": task, "cifar1": task}))
    tasks = load(f)
    assert [t.name for t in select(tasks, "s/cifar[10]")] == ["s/cifar[10]"]
    assert [t.name for t in select(tasks, "s/cifar[1]")] == ["s/cifar1"]  # a glob stays a glob
