"""CPU fast path: evaluate a postfix population with numba, rows in cache-sized blocks.

Two passes:

1. ``_compile`` (serial, O(P L)) turns each postfix row into register code. Registers are rows
   of a per-thread block buffer ``R: float32[m + n_regs, B]``: the first m hold the feature
   block (copied once per block, shared by every program of a work item), the rest hold
   intermediate values. Leaves emit no instruction (a feature is just a register number), a
   constant emits one FILL; each function node emits ``(op, dst, a, b)``. ``dst`` is always a
   register distinct from its operands, so LLVM's runtime alias check passes and the loops stay
   vectorised; registers are recycled LIFO, so a program needs at most stack depth + 1.
2. ``_run`` (parallel) loops over work items (row block x program chunk); per instruction an
   inner loop over the B rows of the block, which LLVM vectorises (AVX2: 8 lanes).

Optional ``dedup=True``: subtrees that occur more than once in the population (same ops,
same constant bits) are hash-consed into one DAG node, evaluated once per row block and kept
in a register while later programs still use them.

Semantics are those of ``primitives.FUNCTIONS`` in float32: every constant below is a
float32, so no operation is widened to float64 (the transcendental functions call the
float32 libm versions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .primitives import CONST, EPS, EXP_MAX, FIRST_VAR, N_FUNCTIONS, PAD

try:  # numba is optional: callers check available() and fall back to the torch interpreter
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False

FILL = 0  # instruction opcode for "register <- constant" (no function uses opcode 0)
DEFAULT_BLOCK = 256  # rows per block, see bench/eval_cpu.py
DEFAULT_CHUNK = 64  # programs per work item

_E = np.float32(EPS)
_XMAX = np.float32(EXP_MAX)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_NAN = np.float32(np.nan)


def available() -> bool:
    """True when numba imports, i.e. ``evaluate_numba`` can run."""
    return _HAVE_NUMBA


@dataclass
class DedupStats:
    """Node evaluations of one ``evaluate_numba(..., dedup=True)`` call, per row.

    ``population_nodes``: sum of program lengths (what plain evaluation executes, leaves included);
    ``executed_nodes``: distinct nodes executed (leaves included, each distinct subtree once);
    ``instructions``: vector instructions run per row (function nodes and constant fills).
    """

    population_nodes: int
    executed_nodes: int
    instructions: int


if _HAVE_NUMBA:
    # error_model="numpy": no ZeroDivisionError checks (they would also block vectorisation).
    # The runners allow only FMA contraction: it fuses a * b + c inside the exp/log/tanh
    # polynomials (faster, as accurate); every other operation stays exactly IEEE float32, as
    # each program node is its own loop that stores its result.
    _JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
    _JIT_RUN = dict(_JIT, fastmath={"contract"})

    from llvmlite import ir as _ir
    from numba.core import types as _t
    from numba.extending import intrinsic

    @intrinsic
    def _f2i(typingctx, x):
        """float32 -> its bits as int32 (a plain bitcast, so loops using it still vectorise)."""
        if x != _t.float32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _ir.IntType(32))

        return _t.int32(_t.float32), codegen

    @intrinsic
    def _i2f(typingctx, i):
        """int32 bits -> float32 (truncates a wider int first)."""
        if not isinstance(i, _t.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = args[0]
            if v.type.width != 32:
                v = builder.trunc(v, _ir.IntType(32))
            return builder.bitcast(v, _ir.FloatType())

        return _t.float32(i), codegen

    # Branch-free float32 exp/log/tanh (Cephes polynomials, <= 2 ulp): libm calls would keep
    # LLVM from vectorising the loop and cost 10-20 ns each.
    _F = np.float32
    _MAGIC = _F(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer kept in the low bits
    _MAGIC_BITS = np.int32(0x4B400000)
    _LOG2E = _F(1.44269504088896341)
    _LN2_HI = _F(0.693359375)
    _LN2_LO = _F(-2.12194440e-4)
    _SQRTHF = _F(0.707106781186547524)
    _INF = _F(np.inf)
    _HALF = _F(0.5)
    _TWO = _F(2.0)

    @njit(inline="always", **_JIT)
    def _expf(x):
        """exp for float32; NaN -> NaN, -inf -> 0, overflow -> inf."""
        nan = x != x
        x = _F(-104.0) if x < _F(-104.0) else x
        x = _F(89.0) if x > _F(89.0) else x
        x = _ZERO if nan else x
        t = x * _LOG2E + _MAGIC
        n = _f2i(t) - _MAGIC_BITS  # round(x / ln 2), in [-150, 129]
        fn = t - _MAGIC
        r = x - fn * _LN2_HI - fn * _LN2_LO
        p = (((((_F(1.9875691500e-4) * r + _F(1.3981999507e-3)) * r + _F(8.3334519073e-3)) * r
               + _F(4.1665795894e-2)) * r + _F(1.6666665459e-1)) * r + _F(5.0000001201e-1)) * r * r + r + _ONE
        n1 = n >> 1  # two factors 2**n1 * 2**n2 keep both normal, so subnormal results round once
        n2 = n - n1
        y = p * _i2f((n1 + 127) << 23) * _i2f((n2 + 127) << 23)
        return _NAN if nan else y

    @njit(inline="always", **_JIT)
    def _logf(x):
        """log for float32 x > 0 normal or +inf (callers guarantee x > EPS); NaN -> NaN."""
        bits = _f2i(x)
        e = _F((bits >> 23) - 126)
        m = _i2f((bits & 0x007FFFFF) | 0x3F000000)  # mantissa in [0.5, 1)
        small = m < _SQRTHF
        e = e - _ONE if small else e
        f = (m + m if small else m) - _ONE
        z = f * f
        y = (((((((((_F(7.0376836292e-2) * f - _F(1.1514610310e-1)) * f + _F(1.1676998740e-1)) * f
                   - _F(1.2420140846e-1)) * f + _F(1.4249322787e-1)) * f - _F(1.6668057665e-1)) * f
                + _F(2.0000714765e-1)) * f - _F(2.4999993993e-1)) * f + _F(3.3333331174e-1)) * f * z)
        y = y + _LN2_LO * e - _HALF * z
        y = f + y + _LN2_HI * e
        y = _INF if x == _INF else y
        return x if x != x else y

    @njit(inline="always", **_JIT)
    def _tanhf(x):
        """tanh for float32; odd, NaN -> NaN."""
        z = abs(x)
        big = _ONE - _TWO / (_expf(z + z) + _ONE)
        big = -big if x < _ZERO else big
        w = x * x
        small = ((((_F(-5.70498872745e-3) * w + _F(2.06390887954e-2)) * w - _F(5.37397155531e-2)) * w
                  + _F(1.33314422036e-1)) * w - _F(3.33332819422e-1)) * w * x + x
        small = x if z == _ZERO else small  # keeps the sign of -0
        return small if z <= _F(0.625) else (big if z == z else x)

    @njit(**_JIT)
    def _arity(op):
        if op == 5 or (op >= 6 and op <= 12):  # neg log sqrt abs square inv exp tanh
            return 1
        if op >= 1 and op <= N_FUNCTIONS:
            return 2
        return 0

    @njit(**_JIT)
    def _compile(ops, consts, length, m, code, cval, res):
        """Postfix rows -> register code.

        ops: int32[P, L], consts: float32[P, L], length: int32[P]; writes code: int32[P, L, 4]
        (op, dst, a, b; FILL has the constant in cval: float32[P, L]), res: int32[P, 2]
        (number of instructions, result register). Returns (n_regs, error): error is 0, or
        1 + the first invalid program (bad opcode, stack underflow, stack not ending at 1).
        """
        P, L = ops.shape
        n_regs = 0
        vstack = np.empty(L + 1, np.int32)  # value stack: register numbers
        free = np.empty(L + 2, np.int32)  # free intermediate registers (LIFO)
        for p in range(P):
            n = min(max(length[p], 0), L)
            sp = 0
            nfree = 0
            top = m  # next never-used register
            k = 0
            for i in range(n):
                op = ops[p, i]
                if op == PAD:
                    continue
                if op >= FIRST_VAR:
                    if op - FIRST_VAR >= m:
                        return n_regs, p + 1
                    vstack[sp] = op - FIRST_VAR
                    sp += 1
                    continue
                ar = _arity(op)
                if op != CONST and (ar == 0 or sp < ar):
                    return n_regs, p + 1
                if nfree > 0:  # allocate dst before releasing operands: dst != a, b
                    nfree -= 1
                    d = free[nfree]
                else:
                    d = top
                    top += 1
                if op == CONST:
                    code[p, k, 0] = FILL
                    code[p, k, 1] = d
                    cval[p, k] = consts[p, i]
                else:
                    b = vstack[sp - 1]
                    a = vstack[sp - 2] if ar == 2 else b
                    sp -= ar
                    code[p, k, 0] = op
                    code[p, k, 1] = d
                    code[p, k, 2] = a
                    code[p, k, 3] = b
                    if a >= m:
                        free[nfree] = a
                        nfree += 1
                    if ar == 2 and b >= m:
                        free[nfree] = b
                        nfree += 1
                vstack[sp] = d
                sp += 1
                k += 1
            if sp != 1:
                return n_regs, p + 1
            res[p, 0] = k
            res[p, 1] = vstack[0]
            n_regs = max(n_regs, top - m)
        return n_regs, 0

    @njit(**_JIT_RUN)
    def _exec(D, d, o, R, op, a, b, c, nb):
        """One instruction over the first nb rows of the block buffer R: float32[regs, B], into
        D[d, o:o + nb] (D is R, or the output for a program's last instruction)."""
        if op == 1:
            for j in range(nb):
                D[d, o + j] = R[a, j] + R[b, j]
        elif op == 2:
            for j in range(nb):
                D[d, o + j] = R[a, j] - R[b, j]
        elif op == 3:
            for j in range(nb):
                D[d, o + j] = R[a, j] * R[b, j]
        elif op == 4:
            for j in range(nb):
                x = R[b, j]
                D[d, o + j] = R[a, j] / x if abs(x) > _E else _ONE
        elif op == 5:
            for j in range(nb):
                D[d, o + j] = -R[a, j]
        elif op == 6:
            for j in range(nb):
                x = abs(R[a, j])
                D[d, o + j] = _logf(x) if x > _E else _ZERO
        elif op == 7:
            for j in range(nb):
                D[d, o + j] = math.sqrt(abs(R[a, j]))
        elif op == 8:
            for j in range(nb):
                D[d, o + j] = abs(R[a, j])
        elif op == 9:
            for j in range(nb):
                x = R[a, j]
                D[d, o + j] = x * x
        elif op == 10:
            for j in range(nb):
                x = R[a, j]
                D[d, o + j] = _ONE / x if abs(x) > _E else _ZERO
        elif op == 11:
            for j in range(nb):
                x = R[a, j]
                D[d, o + j] = _expf(_XMAX if x > _XMAX else x)  # NaN passes through
        elif op == 12:
            for j in range(nb):
                D[d, o + j] = _tanhf(R[a, j])
        elif op == 13:  # torch.minimum: NaN if either is NaN
            for j in range(nb):
                x = R[a, j]
                y = R[b, j]
                t = x if x < y else y
                t = t if y == y else y
                D[d, o + j] = x if x != x else t
        elif op == 14:
            for j in range(nb):
                x = R[a, j]
                y = R[b, j]
                t = x if x > y else y
                t = t if y == y else y
                D[d, o + j] = x if x != x else t
        else:  # FILL
            for j in range(nb):
                D[d, o + j] = c

    @njit(parallel=True, **_JIT_RUN)
    def _run(code, cval, res, Xt, out, n_regs, block, chunk):
        """Execute register code. Xt: float32[m, N] (features transposed); out: float32[P, N]."""
        m, N = Xt.shape
        P = code.shape[0]
        nblk = (N + block - 1) // block
        nchk = (P + chunk - 1) // chunk
        for w in prange(nblk * nchk):
            rb = w % nblk  # consecutive items share a program chunk: its code stays in cache
            r0 = rb * block
            nb = min(block, N - r0)
            p0 = (w // nblk) * chunk
            R = np.empty((m + n_regs, block), np.float32)
            for f in range(m):
                for j in range(nb):
                    R[f, j] = Xt[f, r0 + j]
            for p in range(p0, min(p0 + chunk, P)):
                n = res[p, 0]
                for k in range(n - 1):
                    _exec(R, code[p, k, 1], 0, R, code[p, k, 0], code[p, k, 2], code[p, k, 3], cval[p, k], nb)
                if n > 0:  # the last instruction writes straight into the output
                    k = n - 1
                    _exec(out, p, r0, R, code[p, k, 0], code[p, k, 2], code[p, k, 3], cval[p, k], nb)
                else:  # a single feature
                    r = res[p, 1]
                    for j in range(nb):
                        out[p, r0 + j] = R[r, j]

    @njit(**_JIT)
    def _dedup_compile(ops, consts, length, m, table_size):
        """Hash-cons every subtree of the population into one DAG, then emit register code.

        Returns (code int32[K, 4], cval float32[K], out_at int32[P], out_reg int32[P],
        out_ptr int32[K + 2], n_regs, n_distinct_nodes, error); see ``_run_dag`` for out_*. Registers are freed after the last use of a node
        (liveness over the whole population, programs in order).
        """
        P, L = ops.shape
        # DAG nodes: key (op, a, b, const bits); leaves are nodes too so that keys are exact
        cap = 16
        for p in range(P):
            cap += min(max(length[p], 0), L)
        nop = np.empty(cap, np.int32)
        na = np.empty(cap, np.int32)
        nb_ = np.empty(cap, np.int32)
        nc = np.empty(cap, np.float32)
        nbits = np.empty(cap, np.int32)
        tsize = table_size
        while tsize < 2 * cap:
            tsize *= 2
        table = np.full(tsize, -1, np.int32)
        root = np.empty(P, np.int32)
        vstack = np.empty(L + 1, np.int32)
        U = 0
        cbits = consts.view(np.int32)
        for p in range(P):
            n = min(max(length[p], 0), L)
            sp = 0
            for i in range(n):
                op = ops[p, i]
                if op == PAD:
                    continue
                a = -1
                b = -1
                bits = 0
                if op >= FIRST_VAR:
                    if op - FIRST_VAR >= m:
                        return _fail(P, p)
                elif op == CONST:
                    bits = cbits[p, i]
                else:
                    ar = _arity(op)
                    if ar == 0 or sp < ar:
                        return _fail(P, p)
                    b = vstack[sp - 1]
                    if ar == 2:
                        a = vstack[sp - 2]
                    else:
                        a = b
                        b = -1
                    sp -= ar
                h = (op * 0x9E3779B1 + (a + 1) * 0x85EBCA77 + (b + 1) * 0xC2B2AE3D + bits * 0x27D4EB2F) & (tsize - 1)
                while True:
                    e = table[h]
                    if e < 0:
                        nop[U] = op
                        na[U] = a
                        nb_[U] = b
                        nbits[U] = bits
                        nc[U] = consts[p, i] if op == CONST else _ZERO
                        table[h] = U
                        e = U
                        U += 1
                        break
                    if nop[e] == op and na[e] == a and nb_[e] == b and nbits[e] == bits:
                        break
                    h = (h + 1) & (tsize - 1)
                vstack[sp] = e
                sp += 1
            if sp != 1:
                return _fail(P, p)
            root[p] = vstack[0]
        # last use of each node (as an operand or as a program result): index in node order,
        # results count as used "at" the node that finishes the program's root
        last = np.full(U, -1, np.int64)
        for u in range(U):
            if na[u] >= 0:
                last[na[u]] = max(last[na[u]], u)
            if nb_[u] >= 0:
                last[nb_[u]] = max(last[nb_[u]], u)
        for p in range(P):
            last[root[p]] = max(last[root[p]], root[p])  # alive at least until it is copied out
        # emit code in node order (children precede parents: topological)
        reg = np.full(U, -1, np.int32)
        kidx = np.full(U, -1, np.int32)  # instruction computing node u (-1: a feature)
        code = np.empty((U, 4), np.int32)
        cval = np.zeros(U, np.float32)
        free = np.empty(U + 1, np.int32)
        nfree = 0
        top = m
        k = 0
        executed = 0
        # release list: nodes whose last use is node u get freed right after u's instruction
        order = np.argsort(last, kind="mergesort")
        ptr = 0
        while ptr < U and last[order[ptr]] < 0:
            ptr += 1
        for u in range(U):
            op = nop[u]
            executed += 1
            if op >= FIRST_VAR:
                reg[u] = op - FIRST_VAR
            else:
                if nfree > 0:
                    nfree -= 1
                    d = free[nfree]
                else:
                    d = top
                    top += 1
                reg[u] = d
                kidx[u] = k
                code[k, 0] = FILL if op == CONST else op
                code[k, 1] = d
                code[k, 2] = reg[na[u]] if na[u] >= 0 else 0
                code[k, 3] = reg[nb_[u]] if nb_[u] >= 0 else code[k, 2]
                cval[k] = nc[u]
                k += 1
            while ptr < U and last[order[ptr]] <= u:
                v = order[ptr]
                ptr += 1
                if reg[v] >= m:
                    free[nfree] = reg[v]
                    nfree += 1
        # copy-out schedule (CSR over instructions): program p is copied after the instruction
        # that computes its root; single-feature programs before instruction 0 (slot 0)
        slot = np.empty(P, np.int64)
        for p in range(P):
            slot[p] = kidx[root[p]] + 1
        out_at = np.argsort(slot, kind="mergesort").astype(np.int32)
        out_reg = np.empty(P, np.int32)
        out_ptr = np.zeros(k + 2, np.int32)
        for i in range(P):
            out_reg[i] = reg[root[out_at[i]]]
            out_ptr[slot[out_at[i]] + 1] += 1
        for s in range(k + 1):
            out_ptr[s + 1] += out_ptr[s]
        return code[:k], cval[:k], out_at, out_reg, out_ptr, top - m, executed, 0

    @njit(**_JIT)
    def _fail(P, p):
        e = np.empty(0, np.int32)
        return np.empty((0, 4), np.int32), np.empty(0, np.float32), e, e, e, 0, 0, p + 1

    @njit(parallel=True, **_JIT_RUN)
    def _run_dag(code, cval, out_at, out_reg, out_ptr, Xt, out, n_regs, block):
        """Execute DAG code per row block. Copy-out schedule, CSR over slots (slot 0: before any
        instruction, slot k + 1: after instruction k): for out_ptr[s] <= i < out_ptr[s + 1], copy
        register out_reg[i] into row out_at[i] of out."""
        m, N = Xt.shape
        K = code.shape[0]
        nblk = (N + block - 1) // block
        for rb in prange(nblk):
            r0 = rb * block
            nb = min(block, N - r0)
            R = np.empty((m + n_regs, block), np.float32)
            for f in range(m):
                for j in range(nb):
                    R[f, j] = Xt[f, r0 + j]
            for i in range(out_ptr[0], out_ptr[1]):  # programs that are a single feature
                r = out_reg[i]
                for j in range(nb):
                    out[out_at[i], r0 + j] = R[r, j]
            for k in range(K):
                _exec(R, code[k, 1], 0, R, code[k, 0], code[k, 2], code[k, 3], cval[k], nb)
                for i in range(out_ptr[k + 1], out_ptr[k + 2]):
                    r = out_reg[i]
                    for j in range(nb):
                        out[out_at[i], r0 + j] = R[r, j]


def _threads(n_threads: int | None) -> int:
    n = torch.get_num_threads() if n_threads is None else n_threads
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


def _check_inputs(ops, consts, length, X, out):
    if not _HAVE_NUMBA:
        raise RuntimeError("numba is not installed; use the torch backend")
    for name, t in (("ops", ops), ("consts", consts), ("length", length), ("X", X)):
        if t.device.type != "cpu":
            raise ValueError(f"evaluate_numba runs on CPU tensors; {name} is on {t.device}")
    if ops.dim() != 2 or consts.shape != ops.shape or length.shape != (ops.shape[0],) or X.dim() != 2:
        raise ValueError(f"shapes: ops {tuple(ops.shape)}, consts {tuple(consts.shape)}, length {tuple(length.shape)}, X {tuple(X.shape)}")
    P, N = ops.shape[0], X.shape[0]
    if out is None:
        out = torch.empty(P, N, dtype=torch.float32)
    elif out.shape != (P, N) or out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous CPU float32[{P}, {N}] tensor")
    # numpy, not torch, for the conversions: a torch op here wakes torch's OpenMP pool, whose
    # spinning threads then compete with numba's on a small machine
    o = np.ascontiguousarray(ops.numpy(), dtype=np.int32)
    c = np.ascontiguousarray(consts.numpy(), dtype=np.float32)
    ln = np.ascontiguousarray(length.numpy(), dtype=np.int32)
    Xt = np.ascontiguousarray(X.numpy().T, dtype=np.float32)  # [m, N]: one feature's block is contiguous
    return o, c, ln, Xt, out


def evaluate_numba(
    ops: torch.Tensor,
    consts: torch.Tensor,
    length: torch.Tensor,
    X: torch.Tensor,
    out: torch.Tensor | None = None,
    *,
    block: int = DEFAULT_BLOCK,
    chunk: int = DEFAULT_CHUNK,
    n_threads: int | None = None,
    dedup: bool = False,
    stats: list | None = None,
) -> torch.Tensor:
    """Evaluate every program on every row: ``float32[P, N]``.

    ops: int32[P, L], consts: float32[P, L], length: int32[P] (postfix, see ``population``),
    X: float32[N, m] on CPU. ``out`` (contiguous float32[P, N]) is filled and returned if given.
    ``block``: rows per block; ``chunk``: programs per work item; ``n_threads``: default
    ``torch.get_num_threads()``. ``dedup``: evaluate each distinct subtree of the population
    once; a ``DedupStats`` is appended to ``stats`` if given. Raises ValueError on an invalid
    program (bad opcode, stack underflow, stack not ending at exactly one value).
    """
    o, c, ln, Xt, out = _check_inputs(ops, consts, length, X, out)
    P, L = o.shape
    m, N = Xt.shape
    if P == 0 or N == 0:
        return out
    if block < 1 or chunk < 1:
        raise ValueError("block and chunk must be >= 1")
    res_np = out.numpy()
    prev = numba.get_num_threads()
    numba.set_num_threads(_threads(n_threads))
    try:
        if dedup:
            _evaluate_dedup(o, c, ln, Xt, res_np, block, stats)
        else:
            code = np.empty((P, max(L, 1), 4), np.int32)
            cval = np.empty((P, max(L, 1)), np.float32)
            res = np.empty((P, 2), np.int32)
            n_regs, err = _compile(o, c, ln, m, code, cval, res)
            if err:
                raise ValueError(f"program {err - 1} is not a valid postfix program over {m} features")
            _run(code, cval, res, Xt, res_np, max(n_regs, 1), block, chunk)
    finally:
        numba.set_num_threads(prev)
    return out


def _evaluate_dedup(o, c, ln, Xt, res_np, block, stats):
    m = Xt.shape[0]
    code, cval, out_at, out_reg, out_ptr, n_regs, executed, err = _dedup_compile(o, c, ln, m, 1024)
    if err:
        raise ValueError(f"program {err - 1} is not a valid postfix program over {m} features")
    _run_dag(code, cval, out_at, out_reg, out_ptr, Xt, res_np, max(n_regs, 1), block)
    if stats is not None:
        stats.append(DedupStats(int(np.clip(ln, 0, o.shape[1]).sum()), int(executed), int(code.shape[0])))
