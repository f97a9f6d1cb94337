"""A lock file per checkpoint writer, so two runs never share one ``--checkpoint`` folder.

``DIR/checkpoint.lock`` (``checkpoint.rankR.lock`` for rank R of an island run) is created with
``O_CREAT | O_EXCL`` and holds the owner's pid and host. A lock whose pid is dead on this host is
stale (a killed run) and is taken over with a warning; any other existing lock is an error
naming the folder, the pid and the host.
"""
from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path


class LockError(ValueError):
    """The --checkpoint folder is in use: a bad option value, reported like one."""


class LockWarning(UserWarning):
    """A stale lock (dead pid on this host) was taken over."""


def lock_name(rank: int = 0) -> str:
    return "checkpoint.lock" if rank == 0 else f"checkpoint.rank{rank}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class DirLock:
    """``with DirLock(dir, rank):`` holds the folder's lock for this rank until the block ends."""

    def __init__(self, directory: str | Path, rank: int = 0):
        self.path = Path(directory) / lock_name(rank)
        self.held = False
        self.note: str | None = None  # set when a stale lock was taken over

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, fh)
        return True

    def acquire(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if self._create():
                self.held = True
                return self
            try:
                owner = json.loads(self.path.read_text())
                pid, host = int(owner["pid"]), str(owner["host"])
            except (OSError, ValueError, KeyError, TypeError):
                pid, host = None, None
            if pid is None:
                raise LockError(f"checkpoint folder {self.path.parent} holds an unreadable lock file {self.path}; "
                                f"if no run uses this folder, delete it")
            if host != socket.gethostname() or _alive(pid):
                raise LockError(f"checkpoint folder {self.path.parent} is in use by another run (pid {pid} on host "
                                f"{host}, lock file {self.path}); give this run another --checkpoint folder, or "
                                f"delete the lock file if that run is gone")
            self.note = f"took over the stale lock {self.path} of pid {pid} (no longer running on {host})"
            warnings.warn(self.note, LockWarning, stacklevel=2)
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        raise LockError(f"could not take the lock {self.path}: another run took it first")

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
