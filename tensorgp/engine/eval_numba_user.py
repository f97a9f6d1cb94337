"""numba code generated for user-registered functions.

A user function registered with a ``numba=`` scalar form (``primitives.register_function``) runs
on the numba backend: for the current function table, ``user_kernel`` generates and compiles a
copy of ``eval_numba``'s plain run kernel whose per-instruction step handles each user opcode
with a loop over the row block calling the compiled scalar form, and hands every other opcode to
``eval_numba._exec`` (so built-ins keep their exact semantics). The kernel is rebuilt when the
table changes (``primitives.table_version``) and is not cached on disk (numba cannot cache
exec-generated code); compiling it takes a few seconds on the first call. Populations with user
functions always take the plain path (the DAG kernel knows the built-ins only).

The scalar forms see float32 values and their results are stored as float32; a form written
with float64 literals computes in float64 and is rounded on the store, which is how it can differ
from the torch form by an ulp.
"""
from __future__ import annotations

from typing import Callable

from .primitives import function, table_version, user_opcodes

_CACHE: dict[int, Callable | None] = {}


def _source(ops: list[int]) -> str:
    lines = ["def _exec_user(D, d, R, op, a, b, c, nb):"]
    for k, op in enumerate(ops):
        args = "R[a, j]" if function(op).arity == 1 else "R[a, j], R[b, j]"
        lines += [f"    {'if' if k == 0 else 'elif'} op == {op}:",
                  "        for j in range(nb):",
                  f"            D[d, j] = _u{op}({args})"]
    lines += ["    else:", "        _exec(D, d, R, op, a, b, c, nb)", "",
              "def _run_items_user(code, cval, res, Xt, out, n_regs, block, chunk, counter):",
              "    m, N = Xt.shape",
              "    P = code.shape[0]",
              "    nblk = (N + block - 1) // block",
              "    n_items = nblk * ((P + chunk - 1) // chunk)",
              "    R = np.empty((m + n_regs, block), np.float32)",
              "    while True:",
              "        w = _fetch_add(counter)",
              "        if w >= n_items:",
              "            break",
              "        r0 = (w % nblk) * block",
              "        nb = min(block, N - r0)",
              "        p0 = (w // nblk) * chunk",
              "        _load_features(R, Xt, r0, nb)",
              "        for p in range(p0, min(p0 + chunk, P)):",
              "            for k in range(res[p, 0]):",
              "                _exec_user(R, code[p, k, 1], R, code[p, k, 0], code[p, k, 2], code[p, k, 3], cval[p, k], nb)",
              "            _copy_out(out, p, r0, R, res[p, 1], nb)",
              "    _fence()"]
    return "\n".join(lines) + "\n"


def user_kernel(parts: dict[str, Callable]) -> Callable | None:
    """The run kernel (``eval_numba._run_items``'s signature) for the user functions of the
    current table that have a numba form (None when none has). ``parts``: ``eval_numba``'s
    compiled ``_exec``, ``_fetch_add``, ``_load_features``, ``_copy_out`` and ``_fence`` (passed
    in, so that this module does not import its caller). Opcodes of user functions without a
    numba form must not reach the kernel (``evaluate_numba`` checks, see ``has_numba_forms``)."""
    v = table_version()
    if v in _CACHE:
        return _CACHE[v]
    ops = [op for op in user_opcodes() if function(op).scalar is not None]
    if not ops:
        _CACHE[v] = None
        return None
    import numpy as np
    from numba import njit

    ns = {"np": np, **{k: parts[k] for k in ("_exec", "_fetch_add", "_load_features", "_copy_out", "_fence")}}
    for op in ops:
        ns[f"_u{op}"] = njit(inline="always", nogil=True, error_model="numpy")(function(op).scalar)
    exec(compile(_source(ops), f"<tensorgp user kernel v{v}>", "exec"), ns)
    ns["_exec_user"] = njit(inline="always", nogil=True, error_model="numpy")(ns["_exec_user"])
    _CACHE[v] = njit(nogil=True, error_model="numpy")(ns["_run_items_user"])
    return _CACHE[v]


def has_numba_forms(ops: list[int]) -> bool:
    """Whether every user opcode in ``ops`` has a numba form."""
    return all(not function(op).builtin and function(op).scalar is not None for op in ops)
