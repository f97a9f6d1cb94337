"""Rank-correlation fitness: Kendall tau-b and Spearman rho of each individual on each task.

Layout: ``pred: float[P, N]`` holds the predictions of P individuals on N rows, which are the
rows of all T tasks concatenated; task t is the segment ``offsets[t]:offsets[t+1]`` of
``target: float32[N]``. Scores are ``float32[P, T]``.

Semantics (equal to ``scipy.stats.kendalltau(variant="b")`` / ``scipy.stats.spearmanr``):

* a non-finite prediction (NaN, +-inf) ranks below every finite one, tied with the other
  non-finite ones, so an architecture whose formula fails counts as the worst;
* an undefined correlation (constant predictions or target, a task with < 2 rows) is 0.

The target is fixed during a run, so everything that depends on it alone (the sort of each
task by target, its ranks and tie counts) is computed once by ``prepare_target`` (cached).

Kendall follows Knight's O(n log n) algorithm. With rows in target order, a stable sort by
prediction leaves, inside each prediction tie, the rows in target order; then the discordant
pairs are exactly the strict inversions of the sequence ``s`` of dense target ranks read in
prediction order (equal-prediction pairs are never inverted, equal-target pairs have equal s).
Backends:

* ``numba`` (CPU): one task of one individual per parallel iteration; an insertion-sorted,
  bottom-up merge sort of (prediction, row) counts the inversions; integer tie/rank sums.
* ``torch`` (any device, batched over P and T): one stable sort, then the inversions of ``s``
  by a wavelet-matrix pass per bit of s (from the top bit, stably partition by the bit; the
  pairs "1 before 0" of one pass are the inversions decided at that bit, plus pairs from
  different higher-bit groups, whose count depends only on the multiset of s, which is the
  same for every individual, so it is removed by running the target's own sorted sequence
  through the same passes). Each pass is a cumsum and a scatter over [P, T, W] in int16.
``auto`` picks numba for CPU tensors when numba imports, else torch.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

try:  # numba is optional: without it every call takes the torch path
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False

AGGREGATIONS = ("mean", "min", "mean-std")
BACKENDS = ("auto", "numba", "torch")


# ----------------------------------------------------------------------------------------
# Target preprocessing (once per target)


@dataclass(frozen=True)
class RankTarget:
    """Everything about a target that the correlations need, per task, in target order.

    All arrays are numpy, on the CPU: ``perm: int64[N]`` global row of the k-th row of each
    segment in ascending target order; ``trank: int32[N]`` its dense target rank in the task
    (0, 1, ...); ``ct2: int64[N]`` twice its centred average target rank (2 r - (n + 1), an
    integer); ``lengths, ytie, st4: int64[T]`` rows, target-tied pairs and sum(ct2**2).
    """

    offsets: np.ndarray
    lengths: np.ndarray
    perm: np.ndarray
    trank: np.ndarray
    ct2: np.ndarray
    ytie: np.ndarray
    st4: np.ndarray
    _device_tables: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_tasks(self) -> int:
        return len(self.lengths)

    def tables(self, device: torch.device) -> "_TorchTables":
        key = str(device)
        if key not in self._device_tables:
            self._device_tables[key] = _TorchTables.build(self, device)
        return self._device_tables[key]


def _build_rank_target(y: np.ndarray, off: np.ndarray) -> RankTarget:
    T = len(off) - 1
    lengths = np.diff(off)
    perm = np.empty(len(y), np.int64)
    trank = np.empty(len(y), np.int32)
    ct2 = np.empty(len(y), np.int64)
    ytie = np.zeros(T, np.int64)
    st4 = np.zeros(T, np.int64)
    for t in range(T):  # T is small (tasks, not individuals)
        a, b = int(off[t]), int(off[t + 1])
        n = b - a
        if n == 0:
            continue
        order = np.argsort(y[a:b], kind="stable")
        ys = y[a:b][order]
        new = np.r_[True, ys[1:] != ys[:-1]]
        dense = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        sizes = np.diff(np.r_[starts, n])
        # average rank (1-based) of a tie group = start + (size + 1) / 2; doubled and centred
        ct2_group = 2 * starts + sizes + 1 - (n + 1)
        perm[a:b] = a + order
        trank[a:b] = dense
        ct2[a:b] = ct2_group[dense]
        ytie[t] = int((sizes * (sizes - 1) // 2).sum())
        st4[t] = int((ct2[a:b] ** 2).sum())
    return RankTarget(off.astype(np.int64), lengths.astype(np.int64), perm, trank, ct2, ytie, st4)


_CACHE: OrderedDict[bytes, RankTarget] = OrderedDict()
_CACHE_SIZE = 8


def prepare_target(target: torch.Tensor, offsets: torch.Tensor) -> RankTarget:
    """The ``RankTarget`` of ``target: float32[N]`` split at ``offsets: int64[T+1]``.

    Cached on the bytes of both (hashing ~N floats costs microseconds; the sorts it saves do
    not), so passing the same target on every generation reuses the work.
    """
    y = np.ascontiguousarray(torch.as_tensor(target).detach().cpu().numpy())
    off = np.ascontiguousarray(torch.as_tensor(offsets).detach().cpu().numpy().astype(np.int64))
    if y.ndim != 1:
        raise ValueError(f"target must be 1-D, got shape {tuple(y.shape)}")
    if off.ndim != 1 or len(off) < 2 or off[0] != 0 or off[-1] != len(y) or np.any(np.diff(off) < 0):
        raise ValueError(f"offsets must be nondecreasing from 0 to N={len(y)}, got {off.tolist()}")
    if not np.all(np.isfinite(y)):
        raise ValueError("target values must be finite")
    key = y.dtype.str.encode() + y.tobytes() + b"|" + off.tobytes()
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    rt = _build_rank_target(y, off)
    _CACHE[key] = rt
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return rt


# ----------------------------------------------------------------------------------------
# Final formulas, shared by both backends (float64 from exact integer counts)


def _tau_from_counts(dis, xtie, ntie, ytie, n):
    """Kendall tau-b from pair counts (int64 tensors broadcastable to [P, T])."""
    tot = n * (n - 1) // 2
    num = (tot - xtie - ytie + ntie - 2 * dis).double()
    den = torch.sqrt((tot - xtie).double()) * torch.sqrt((tot - ytie).double())
    ok = (n >= 2) & (xtie < tot) & (ytie < tot)
    tau = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
    return tau.clamp(-1.0, 1.0)


def _rho_from_sums(num4, sp4, st4, n):
    """Spearman rho from sum(rc2 * ct2), sum(rc2**2), sum(ct2**2) (doubled centred ranks)."""
    num4 = num4.double()
    den = torch.sqrt(sp4.double()) * torch.sqrt(st4.double())
    ok = (n >= 2) & (sp4 > 0) & (st4 > 0)
    rho = torch.where(ok, num4 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num4))
    return rho.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------
# numba backend

if _HAVE_NUMBA:

    _RUN = 24  # insertion-sorted run length before merging

    @njit(cache=True, inline="always")
    def _nb_load(pred, i, perm, o, n, v):
        for k in range(n):
            x = pred[i, perm[o + k]]
            if not np.isfinite(x):
                x = -np.inf
            v[k] = x

    @njit(cache=True)
    def _nb_sort_ties(v, trank, o, n):
        """Sort v ascending inside each run of equal target rank (rows are in target order)."""
        k = 0
        while k < n:
            j = k + 1
            tk = trank[o + k]
            while j < n and trank[o + j] == tk:
                j += 1
            if j - k > 1:
                if j - k <= 32:
                    for a in range(k + 1, j):
                        x = v[a]
                        b = a - 1
                        while b >= k and v[b] > x:
                            v[b + 1] = v[b]
                            b -= 1
                        v[b + 1] = x
                else:
                    v[k:j] = np.sort(v[k:j])
            k = j

    @njit(cache=True)
    def _nb_sort_count(v, p, tv, tp, n):
        """Stable sort of (v, p) by v; returns (number of strict inversions, array holding
        the sorted values, array holding the matching p) — the result may be in tv/tp."""
        inv = np.int64(0)
        for lo in range(0, n, _RUN):
            hi = min(lo + _RUN, n)
            for k in range(lo + 1, hi):
                x = v[k]
                q = p[k]
                j = k - 1
                while j >= lo and v[j] > x:
                    v[j + 1] = v[j]
                    p[j + 1] = p[j]
                    j -= 1
                v[j + 1] = x
                p[j + 1] = q
                inv += k - 1 - j
        src_v, src_p, dst_v, dst_p = v, p, tv, tp
        width = _RUN
        while width < n:
            for lo in range(0, n, 2 * width):
                mid = min(lo + width, n)
                hi = min(lo + 2 * width, n)
                i = lo
                j = mid
                k = lo
                if mid < hi and src_v[mid - 1] > src_v[mid]:
                    while i < mid and j < hi:
                        if src_v[j] < src_v[i]:
                            dst_v[k] = src_v[j]
                            dst_p[k] = src_p[j]
                            inv += mid - i
                            j += 1
                        else:
                            dst_v[k] = src_v[i]
                            dst_p[k] = src_p[i]
                            i += 1
                        k += 1
                while i < mid:
                    dst_v[k] = src_v[i]
                    dst_p[k] = src_p[i]
                    i += 1
                    k += 1
                while j < hi:
                    dst_v[k] = src_v[j]
                    dst_p[k] = src_p[j]
                    j += 1
                    k += 1
            src_v, src_p, dst_v, dst_p = dst_v, dst_p, src_v, src_p
            width *= 2
        return inv, src_v, src_p

    @njit(parallel=True, cache=True, fastmath=False)
    def _nb_rank_counts(pred, perm, trank, ct2, off, do_tau, out):
        """out: int64[P, T, 5] = (discordant, pred-tied, jointly-tied pairs, sum rc2*ct2, sum rc2**2)."""
        P = pred.shape[0]
        T = off.shape[0] - 1
        for job in prange(P * T):
            i = job // T
            t = job - i * T
            o = off[t]
            n = off[t + 1] - o
            if n < 2:
                for c in range(5):
                    out[i, t, c] = 0
                continue
            v = np.empty(n, pred.dtype)
            tv = np.empty(n, pred.dtype)
            p = np.empty(n, np.int32)
            tp = np.empty(n, np.int32)
            _nb_load(pred, i, perm, o, n, v)
            if do_tau:  # within a target tie, order by prediction so those pairs are not inversions
                _nb_sort_ties(v, trank, o, n)
            for k in range(n):
                p[k] = k
            dis, sv, sp = _nb_sort_count(v, p, tv, tp, n)
            xtie = np.int64(0)
            ntie = np.int64(0)
            num = np.int64(0)
            ss = np.int64(0)
            a = 0
            while a < n:
                b = a + 1
                while b < n and sv[b] == sv[a]:
                    b += 1
                g = b - a
                xtie += g * (g - 1) // 2
                rc = a + b - n  # twice the centred average rank of positions a..b-1
                csum = np.int64(0)
                for k in range(a, b):
                    csum += ct2[o + sp[k]]
                num += rc * csum
                ss += g * rc * rc
                if g > 1:  # stable sort: rows of a prediction tie are in target order
                    c = a
                    while c < b:
                        d = c + 1
                        tc = trank[o + sp[c]]
                        while d < b and trank[o + sp[d]] == tc:
                            d += 1
                        ntie += (d - c) * (d - c - 1) // 2
                        c = d
                a = b
            out[i, t, 0] = dis
            out[i, t, 1] = xtie
            out[i, t, 2] = ntie
            out[i, t, 3] = num
            out[i, t, 4] = ss


def numba_available() -> bool:
    return _HAVE_NUMBA


def _numba_counts(pred: torch.Tensor, rt: RankTarget, do_tau: bool) -> torch.Tensor:
    x = pred.detach().numpy()
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], rt.n_tasks, 5), np.int64)
    if x.shape[0] and rt.n_tasks:
        _nb_rank_counts(x, rt.perm, rt.trank, rt.ct2, rt.offsets, do_tau, out)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------
# torch backend


@dataclass
class _TorchTables:
    """Per-device tensors for the batched path; W = longest task, segments padded to W."""

    W: int
    bits: int
    idx_dtype: torch.dtype
    gidx: torch.Tensor  # int64[T, W] global row of the k-th row in target order (pads: 0)
    pad: torch.Tensor  # bool[T, W]
    s_tab: torch.Tensor  # idx_dtype[T, W] dense target rank in target order (pads: 2**bits - 1)
    ct2_tab: torch.Tensor  # int32[T, 2**bits] doubled centred target rank per dense rank (pad: 0)
    nz_m1: torch.Tensor  # idx_dtype[bits, T, 1] zeros of bit b in each task's s, minus 1
    ref: torch.Tensor  # int64[T] wavelet pass sums of the sorted sequence (0 inversions)
    n: torch.Tensor  # int64[T]
    ytie: torch.Tensor  # int64[T]
    st4: torch.Tensor  # int64[T]
    pad_pairs: torch.Tensor  # int64[T] tied pairs among the pads
    pad_cubes: torch.Tensor  # int64[T] m**3 - m for m pads

    @staticmethod
    def build(rt: RankTarget, device: torch.device) -> "_TorchTables":
        T = rt.n_tasks
        n = rt.lengths
        W = int(n.max()) if T else 0
        maxrank = int(rt.trank.max()) if len(rt.trank) else 0
        bits = max(1, (maxrank + 1).bit_length())  # pad value 2**bits - 1 > every rank
        padval = (1 << bits) - 1
        idx_dtype = torch.int16 if 2 * W + 2 < 2**15 and padval < 2**15 else torch.int32
        gidx = np.zeros((T, W), np.int64)
        pad = np.ones((T, W), bool)
        s = np.full((T, W), padval, np.int64)
        ct2_tab = np.zeros((T, padval + 1), np.int32)
        for t in range(T):
            a, b = rt.offsets[t], rt.offsets[t + 1]
            gidx[t, : b - a] = rt.perm[a:b]
            pad[t, : b - a] = False
            s[t, : b - a] = rt.trank[a:b]
            ct2_tab[t, rt.trank[a:b]] = rt.ct2[a:b]
        nz = np.stack([((s >> b) & 1 == 0).sum(1) for b in range(bits)])  # [bits, T]
        m = W - n
        tables = _TorchTables(
            W=W, bits=bits, idx_dtype=idx_dtype,
            gidx=torch.from_numpy(gidx).to(device),
            pad=torch.from_numpy(pad).to(device),
            s_tab=torch.from_numpy(s).to(device, idx_dtype),
            ct2_tab=torch.from_numpy(ct2_tab).to(device),
            nz_m1=torch.from_numpy(nz - 1)[:, :, None].to(device, idx_dtype),
            ref=torch.zeros(T, dtype=torch.int64, device=device),
            n=torch.from_numpy(n).to(device),
            ytie=torch.from_numpy(rt.ytie).to(device),
            st4=torch.from_numpy(rt.st4).to(device),
            pad_pairs=torch.from_numpy(m * (m - 1) // 2).to(device),
            pad_cubes=torch.from_numpy(m**3 - m).to(device),
        )
        if W:
            tables.ref = _wavelet_sums(tables.s_tab[None], tables)[0]
        return tables


def _wavelet_sums(v: torch.Tensor, tab: _TorchTables) -> torch.Tensor:
    """``v: idx_dtype[P, T, W]`` -> ``int64[P, T]``: sum over bit passes of the inclusive
    cumsum of the bit, in wavelet-matrix order. Minus the same for the sorted sequence it is
    the number of strict inversions of v (see the module docstring)."""
    W = v.shape[-1]
    ar = torch.arange(W, device=v.device, dtype=v.dtype)
    acc = torch.zeros(v.shape[:-1], dtype=torch.int64, device=v.device)
    for b in reversed(range(tab.bits)):
        bit = (v >> b) & 1
        ones = torch.cumsum(bit, -1, dtype=v.dtype)  # ones up to and including each position
        acc += ones.sum(-1, dtype=torch.int64)
        if b == 0:
            break
        # stable partition: zeros keep their order first, then the ones
        newpos = torch.where(bit.bool(), ones + tab.nz_m1[b], ar - ones)
        v = torch.empty_like(v).scatter_(-1, newpos.long(), v)
    return acc


def _group_start(start: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """Position of the first element of each element's run; ``start: bool[..., W]``."""
    return torch.cummax(torch.where(start, ar, torch.zeros_like(ar)), -1).values


