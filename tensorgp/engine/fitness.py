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
pairs are exactly the pairs (a before b in that order, target of a > target of b): equal
predictions are never counted, equal targets never compare greater. Both backends sort once
and read every tie count and the Spearman sums off that one order, in exact integers.

* ``numba`` (CPU): one (individual, task) per parallel iteration. An LSD radix sort of
  ``(order-preserving uint32 of the float, row)``; the discordant pairs by a bitset of the
  target positions already seen, with per-word suffix counts (each row asks how many seen rows
  sit at positions with a larger target: one popcount plus one table read).
* ``torch`` (any device, batched over P and T): one stable sort, then the inversions of the
  sequence s of dense target ranks in prediction order by wavelet-matrix passes, one per bit
  of s (from the top bit, stably partition by the bit). The pairs "1 before 0" of a pass are
  the inversions decided at that bit plus pairs from different higher-bit groups, whose count
  depends only on the multiset of s, the same for every individual; the target's own sorted
  sequence run through the same passes removes it. A pass is a cumsum and a scatter, in int16.

* ``triton`` (CUDA; CPU only under ``TRITON_INTERPRET=1``): the torch path with the wavelet
  passes fused into one launch (``tensorgp.kernels.rank_kernel``): a program keeps a row in
  registers for all its bit passes, instead of ~8 launches per bit over the whole batch.
* ``pairs`` (CUDA): Kendall by the tiled all-pairs Triton kernel (``kernels.kendall_kernel``),
  O(n^2) per program, branch-free and without a sort; only for short tasks (Spearman, when
  asked for too, takes the torch path).

Every path has a launch count fixed per chunk of programs (chunks bound the memory), none reads
the device on the host. ``auto`` picks numba for CPU float32 tensors when numba imports; on CUDA
``pairs`` for Kendall alone when every task has at most ``PAIRS_MAX_ROWS`` rows, else
``triton`` when triton imports, else torch (``route``).
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from .population import first_of_groups

try:  # numba is optional: without it every call takes the torch path
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False

AGGREGATIONS = ("mean", "min", "mean-std")
BACKENDS = ("auto", "numba", "torch", "triton", "pairs")
PAIRS_MAX_ROWS = 64  # auto on CUDA: the all-pairs kernel up to this task length (a guess until measured on a GPU)
TORCH_CHUNK_ELEMENTS = (1 << 21, 1 << 26)  # torch path: P x T x W elements per chunk (cpu, cuda)


# ----------------------------------------------------------------------------------------
# Target preprocessing (once per target)


