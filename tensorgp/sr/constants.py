"""Constant optimisation: Levenberg-Marquardt on the ephemeral constants of a few programs.

``jacobian(ops, consts, length, X)`` is a forward-mode (dual-number) interpreter: it runs the
postfix programs like ``evaluate_torch`` (one batched step per position and opcode) in float64
and carries, with every stack value, its derivative with respect to each constant of its
program, so one pass gives the outputs ``f[K, n]`` and the exact Jacobian ``J[K, C, n]``. The
derivative rules follow the protected semantics of ``primitives.FUNCTIONS``: where a protected
function returns its fallback (``div``/``inv``/``log`` at |x| <= EPS, ``exp`` above its clamp)
the derivative is 0; ``sqrt|a|`` at |a| <= EPS also gets 0 instead of an infinite slope;
``pow = min(|a|^b, POW_MAX)`` has derivative 0 where |a| <= EPS or the ceiling is reached, else
``d|a|^b = |a|^b (b / a da + log|a| db)``. User-registered functions are differentiated by torch
autograd (torch path only: ``jacobian`` picks it whenever a program uses one).

``optimize_constants`` runs batched LM on the least-squares error of ``a + b f(x; c)`` (or of
``f`` without linear scaling): parameters ``[c, a, b]``, damping ``lambda * diag(J^T J)`` per
program, a step kept only where it lowers that program's error. The caller decides whether to
keep the result (it re-scores the programs with the real loss on all rows).
"""
from __future__ import annotations

import torch

import numpy as np

from ..engine.evaluate import max_stack, postfix_steps, terminal_values, uses_user_functions
from ..engine.population import Population
from ..engine.primitives import CONST, EPS, EXP_MAX, FIRST_VAR, OPCODE, POW_MAX, Function

try:  # numba is optional: the torch interpreter below gives the same numbers
    from numba import njit

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _HAVE_NUMBA = False


