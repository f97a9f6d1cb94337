"""The SRBench problem lists of ``bench/srbench.py``: complete, finite on their ranges, and judged
recovered by the symbolic check when the model is the truth (rescaled, or shifted)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sympy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import feynman as FB  # noqa: E402
import srbench as SB  # noqa: E402


def test_problem_sets_are_complete_and_finite() -> None:
    fey, stro = SB.problem_sets(["feynman"]), SB.problem_sets(["strogatz"])
    assert len(fey) == 100 and len({p.name for p in fey}) == 100 and len(stro) == 14
    for p in fey + stro + SB.NGUYEN:
        Xtr, ytr, Xte, yte = FB.make_problem(p, 400, 0.0, 0)
        assert Xtr.shape == (300, len(p.variables)) and np.isfinite(ytr).all() and np.isfinite(yte).all(), p.name
    with pytest.raises(ValueError, match="nope"):
        SB.problem_sets(["nope"])


@pytest.mark.parametrize("name", ["strogatz_glider1", "nguyen-5", "I.18.4", "II.6.15b"])
def test_recovery_judge_accepts_the_truth_and_rejects_a_neighbour(name: str) -> None:
    p = next(q for q in SB.problem_sets(["feynman", "strogatz", "nguyen"]) if q.name == name)
    truth = FB.truth_expr(p)
    _, _, Xte, _ = FB.make_problem(p, 400, 0.0, 0)
    # SRBench's rule: a constant difference or a constant ratio (not both at once)
    assert FB.recovered(2.5 * truth, p, Xte, 20) and FB.recovered(truth + 1.25, p, Xte, 20)
    assert not FB.recovered(2.5 * truth + 1.25, p, Xte, 20)
    x = FB.symbols(p)[p.variables[0]]
    assert not FB.recovered(truth + x, p, Xte, 20)