@dataclass(frozen=True, eq=False)
class RankTarget:
    """Everything about a target that the correlations need, per task, in target order.

    All arrays are numpy, on the CPU: ``perm: int64[N]`` global row of the k-th row of each
    segment in ascending target order; ``trank: int32[N]`` its dense target rank in the task
    (0, 1, ...); ``ct2: int64[N]`` twice its centred average target rank (2 r - (n + 1), an
    integer); ``gend: int32[N]`` the first position (in the task, target order) of a larger
    target; ``lengths, ytie, st4: int64[T]`` rows, target-tied pairs and sum(ct2**2).
    """

    offsets: np.ndarray
    lengths: np.ndarray
    perm: np.ndarray
    trank: np.ndarray
    ct2: np.ndarray
    gend: np.ndarray
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
    gend = np.empty(len(y), np.int32)
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
        gend[a:b] = (starts + sizes)[dense]
        ytie[t] = int((sizes * (sizes - 1) // 2).sum())
        st4[t] = int((ct2[a:b] ** 2).sum())
    return RankTarget(off.astype(np.int64), lengths.astype(np.int64), perm, trank, ct2, gend, ytie, st4)


_CACHE: OrderedDict[bytes, RankTarget] = OrderedDict()
_CACHE_SIZE = 8


def prepare_target(target: torch.Tensor, offsets: torch.Tensor) -> RankTarget:
    """The ``RankTarget`` of ``target: float32[N]`` split at ``offsets: int64[T+1]``.

    Cached on the bytes of both (hashing ~N floats costs microseconds; the sorts it saves do
    not), so passing the same target on every generation reuses the work. Passing the same
    tensor objects again (unmodified: same ``_version``) hits a cache on their identity first,
    which reads nothing: no device-to-host copy, so a GPU generation does not wait here.
    """
    if isinstance(target, torch.Tensor) and isinstance(offsets, torch.Tensor):
        hit = _ID_CACHE.get((id(target), id(offsets)))
        if hit is not None and hit[0] is target and hit[1] is offsets and hit[2] == (target._version, offsets._version):
            return hit[3]
    rt = _prepare_target(target, offsets)
    if isinstance(target, torch.Tensor) and isinstance(offsets, torch.Tensor):
        # the entry holds the tensors: their ids cannot be reused by others while it lives
        _ID_CACHE[(id(target), id(offsets))] = (target, offsets, (target._version, offsets._version), rt)
        if len(_ID_CACHE) > _CACHE_SIZE:
            _ID_CACHE.popitem(last=False)
    return rt


_ID_CACHE: OrderedDict[tuple[int, int], tuple] = OrderedDict()


def _prepare_target(target: torch.Tensor, offsets: torch.Tensor) -> RankTarget:
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

    _U32 = np.uint64(0xFFFFFFFF)
    _SIGN = np.uint64(0x80000000)
    _ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

    @njit(cache=True, inline="always")
    def _popcount(x):
        # the classic bit trick; LLVM turns it into one popcnt instruction
        x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
        x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
        x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))

    @njit(cache=True)
    def _nb_sorted_items(pred, i, perm, o, n, f, items, tmp):
        """Rows of task segment o:o+n of individual i, sorted by prediction (stable on the
        target-order index j): ``uint64 (key << 32) | j`` with key the order-preserving
        uint32 image of the float32 (non-finite -> -inf, -0 -> +0). LSD radix, 8-bit digits,
        constant digits skipped. Returns the array (items or tmp) that holds the result."""
        for k in range(n):
            x = pred[i, perm[o + k]]
            if not np.isfinite(x):
                x = -np.inf
            elif x == 0:
                x = 0.0
            f[k] = x
        bits = f.view(np.uint32)
        # 8-bit digits: measured faster than 11-bit ones even at n ~ 10k (cache-resident bins)
        hist = np.zeros(1024, np.int32)
        for k in range(n):
            u = np.uint64(bits[k])
            u = u ^ (_U32 if u >= _SIGN else _SIGN)
            items[k] = (u << np.uint64(32)) | np.uint64(k)
            hist[u & np.uint64(255)] += 1
            hist[256 + ((u >> np.uint64(8)) & np.uint64(255))] += 1
            hist[512 + ((u >> np.uint64(16)) & np.uint64(255))] += 1
            hist[768 + (u >> np.uint64(24))] += 1
        src = items
        dst = tmp
        for d in range(4):
            sh = np.uint64(32 + 8 * d)
            h = 256 * d
            if hist[h + ((src[0] >> sh) & np.uint64(255))] == n:
                continue  # every key has this digit
            acc = 0
            for b in range(256):
                c = hist[h + b]
                hist[h + b] = acc
                acc += c
            for k in range(n):
                x = src[k]
                dg = h + ((x >> sh) & np.uint64(255))
                pos = hist[dg]
                hist[dg] = pos + 1
                dst[pos] = x
            src, dst = dst, src
        return src

    @njit(cache=True)
    def _nb_discordant(items, n, gend, o):
        """Pairs (a before b in prediction order, target rank of a > that of b): for each row j,
        count earlier rows at target positions >= gend[j] (the first position of a larger
        target). A bitset of seen positions with suffix counts per 64-bit word; above 2048
        rows, words are grouped in 1024-position superblocks with their own suffix counts
        (a Fenwick tree above 32 superblocks), so a row costs O(1 + log n). Count updates are
        fixed-length masked loops, which vectorise and never mispredict."""
        nw = (n + 63) >> 6
        acc = np.int64(0)
        if nw <= 32:
            words = np.zeros(nw + 1, np.uint64)
            cs = np.zeros(nw + 2, np.int16)
            for k in range(n):
                j = np.int64(items[k] & _U32)
                g = np.int64(gend[o + j])
                w = g >> 6
                acc += np.int64(cs[w + 1]) + _popcount(words[w] & (_ALL << np.uint64(g & 63)))
                jw = j >> 6
                words[jw] |= np.uint64(1) << np.uint64(j & 63)
                for u in range(nw + 1):
                    cs[u] += np.int16(u <= jw)
        else:
            nsb = (nw + 15) >> 4
            fenwick = nsb > 32
            words = np.zeros((nsb + 1) * 16, np.uint64)
            wsuf = np.zeros((nsb + 1) * 17, np.int16)
            css = np.zeros(nsb + 2, np.int32)  # suffix counts, or the Fenwick tree (1-based)
            for k in range(n):
                j = np.int64(items[k] & _U32)
                g = np.int64(gend[o + j])
                w = g >> 6
                sb = w >> 4
                if fenwick:
                    q = np.int64(0)
                    x = sb + 1 if sb < nsb else nsb
                    while x > 0:
                        q += np.int64(css[x])
                        x &= x - 1
                    above = k - q
                else:
                    above = np.int64(css[sb + 1])
                acc += (above + np.int64(wsuf[sb * 17 + (w & 15) + 1])
                        + _popcount(words[w] & (_ALL << np.uint64(g & 63))))
                jw = j >> 6
                jsb = jw >> 4
                jwi = jw & 15
                words[jw] |= np.uint64(1) << np.uint64(j & 63)
                base = jsb * 17
                for x in range(16):
                    wsuf[base + x] += np.int16(x <= jwi)
                if fenwick:
                    x = jsb + 1
                    while x <= nsb:
                        css[x] += 1
                        x += x & -x
                else:
                    for u in range(nsb + 1):
                        css[u] += np.int32(u <= jsb)
        return acc

    @njit(parallel=True, cache=True, fastmath=False)
    def _nb_rank_counts(pred, rows, perm, trank, ct2, gend, off, do_tau, out):
        """out: int64[U, T, 5] = (discordant, pred-tied, jointly-tied pairs, sum rc2*ct2, sum rc2**2)
        of the rows ``rows: int64[U]`` of pred (indexed here: copying them out costs more)."""
        P = rows.shape[0]
        T = off.shape[0] - 1
        for job in prange(P * T):
            u = job // T
            t = job - u * T
            i = rows[u]
            o = off[t]
            n = off[t + 1] - o
            if n < 2:
                for c in range(5):
                    out[u, t, c] = 0
                continue
            f = np.empty(n, np.float32)
            items = np.empty(n, np.uint64)
            tmp = np.empty(n, np.uint64)
            srt = _nb_sorted_items(pred, i, perm, o, n, f, items, tmp)
            # one branch-free pass: e = earlier rows of the same prediction tie, je = of the same
            # (prediction, target) tie (a stable sort keeps a prediction tie in target order);
            # sum_g (g^3 - g) = sum 3 e (e + 1); num as if there were no ties
            xtie = np.int64(0)
            ntie = np.int64(0)
            cub = np.int64(0)
            num = np.int64(0)
            e = np.int64(0)
            je = np.int64(0)
            prev_key = np.uint64(0)
            prev_tr = np.int64(-1)
            for k in range(n):
                it = srt[k]
                key = it >> np.uint64(32)
                j = o + np.int64(it & _U32)
                tr = np.int64(trank[j])
                eq = np.int64(key == prev_key and k > 0)
                e = (e + 1) * eq
                je = (je + 1) * (eq & np.int64(tr == prev_tr))
                xtie += e
                ntie += je
                cub += e * (e + 1)
                num += (2 * k + 1 - n) * ct2[j]
                prev_key = key
                prev_tr = tr
            ss = (n * n * n - n) // 3 - cub  # sum over rows of (twice the centred avg rank)^2
            if xtie > 0:  # ties: redo num with average ranks, a tie group at a time
                num = np.int64(0)
                a = 0
                while a < n:
                    key = srt[a] >> np.uint64(32)
                    b = a + 1
                    while b < n and (srt[b] >> np.uint64(32)) == key:
                        b += 1
                    csum = np.int64(0)
                    for k in range(a, b):
                        csum += ct2[o + np.int64(srt[k] & _U32)]
                    num += (a + b - n) * csum  # a + b - n: twice the centred average rank
                    a = b
            out[u, t, 0] = _nb_discordant(srt, n, gend, o) if do_tau else 0
            out[u, t, 1] = xtie
            out[u, t, 2] = ntie
            out[u, t, 3] = num
            out[u, t, 4] = ss


    _EXP = np.uint32(0x7F800000)
    _NEG_INF = np.uint32(0xFF800000)
    _NEG_ZERO = np.uint32(0x80000000)

    @njit(cache=True, inline="always")
    def _nb_canon(u):
        """float32 bits as the statistics see the value: non-finite -> -inf, -0 -> +0."""
        if (u & _EXP) == _EXP:
            return _NEG_INF
        if u == _NEG_ZERO:
            return np.uint32(0)
        return u

    @njit(parallel=True, cache=True)
    def _nb_row_hashes(bits, out):
        for i in prange(bits.shape[0]):
            h = np.uint64(0x9E3779B97F4A7C15)
            for k in range(bits.shape[1]):
                h = (h ^ np.uint64(_nb_canon(bits[i, k]))) * np.uint64(0x100000001B3)
            out[i] = h ^ (h >> np.uint64(29))

    @njit(parallel=True, cache=True)
    def _nb_rows_equal(bits, rep, out):
        for i in prange(bits.shape[0]):
            r = rep[i]
            same = True
            if r != i:
                for k in range(bits.shape[1]):
                    if _nb_canon(bits[i, k]) != _nb_canon(bits[r, k]):
                        same = False
                        break
            out[i] = same