def _torch_counts(pred: torch.Tensor, rt: RankTarget, do_tau: bool, do_rho: bool) -> dict:
    tab = rt.tables(pred.device)
    P, T, W = pred.shape[0], rt.n_tasks, tab.W
    x = pred.detach()[:, tab.gidx]  # [P, T, W], rows in target order
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, -math.inf))
    x = x.masked_fill(tab.pad, math.inf)  # pads sort last, behind every real (finite or -inf) value
    sv, si = torch.sort(x, dim=-1, stable=True)
    del x
    s = tab.s_tab.expand(P, T, W).gather(-1, si)  # dense target rank in prediction order
    del si
    ar = torch.arange(W, device=pred.device, dtype=tab.idx_dtype)
    new = torch.ones_like(sv, dtype=torch.bool)
    new[..., 1:] = sv[..., 1:] != sv[..., :-1]
    del sv
    gs = _group_start(new, ar)
    e = ar - gs  # earlier elements of the same prediction tie
    out = {}
    if do_tau:
        out["xtie"] = e.sum(-1, dtype=torch.int64) - tab.pad_pairs
        jnew = new.clone()
        jnew[..., 1:] |= s[..., 1:] != s[..., :-1]
        out["ntie"] = (ar - _group_start(jnew, ar)).sum(-1, dtype=torch.int64) - tab.pad_pairs
        del jnew
        out["dis"] = _wavelet_sums(s, tab) - tab.ref
    if do_rho:
        # sum_g (g^3 - g) = sum over elements of 3 e (e + 1); then sum rc2^2 = (n^3 - n - that) / 3
        e64 = e.to(torch.int64)
        cubes = (3 * e64 * (e64 + 1)).sum(-1) - tab.pad_cubes
        n = tab.n
        out["sp4"] = (n**3 - n - cubes) // 3
        c = tab.ct2_tab.expand(P, T, -1).gather(-1, s.long())  # pads: 0
        q = torch.cumsum(c, -1, dtype=torch.int64)
        q0 = torch.cat([torch.zeros_like(q[..., :1]), q], -1)
        csum = q - q0.gather(-1, gs.long())  # sum of c over the tie group up to here
        end = torch.ones_like(new)
        end[..., :-1] = new[..., 1:]
        rc = gs.to(torch.int64) + ar.to(torch.int64) - (n[:, None] - 1)  # at a group end: start + end - (n-1)
        out["num4"] = torch.where(end, rc * csum, torch.zeros_like(csum)).sum(-1)
    return out


