"""Program evaluation: the torch reference interpreter and backend dispatch.

``evaluate(pop, X)`` returns ``pred: float32[P, N]``, every program on every row. Backends:

    torch   reference; any device; one batched step per (position, opcode) group
    numba   CPU fast path (``tensorgp.engine.eval_numba``): compiled, cache-blocked rows
    triton  CUDA fast path (``tensorgp.kernels``): fused kernel, stack in registers
    auto    triton on CUDA, numba on CPU, torch where those are missing
"""
from __future__ import annotations

import warnings

import torch

from .population import Population, arity_of
from .primitives import CONST, FIRST_VAR, FIRST_USER, function, user_opcodes

BACKENDS = ("auto", "torch", "numba", "triton")


def numba_available() -> bool:
    try:
        from . import eval_numba
    except Exception:  # numba missing or broken: the torch path still works
        return False
    return eval_numba.available()


def triton_available() -> bool:
    try:
        from ..kernels import eval_kernel  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, device: str | torch.device) -> str:
    """The concrete backend ``auto`` means on this device; errors for impossible choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    dev = torch.device(device)
    if backend == "auto":
        if dev.type == "cuda" and triton_available():
            return "triton"
        if dev.type == "cpu" and numba_available():
            return "numba"
        return "torch"
    if backend == "numba":
        if dev.type != "cpu":
            raise ValueError("the numba backend runs on the CPU only; use --backend triton or torch on cuda")
        if not numba_available():
            raise ValueError("the numba backend needs numba (pip install numba)")
    if backend == "triton":
        import os

        if dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1 for testing)")
        if not triton_available():
            raise ValueError("the triton backend needs triton (pip install triton)")
    return backend


def max_stack(ops: torch.Tensor, length: torch.Tensor) -> int:
    """Deepest stack any program reaches."""
    if ops.numel() == 0:
        return 1
    valid = torch.arange(ops.shape[1], device=ops.device)[None, :] < length[:, None]
    eff = torch.where(valid, 1 - arity_of(ops), torch.zeros_like(ops))
    return max(1, int(torch.cumsum(eff, 1).max().item()))


def evaluate_torch(
    ops: torch.Tensor, consts: torch.Tensor, length: torch.Tensor, X: torch.Tensor, chunk_bytes: int = 1 << 28
) -> torch.Tensor:
    """Reference interpreter. ``ops int32[P, L]``, ``consts float32[P, L]``, ``length int32[P]``,
    ``X float32[N, m]`` -> ``float32[P, N]`` (float64 X: computed and returned in float64).

    Stack ``float32[S, P, N]``; at each position the rows sharing an opcode are advanced
    together, so the Python work is O(L x distinct opcodes), not O(P). Programs are processed
    in chunks that keep the stack under ``chunk_bytes``.
    """
    P, L = ops.shape
    N = X.shape[0]
    dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    out = torch.empty(P, N, dtype=dtype, device=X.device)
    if P == 0:
        return out
    S = max_stack(ops, length)
    per_prog = max(1, S * N * dtype.itemsize)
    step = max(1, min(P, chunk_bytes // per_prog))
    Xt = X.t().contiguous().to(dtype)
    for lo in range(0, P, step):
        hi = min(P, lo + step)
        out[lo:hi] = _eval_chunk(ops[lo:hi], consts[lo:hi], length[lo:hi], Xt, S)
    return out


def terminal_values(op: torch.Tensor, const: torch.Tensor, Xt: torch.Tensor) -> torch.Tensor:
    """Values pushed by terminal nodes: ``op int[k]`` (CONST or a feature), ``const float[k]``,
    ``Xt float[m, N]`` -> ``float[k, N]`` in Xt's dtype."""
    o = op.long()
    vals = Xt[(o - FIRST_VAR).clamp(min=0)]
    return torch.where((o >= FIRST_VAR)[:, None], vals, const.to(Xt.dtype)[:, None].expand(-1, Xt.shape[1]))