def numba_available() -> bool:
    return _HAVE_NUMBA


def _numba_counts(pred: torch.Tensor, rt: RankTarget, do_tau: bool, rows: torch.Tensor | None) -> torch.Tensor:
    x = np.ascontiguousarray(pred.detach().to(torch.float32).numpy())
    P = x.shape[0]
    r = np.arange(P, dtype=np.int64) if rows is None else np.ascontiguousarray(rows.cpu().numpy(), np.int64)
    if r.size and (r.min() < -P or r.max() >= P):  # the kernel does not check: out of range would read anywhere
        raise IndexError(f"rows out of range for {P} predictions: {r.min()}..{r.max()}")
    r = np.where(r < 0, r + P, r)  # as pred[rows] reads negative rows
    out = np.empty((len(r), rt.n_tasks, 5), np.int64)
    if len(r) and rt.n_tasks:
        _nb_rank_counts(x, r, rt.perm, rt.trank, rt.ct2, rt.gend, rt.offsets, do_tau, out)
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
    target: torch.Tensor | None = None  # float32[N] dense target ranks in row order (the pairs kernel)
    offsets: torch.Tensor | None = None  # int64[T + 1] on the device (the pairs kernel)

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
        )
        if W:
            tables.ref = _wavelet_sums(tables.s_tab[None].clone(), tables)[0]
        return tables


