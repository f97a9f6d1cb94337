"""Benchmarks run with the project's interpreter: ``python bench/x.py`` from a shell whose
``python`` lacks tensorgp re-runs itself with ``.venv/bin/python`` when that exists, and otherwise
says how to set it up (instead of a ModuleNotFoundError)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def require_tensorgp() -> None:
    """Return when tensorgp and torch import here; else re-exec with the project venv, or exit 2."""
    if all(importlib.util.find_spec(m) is not None for m in ("tensorgp", "torch")):
        return
    here = Path(sys.executable).resolve()
    if VENV_PYTHON.exists() and VENV_PYTHON.resolve() != here and not os.environ.get("TENSORGP_BENCH_REEXEC"):
        os.environ["TENSORGP_BENCH_REEXEC"] = "1"  # once: never loop between interpreters
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.stderr.write(f"error: {sys.executable} cannot import tensorgp (and torch). Set up the project first "
                     f"(`make install` creates {VENV_PYTHON}), then run {VENV_PYTHON} {' '.join(sys.argv)}\n")
    raise SystemExit(2)
