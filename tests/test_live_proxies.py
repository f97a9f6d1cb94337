"""Live zero-cost proxies: definitions agree between a plain module and the batched NB201
subject, bad input is refused with a clear message, failures are per proxy and architecture,
out-of-memory splits the pack, NB201 sizes equal the table's."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tensorgp.nas.live_proxies import compute_archs, load_batch, read_arch_file, select_archs
from tensorgp.nas.measures import NAMES, MeasureError, compute, measure
from tensorgp.nas.spaces import NB201, SpaceError, get_space
from tensorgp.nas.spaces.nb201_packed import PackedNB201

TINY = dict(channels=4, cells=1)
ARCHS = [(4, 0, 3, 1, 4, 3), (2, 4, 0, 0, 3, 2), (3, 1, 2, 3, 2, 3)]


def batch(n=8, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % classes


def test_batched_subject_equals_plain_modules():
    sp = NB201(**TINY)
    x, y = batch()
    packed = measure(sp.build_many(ARCHS, seed=3, num_classes=4), x, y, NAMES)
    assert packed.errors == {}
    for k, a in enumerate(ARCHS):
        errs = {}
        one = compute(sp.build(a, seed=3, num_classes=4), x, y, NAMES, errors=errs)
        assert errs == {}
        for n in NAMES:
            if n == "zen":  # Gaussian re-initialisation is seeded per architecture in the batched subject only
                continue
            assert one[n] == pytest.approx(float(packed.values[n][k]), rel=2e-3, abs=1e-4), (a, n)


def test_values_do_not_depend_on_the_pack():
    sp = NB201(**TINY)
    x, y = batch()
    together = compute_archs(sp, ARCHS, x, y, NAMES, pack=3)
    alone = compute_archs(sp, ARCHS, x, y, NAMES, pack=1)
    assert together.failures == [] and alone.failures == []
    torch.testing.assert_close(together.values, alone.values, rtol=2e-3, atol=1e-4)
    assert together.values.shape == (3, len(NAMES))


def test_proxies_differ_between_architectures_and_follow_definitions():
    sp = NB201(**TINY)
    x, y = batch()
    t = compute_archs(sp, ARCHS, x, y, ["params", "synflow", "nwot", "jacov"], pack=3)
    # conv-heavy (3, 1, 2, 3, 2, 3) has more parameters than (4, 0, 3, 1, 4, 3)
    assert t.values[2, 0] > t.values[0, 0]
    assert len(set(t.values[:, 1].tolist())) == 3
    # nwot: log|det| of an N x N kernel whose diagonal is the ReLU unit count
    assert torch.isfinite(t.values[:, 2]).all()
    # jacov: with k = 1e-5 and N eigenvalues summing to N, the score is at most about -N
    assert (t.values[:, 3] < -x.shape[0] + 1e-3).all()


def test_module_without_conv_or_linear_is_refused():
    with pytest.raises(MeasureError, match="no Conv2d or Linear"):
        compute(nn.Sequential(nn.Flatten(), nn.ReLU()), *batch())


@pytest.mark.parametrize("x, msg", [
    (torch.randn(8, 3, 16), "4 dimensions"),
    (torch.ones(8, 3, 16, 16, dtype=torch.int64), "dtype torch.int64"),
    (torch.randn(1, 3, 16, 16), "at least 2"),
])
def test_bad_batch_shape_or_dtype(x, msg):
    with pytest.raises(MeasureError, match=msg):
        compute(NB201(**TINY).build(ARCHS[0]), x, torch.zeros(x.shape[0], dtype=torch.int64))


def test_nan_in_batch_names_the_sample():
    x, y = batch()
    x[5, 0, 1, 1] = float("nan")
    with pytest.raises(MeasureError, match="NaN/inf value.*sample 5"):
        compute(NB201(**TINY).build(ARCHS[0]), x, y)


def test_bad_targets():
    x, _ = batch()
    with pytest.raises(MeasureError, match="7 targets for 8 inputs"):
        compute(NB201(**TINY).build(ARCHS[0]), x, torch.zeros(7, dtype=torch.int64))
    with pytest.raises(MeasureError, match="integer class labels"):
        compute(NB201(**TINY).build(ARCHS[0]), x, torch.zeros(8))


def test_unknown_space_architecture_and_proxy():
    with pytest.raises(SpaceError, match="unknown search space 'nb999'.*nb201"):
        get_space("nb999")
    sp = NB201()
    for key in ["(0, 1, 2)", "(0, 1, 2, 3, 4, 5)", "hello", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"]:
        with pytest.raises(SpaceError, match="nb201"):
            sp.decode(key)
    with pytest.raises(MeasureError, match="unknown proxy 'synflw'"):
        compute(NB201(**TINY).build(ARCHS[0]), *batch(), names="synflw,nwot")


def test_string_form_round_trip():
    sp = NB201()
    for a in [(0, 1, 2, 3, 4, 0), (4, 0, 3, 1, 4, 3)]:
        assert sp.decode(sp.to_string(a)) == a
    # NB201's string lists node 2 <- 0, node 3 <- 0,1, node 4 <- 0,1,2; ours edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4)
    assert sp.to_string((2, 1, 0, 3, 4, 1)) == \
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|"


class _FailsInDouble(PackedNB201):
    """Raises in float64 (synflow) when it holds the architecture ``BAD``."""
    BAD = ARCHS[1]

    def forward_archs(self, x):
        if x.dtype == torch.float64 and self.BAD in self.arch_list:
            raise RuntimeError("boom in double")
        return super().forward_archs(x)


class _Space(NB201):
    def build_many(self, archs, seed=0, num_classes=10):
        return _FailsInDouble([self.decode(a) for a in archs], self.channels, self.cells, num_classes, seed=seed)


def test_a_proxy_failing_on_one_architecture_is_recorded_and_the_rest_computed():
    sp = _Space(**TINY)
    x, y = batch()
    t = compute_archs(sp, ARCHS, x, y, ["synflow", "params", "nwot"], pack=3)
    bad = [(a, p) for a, p, _ in t.failures]
    assert bad == [(sp.encode(ARCHS[1]), "synflow")]
    assert "boom in double" in t.failures[0][2]
    assert math.isnan(t.values[1, 0])
    assert torch.isfinite(t.values[[0, 2], 0]).all() and torch.isfinite(t.values[:, 1:]).all()


class _OOMAbove2(PackedNB201):
    def forward_archs(self, x):
        if self.archs > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward_archs(x)


class _OOMSpace(NB201):
    def build_many(self, archs, seed=0, num_classes=10):
        return _OOMAbove2([self.decode(a) for a in archs], self.channels, self.cells, num_classes, seed=seed)


def test_out_of_memory_splits_the_pack():
    x, y = batch()
    archs = ARCHS + [(0, 0, 0, 0, 0, 0), (2, 2, 2, 2, 2, 2)]
    split = compute_archs(_OOMSpace(**TINY), archs, x, y, ["synflow", "jacov"], pack=5)
    ref = compute_archs(NB201(**TINY), archs, x, y, ["synflow", "jacov"], pack=1)
    assert split.failures == []
    torch.testing.assert_close(split.values, ref.values)


def test_batch_files_and_arch_files(tmp_path):
    x, y = batch()
    np.savez(tmp_path / "b.npz", x=x.numpy(), y=y.numpy())
    xb, yb = load_batch(tmp_path / "b.npz")
    assert torch.equal(xb, x) and torch.equal(yb, y)
    np.save(tmp_path / "x.npy", x.numpy())
    with pytest.raises(MeasureError, match="no labels"):
        load_batch(tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", y.numpy())
    assert torch.equal(load_batch(tmp_path / "x.npy", tmp_path / "y.npy")[1], y)
    bad = x.clone()
    bad[2] = float("nan")
    np.savez(tmp_path / "nan.npz", x=bad.numpy(), y=y.numpy())
    with pytest.raises(MeasureError, match=r"nan.npz.*NaN/inf.*sample 2"):
        load_batch(tmp_path / "nan.npz")
    with pytest.raises(MeasureError, match="does not exist"):
        load_batch(tmp_path / "missing.npz")
    sp = NB201()
    (tmp_path / "a.txt").write_text("# mine\n(0, 1, 2, 3, 4, 0)\n|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|\n")
    assert read_arch_file(sp, tmp_path / "a.txt") == [(0, 1, 2, 3, 4, 0), (2, 1, 0, 3, 4, 1)]
    (tmp_path / "bad.txt").write_text("(0, 1, 2, 3, 4, 0)\n(9, 9)\n")
    with pytest.raises(MeasureError, match="bad.txt, entry 2"):
        read_arch_file(sp, tmp_path / "bad.txt")
    with pytest.raises(MeasureError, match="exactly one"):
        select_archs(sp, tmp_path / "a.txt", sample=3)
    assert len(select_archs(sp, sample=4, seed=1)) == 4 and len(select_archs(sp, all_archs=True)) == 15625


def test_nb201_params_and_flops_equal_the_table(nb201_final):
    """Every architecture of nb201-final: params exactly (millions), flops up to the reference
    counter's constant 1,088 FLOPs on this skeleton (see measures.size.count_flops)."""
    d = json.loads(nb201_final.read_text())["cifar10"]
    keys = list(d)
    sp = NB201()
    with torch.device("meta"):
        m = PackedNB201([sp.decode(k) for k in keys], init=False)
    params = m.param_counts().double() / 1e6
    flops = m.flops((3, 32, 32)) / 1e6
    tp = torch.tensor([d[k]["params"]["score"] for k in keys], dtype=torch.float64)
    tf = torch.tensor([d[k]["flops"]["score"] for k in keys], dtype=torch.float64)
    assert len(keys) == 9445
    assert torch.allclose(params, tp, rtol=0, atol=5e-7)
    assert torch.allclose(flops + 1088e-6, tf, rtol=0, atol=5e-6)
    # index 1 is `none`: of the 125 cells whose output node has only index-1 inputs (a dead
    # output), the table keeps one representative; for any other index it keeps most of them
    for op in range(5):
        same = {sp.encode(a) for a in sp.enumerate().tolist() if a[2] == a[4] == a[5] == op}
        kept = len(same & set(keys))
        assert kept <= 1 if op == 1 else kept >= 90