def postfix_steps(ops: torch.Tensor, length: torch.Tensor):
    """The schedule both torch interpreters (values here, values and Jacobians in
    ``constants``) walk: for each position ``t`` of ``ops: int[P, L]``, yields
    ``(t, sp, terminals, functions)``: ``sp: int64[P]`` the stack height before position t,
    ``terminals: int64[k]`` the rows pushing a terminal, ``functions``: ``[(Function, rows)]``
    per opcode present. Rows sharing an opcode advance together, so the Python work is
    O(L x distinct opcodes), not O(P)."""
    sp = torch.zeros(ops.shape[0], dtype=torch.long, device=ops.device)
    ar = arity_of(ops).long()
    for t in range(int(length.max().item()) if ops.shape[0] else 0):
        op = ops[:, t]
        live = t < length
        terms = (live & (op >= CONST)).nonzero()[:, 0]
        fn_rows = live & (op < CONST) & (op > 0)
        funcs = [(function(code), ((op == code) & live).nonzero()[:, 0])
                 for code in torch.unique(op[fn_rows]).tolist()] if bool(fn_rows.any()) else []
        yield t, sp, terms, funcs
        sp = sp + torch.where(live, 1 - ar[:, t], torch.zeros_like(sp))


def _eval_chunk(ops: torch.Tensor, consts: torch.Tensor, length: torch.Tensor, Xt: torch.Tensor, S: int) -> torch.Tensor:
    P, N = ops.shape[0], Xt.shape[1]
    stack = torch.zeros(S, P, N, dtype=Xt.dtype, device=Xt.device)
    for t, sp, idx, funcs in postfix_steps(ops, length):
        if len(idx):
            stack[sp[idx], idx] = terminal_values(ops[idx, t], consts[idx, t], Xt)
        for f, idx in funcs:
            base = sp[idx] - f.arity
            args = [stack[base + j, idx] for j in range(f.arity)]
            stack[base, idx] = f.fn(*args)
    return stack[0]


def uses_user_functions(ops: torch.Tensor, warn: bool = True, backend: str = "triton") -> bool:
    """True when ``ops`` holds a user-registered function that ``backend`` has no code for (one
    reduction; skipped when none is registered): Triton has none, numba has those registered
    with a ``numba`` form. Callers fall back to the torch interpreter, and ``warn`` issues a
    UserWarning naming the functions."""
    if not user_opcodes() or ops.numel() == 0:
        return False
    mask = (ops >= FIRST_USER) & (ops < CONST)
    if not bool(mask.any()):
        return False
    used = torch.unique(ops[mask]).tolist()
    if backend == "numba":
        used = [o for o in used if function(o).scalar is None]
        if not used:
            return False
    if warn:
        names = sorted({function(o).name for o in used})
        warnings.warn(f"user-defined function(s) {names} have no {backend} code: this population is "
                      "evaluated with the torch interpreter (slower; see primitives.register_function)",
                      UserWarning, stacklevel=3)
    return True


def evaluate(
    pop: Population, X: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Every program of ``pop`` on every row of ``X float32[N, m]`` -> ``float32[P, N]``. A float64
    ``X`` is evaluated in float64 by the torch interpreter (the compiled backends are float32)."""
    name = resolve_backend(backend, X.device)
    pop = pop.trimmed()
    if X.dtype == torch.float64:
        return evaluate_torch(pop.ops, pop.consts, pop.length, X)
    if name != "torch" and uses_user_functions(pop.ops, backend=name):
        name = "torch"
    if name == "numba":
        from .eval_numba import evaluate_numba

        return evaluate_numba(pop.ops, pop.consts, pop.length, X)
    if name == "triton":
        from ..kernels.eval_kernel import evaluate_triton

        return evaluate_triton(pop.ops, pop.consts, pop.length, X)
    return evaluate_torch(pop.ops, pop.consts, pop.length, X)
