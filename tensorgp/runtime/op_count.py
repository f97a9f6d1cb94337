"""Counting what a piece of torch code dispatches: operations, and those that wait for the host.

``OpCounter`` is a ``TorchDispatchMode``: every aten operation that runs inside it is counted
by name (``total``). Views (``unsqueeze``, ``slice``, ``view``, ...) only make a new tensor
header; every other operation is at least one kernel launch on a GPU, so ``launches`` is the
device path's launch count, measured on the CPU without a device. Operations that
need their result on the host before they can return (``.item()``, ``nonzero``, ``unique``,
boolean-mask indexing, ...) are counted apart as host synchronisations, as is a copy to the
host: from a device, or on the CPU ``x.to("cpu", copy=True)`` (a copy to the host that keeps
the dtype: how code marks its host reads so that a CPU count sees them).
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# operations whose output size or value the host must read: a device-to-host sync on CUDA
SYNC_OPS = frozenset({
    "aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten._unique", "aten._unique2",
    "aten.unique_dim", "aten.unique_consecutive", "aten.masked_select", "aten.is_nonzero", "aten.equal",
    "aten.repeat_interleave", "aten.bincount", "aten.histc", "aten.argwhere",
})


# no kernel: new tensor headers, or a Python number wrapped as a 0-dim host tensor (``where(c, x, 0)``)
HEADER_OPS = frozenset({"aten.lift_fresh", "aten.detach", "aten.scalar_tensor"})


def _to_host(src, kwargs: dict) -> bool:
    if str(kwargs.get("device", "")) != "cpu" or not isinstance(src, torch.Tensor):
        return False
    return src.device.type != "cpu" or kwargs.get("dtype", src.dtype) == src.dtype


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` then ``c.total``, ``c.syncs``, ``c.ops`` (name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.sync_ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        self.views += bool(func.is_view) or name in HEADER_OPS
        if name in SYNC_OPS or (name == "aten.index" and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else ()))):
            self.sync_ops[name] += 1
        elif name == "aten._to_copy" and _to_host(args[0], kwargs or {}):
            self.sync_ops["to_host"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def launches(self) -> int:
        """Operations that are not views (nor wrapped scalars): kernel launches on a GPU."""
        return self.total - self.views

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())