def test_plain_module_flops_counter_matches_the_batched_one():
    sp = NB201()
    for a in ARCHS[:2]:
        one = compute(sp.build(a), torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64), "flops,params")
        with torch.device("meta"):
            m = PackedNB201([a], init=False)
        assert one["flops"] == pytest.approx(float(m.flops((3, 32, 32))[0]) / 1e6)
        assert one["params"] == pytest.approx(float(m.param_counts()[0]) / 1e6)


# ----------------------------------------------------------------- review: measures


def _batch(n=6, classes=3, hw=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, hw, hw, generator=g), torch.arange(n) % classes


def test_nwot_is_measured_where_the_jacobian_does_not_exist():
    """A cell whose output node has only ``none`` inputs: the output does not depend on the input,
    so jacov is undefined, but nwot (the ReLU codes) is not."""
    sp, (x, y) = NB201(channels=4, cells=1), _batch()
    archs = [(2, 2, 1, 2, 1, 1), (2, 2, 2, 2, 2, 2)]
    alone = compute_archs(sp, archs, x, y, ["nwot"], pack=1)
    both = compute_archs(sp, archs, x, y, ["nwot", "jacov"], pack=2)
    assert torch.equal(both.values[:, 0], alone.values[:, 0]) and torch.isfinite(alone.values).all()
    assert math.isnan(float(both.values[0, 1])) and math.isfinite(float(both.values[1, 1]))
    assert any(k == sp.encode(archs[0]) and n == "jacov" and "does not depend on the input" in why
               for k, n, why in both.failures)


