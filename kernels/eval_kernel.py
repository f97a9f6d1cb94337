"""Triton evaluation of a postfix population: one kernel instance = one program x BLOCK_N rows.

Grid ``(P, cdiv(N, BLOCK_N))``: axis 0 walks programs so that consecutive instances read the same
row block of X (L2 reuse); the loop over program positions is a runtime loop to ``length[p]``, and
the opcode is uniform across an instance, so the dispatch branches never diverge.

Stack in registers: Triton has no dynamic register indexing, so the top of the stack lives in its
own ``[BLOCK_N]`` tensor (unary ops touch only it) and the rest in a ``[S, BLOCK_N]`` tensor where a
push writes slot ``d - 1`` with one ``tl.where`` and a binary op reads slot ``d - 2`` with a
select + sum over the S axis. With BLOCK_N >= 32 * num_warps each thread owns whole columns, so
these are per-thread register selects (no shared memory), O(S) per push/binary op.
Invariant: ``d`` values on the stack, the last in ``top``, the others in ``stack[0 : d - 1]``.

Semantics are those of ``tensorgp.engine.primitives.FUNCTIONS`` (see ``evaluate_triton``'s docstring for
the accuracy contract).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from tensorgp.engine.primitives import CONST, EPS, EXP_MAX, FIRST_VAR, OPCODE, POW_MAX, arity_table

# Globals read inside a jit function must be constexpr.
_EPS = tl.constexpr(EPS)
_EXP_MAX = tl.constexpr(EXP_MAX)
_POW_MAX = tl.constexpr(POW_MAX)
_CONST = tl.constexpr(CONST)
_FIRST_VAR = tl.constexpr(FIRST_VAR)
_ADD = tl.constexpr(OPCODE["add"])
_SUB = tl.constexpr(OPCODE["sub"])
_MUL = tl.constexpr(OPCODE["mul"])
_DIV = tl.constexpr(OPCODE["div"])
_NEG = tl.constexpr(OPCODE["neg"])
_LOG = tl.constexpr(OPCODE["log"])
_SQRT = tl.constexpr(OPCODE["sqrt"])
_ABS = tl.constexpr(OPCODE["abs"])
_SQUARE = tl.constexpr(OPCODE["square"])
_INV = tl.constexpr(OPCODE["inv"])
_EXP = tl.constexpr(OPCODE["exp"])
_TANH = tl.constexpr(OPCODE["tanh"])
_MIN = tl.constexpr(OPCODE["min"])
_MAX = tl.constexpr(OPCODE["max"])
_POW = tl.constexpr(OPCODE["pow"])
_SIN = tl.constexpr(OPCODE["sin"])
_COS = tl.constexpr(OPCODE["cos"])
# The dispatch below assumes this layout: binary ops are add..div and min, max, pow; built-ins
# only (``evaluate`` sends populations with user functions to the torch interpreter).
assert [OPCODE[f] for f in ("add", "sub", "mul", "div")] == [1, 2, 3, 4]
assert [OPCODE[f] for f in ("min", "max", "pow", "sin", "cos")] == [13, 14, 15, 16, 17] and CONST > 17

DEFAULT_BLOCK_N = 256
DEFAULT_NUM_WARPS = 4


@triton.jit
def _eval_kernel(
    ops_ptr, consts_ptr, len_ptr, xt_ptr, out_ptr, N, L,
    S: tl.constexpr, BLOCK_N: tl.constexpr, PRECISE: tl.constexpr,
):
    """ops/consts: [P, L] row-major; xt: [m, N] (X transposed); out: [P, N]."""
    p = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    slot = tl.arange(0, S)[:, None]
    stack = tl.full([S, BLOCK_N], 0.0, tl.float32)  # tl.full, not the jit'd tl.zeros: faster interpreter
    top = tl.full([BLOCK_N], 0.0, tl.float32)
    d = tl.full([], 0, tl.int32)
    n = tl.load(len_ptr + p)
    row_base = p * L
    for i in range(0, n):
        op = tl.load(ops_ptr + row_base + i)
        if op >= _FIRST_VAR:  # push feature op - FIRST_VAR
            x = tl.load(xt_ptr + (op - _FIRST_VAR).to(tl.int64) * N + rows, mask=rmask, other=0.0)
            stack = tl.where(slot == d - 1, top[None, :], stack)
            top = x
            d += 1
        elif op == _CONST:
            c = tl.load(consts_ptr + row_base + i)
            stack = tl.where(slot == d - 1, top[None, :], stack)
            top = tl.broadcast_to(c, [BLOCK_N])
            d += 1
        elif ((op >= _ADD) & (op <= _DIV)) | ((op >= _MIN) & (op <= _POW)):  # binary: a = second from top, b = top
            # -0.0 is the identity of + (x + -0.0 == x bit for bit, NaN and inf included).
            a = tl.sum(tl.where(slot == d - 2, stack, -0.0), axis=0)
            b = top
            if op == _ADD:
                r = a + b
            elif op == _SUB:
                r = a - b
            elif op == _MUL:
                r = a * b
            elif op == _DIV:
                safe = (tl.abs(b) > _EPS) | (b != b)  # NaN divides: NaN
                r = tl.where(safe, tl.math.div_rn(a, tl.where(safe, b, 1.0)), tl.where(a != a, a, 1.0))
            elif op == _MIN:
                r = tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)
            elif op == _MAX:
                r = tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)
            else:  # pow: min(|a|^b, POW_MAX), NaN if either is NaN
                m = tl.abs(a)
                if PRECISE:
                    pw = libdevice.pow(m, b)
                else:
                    # |a|^b = exp(b log|a|) in float64 (correctly rounded to float32 here), with
                    # IEEE pow's cases the product gets wrong: x^0 = 1 and 1^y = 1 (0 * inf is NaN)
                    pw = tl.exp(b.to(tl.float64) * tl.log(m.to(tl.float64))).to(tl.float32)
                    pw = tl.where((b == 0.0) | (m == 1.0), 1.0, pw)
                pw = tl.where(pw > _POW_MAX, _POW_MAX, pw)
                r = tl.where((a != a) | (b != b), float("nan"), pw)
            top = r
            d -= 1
        else:  # unary, in place on top
            a = top
            if op == _NEG:
                r = -a
            elif op == _LOG:
                m = tl.abs(a)
                safe = (m > _EPS) | (m != m)
                mm = tl.where(safe, m, 1.0)
                if PRECISE:
                    lg = libdevice.log(mm)
                else:
                    lg = tl.log(mm)
                r = tl.where(safe, lg, 0.0)
            elif op == _SQRT:
                r = tl.math.sqrt_rn(tl.abs(a))
            elif op == _ABS:
                r = tl.abs(a)
            elif op == _SQUARE:
                r = a * a
            elif op == _INV:
                safe = (tl.abs(a) > _EPS) | (a != a)
                r = tl.where(safe, tl.math.div_rn(1.0, tl.where(safe, a, 1.0)), 0.0)
            elif op == _EXP:
                # where, not minimum: NaN must stay NaN (torch.clamp keeps it)
                ac = tl.where(a > _EXP_MAX, _EXP_MAX, a)
                if PRECISE:
                    r = libdevice.exp(ac)
                else:
                    r = tl.exp(ac)
            elif op == _TANH:
                if PRECISE:
                    r = libdevice.tanh(a)
                else:
                    # No tl.tanh: odd Taylor polynomial to x^13 for |x| < 0.55 (rel. err < 1e-6),
                    # (1 - e) / (1 + e) with e = exp(-2|x|) above (no cancellation there).
                    ax = tl.abs(a)
                    x2 = a * a
                    poly = 21844.0 / 6081075.0
                    poly = poly * x2 - 1382.0 / 155925.0
                    poly = poly * x2 + 62.0 / 2835.0
                    poly = poly * x2 - 17.0 / 315.0
                    poly = poly * x2 + 2.0 / 15.0
                    poly = poly * x2 - 1.0 / 3.0
                    small = a + a * x2 * poly
                    e = tl.exp(-2.0 * ax)
                    big = tl.math.div_rn(1.0 - e, 1.0 + e)
                    big = tl.where(a < 0, -big, big)
                    r = tl.where(ax < 0.55, small, big)
            elif op == _SIN:
                r = libdevice.sin(a) if PRECISE else tl.sin(a)
            elif op == _COS:
                r = libdevice.cos(a) if PRECISE else tl.cos(a)
            else:  # PAD: no-op (never reached for a valid program, length stops before it)
                r = a
            top = r
    tl.store(out_ptr + p * N + rows, top, mask=rmask)


def _interpreted() -> bool:
    return isinstance(_eval_kernel, InterpretedFunction)


def max_stack_depth(ops: torch.Tensor, length: torch.Tensor | None = None) -> int:
    """Largest stack depth reached by any program. ``ops: int32[P, L]`` -> int (0 if empty).

    Push +1 (CONST, features), unary 0, binary -1, PAD 0 (so ``length`` is not needed for padded rows).
    """
    if ops.numel() == 0:
        return 0
    ar = arity_table().to(ops.device)
    o = ops.long()
    eff = torch.where(o >= FIRST_VAR, 1, 1 - ar[o.clamp(max=FIRST_VAR - 1)].long())
    eff = torch.where(o == 0, 0, eff)
    return int(eff.cumsum(1).max().item())


def evaluate_triton(
    ops: torch.Tensor,
    consts: torch.Tensor,
    length: torch.Tensor,
    X: torch.Tensor,
    max_stack: int | None = None,
    *,
    block_n: int | None = None,
    num_warps: int = DEFAULT_NUM_WARPS,
    precise: bool | None = None,
) -> torch.Tensor:
    """Evaluate every program on every row of X.

    ops: int32[P, L], consts: float32[P, L], length: int32[P], X: float32[N, m], all on one device
    (CUDA; CPU runs the Triton interpreter, slow, for tests) -> float32[P, N].

    ``max_stack``: an upper bound on the stack depth (computed from ``ops`` if None, one host
    sync); it sets the register stack size, so pass the tree-depth bound to avoid the sync.
    Programs must be valid postfix (stack ends at 1) with features < m and no user-registered
    function (Triton has no code for them; ``evaluate`` routes such populations to torch); none
    of this is checked here.

    Accuracy contract vs the torch reference (``FUNCTIONS``), per operator: add sub mul div neg abs
    square min max inv sqrt are bit-exact (IEEE div/sqrt, NaN propagating min/max); log exp tanh
    sin cos pow are within rtol 1e-5 (atol 1e-6 near 0) -- on CUDA they call libdevice (``precise``, the CUDA
    default), the same routines as torch's logf/expf/tanhf, elsewhere tl.log/tl.exp and a
    polynomial/exp tanh. Errors of the inexact ops compound through deep programs like any float
    error, and a value within that error of the EPS threshold may take the other branch.
    """
    if ops.dim() != 2 or consts.shape != ops.shape or length.shape != ops.shape[:1] or X.dim() != 2:
        raise ValueError(f"shapes: ops {tuple(ops.shape)} consts {tuple(consts.shape)} "
                         f"length {tuple(length.shape)} X {tuple(X.shape)}")
    devs = {t.device for t in (ops, consts, length, X)}
    if len(devs) != 1:
        raise ValueError(f"all inputs must be on one device, got {devs}")
    P, L = ops.shape
    N = X.shape[0]
    device = X.device
    out = torch.empty(P, N, dtype=torch.float32, device=device)
    if P == 0 or N == 0:
        return out
    if max_stack is None:
        max_stack = max_stack_depth(ops, length)
    S = triton.next_power_of_2(max(int(max_stack) - 1, 1))
    interpreted = _interpreted()
    if device.type == "cpu" and not interpreted:
        # triton decides at import time (its own tl.zeros etc. are jit functions too)
        raise RuntimeError("CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before importing triton")
    if precise is None:
        precise = device.type == "cuda"
    precise = bool(precise) and not interpreted  # libdevice has no interpreter implementation
    if block_n is None:
        block_n = 32 if interpreted else DEFAULT_BLOCK_N
    ops_c = ops.to(torch.int32).contiguous()
    consts_c = consts.to(torch.float32).contiguous()
    len_c = length.to(torch.int32).contiguous()
    Xt = X.to(torch.float32).t().contiguous()  # [m, N]: one feature's rows are contiguous
    grid = (P, triton.cdiv(N, block_n))
    if grid[1] > 65535:  # CUDA's limit on grid.y
        raise ValueError(f"N={N} rows need {grid[1]} row blocks of {block_n}: over 65535; raise block_n or split X")
    _eval_kernel[grid](ops_c, consts_c, len_c, Xt, out, N, L,
                 S=S, BLOCK_N=block_n, PRECISE=precise, num_warps=num_warps)
    return out