def const_slots(ops: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(is_const bool[K, L], slot int64[K, L], C)``: which positions hold constants, the index of
    each among its program's constants (-1 elsewhere), and the largest count C (at least 1)."""
    valid = torch.arange(ops.shape[1], device=ops.device)[None, :] < length[:, None]
    is_c = (ops == CONST) & valid
    slot = torch.where(is_c, is_c.long().cumsum(1) - 1, torch.full_like(ops, -1, dtype=torch.long))
    C = max(1, int(is_c.sum(1).max().item())) if ops.numel() else 1
    return is_c, slot, C


def _rule(name: str, a, da, b=None, db=None):
    """Value and derivative of one function: ``a, b: [k, n]``, ``da, db: [k, C, n]``."""
    if name == "add":
        return a + b, da + db
    if name == "sub":
        return a - b, da - db
    if name == "mul":
        return a * b, b[:, None] * da + a[:, None] * db
    if name == "div":  # ~(|x| <= EPS): NaN takes the real operation and stays NaN, as in primitives
        safe = ~(b.abs() <= EPS)
        bs = torch.where(safe, b, torch.ones_like(b))
        v = torch.where(safe, a / bs, torch.where(torch.isnan(a), a, torch.ones_like(a)))
        dv = (da * bs[:, None] - a[:, None] * db) / (bs * bs)[:, None]
        return v, torch.where(safe[:, None], dv, torch.zeros_like(dv))
    if name == "neg":
        return -a, -da
    if name == "log":
        safe = ~(a.abs() <= EPS)
        as_ = torch.where(safe, a, torch.ones_like(a))
        return torch.where(safe, torch.log(as_.abs()), torch.zeros_like(a)), torch.where(safe[:, None], da / as_[:, None], torch.zeros_like(da))
    if name == "sqrt":
        v = torch.sqrt(a.abs())
        safe = a.abs() > EPS
        g = torch.where(safe, torch.sign(a) / (2 * torch.where(safe, v, torch.ones_like(v))), torch.zeros_like(a))
        return v, g[:, None] * da
    if name == "abs":
        return a.abs(), torch.sign(a)[:, None] * da
    if name == "square":
        return a * a, (2 * a)[:, None] * da
    if name == "inv":
        safe = ~(a.abs() <= EPS)
        as_ = torch.where(safe, a, torch.ones_like(a))
        return torch.where(safe, 1 / as_, torch.zeros_like(a)), torch.where(safe[:, None], -da / (as_ * as_)[:, None], torch.zeros_like(da))
    if name == "exp":
        v = torch.exp(torch.clamp(a, max=EXP_MAX))
        return v, torch.where((a < EXP_MAX)[:, None], v[:, None] * da, torch.zeros_like(da))
    if name == "tanh":
        v = torch.tanh(a)
        return v, (1 - v * v)[:, None] * da
    if name == "min":
        return torch.minimum(a, b), torch.where((a <= b)[:, None], da, db)
    if name == "max":
        return torch.maximum(a, b), torch.where((a >= b)[:, None], da, db)
    if name == "pow":
        m = a.abs()
        raw = torch.pow(m, b)
        v = torch.where(torch.isnan(a) | torch.isnan(b), torch.full_like(raw, float("nan")), raw.clamp(max=POW_MAX))
        live = (m > EPS) & (raw < POW_MAX)
        ms = torch.where(live, m, torch.ones_like(m))
        ga = torch.where(live, v * b / torch.where(live, a, torch.ones_like(a)), torch.zeros_like(a))
        gb = torch.where(live, v * torch.log(ms), torch.zeros_like(a))
        return v, ga[:, None] * da + gb[:, None] * db
    if name == "sin":
        return torch.sin(a), torch.cos(a)[:, None] * da
    if name == "cos":
        return torch.cos(a), (-torch.sin(a))[:, None] * da
    raise ValueError(f"no derivative rule for {name!r}")


def _autograd_rule(f: Function, args: list[torch.Tensor], dargs: list[torch.Tensor]):
    """Value and forward derivative of an elementwise user function: its partial derivatives by
    autograd (one backward pass of the sum, elementwise because f is), chained with ``dargs``."""
    xs = [x.detach().requires_grad_(True) for x in args]
    with torch.enable_grad():
        v = f.fn(*xs)
        grads = torch.autograd.grad(v.sum(), xs, allow_unused=True)
    dv = torch.zeros_like(dargs[0])
    for g, d in zip(grads, dargs):
        if g is not None:
            dv = dv + torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)[:, None] * d
    return v.detach(), dv