_INT32_W = 46340  # W**2 < 2**31: products and row sums of ranks fit in int32

# CPU torch notes: every fresh large tensor costs page faults, int16 torch.where and int16 ->
# int64 reductions are slow, so the passes below write into reused buffers, select with
# arithmetic and reduce through int32.


def _wavelet_sums(v: torch.Tensor, tab: _TorchTables, pos: torch.Tensor | None = None) -> torch.Tensor:
    """``v: idx_dtype[P, T, W]`` -> ``int64[P, T]``: sum over bit passes of the inclusive
    cumsum of the bit, in wavelet-matrix order. Minus the same for the sorted sequence it is
    the number of strict inversions of v (see the module docstring). ``v`` is overwritten;
    ``pos``: optional int64 scratch of v's shape."""
    W = v.shape[-1]
    ar = torch.arange(W, device=v.device, dtype=v.dtype)
    acc = torch.zeros_like(v, dtype=torch.int16 if tab.bits * W < 2**15 else torch.int32)
    bit, ones, x, v2 = (torch.empty_like(v) for _ in range(4))
    pos = torch.empty(v.shape, dtype=torch.int64, device=v.device) if pos is None else pos
    for b in reversed(range(tab.bits)):
        torch.bitwise_right_shift(v, b, out=bit)
        bit.bitwise_and_(1)
        torch.cumsum(bit, -1, out=ones)  # ones up to and including each position
        acc += ones
        if b == 0:
            break
        # stable partition, zeros first: one -> nz + ones - 1, zero -> position - ones
        torch.add(ones, tab.nz_m1[b], out=x)
        ones.neg_().add_(ar)
        x.sub_(ones).mul_(bit).add_(ones)
        pos.copy_(x)
        v2.scatter_(-1, pos, v)
        v, v2 = v2, v
    return _row_sum(acc, tab.bits * W * W)


