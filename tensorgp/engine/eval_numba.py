"""CPU fast path: evaluate a postfix population with numba, rows in cache-sized blocks.

Two passes:

1. ``_compile`` (serial, O(P L)) turns each postfix row into register code. Registers are rows
   of a per-thread block buffer ``R: float32[m + n_regs, B]``: the first m hold the feature
   block (copied once per work item, shared by its programs), the rest hold intermediate
   values. A feature leaf emits nothing (it is a register number), a constant emits one FILL,
   a function node emits ``(op, dst, a, b)``. ``dst`` is never one of its operands, so LLVM's
   runtime alias check passes and every loop runs vectorised; registers are recycled LIFO, so
   a program needs at most stack depth + 1 of them.
2. ``_run_items`` executes work items (program chunk x row block), one instruction at a time
   as a loop over the B rows of the block (AVX2: 8 lanes). A program's result row is streamed
   to ``out`` with non-temporal stores. Threads are plain Python threads calling the nogil
   kernel and taking items from an atomic counter (dynamic balance, and no OpenMP pool to spin
   against torch's).

Dedup: every distinct subtree of the population (same ops, same constant bits) is hash-consed
into one DAG node and evaluated once per row block; a node's register is released after its
last use. Random populations share a third to a half of their nodes, evolved ones more. The
DAG runs the same per-node kernel, so both paths give bit-identical results.

Semantics are those of ``primitives.FUNCTIONS`` in float32: constants are float32, so nothing
is widened to float64. exp/log/tanh are branch-free polynomial versions (<= 1.3 ulp, so they
vectorise); torch's differ by a few ulp at most, as do torch's sqrt and numba's (correctly
rounded) one; sin, cos and pow call libm's sinf, cosf and powf, within an ulp or two of torch's
vectorised versions. Everything else is bit-identical to torch.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .primitives import CONST, EPS, EXP_MAX, FIRST_VAR, FUNCTIONS, N_BUILTIN, PAD, POW_MAX, arity_table

try:  # numba is optional: callers check available() and fall back to the torch interpreter
    from llvmlite import ir as _ir
    from numba import njit
    from numba.core import types as _t
    from numba.extending import intrinsic

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False

FILL = 0  # instruction opcode for "register <- constant" (no function uses opcode 0)
DEFAULT_BLOCK = 512  # rows per block (bench/eval_cpu.py: 256..1024 are within noise)
DEFAULT_CHUNK = 64  # programs per work item
DAG_CACHE_BYTES = 1 << 20  # dedup: halve the block (down to 64) until the register file fits
DEDUP_MIN_SAVING = 0.2  # dedup=None runs the DAG when it saves at least this share of instructions

_F = np.float32
_E = _F(EPS)
_XMAX = _F(EXP_MAX)
_ONE = _F(1.0)
_ZERO = _F(0.0)
_HALF = _F(0.5)
_TWO = _F(2.0)
_NAN = _F(np.nan)
_INF = _F(np.inf)
_PMAX = _F(POW_MAX)
_ARITY = arity_table().numpy()  # int32[FIRST_VAR]
# _exec hard-codes the built-in opcodes 1..17 in this order; a changed primitive set must change
# this file (which also invalidates numba's on-disk cache, keyed on this file). User functions
# have no code here: ``eval_numba_user`` generates a run kernel for those with a numba form
# (plain path, no DAG); ``evaluate`` sends populations using others to the torch interpreter.
_IMPLEMENTED = ("add", "sub", "mul", "div", "neg", "log", "sqrt", "abs", "square", "inv", "exp", "tanh", "min", "max",
                "pow", "sin", "cos")
assert tuple(f.name for f in FUNCTIONS) == _IMPLEMENTED, "eval_numba is out of date with primitives.FUNCTIONS"


def available() -> bool:
    """True when numba imports, i.e. ``evaluate_numba`` can run."""
    return _HAVE_NUMBA


@dataclass
class DedupStats:
    """Work of one ``evaluate_numba`` call that built the DAG (``dedup`` True or None), per row.

    ``population_nodes``: sum of program lengths (the node evaluations the population stands for);
    ``executed_nodes``: distinct nodes (distinct subtrees, leaves included);
    ``instructions``: vector instructions of the DAG (function nodes and constant fills);
    ``plain_instructions``: the same count without sharing (what the plain path runs);
    ``registers``: intermediate registers live at once; ``block``: rows per block it would use;
    ``used``: whether the DAG was run (always with dedup=True; see ``evaluate_numba`` for None).
    """

    population_nodes: int
    executed_nodes: int
    instructions: int
    plain_instructions: int
    registers: int
    block: int
    used: bool


if _HAVE_NUMBA:
    # error_model="numpy": no ZeroDivisionError checks (they would also block vectorisation).
    # The kernels allow only FMA contraction: it fuses a * b + c inside the exp/log/tanh
    # polynomials (faster, as accurate); every other operation is a lone IEEE float32 op whose
    # result is stored, so nothing else can be fused.
    _JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
    _JIT_RUN = dict(_JIT, fastmath={"contract"})

    @intrinsic
    def _f2i(typingctx, x):
        """float32 -> its bits as int32 (a bitcast, so loops using it still vectorise)."""
        if x != _t.float32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _ir.IntType(32))

        return _t.int32(_t.float32), codegen

    @intrinsic
    def _i2f(typingctx, i):
        """int bits -> float32 (a wider int is truncated to 32 bits first)."""
        if not isinstance(i, _t.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = args[0]
            if v.type.width != 32:
                v = builder.trunc(v, _ir.IntType(32))
            return builder.bitcast(v, _ir.FloatType())

        return _t.float32(i), codegen

    @intrinsic
    def _fetch_add(typingctx, counter):
        """Atomically ``counter[0] += 1`` (int64[1]); returns the old value."""
        if not (isinstance(counter, _t.Array) and counter.dtype == _t.int64):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            return builder.atomic_rmw("add", ary.data, _ir.Constant(_ir.IntType(64), 1), "monotonic")

        return _t.int64(counter), codegen

    @intrinsic
    def _stream8(typingctx, dst, src):
        """Copy 8 float32 from address src to the 32-byte aligned address dst with a
        non-temporal store: ``out`` is written once and not read back here, so this skips the
        read-for-ownership of every output line (a fifth of the run time, more on 2 threads)."""
        if not (isinstance(dst, _t.Integer) and isinstance(src, _t.Integer)):
            return None

        def codegen(context, builder, sig, args):
            vt = _ir.VectorType(_ir.FloatType(), 8)
            v = builder.load(builder.inttoptr(args[1], vt.as_pointer()), align=4)
            st = builder.store(v, builder.inttoptr(args[0], vt.as_pointer()), align=32)
            st.set_metadata("nontemporal", builder.module.add_metadata([_ir.Constant(_ir.IntType(32), 1)]))
            return context.get_dummy_value()

        return _t.void(dst, src), codegen

    @intrinsic
    def _fence(typingctx):
        """Full memory fence: orders the non-temporal stores before the results are handed over."""

        def codegen(context, builder, sig, args):
            builder.fence("seq_cst")
            return context.get_dummy_value()

        return _t.void(), codegen

    @njit(inline="always", **_JIT)
    def _copy_out(out, p, r0, R, r, nb):
        """out[p, r0:r0 + nb] = R[r, :nb], streaming the 32-byte aligned middle part."""
        da = out.ctypes.data + (p * out.shape[1] + r0) * 4
        sa = R.ctypes.data + r * R.shape[1] * 4
        j = 0
        while j < nb and (da + 4 * j) % 32 != 0:
            out[p, r0 + j] = R[r, j]
            j += 1
        while j + 8 <= nb:
            _stream8(da + 4 * j, sa + 4 * j)
            j += 8
        while j < nb:
            out[p, r0 + j] = R[r, j]
            j += 1

    # Branch-free float32 exp/log/tanh (Cephes polynomials): a libm call would keep LLVM from
    # vectorising the loop and costs 10-20 ns.
    _MAGIC = _F(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer kept in the low bits
    _MAGIC_BITS = np.int32(0x4B400000)
    _LOG2E = _F(1.44269504088896341)
    _LN2_HI = _F(0.693359375)
    _LN2_LO = _F(-2.12194440e-4)
    _SQRTHF = _F(0.707106781186547524)
    _EXP_LO = _F(-104.0)  # exp below this is 0 in float32
    _EXP_HI = _F(89.0)  # exp above this is inf in float32
    _TANH_SMALL = _F(0.625)

    @njit(inline="always", **_JIT)
    def _expf(x):
        """exp for float32; NaN -> NaN, -inf -> 0, overflow -> inf, subnormal results rounded once."""
        nan = x != x
        x = _EXP_LO if x < _EXP_LO else x
        x = _EXP_HI if x > _EXP_HI else x
        x = _ZERO if nan else x
        t = x * _LOG2E + _MAGIC
        n = _f2i(t) - _MAGIC_BITS  # round(x / ln 2), in [-150, 129]
        fn = t - _MAGIC
        r = x - fn * _LN2_HI - fn * _LN2_LO
        p = (((((_F(1.9875691500e-4) * r + _F(1.3981999507e-3)) * r + _F(8.3334519073e-3)) * r
               + _F(4.1665795894e-2)) * r + _F(1.6666665459e-1)) * r + _F(5.0000001201e-1)) * r * r + r + _ONE
        n1 = n >> 1  # 2**n as 2**n1 * 2**n2: both normal, so a subnormal result rounds once
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
        """tanh for float32; odd, NaN -> NaN, keeps the sign of -0."""
        z = abs(x)
        big = _ONE - _TWO / (_expf(z + z) + _ONE)
        big = -big if x < _ZERO else big
        w = x * x
        small = ((((_F(-5.70498872745e-3) * w + _F(2.06390887954e-2)) * w - _F(5.37397155531e-2)) * w
                  + _F(1.33314422036e-1)) * w - _F(3.33332819422e-1)) * w * x + x
        small = x if z == _ZERO else small
        return small if z <= _TANH_SMALL else (big if z == z else x)

    @njit(**_JIT)
    def _compile(ops, consts, length, m, code, cval, res, arity):
        """Postfix rows -> register code (``arity: int32[FIRST_VAR]``, the current function table's).

        ops: int32[P, L], consts: float32[P, L], length: int32[P]. Writes code: int32[P, L, 4]
        ((op, dst, a, b); a FILL's constant is in cval: float32[P, L]) and res: int32[P, 2]
        (number of instructions, result register). Returns (n_regs, error): error is 0, or
        1 + the first invalid program (bad opcode, stack underflow, stack not ending at 1).
        """
        P, L = ops.shape
        n_regs = 0
        vstack = np.empty(L + 1, np.int32)  # value stack of register numbers
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
                if op < 0:
                    return n_regs, p + 1
                ar = arity[op]
                if sp < ar or (ar == 0 and op != CONST):  # an opcode no function holds
                    return n_regs, p + 1
                if nfree > 0:  # allocate dst before releasing the operands: dst != a, b
                    nfree -= 1
                    d = free[nfree]
                else:
                    d = top
                    top += 1
                code[p, k, 0] = FILL if op == CONST else op
                code[p, k, 1] = d
                cval[p, k] = consts[p, i] if op == CONST else _ZERO
                if ar > 0:
                    b = vstack[sp - 1]
                    a = vstack[sp - 2] if ar == 2 else b
                    sp -= ar
                    code[p, k, 2] = a
                    code[p, k, 3] = b
                    if a >= m:
                        free[nfree] = a
                        nfree += 1
                    if ar == 2 and b >= m:
                        free[nfree] = b
                        nfree += 1
                else:
                    code[p, k, 2] = 0
                    code[p, k, 3] = 0
                vstack[sp] = d
                sp += 1
                k += 1
            if sp != 1:
                return n_regs, p + 1
            res[p, 0] = k
            res[p, 1] = vstack[0]
            n_regs = max(n_regs, top - m)
        return n_regs, 0

    @njit(inline="always", **_JIT_RUN)
    def _exec(D, d, R, op, a, b, c, nb):
        """One instruction on the first nb rows of the block: reads rows a, b of R: float32[regs, B],
        writes row d of D (the same buffer, passed twice so that LLVM checks the rows for overlap
        once per loop and then runs the vector version)."""
        if op == 1:
            for j in range(nb):
                D[d, j] = R[a, j] + R[b, j]
        elif op == 2:
            for j in range(nb):
                D[d, j] = R[a, j] - R[b, j]
        elif op == 3:
            for j in range(nb):
                D[d, j] = R[a, j] * R[b, j]
        elif op == 4:
            for j in range(nb):
                y = R[b, j]
                x = R[a, j]
                D[d, j] = (x if x != x else _ONE) if abs(y) <= _E else x / y  # NaN either side: NaN
        elif op == 5:
            for j in range(nb):
                D[d, j] = -R[a, j]
        elif op == 6:
            for j in range(nb):
                x = abs(R[a, j])
                D[d, j] = _ZERO if x <= _E else _logf(x)
        elif op == 7:
            for j in range(nb):
                D[d, j] = np.sqrt(abs(R[a, j]))
        elif op == 8:
            for j in range(nb):
                D[d, j] = abs(R[a, j])
        elif op == 9:
            for j in range(nb):
                x = R[a, j]
                D[d, j] = x * x
        elif op == 10:
            for j in range(nb):
                x = R[a, j]
                D[d, j] = _ZERO if abs(x) <= _E else _ONE / x
        elif op == 11:
            for j in range(nb):
                x = R[a, j]
                D[d, j] = _expf(_XMAX if x > _XMAX else x)  # NaN passes the clamp
        elif op == 12:
            for j in range(nb):
                D[d, j] = _tanhf(R[a, j])
        elif op == 13:  # as torch.minimum: NaN if either is NaN; a when a == b (signed zeros)
            for j in range(nb):
                x = R[a, j]
                y = R[b, j]
                t = y if y < x else x
                t = y if y != y else t
                D[d, j] = x if x != x else t
        elif op == 14:
            for j in range(nb):
                x = R[a, j]
                y = R[b, j]
                t = y if y > x else x
                t = y if y != y else t
                D[d, j] = x if x != x else t
        elif op == 15:  # min(|x|^y, POW_MAX), NaN if either is NaN (IEEE powf(1, nan) is 1)
            for j in range(nb):
                x = R[a, j]
                y = R[b, j]
                t = np.float32(np.float64(abs(x)) ** np.float64(y))  # float64, rounded: as torch's _pow
                t = _PMAX if t > _PMAX else t
                D[d, j] = _NAN if (x != x) or (y != y) else t
        elif op == 16:  # libm sinf/cosf: not vectorised, correctly range-reduced for huge |x|
            for j in range(nb):
                D[d, j] = np.sin(R[a, j])
        elif op == 17:
            for j in range(nb):
                D[d, j] = np.cos(R[a, j])
        else:  # FILL
            for j in range(nb):
                D[d, j] = c

    @njit(**_JIT)
    def _load_features(R, Xt, r0, nb):
        for f in range(Xt.shape[0]):
            for j in range(nb):
                R[f, j] = Xt[f, r0 + j]

    @njit(**_JIT_RUN)
    def _run_items(code, cval, res, Xt, out, n_regs, block, chunk, counter):
        """Work items (program chunk c, row block rb) = c * nblk + rb, taken from ``counter``
        until none is left. Xt: float32[m, N] (features transposed); out: float32[P, N]."""
        m, N = Xt.shape
        P = code.shape[0]
        nblk = (N + block - 1) // block
        n_items = nblk * ((P + chunk - 1) // chunk)
        R = np.empty((m + n_regs, block), np.float32)
        while True:
            w = _fetch_add(counter)
            if w >= n_items:
                break
            r0 = (w % nblk) * block  # consecutive items share a chunk: its code stays in cache
            nb = min(block, N - r0)
            p0 = (w // nblk) * chunk
            _load_features(R, Xt, r0, nb)
            for p in range(p0, min(p0 + chunk, P)):
                for k in range(res[p, 0]):
                    _exec(R, code[p, k, 1], R, code[p, k, 0], code[p, k, 2], code[p, k, 3], cval[p, k], nb)
                _copy_out(out, p, r0, R, res[p, 1], nb)
        _fence()

    @njit(**_JIT)
    def _dedup_compile(ops, consts, length, m):
        """Hash-cons every subtree of the population into one DAG, then emit register code.

        Returns (code int32[K, 4], cval float32[K], out_at int32[P], out_reg int32[P],
        out_ptr int32[K + 2], n_regs, n_distinct_nodes, error); see ``_run_dag_items``.
        Nodes are numbered in creation order, children first, which is the execution order.
        """
        P, L = ops.shape
        cap = 1
        for p in range(P):
            cap += min(max(length[p], 0), L)
        nop = np.empty(cap, np.int32)  # node: opcode, children (-1: none), constant bits
        na = np.empty(cap, np.int32)
        nb_ = np.empty(cap, np.int32)
        nbits = np.empty(cap, np.int32)
        nc = np.empty(cap, np.float32)
        tsize = 16
        while tsize < 2 * cap:
            tsize *= 2
        table = np.full(tsize, -1, np.int32)
        root = np.empty(P, np.int32)
        vstack = np.empty(L + 1, np.int32)
        cbits = consts.view(np.int32)
        U = 0
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
                        return _fail(p)
                elif op == CONST:
                    bits = cbits[p, i]
                elif op < 0:
                    return _fail(p)
                else:
                    ar = _ARITY[op]
                    if sp < ar:
                        return _fail(p)
                    if ar == 2:
                        a = vstack[sp - 2]
                        b = vstack[sp - 1]
                    else:
                        a = vstack[sp - 1]
                    sp -= ar
                h = op * 0x9E3779B1 + (a + 1) * 0x85EBCA77 + (b + 1) * 0xC2B2AE3D + bits * 0x27D4EB2F
                h ^= h >> 29
                h = (h * 0xBF58476D) & (tsize - 1)
                while True:  # open addressing, linear probing
                    e = table[h]
                    if e < 0:
                        nop[U] = op
                        na[U] = a
                        nb_[U] = b
                        nbits[U] = bits
                        nc[U] = consts[p, i]
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
                return _fail(p)
            root[p] = vstack[0]
        # last use of each node: its last parent, or itself if it is a program's result (copied
        # out right after it is computed)
        last = np.full(U, -1, np.int32)
        for u in range(U):
            if na[u] >= 0:
                last[na[u]] = u
            if nb_[u] >= 0:
                last[nb_[u]] = u
        for p in range(P):
            last[root[p]] = max(last[root[p]], root[p])
        # CSR: nodes to release after node u
        rel_ptr = np.zeros(U + 1, np.int32)
        for v in range(U):
            rel_ptr[last[v] + 1] += 1
        for u in range(U):
            rel_ptr[u + 1] += rel_ptr[u]
        rel = np.empty(U, np.int32)
        fill = rel_ptr[:U].copy()
        for v in range(U):
            rel[fill[last[v]]] = v
            fill[last[v]] += 1
        # registers: allocate dst before releasing operands (dst != a, b), LIFO reuse
        reg = np.empty(U, np.int32)
        kidx = np.full(U, -1, np.int32)  # instruction computing node u (-1: a feature)
        code = np.zeros((U, 4), np.int32)
        cval = np.zeros(U, np.float32)
        free = np.empty(U + 1, np.int32)
        nfree = 0
        top = m
        k = 0
        for u in range(U):
            op = nop[u]
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
                if na[u] >= 0:
                    code[k, 2] = reg[na[u]]
                    code[k, 3] = reg[nb_[u]] if nb_[u] >= 0 else reg[na[u]]
                cval[k] = nc[u] if op == CONST else _ZERO
                k += 1
            for i in range(rel_ptr[u], rel_ptr[u + 1]):
                r = reg[rel[i]]
                if r >= m:
                    free[nfree] = r
                    nfree += 1
        # copy-out schedule, CSR over slots: slot 0 before any instruction (single-feature
        # programs), slot k + 1 right after instruction k
        out_ptr = np.zeros(k + 2, np.int32)
        for p in range(P):
            out_ptr[kidx[root[p]] + 2] += 1
        for s in range(k + 1):
            out_ptr[s + 1] += out_ptr[s]
        pos = out_ptr[: k + 1].copy()
        out_at = np.empty(P, np.int32)
        out_reg = np.empty(P, np.int32)
        for p in range(P):
            s = kidx[root[p]] + 1
            out_at[pos[s]] = p
            out_reg[pos[s]] = reg[root[p]]
            pos[s] += 1
        return code[:k], cval[:k], out_at, out_reg, out_ptr, top - m, U, 0

    @njit(**_JIT)
    def _fail(p):
        e = np.empty(0, np.int32)
        return np.empty((0, 4), np.int32), np.empty(0, np.float32), e, e, e, 0, 0, p + 1

    @njit(**_JIT_RUN)
    def _run_dag_items(code, cval, out_at, out_reg, out_ptr, Xt, out, n_regs, block, counter):
        """Run the whole DAG code on row blocks taken from ``counter``. After slot s (slot 0:
        before any instruction, slot k + 1: after instruction k), register out_reg[i] is copied
        into row out_at[i] of out, for out_ptr[s] <= i < out_ptr[s + 1]."""
        m, N = Xt.shape
        K = code.shape[0]
        nblk = (N + block - 1) // block
        R = np.empty((m + n_regs, block), np.float32)
        while True:
            rb = _fetch_add(counter)
            if rb >= nblk:
                break
            r0 = rb * block
            nb = min(block, N - r0)
            _load_features(R, Xt, r0, nb)
            for k in range(-1, K):
                if k >= 0:
                    _exec(R, code[k, 1], R, code[k, 0], code[k, 2], code[k, 3], cval[k], nb)
                for i in range(out_ptr[k + 1], out_ptr[k + 2]):
                    _copy_out(out, out_at[i], r0, R, out_reg[i], nb)
        _fence()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)  # running tasks finish; new ones go to the bigger pool
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorgp-numba")
        return _POOL


def _parallel(kernel, args: tuple, n_items: int, n_threads: int) -> None:
    """Run ``kernel(*args, counter)`` on n_threads threads (this one included); the kernel
    releases the GIL and takes work items from the shared atomic counter."""
    counter = np.zeros(1, np.int64)
    t = max(1, min(n_threads, n_items))
    futures = [_pool(t - 1).submit(kernel, *args, counter) for _ in range(t - 1)]
    kernel(*args, counter)
    for f in futures:
        f.result()


def _threads(n_threads: int | None) -> int:
    return max(1, int(torch.get_num_threads() if n_threads is None else n_threads))


def _as_numpy(ops, consts, length, X, out):
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
    # numpy, not torch, for the conversions: a torch op here would wake torch's OpenMP pool,
    # whose spinning threads then compete with ours on a small machine
    o = np.ascontiguousarray(ops.detach().numpy(), dtype=np.int32)
    narrow = (torch.float16, torch.bfloat16)  # numpy has no bfloat16: widen in torch first (exact)
    c = np.ascontiguousarray((consts.float() if consts.dtype in narrow else consts).detach().numpy(), dtype=np.float32)
    ln = np.ascontiguousarray(length.detach().numpy(), dtype=np.int32)
    Xn = (X.float() if X.dtype in narrow else X).detach().numpy()
    Xt = np.ascontiguousarray(Xn.T, dtype=np.float32)  # [m, N]: a feature's block is contiguous
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
    dedup: bool | None = None,
    stats: list | None = None,
) -> torch.Tensor:
    """Evaluate every program on every row: ``float32[P, N]``.

    ops: int32[P, L], consts: float32[P, L], length: int32[P] (postfix, see ``population``),
    X: float32[N, m], all on CPU. ``out`` (contiguous float32[P, N]) is filled and returned if
    given. ``block``: rows per block; ``chunk``: programs per work item (plain path);
    ``n_threads``: default ``torch.get_num_threads()``.
    ``dedup``: True evaluates each distinct subtree of the population once; None decides per
    call: the DAG runs when it saves at least ``DEDUP_MIN_SAVING`` of the instructions and has
    a row block per thread, else the plain path runs. A ``DedupStats`` is appended to ``stats``
    whenever the DAG is built. Raises ValueError on an invalid program (unknown opcode,
    feature >= m, stack underflow, stack not ending at one value).
    """
    o, c, ln, Xt, out = _as_numpy(ops, consts, length, X, out)
    P, L = o.shape
    m, N = Xt.shape
    if block < 1 or chunk < 1:
        raise ValueError("block and chunk must be >= 1")
    if P == 0 or N == 0:
        return out
    res_np = out.numpy()
    nt = _threads(n_threads)
    run = _run_items
    user = (o > N_BUILTIN) & (o < CONST)
    if user.any():  # user functions: generated code, plain path only
        from .eval_numba_user import has_numba_forms, user_kernel

        if not has_numba_forms(np.unique(o[user]).tolist()):
            raise ValueError("a user function without a numba form cannot run on the numba backend "
                             "(register it with numba=...; evaluate() falls back to torch)")
        run = user_kernel({"_exec": _exec, "_fetch_add": _fetch_add, "_load_features": _load_features,
                           "_copy_out": _copy_out, "_fence": _fence})
        dedup = False
    if dedup is None or dedup:
        code, cval, out_at, out_reg, out_ptr, n_regs, n_nodes, err = _dedup_compile(o, c, ln, m)
        if err:
            raise ValueError(f"program {err - 1} is not a valid postfix program over {m} features")
        n_regs = max(n_regs, 1)
        blk = block  # keep the register file cache-resident: the DAG can hold many values live
        while blk > 64 and (m + n_regs) * blk * 4 > DAG_CACHE_BYTES:
            blk //= 2
        inside = np.arange(L)[None, :] < ln[:, None]
        plain = int((inside & (o > PAD) & (o < FIRST_VAR)).sum())
        K = code.shape[0]
        use = bool(dedup) or (K <= (1.0 - DEDUP_MIN_SAVING) * plain and -(-N // blk) >= nt)
        if stats is not None:
            stats.append(DedupStats(int(inside.sum()), int(n_nodes), K, plain, int(n_regs), blk, use))
        if use:
            _parallel(_run_dag_items, (code, cval, out_at, out_reg, out_ptr, Xt, res_np, n_regs, blk), -(-N // blk), nt)
            return out
    code = np.empty((P, max(L, 1), 4), np.int32)
    cval = np.empty((P, max(L, 1)), np.float32)
    res = np.empty((P, 2), np.int32)
    n_regs, err = _compile(o, c, ln, m, code, cval, res, arity_table().numpy())
    if err:
        raise ValueError(f"program {err - 1} is not a valid postfix program over {m} features")
    n_items = -(-N // block) * -(-P // chunk)
    _parallel(run, (code, cval, res, Xt, res_np, max(n_regs, 1), block, chunk), n_items, nt)
    return out
