"""Where a run's result goes, settled before the run starts: a finished or interrupted run
must never lose its result to an output folder that turns out unusable at the end."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def default_run_dir(root: str | Path = "runs") -> Path:
    """``root/<UTC timestamp>`` (``-2``, ``-3``... appended if taken): the output folder of a run
    given no ``--out``, so its result is always kept."""
    base = Path(root) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    p, k = base, 1
    while p.exists():
        k += 1
        p = base.with_name(f"{base.name}-{k}")
    return p


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """``ValueError`` naming ``option`` unless a file can be written at ``path`` (not a folder; its
    folder exists or can be made, and is writable): checked before the work whose result it holds."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {p}: is a folder; give the file to write")
    _check_writable(p.parent, option, p)
    return p


def _check_writable(folder: Path, option: str, shown: Path) -> None:
    """Create ``folder`` if needed and write (then remove) a probe file there; ``ValueError`` naming
    ``option`` and ``shown`` when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{option} {shown}: cannot write there ({e.strerror or e})") from None


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """``ValueError`` naming ``option`` and the path unless ``path`` is (or can be made) a folder
    this process can write files in. Creates the folder; returns it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {p}: is an existing file, not a folder (the result goes to {p}/result.json)")
    _check_writable(p, option, p)
    return p