def _group_start(start: torch.Tensor, ar: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Position of the first element of each element's run; ``start: bool[..., W]``,
    ``idx``: int64 scratch of that shape (cummax's index output)."""
    out = torch.empty_like(start, dtype=ar.dtype)
    torch.cummax(ar * start, -1, out=(out, idx))
    return out


def _row_sum(x: torch.Tensor, bound: int) -> torch.Tensor:
    """Exact int64 row sums of an integer tensor whose |row sum| <= bound. Reductions that widen
    to int64 are ~50x slower on the CPU than int32 ones, so: int32 where it cannot overflow,
    else float64 (integers below 2**53 add exactly)."""
    return x.sum(-1, dtype=torch.int32 if bound < 2**31 else torch.float64).long()


def _wavelet_triton(v: torch.Tensor, tab: _TorchTables, pos: torch.Tensor | None = None) -> torch.Tensor:
    """``_wavelet_sums`` in one Triton launch (``kernels.rank_kernel``)."""
    from ..kernels.rank_kernel import wavelet_sums_triton

    return wavelet_sums_triton(v, tab.nz_m1, tab.bits)


def _pairs_tau(pred: torch.Tensor, rt: RankTarget, tab: _TorchTables) -> torch.Tensor:
    """``float64[P, T]`` Kendall tau-b by the all-pairs Triton kernel, on the target's exact
    integer pair counts: the kernel's (C - D, pairs untied in pred) with this module's ytie."""
    from ..kernels.kendall_kernel import kendall_counts_triton

    if tab.target is None:  # the target in row order, on pred's device (once per table)
        y = np.zeros(int(rt.offsets[-1]), np.float32)
        y[rt.perm] = rt.trank  # dense ranks (< 2**24, exact in float32): the target's ties exactly
        tab.target = torch.from_numpy(y).to(pred.device)
        tab.offsets = torch.from_numpy(rt.offsets).to(pred.device)
    # int64[P, T, 3]; ranks float32 values; the longest task from the host-side table: no sync
    c = kendall_counts_triton(pred.float(), tab.target, tab.offsets, max_rows=tab.W)
    n = tab.n
    tot = n * (n - 1) // 2
    xtie = tot - c[..., 1]
    num = c[..., 0].double()
    den = torch.sqrt((tot - xtie).double()) * torch.sqrt((tot - tab.ytie).double())
    ok = (n >= 2) & (xtie < tot) & (tab.ytie < tot)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num)).clamp(-1.0, 1.0)