def test_a_module_is_left_as_it_was_found():
    """Per-module train/eval modes, a float64 buffer and frozen weights survive every proxy, the
    frozen weights still get their gradient proxies, and flops moves no BN statistic."""
    x, y = _batch()
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    m.register_buffer("scale64", torch.ones(2, dtype=torch.float64))
    m.train()
    m[1].eval()
    m[0].weight.requires_grad_(False)
    errors: dict = {}
    vals = compute(m, x, y, NAMES, errors=errors)
    assert m.training and not m[1].training and m.scale64.dtype == torch.float64
    assert not m[0].weight.requires_grad and m[5].weight.requires_grad
    assert math.isfinite(vals["flops"]) and math.isfinite(vals["grad_norm"]), errors
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(4, 3))
    assert compute(bn, x, y, ["zen"], seed=1)["zen"] == compute(bn, x, y, ["flops", "zen"], seed=1)["zen"]


def test_labels_in_a_column_or_as_distributions(tmp_path):
    x, y = _batch(4, 4)
    np.savez(tmp_path / "col.npz", x=x.numpy(), y=y.numpy()[:, None])
    assert load_batch(tmp_path / "col.npz")[1].tolist() == y.tolist()
    np.savez(tmp_path / "bad.npz", x=x.numpy(), y=np.stack([y.numpy(), y.numpy()], 1))
    with pytest.raises(MeasureError, match="labels of shape"):
        load_batch(tmp_path / "bad.npz")
    m = NB201(channels=4, cells=1).build((2,) * 6, num_classes=4)
    onehot = torch.nn.functional.one_hot(y, 4).float()
    hard, soft = compute(m, x, y, ["grad_norm", "snip"]), compute(m, x, onehot, ["grad_norm", "snip"])
    assert soft == pytest.approx(hard, rel=1e-5)