def jacobian(ops: torch.Tensor, consts: torch.Tensor, length: torch.Tensor, X: torch.Tensor,
             backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and constant-Jacobian of K programs on ``X [n, m]``, float64: ``(f [K, n], J [K, C, n])``,
    where column j of program k is its j-th constant in postfix order (see ``const_slots``).

    ``backend``: ``numba`` (CPU; one compiled pass per program and row, no per-node tensor
    calls, which matters because K is small), ``torch`` (any device), ``auto`` (numba for CPU
    tensors when available)."""
    if backend == "auto":
        backend = "numba" if _HAVE_NUMBA and X.device.type == "cpu" else "torch"
    if backend == "numba" and uses_user_functions(ops, warn=False):
        backend = "torch"  # the compiled kernel knows the built-ins only
    if backend == "numba":
        return _jacobian_numba(ops, consts, length, X)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; choose auto, numba or torch")
    return _jacobian_torch(ops, consts, length, X)


def _jacobian_torch(ops: torch.Tensor, consts: torch.Tensor, length: torch.Tensor, X: torch.Tensor,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    K, L = ops.shape
    n = X.shape[0]
    dev = X.device
    is_c, slot, C = const_slots(ops, length)
    Xt = X.t().to(dtype)
    S = max_stack(ops, length)
    V = torch.zeros(S, K, n, dtype=dtype, device=dev)
    D = torch.zeros(S, K, C, n, dtype=dtype, device=dev)
    for t, sp, idx, funcs in postfix_steps(ops, length):
        if len(idx):
            V[sp[idx], idx] = terminal_values(ops[idx, t], consts[idx, t], Xt)
            D[sp[idx], idx] = 0
            ci = idx[ops[idx, t] == CONST]
            if len(ci):
                D[sp[ci], ci, slot[ci, t]] = 1
        for f, idx in funcs:
            base = sp[idx] - f.arity
            if not f.builtin:
                v, dv = _autograd_rule(f, [V[base + j, idx] for j in range(f.arity)],
                                       [D[base + j, idx] for j in range(f.arity)])
            elif f.arity == 1:
                v, dv = _rule(f.name, V[base, idx], D[base, idx])
            else:
                v, dv = _rule(f.name, V[base, idx], D[base, idx], V[base + 1, idx], D[base + 1, idx])
            V[base, idx] = v
            D[base, idx] = dv
    return V[0], D[0]


def _jacobian_numba(ops, consts, length, X):
    is_c, slot, C = const_slots(ops, length)
    K, n = ops.shape[0], X.shape[0]
    S = max_stack(ops, length)
    f = np.zeros((K, n), np.float64)
    J = np.zeros((K, C, n), np.float64)
    if K and n:
        _jac_kernel(ops.to(torch.int32).contiguous().numpy(), consts.to(torch.float64).contiguous().numpy(),
                    length.to(torch.int64).contiguous().numpy(), X.t().to(torch.float64).contiguous().numpy(),
                    slot.contiguous().numpy(), S, f, J)
    return torch.from_numpy(f), torch.from_numpy(J)


if _HAVE_NUMBA:
    _O = {k: np.int32(v) for k, v in OPCODE.items()}
    _ADD, _SUB, _MUL, _DIV, _NEG, _LOG, _SQRT = _O["add"], _O["sub"], _O["mul"], _O["div"], _O["neg"], _O["log"], _O["sqrt"]
    _ABS, _SQUARE, _INV, _EXP, _TANH, _MIN, _MAX = _O["abs"], _O["square"], _O["inv"], _O["exp"], _O["tanh"], _O["min"], _O["max"]
    _POW, _SIN, _COS = _O["pow"], _O["sin"], _O["cos"]
    _CONST, _FIRST = np.int32(CONST), np.int32(FIRST_VAR)
    _EPS, _XMAX, _PMAX = float(EPS), float(EXP_MAX), float(POW_MAX)

    @njit(cache=True, nogil=True, error_model="numpy")  # serial: K x n is small, threads cost more than they save
    def _jac_kernel(ops, consts, length, Xt, slot, S, f, J):
        K = ops.shape[0]
        C = J.shape[1]
        n = Xt.shape[1]
        B = 64
        nb = (n + B - 1) // B
        for w in range(K * nb):
            k = w // nb
            r0 = (w % nb) * B
            r1 = min(n, r0 + B)
            v = np.zeros(S)
            d = np.zeros((S, C))
            for i in range(r0, r1):
                sp = 0
                for t in range(length[k]):
                    op = ops[k, t]
                    if op >= _FIRST:
                        v[sp] = Xt[op - _FIRST, i]
                        d[sp, :] = 0.0
                        sp += 1
                    elif op == _CONST:
                        v[sp] = consts[k, t]
                        d[sp, :] = 0.0
                        d[sp, slot[k, t]] = 1.0
                        sp += 1
                    elif op == _ADD or op == _SUB or op == _MUL or op == _DIV or op == _MIN or op == _MAX or op == _POW:
                        a = v[sp - 2]
                        b = v[sp - 1]
                        p = sp - 2
                        q = sp - 1
                        if op == _ADD:
                            v[p] = a + b
                            for j in range(C):
                                d[p, j] += d[q, j]
                        elif op == _SUB:
                            v[p] = a - b
                            for j in range(C):
                                d[p, j] -= d[q, j]
                        elif op == _MUL:
                            v[p] = a * b
                            for j in range(C):
                                d[p, j] = b * d[p, j] + a * d[q, j]
                        elif op == _DIV:
                            if not abs(b) <= _EPS:  # NaN too: it propagates
                                v[p] = a / b
                                for j in range(C):
                                    d[p, j] = (d[p, j] * b - a * d[q, j]) / (b * b)
                            else:
                                v[p] = a if a != a else 1.0
                                d[p, :] = 0.0
                        elif op == _POW:
                            m = abs(a)
                            raw = m ** b
                            if a != a or b != b:
                                v[p] = np.nan
                            else:
                                v[p] = min(raw, _PMAX)
                            if m > _EPS and raw < _PMAX:
                                ga = v[p] * b / a
                                gb = v[p] * np.log(m)
                                for j in range(C):
                                    d[p, j] = ga * d[p, j] + gb * d[q, j]
                            else:
                                d[p, :] = 0.0
                        else:  # min, max: the chosen operand's value and derivative
                            if (a <= b) if op == _MIN else (a >= b):
                                v[p] = a
                            else:
                                v[p] = b
                                d[p, :] = d[q, :]
                            if a != a or b != b:
                                v[p] = np.nan
                        sp -= 1
                    else:
                        p = sp - 1
                        a = v[p]
                        g = 0.0
                        if op == _NEG:
                            v[p] = -a
                            g = -1.0
                        elif op == _LOG:
                            if not abs(a) <= _EPS:
                                v[p] = np.log(abs(a))
                                g = 1.0 / a
                            else:
                                v[p] = 0.0
                        elif op == _SQRT:
                            s = np.sqrt(abs(a))
                            v[p] = s
                            if abs(a) > _EPS:
                                g = (1.0 if a > 0 else -1.0) / (2.0 * s)
                        elif op == _ABS:
                            v[p] = abs(a)
                            g = 1.0 if a > 0 else (-1.0 if a < 0 else 0.0)
                        elif op == _SQUARE:
                            v[p] = a * a
                            g = 2.0 * a
                        elif op == _INV:
                            if not abs(a) <= _EPS:
                                v[p] = 1.0 / a
                                g = -1.0 / (a * a)
                            else:
                                v[p] = 0.0
                        elif op == _EXP:
                            if a < _XMAX:
                                v[p] = np.exp(a)
                                g = v[p]
                            elif a != a:
                                v[p] = np.nan
                            else:
                                v[p] = np.exp(_XMAX)
                        elif op == _SIN:
                            v[p] = np.sin(a)
                            g = np.cos(a)
                        elif op == _COS:
                            v[p] = np.cos(a)
                            g = -np.sin(a)
                        else:  # tanh
                            v[p] = np.tanh(a)
                            g = 1.0 - v[p] * v[p]
                        for j in range(C):
                            d[p, j] *= g
                f[k, i] = v[0]
                for j in range(C):
                    J[k, j, i] = d[0, j]


def with_constants(consts: torch.Tensor, is_c: torch.Tensor, slot: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``consts [K, L]`` with the constant positions replaced by ``c [K, C]`` (float32)."""
    return torch.where(is_c, c.gather(1, slot.clamp(min=0)).to(consts.dtype), consts)


def _solve(M: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``M x = g`` for small systems: ``(x [K, p], ok bool[K])`` (LAPACK per matrix)."""
    try:
        x = np.linalg.solve(M, g[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # one singular system: solve them one by one
        x = np.zeros_like(g)
        for i in range(len(M)):
            try:
                x[i] = np.linalg.solve(M[i], g[i])
            except np.linalg.LinAlgError:
                x[i] = np.nan
    ok = np.isfinite(x).all(1)
    return np.where(ok[:, None], x, 0.0), ok


def optimize_constants(pop: Population, X: torch.Tensor, y: torch.Tensor, linear_scaling: bool = True,
                       steps: int = 10, lam0: float = 1e-3) -> tuple[Population, torch.Tensor, torch.Tensor]:
    """LM on the constants of ``pop`` (K programs) against ``y [n]`` on rows ``X [n, m]``.

    Returns ``(new_pop, sse_before float64[K], sse_after float64[K])``, the population on ``X``'s
    device; a program without constants (or whose error never decreased) keeps its constants.
    The Jacobians come from ``jacobian`` on X's device; the small LM algebra runs in numpy
    (single-threaded: torch's thread pool costs more than these [K, p, p] systems).
    """
    dev = X.device
    pop = pop.to(dev).trimmed()
    ops, consts, length = pop.ops, pop.consts, pop.length
    K = pop.size
    yn = y.detach().to("cpu", torch.float64).numpy()
    is_c, slot, C = const_slots(ops, length)
    c0 = torch.zeros(K, C, dtype=torch.float64, device=dev)
    c0.scatter_add_(1, slot.clamp(min=0), torch.where(is_c, consts.to(torch.float64), torch.zeros((), dtype=torch.float64, device=dev)))
    n_c = is_c.sum(1).cpu().numpy()
    ym = yn.mean()

    def residual(cc: np.ndarray):
        cons = with_constants(consts, is_c, slot, torch.from_numpy(cc).to(dev))  # the float32 values evaluators see
        f, J = jacobian(ops, cons, length, X)
        f, J = f.cpu().numpy(), J.cpu().numpy()
        if linear_scaling:  # a, b in closed form at every point (variable projection)
            fm = f.mean(1)
            fc = f - fm[:, None]
            var = np.einsum("kn,kn->k", fc, fc)
            cov = np.einsum("kn,n->k", fc, yn - ym)
            b = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 0.0)
            a = ym - b * fm
            r = yn[None, :] - (a[:, None] + b[:, None] * f)
            Jf = np.concatenate([b[:, None, None] * J, np.ones_like(f)[:, None], f[:, None]], 1)
        else:
            r = yn[None, :] - f
            Jf = J
        with np.errstate(over="ignore", invalid="ignore"):
            sse = np.einsum("kn,kn->k", r, r)
        return r, Jf, np.where(np.isfinite(sse), sse, np.inf)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        c = c0.cpu().numpy().astype(np.float32).astype(np.float64)
        r, J, sse = residual(c)
        sse0 = sse.copy()
        lam = np.full(K, lam0)
        active = (n_c > 0) & np.isfinite(sse)
        for _ in range(steps):
            if not active.any():
                break
            Jn = np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)
            rn = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
            A = np.einsum("kpn,kqn->kpq", Jn, Jn)
            g = np.einsum("kpn,kn->kp", Jn, rn)
            diag = np.einsum("kpp->kp", A)
            floor = 1e-12 * diag.max(1, keepdims=True) + 1e-30
            M = A + (lam[:, None] * np.maximum(diag, 0) + floor)[:, :, None] * np.eye(A.shape[1])[None]
            delta, ok = _solve(M, g)
            # a, b are recomputed in closed form, so only the constants' part of the step is used
            c_new = (c + delta[:, :C]).astype(np.float32).astype(np.float64)
            r2, J2, sse2 = residual(c_new)
            better = active & ok & (sse2 < sse)
            c = np.where(better[:, None], c_new, c)
            r = np.where(better[:, None], r2, r)
            J = np.where(better[:, None, None], J2, J)
            sse = np.where(better, sse2, sse)
            lam = np.clip(np.where(better, lam * 0.3, lam * 10), 1e-12, 1e12)
            active = active & (lam < 1e11)  # hopeless damping: this program has converged or diverged
    new_consts = with_constants(consts, is_c, slot, torch.from_numpy(c).to(dev)).to(torch.float32)
    return Population(ops, new_consts, length), torch.from_numpy(sse0), torch.from_numpy(sse)