def _torch_counts(pred: torch.Tensor, rt: RankTarget, do_tau: bool, do_rho: bool, wavelet=_wavelet_sums) -> dict:
    tab = rt.tables(pred.device)
    P, T, W = pred.shape[0], rt.n_tasks, tab.W
    x = pred.detach().index_select(1, tab.gidx.view(-1)).view(P, T, W)  # rows in target order
    torch.nan_to_num_(x, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)
    x.masked_fill_(tab.pad, math.inf)  # pads sort last, behind every real (finite or -inf) value
    sv, idx = torch.sort(x, dim=-1, stable=True)
    del x
    s = tab.s_tab.expand(P, T, W).gather(-1, idx)  # dense target rank in prediction order
    # from here on idx is int64 scratch
    ar = torch.arange(W, device=pred.device, dtype=tab.idx_dtype)
    new = torch.ones_like(sv, dtype=torch.bool)  # first of a prediction tie
    new[..., 1:] = sv[..., 1:] != sv[..., :-1]
    del sv
    gs = _group_start(new, ar, idx)
    out = {}
    if do_tau:
        out["xtie"] = _row_sum(ar - gs, W * W) - tab.pad_pairs
        jnew = s[..., 1:] != s[..., :-1]
        jnew |= new[..., 1:]
        jnew = torch.cat([new[..., :1], jnew], -1)
        out["ntie"] = _row_sum(ar - _group_start(jnew, ar, idx), W * W) - tab.pad_pairs
        del jnew
    if do_rho:
        # last position of each tie = W - 1 - run start in the reversed row
        end_r = torch.ones_like(new)
        end_r[..., 1:] = new.flip(-1)[..., :-1]
        ge = _group_start(end_r, ar, idx).flip(-1)
        del end_r
        wide = torch.int32 if W <= _INT32_W else torch.int64
        rc = (gs - ge).to(wide)  # gs + ge - (n - 1) = twice the centred average rank
        rc += (W - 1) - (tab.n[:, None].to(wide) - 1)
        rc.masked_fill_(tab.pad, 0)
        del ge
        idx.copy_(s)
        c = tab.ct2_tab.expand(P, T, -1).gather(-1, idx).to(wide)  # pads: 0
        c *= rc
        out["num4"] = _row_sum(c, W**3)
        rc *= rc
        out["sp4"] = _row_sum(rc, W**3)
        del c, rc
    if do_tau:
        out["dis"] = wavelet(s, tab, idx) - tab.ref
    return out


# ----------------------------------------------------------------------------------------
# Public API


