"""A content digest of the rows a run fits, so ``--resume`` notices data that changed under the
same file and task names."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .data import Task


def training_digest(tasks: Sequence[Task], proxies: Sequence[str]) -> str:
    """sha256 (hex) over each task's name, architecture keys, the ``proxies`` columns and the
    accuracies, as float64 bytes (NaN bit patterns normalised, so a failed value hashes alike
    whatever the file spelled)."""
    h = hashlib.sha256()
    for t in tasks:
        cols = [t.proxies.index(p) for p in proxies]
        x = np.ascontiguousarray(t.features[:, cols].double().numpy())
        x = np.where(np.isnan(x), np.nan, x)
        h.update(t.name.encode() + b"\0")
        h.update("\0".join(t.keys).encode() + b"\0")
        h.update(x.tobytes())
        h.update(np.ascontiguousarray(t.accuracy.double().numpy()).tobytes())
    return h.hexdigest()
