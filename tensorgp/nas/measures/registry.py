"""The 13 Suite-Zero proxies by name: validation of the batch, grouping into shared passes,
per-proxy failure records.

``measure(subject, inputs, targets, names)`` computes each requested proxy for the subject's K
architectures and returns ``Measured`` (``values {name: float64[K]}``, NaN where a proxy failed,
and ``errors {name: message}``). Proxies that share a pass (the loss gradient, the input
Jacobian) are computed together; every pass starts from the subject's initial state (weights
and BN statistics), as NASLib computes each proxy on a fresh copy of the network.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .gradient import gradient_pass
from .jacobian import jacobian_pass
from .size import flops, l2_norm, params
from .subject import MeasureError, as_subject
from .synflow import synflow
from .zen import zen

NAMES = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip",
         "synflow", "zen")
CHEAP = ("params", "flops", "synflow", "nwot", "jacov")
DATA_FREE = ("synflow", "l2_norm", "zen", "params", "flops")
# passes: (proxies, function(subject, inputs, targets, names, loss, seed) -> {name: float64[K]})
_PASSES: list[tuple[tuple[str, ...], Callable]] = [
    (("params",), lambda s, x, y, n, loss, seed: {"params": params(s)}),
    (("flops",), lambda s, x, y, n, loss, seed: {"flops": flops(s, x)}),
    (("l2_norm",), lambda s, x, y, n, loss, seed: {"l2_norm": l2_norm(s)}),
    (("jacov", "epe_nas", "nwot"), lambda s, x, y, n, loss, seed: jacobian_pass(s, x, y, n)),
    (("grad_norm", "snip", "plain", "fisher", "grasp"), lambda s, x, y, n, loss, seed: gradient_pass(s, x, y, n, loss)),
    (("synflow",), lambda s, x, y, n, loss, seed: {"synflow": synflow(s, x)}),
    (("zen",), lambda s, x, y, n, loss, seed: {"zen": zen(s, x, seed=seed)}),
]
_MUTATING = {"synflow", "zen"}  # passes that change parameters or dtype


def parse_names(names: str | Sequence[str] | None) -> list[str]:
    """Proxy names from ``"a,b"``, a list, ``"all"``/None (all 13) or ``"cheap"``; unknown ones
    raise ``MeasureError`` naming them."""
    if names is None:
        return list(NAMES)
    if isinstance(names, str):
        if names.strip() in ("all", ""):
            return list(NAMES)
        if names.strip() == "cheap":
            return list(CHEAP)
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise MeasureError(f"unknown proxy {', '.join(map(repr, bad))}; proxies: {', '.join(NAMES)} (or all, cheap)")
    return list(dict.fromkeys(names))


def check_batch(inputs, targets=None, where: str = "batch") -> None:
    """``inputs`` must be a floating tensor ``[N, C, H, W]`` with N >= 2 and no NaN/inf;
    ``targets`` (if given) N integer class labels (or an ``[N, classes]`` float tensor)."""
    if not isinstance(inputs, torch.Tensor):
        raise MeasureError(f"{where}: inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise MeasureError(f"{where}: inputs have dtype {inputs.dtype}; expected a floating dtype "
                           f"(float32 images, [N, C, H, W])")
    if inputs.dim() != 4:
        raise MeasureError(f"{where}: inputs have shape {tuple(inputs.shape)}; expected 4 dimensions [N, C, H, W]")
    if inputs.shape[0] < 2:
        raise MeasureError(f"{where}: {inputs.shape[0]} sample(s); the proxies need at least 2 (jacov and nwot "
                           f"compare samples)")
    bad = ~torch.isfinite(inputs)
    if bool(bad.any()):
        first = int(bad.flatten(1).any(1).nonzero()[0])
        raise MeasureError(f"{where}: inputs contain {int(bad.sum())} NaN/inf value(s) (first in sample {first})")
    if targets is None:
        return
    if not isinstance(targets, torch.Tensor):
        raise MeasureError(f"{where}: targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape[0] != inputs.shape[0]:
        raise MeasureError(f"{where}: {targets.shape[0]} targets for {inputs.shape[0]} inputs")
    if targets.dim() == 1 and (targets.is_floating_point() or targets.dtype == torch.bool):
        raise MeasureError(f"{where}: targets have dtype {targets.dtype}; expected integer class labels [N]")
    if targets.dim() == 1 and bool((targets < 0).any()):
        raise MeasureError(f"{where}: negative class label {int(targets.min())} in targets")


def _tensor_dtypes(subject) -> dict[tuple[int, str, str], torch.dtype]:
    """Each parameter's and buffer's dtype, keyed by (module, kind, name)."""
    out = {}
    for m in subject.modules():
        for kind, table in (("p", m._parameters), ("b", m._buffers)):
            for name, t in table.items():
                if t is not None:
                    out[(id(m), kind, name)] = t.dtype
    return out


def _restore_dtypes(subject, dtypes: dict) -> None:
    for m in subject.modules():
        for kind, table in (("p", m._parameters), ("b", m._buffers)):
            for name, t in table.items():
                want = dtypes.get((id(m), kind, name))
                if t is not None and want is not None and t.dtype != want:
                    t.data = t.data.to(want)


@dataclass
class Measured:
    """``values {name: float64[K]}`` (NaN where failed), ``errors {name: message}`` (a proxy whose
    pass raised), ``seconds {pass proxies: wall time}``."""

    values: dict[str, torch.Tensor]
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def measure(subject, inputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], loss: Callable | None = None,
            seed: int = 0) -> Measured:
    """Compute ``names`` for a subject (see ``subject``); a proxy that raises is recorded in
    ``errors`` with NaN values and the others are still computed. Out of memory is re-raised
    (the batched driver splits the batch and retries)."""
    subject = as_subject(subject)
    names = parse_names(names)
    K = subject.archs
    state = {k: v.detach().clone() for k, v in subject.state_dict().items()}
    modes = {m: m.training for m in subject.modules()}  # each module's own, restored as it was
    dtypes = _tensor_dtypes(subject)
    frozen = [p for p in subject.parameters() if not p.requires_grad]  # the gradient proxies need them all
    for p in frozen:
        p.requires_grad_(True)
    subject.train()
    values: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    dirty = False
    try:
        for group, fn in _PASSES:
            want = [n for n in group if n in names]
            if not want:
                continue
            if dirty:
                _restore_dtypes(subject, dtypes)
                subject.load_state_dict(state)
            t0 = time.perf_counter()
            try:
                out = fn(subject, inputs, targets, want, loss, seed)
                for n in want:
                    if n in out:
                        values[n] = out[n].detach().double().cpu()
                    else:  # a pass may leave out a proxy that is undefined here (``_why``: the reason)
                        errors[n] = (out.get("_why") or {}).get(n, "not computed")
                        values[n] = torch.full((K,), math.nan, dtype=torch.float64)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # one proxy's failure must not stop the others
                for n in want:
                    errors[n] = f"{type(e).__name__}: {e}"
                    values[n] = torch.full((K,), math.nan, dtype=torch.float64)
            seconds[",".join(want)] = time.perf_counter() - t0
            # flops runs a forward (BN statistics move), so only params and l2_norm leave the model as it was
            dirty = dirty or bool(_MUTATING & set(want)) or bool(set(want) - {"params", "l2_norm"})
    finally:
        _restore_dtypes(subject, dtypes)  # synflow and zen cast to float64; a float64 buffer stays one
        subject.load_state_dict(state)
        for m, t in modes.items():
            m.train(t)
        for p in frozen:
            p.requires_grad_(False)
    return Measured({n: values[n] for n in names}, errors, seconds)


def compute(model, inputs: torch.Tensor, targets: torch.Tensor, names: str | Sequence[str] | None = None,
            loss: Callable | None = None, seed: int = 0, errors: dict | None = None) -> dict[str, float]:
    """The proxies of one ``torch.nn.Module`` on one batch: ``{name: float}`` (NaN where a proxy
    failed; the failure's message goes to ``errors`` if given). ``loss(logits, targets)``:
    default cross-entropy. ``seed``: zen's Gaussian draws (the model's own weights are used as
    they are, so seed the model's construction)."""
    check_batch(inputs, targets)
    names = parse_names(names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        m = measure(as_subject(model), inputs, targets, names, loss, seed)
    if errors is not None:
        errors.update(m.errors)
    out = {n: float(v[0]) for n, v in m.values.items()}
    for n, v in out.items():
        if not math.isfinite(v) and errors is not None and n not in errors:
            errors[n] = f"non-finite value {v}"
    return out