def _triton_ok(device: torch.device) -> bool:
    """Triton kernels can run on ``device``: CUDA with triton installed, or the interpreter."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def route(device: torch.device | str, dtype: torch.dtype, max_rows: int, tau: bool = True, rho: bool = True) -> str:
    """What ``backend="auto"`` runs for predictions of ``dtype`` on ``device`` over tasks of at
    most ``max_rows`` rows: numba (CPU float32), else on CUDA the all-pairs kernel for Kendall
    alone on short tasks, the fused wavelet kernel when triton imports, else torch."""
    device = torch.device(device)
    if device.type == "cpu":
        return "numba" if _HAVE_NUMBA and dtype == torch.float32 else "torch"
    if device.type == "cuda" and _triton_ok(device):
        if tau and not rho and max_rows <= PAIRS_MAX_ROWS and dtype == torch.float32:
            return "pairs"
        return "triton"
    return "torch"


def _resolve(pred: torch.Tensor, backend: str, rt: RankTarget | None = None, tau: bool = True, rho: bool = True) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":  # numba ranks float32 values; other dtypes keep their precision in torch
        max_rows = int(rt.lengths.max()) if rt is not None and rt.n_tasks else 0
        return route(pred.device, pred.dtype, max_rows, tau, rho)
    if backend == "numba":
        if not _HAVE_NUMBA:
            raise RuntimeError("backend='numba' requested but numba is not installed")
        if pred.device.type != "cpu":
            raise ValueError("backend='numba' needs CPU tensors")
    if backend in ("triton", "pairs") and not _triton_ok(pred.device):
        raise ValueError(f"backend={backend!r} needs triton and CUDA tensors (or TRITON_INTERPRET=1 on the CPU)")
    if backend in ("numba", "pairs") and pred.dtype == torch.float64:
        return "torch"  # they rank float32 values: a cast would merge close values and overflow past 3.4e38
    return backend


def _check_pred(pred: torch.Tensor, rt: RankTarget) -> None:
    if not pred.is_floating_point():
        raise TypeError(f"pred must be a floating tensor, got {pred.dtype}")
    if pred.ndim != 2 or pred.shape[1] != int(rt.offsets[-1]):
        raise ValueError(f"pred must be [P, N={int(rt.offsets[-1])}], got {tuple(pred.shape)}")


def rank_correlations(pred: torch.Tensor, target: torch.Tensor | RankTarget, offsets: torch.Tensor | None = None,
                      backend: str = "auto", tau: bool = True, rho: bool = True,
                      rows: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Kendall tau-b and/or Spearman rho from one sort: ``(float32[P, T] | None, float32[P, T] | None)``.

    ``pred: float[P, N]``; ``target: float32[N]`` with ``offsets: int64[T+1]``, or a
    ``RankTarget`` from ``prepare_target``. ``rows: int64[U]`` scores only those rows of
    ``pred`` (results ``[U, T]``), as ``pred[rows]`` would without copying them. Results are on
    ``pred.device``.
    """
    rt = target if isinstance(target, RankTarget) else prepare_target(target, offsets)
    _check_pred(pred, rt)
    be = _resolve(pred, backend, rt, tau, rho)
    n = torch.from_numpy(rt.lengths)
    if be == "numba":
        c = _numba_counts(pred, rt, tau, rows)
        t = _tau_from_counts(c[..., 0], c[..., 1], c[..., 2], torch.from_numpy(rt.ytie), n) if tau else None
        r = _rho_from_sums(c[..., 3], c[..., 4], torch.from_numpy(rt.st4), n) if rho else None
    else:
        if rows is not None:
            pred = pred[rows.to(pred.device)]
        if pred.shape[0] == 0 or rt.n_tasks == 0 or rt.lengths.max() == 0:
            z = torch.zeros(pred.shape[0], rt.n_tasks, dtype=torch.float64, device=pred.device)
            t, r = (z if tau else None), (z if rho else None)
        else:
            tab = rt.tables(pred.device)
            # bounded chunks of individuals: caps memory (~40 bytes per element) and keeps the
            # passes' working set small on the CPU
            budget = TORCH_CHUNK_ELEMENTS[pred.device.type == "cuda"]
            step = max(1, budget // max(1, rt.n_tasks * tab.W))
            t = r = None
            if tau and be == "pairs":
                t = _pairs_tau(pred, rt, tab)
            if rho or t is None and tau:
                wavelet = _wavelet_triton if be == "triton" else _wavelet_sums
                parts = [_torch_counts(pred[a:a + step], rt, tau and t is None, rho, wavelet)
                         for a in range(0, pred.shape[0], step)]
                c = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
                if tau and t is None:
                    t = _tau_from_counts(c["dis"], c["xtie"], c["ntie"], tab.ytie, tab.n)
                r = _rho_from_sums(c["num4"], c["sp4"], tab.st4, tab.n) if rho else None
    dev = pred.device
    return (None if t is None else t.to(dev, torch.float32)), (None if r is None else r.to(dev, torch.float32))


def kendall_tau_b(pred: torch.Tensor, target: torch.Tensor | RankTarget, offsets: torch.Tensor | None,
                  backend: str = "auto", rows: torch.Tensor | None = None) -> torch.Tensor:
    """``float32[P, T]``: Kendall tau-b of each individual (row of ``pred: float[P, N]``) on each
    task segment ``offsets[t]:offsets[t+1]`` of ``target: float32[N]`` (or a ``RankTarget``,
    offsets then None); 0 where undefined. Equals scipy's ``kendalltau(variant="b")``.
    ``rows``: as for ``rank_correlations``."""
    return rank_correlations(pred, target, offsets, backend, tau=True, rho=False, rows=rows)[0]


def spearman(pred: torch.Tensor, target: torch.Tensor | RankTarget, offsets: torch.Tensor | None,
             backend: str = "auto", rows: torch.Tensor | None = None) -> torch.Tensor:
    """``float32[P, T]``: Spearman rho (Pearson of average ranks, as ``scipy.stats.spearmanr``)
    per individual and task; 0 where undefined. Arguments as for ``kendall_tau_b``."""
    return rank_correlations(pred, target, offsets, backend, tau=False, rho=True, rows=rows)[1]


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


# ----------------------------------------------------------------------------------------
# Top-weighted rank correlation: a NAS search only needs the top of the ranking right


def top_rows(target: torch.Tensor, offsets: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``fraction`` of each task by target: ``(idx int64[N'], offsets int64[T+1])``.

    ``idx`` are global rows (ascending, so each task's rows stay contiguous), at least 2 per
    task with >= 2 rows; ties at the cut are broken by row order. On ``target``'s device.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    off = torch.as_tensor(offsets).cpu().tolist()
    y = torch.as_tensor(target).detach().cpu()
    parts, sizes = [], [0]
    for a, b in zip(off[:-1], off[1:]):  # loop over tasks, not rows
        n = b - a
        k = min(n, max(2, math.ceil(fraction * n)))
        top = torch.argsort(y[a:b], descending=True, stable=True)[:k]
        parts.append(torch.sort(top).values + a)
        sizes.append(k)
    idx = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
    return idx.to(target.device), torch.cumsum(torch.tensor(sizes), 0).to(target.device)


def top_kendall(pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, fraction: float = 0.1,
                backend: str = "auto", rows: torch.Tensor | None = None) -> torch.Tensor:
    """``float32[P, T]``: Kendall tau-b among the top ``fraction`` of each task by target, i.e.
    how well each individual orders the architectures that a search would actually pick from.
    ``rows``: as for ``rank_correlations``."""
    idx, off = top_rows(target, offsets, fraction)
    sub = pred[:, idx] if rows is None else pred[rows.to(pred.device)[:, None], idx]
    return kendall_tau_b(sub, target[idx], off, backend)


# ----------------------------------------------------------------------------------------
# Programs that compute the same predictions are scored once


def distinct_rows(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``pred: float[P, N]`` that every statistic here scores alike, grouped:
    ``(keep: int64[U], inverse: int64[P])`` such that scoring ``pred[keep]`` and indexing the
    result with ``inverse`` equals scoring ``pred``.

    Different programs often compute the same predictions (``x * 1``, ``min(x, x)``, swapped
    commutative operands, an inert subtree): measured, 15% of the structurally distinct programs
    early in a run and about 40% once it converges. Rows are alike when their values are bitwise equal after the
    statistics' own canonical form (non-finite -> one tie below every finite value, -0 -> 0).
    Rows are grouped by a hash, then checked against their group's first row on every column;
    a row that differs (a collision) is kept on its own, so the grouping is exact.
    """
    P, N = pred.shape
    dev = pred.device
    ar = torch.arange(P, device=dev)
    if P < 2 or N == 0:
        return ar, ar
    fast = _HAVE_NUMBA and dev.type == "cpu" and pred.dtype == torch.float32
    if fast:
        x = np.ascontiguousarray(pred.detach().numpy()).view(np.uint32)
        h = np.empty(P, np.uint64)
        _nb_row_hashes(x, h)
        hashes = torch.from_numpy(h.view(np.int64))
    else:
        c = torch.where(torch.isfinite(pred), pred + 0.0, float("-inf"))
        bits = c.view(torch.int32) if c.dtype == torch.float32 else c.double().view(torch.int64)
        w = torch.arange(1, N + 1, device=dev, dtype=torch.int64) * -7046029254386353131
        hashes = (bits.long() * w).sum(1)  # wraps mod 2**64
    uniq, group = torch.unique(hashes, return_inverse=True)
    first = first_of_groups(group, len(uniq))
    rep = first[group]
    if fast:
        eq = np.empty(P, np.bool_)
        _nb_rows_equal(x, rep.numpy(), eq)
        odd = ~torch.from_numpy(eq)
    else:
        odd = ~(c == c[rep]).all(1)
    keep = torch.cat([first, ar[odd]])
    inverse = torch.where(odd, len(first) + torch.cumsum(odd.long(), 0) - 1, group)
    return keep, inverse