@pytest.mark.parametrize("shape, why", [((4, 16, 16, 3), "3"), ((4, 1, 16, 16), "channel"), ((4, 3, 15, 15), "divisible by 4")])
def test_a_batch_the_space_cannot_take_is_refused_before_measuring(shape, why):
    x = torch.randn(*shape)
    with pytest.raises(SpaceError, match=why):
        compute_archs(NB201(channels=4, cells=1), [(2,) * 6], x, torch.arange(4) % 2, ["params", "flops"])


def test_epe_nas_with_many_classes_skips_classes_of_one_sample_as_naslib():
    from tensorgp.nas.measures.jacobian import epe_score

    g = torch.Generator().manual_seed(0)
    jac = torch.randn(2, 8, 12, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4])
    keep = labels < 2
    assert torch.equal(epe_score(jac, labels, 120), epe_score(jac[:, keep], labels[keep], 120))


def test_architecture_strings_need_one_edge_from_each_earlier_node(tmp_path):
    sp = NB201()
    with pytest.raises(SpaceError, match="one edge from each earlier node"):
        sp.decode("|nor_conv_3x3~0|+|none~0|none~0|+|none~0|none~1|none~2|")
    (tmp_path / "one.txt").write_text("[0, 2, 3, 2, 3, 1]")
    assert read_arch_file(sp, tmp_path / "one.txt") == [(0, 2, 3, 2, 3, 1)]


def test_proxies_output_is_checked_before_anything_is_measured(tmp_path):
    from tensorgp.nas.live_proxies import run_proxies

    (tmp_path / "d.json").mkdir()
    with pytest.raises(MeasureError, match="is a folder"):  # before the (missing) batch is even read
        run_proxies("nb201", tmp_path / "d.json", tmp_path / "missing.npz", sample=2)
