import os
from pathlib import Path

# Triton decides between compiling and interpreting when it is imported: without a GPU the
# kernel tests run under the interpreter, so set it before anything imports triton.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """``$TENSORGP_DATA`` (the data root or the suite-zero dir) or ``<repo>/../shared/data``."""
    env = os.environ.get("TENSORGP_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    if (p / "suite-zero").is_dir():
        return p
    if any(p.glob("zc_*.json")):
        return p.parent
    return p


@pytest.fixture
def suite_zero() -> Path:
    d = data_root() / "suite-zero"
    if not any(d.glob("zc_*.json")):
        pytest.skip(f"REAL DATA ABSENT: no zc_*.json in {d} (set TENSORGP_DATA); this test needs NAS-Bench-Suite-Zero files")
    return d


@pytest.fixture
def nb201_final() -> Path:
    f = data_root() / "nb201-final" / "zc_nasbench201.json"
    if not f.exists():
        pytest.skip(f"REAL DATA ABSENT: {f} missing (set TENSORGP_DATA); this test needs the NB201 final set")
    return f