# ----------------------------------------------------------------------------------------
# Public API


def _resolve(pred: torch.Tensor, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "numba" if _HAVE_NUMBA and pred.device.type == "cpu" else "torch"
    if backend == "numba":
        if not _HAVE_NUMBA:
            raise RuntimeError("backend='numba' requested but numba is not installed")
        if pred.device.type != "cpu":
            raise ValueError("backend='numba' needs CPU tensors")
    return backend


def _check_pred(pred: torch.Tensor, rt: RankTarget) -> None:
    if pred.ndim != 2 or pred.shape[1] != int(rt.offsets[-1]):
        raise ValueError(f"pred must be [P, N={int(rt.offsets[-1])}], got {tuple(pred.shape)}")


def rank_correlations(pred: torch.Tensor, target: torch.Tensor | RankTarget, offsets: torch.Tensor | None = None,
                      backend: str = "auto", tau: bool = True, rho: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Kendall tau-b and/or Spearman rho from one sort: ``(float32[P, T] | None, float32[P, T] | None)``.

    ``pred: float[P, N]``; ``target: float32[N]`` with ``offsets: int64[T+1]``, or a
    ``RankTarget`` from ``prepare_target``. Results are on ``pred.device``.
    """
    rt = target if isinstance(target, RankTarget) else prepare_target(target, offsets)
    _check_pred(pred, rt)
    be = _resolve(pred, backend)
    n = torch.from_numpy(rt.lengths)
    if be == "numba":
        c = _numba_counts(pred, rt, tau)
        t = _tau_from_counts(c[..., 0], c[..., 1], c[..., 2], torch.from_numpy(rt.ytie), n) if tau else None
        r = _rho_from_sums(c[..., 3], c[..., 4], torch.from_numpy(rt.st4), n) if rho else None
    else:
        if pred.shape[0] == 0 or rt.n_tasks == 0 or rt.lengths.max() == 0:
            z = torch.zeros(pred.shape[0], rt.n_tasks, dtype=torch.float64, device=pred.device)
            t, r = (z if tau else None), (z if rho else None)
        else:
            c = _torch_counts(pred, rt, tau, rho)
            tab = rt.tables(pred.device)
            t = _tau_from_counts(c["dis"], c["xtie"], c["ntie"], tab.ytie, tab.n) if tau else None
            r = _rho_from_sums(c["num4"], c["sp4"], tab.st4, tab.n) if rho else None
    dev = pred.device
    return (None if t is None else t.to(dev, torch.float32)), (None if r is None else r.to(dev, torch.float32))


def kendall_tau_b(pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``float32[P, T]``: Kendall tau-b of each individual (row of ``pred: float[P, N]``) on each
    task segment ``offsets[t]:offsets[t+1]`` of ``target: float32[N]``; 0 where undefined."""
    return rank_correlations(pred, target, offsets, backend, tau=True, rho=False)[0]


def spearman(pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``float32[P, T]``: Spearman rho (Pearson of average ranks) per individual and task; 0 where undefined."""
    return rank_correlations(pred, target, offsets, backend, tau=False, rho=True)[1]


def aggregate(scores: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """``float32[P, T] -> float32[P]``: ``mean``, ``min`` or ``mean-std`` (mean minus the
    population std over tasks, so one task gives its score) of each individual's task scores."""
    if how == "mean":
        return scores.mean(-1)
    if how == "min":
        return scores.min(-1).values
    if how == "mean-std":
        return scores.mean(-1) - scores.std(-1, correction=0)
    raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
