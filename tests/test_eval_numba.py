"""The numba CPU evaluator against a per-program torch reference built from ``primitives.FUNCTIONS``.

Exactly rounded functions must match bit for bit (NaN where NaN, signed zeros). log, exp, tanh
(and sqrt, which torch does not round correctly) may differ by an ulp or two, which a whole
program can amplify; programs using them are checked node by node instead: every subtree is
evaluated as a program of its own, and each function node must equal the torch function
applied to its children's numba values (rtol 1e-5, same NaN/inf pattern).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorgp.engine import eval_numba
from tensorgp.engine.primitives import CONST, FIRST_VAR, FUNCTIONS, OPCODE, PAD

pytestmark = pytest.mark.skipif(not eval_numba.available(), reason="numba is not installed")

# torch's float32 sqrt on CPU is not correctly rounded (1 ulp off on ~20% of inputs), so sqrt
# is checked with the transcendental tolerance
EXACT = ("add", "sub", "mul", "div", "neg", "abs", "square", "inv", "min", "max")
ALL = tuple(f.name for f in FUNCTIONS)
SPECIAL = np.array(
    [0.0, -0.0, 1e-40, -1e-40, 1e-7, -1e-7, 1e-6, -1e-6, np.nextafter(np.float32(1e-6), np.float32(1)), 1.0, -1.0, 2.0, -3.5,
     79.9, 80.0, 81.0, 100.0, -100.0, 1e18, -1e18, 3e38, -3e38, np.inf, -np.inf, np.nan],
    dtype=np.float32,
)


def random_program(rng: np.random.Generator, names: tuple[str, ...], m: int, max_depth: int, p_const: float = 0.15) -> list[tuple[int, float]]:
    """A random tree (grow method, depth <= max_depth) in postfix: [(opcode, constant)]."""

    def grow(d: int) -> list[tuple[int, float]]:
        if d == max_depth or (d > 0 and rng.random() < 0.3):
            if rng.random() < p_const:
                c = SPECIAL[rng.integers(len(SPECIAL))] if rng.random() < 0.3 else np.float32(rng.normal())
                return [(CONST, float(c))]
            return [(FIRST_VAR + int(rng.integers(m)), 0.0)]
        f = FUNCTIONS[OPCODE[names[rng.integers(len(names))]] - 1]
        children = [grow(d + 1) for _ in range(f.arity)]
        return [tok for ch in children for tok in ch] + [(OPCODE[f.name], 0.0)]

    return grow(0)


def to_tensors(progs: list[list[tuple[int, float]]], pad_extra: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    L = max(len(p) for p in progs) + pad_extra
    ops = torch.zeros(len(progs), L, dtype=torch.int32)
    consts = torch.zeros(len(progs), L)
    for i, p in enumerate(progs):
        ops[i, : len(p)] = torch.tensor([t[0] for t in p], dtype=torch.int32)
        consts[i, : len(p)] = torch.tensor([t[1] for t in p])
    return ops, consts, torch.tensor([len(p) for p in progs], dtype=torch.int32)


def reference(prog: list[tuple[int, float]], X: torch.Tensor) -> torch.Tensor:
    """Stack evaluation of one postfix program with the torch functions: float32[N]."""
    stack: list[torch.Tensor] = []
    for op, c in prog:
        if op >= FIRST_VAR:
            stack.append(X[:, op - FIRST_VAR])
        elif op == CONST:
            stack.append(torch.full((X.shape[0],), c, dtype=torch.float32))
        elif op != PAD:
            f = FUNCTIONS[op - 1]
            args = stack[len(stack) - f.arity:]
            del stack[len(stack) - f.arity:]
            stack.append(f.fn(*args).to(torch.float32))
    assert len(stack) == 1
    return stack[0]


def edge_X(rng: np.random.Generator, n: int, m: int, p_special: float = 0.35) -> torch.Tensor:
    X = rng.normal(size=(n, m)).astype(np.float32) * np.float32(3)
    mask = rng.random((n, m)) < p_special
    X[mask] = SPECIAL[rng.integers(len(SPECIAL), size=int(mask.sum()))]
    return torch.from_numpy(X)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def population(seed: int, names: tuple[str, ...], P: int, m: int, max_depth: int = 6):
    rng = np.random.default_rng(seed)
    progs = [random_program(rng, names, m, int(rng.integers(0, max_depth + 1))) for _ in range(P)]
    return rng, progs


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_functions_match_reference_bitwise(seed: int, dedup: bool) -> None:
    m = 4
    rng, progs = population(seed, EXACT, 150, m)
    progs += progs[:40]  # duplicates, so dedup has something to share
    X = edge_X(rng, 333, m)  # not a multiple of the block: exercises the tail block
    ops, consts, length = to_tensors(progs)
    got = eval_numba.evaluate_numba(ops, consts, length, X, block=64, chunk=16, dedup=dedup)
    want = torch.stack([reference(p, X) for p in progs])
    assert got.shape == (len(progs), 333) and got.dtype == torch.float32
    assert_same(got, want)


def subtrees(prog: list[tuple[int, float]]) -> list[tuple[int, list[int]]]:
    """For every function node: (its position, the positions of its children), in postfix."""
    out, starts = [], []
    for i, (op, _) in enumerate(prog):
        ar = FUNCTIONS[op - 1].arity if 1 <= op < CONST else 0
        kids = [starts.pop() for _ in range(ar)][::-1]  # (start, end) of each child
        starts.append((kids[0][0] if kids else i, i))
        if ar:
            out.append((i, [k[1] for k in kids]))
    return out


def span(prog: list[tuple[int, float]], end: int) -> list[tuple[int, float]]:
    need, i = 1, end
    while need:
        op = prog[i][0]
        need += (FUNCTIONS[op - 1].arity if 1 <= op < CONST else 0) - 1
        i -= 1
    return prog[i + 1 : end + 1]


@pytest.mark.parametrize("dedup", [False, True])
def test_all_functions_node_by_node(dedup: bool) -> None:
    m = 3
    rng, progs = population(7, ALL, 60, m)
    X = edge_X(rng, 301, m)
    # every subtree of every program becomes a program of its own
    subs, nodes = [], []
    for p in progs:
        base = len(subs)
        subs += [span(p, i) for i in range(len(p))]
        nodes += [(base + i, [base + k for k in kids], p[i][0]) for i, kids in subtrees(p)]
    ops, consts, length = to_tensors(subs)
    V = eval_numba.evaluate_numba(ops, consts, length, X, block=128, dedup=dedup)
    assert any(op in (OPCODE["log"], OPCODE["exp"], OPCODE["tanh"]) for _, _, op in nodes)
    for row, kids, op in nodes:
        want = FUNCTIONS[op - 1].fn(*(V[k] for k in kids))
        if FUNCTIONS[op - 1].name in EXACT:
            assert_same(V[row], want)
        else:
            torch.testing.assert_close(V[row], want, rtol=1e-5, atol=1e-37, equal_nan=True)
            assert torch.equal(V[row].isinf(), want.isinf()) and torch.equal(V[row].isnan(), want.isnan())


@pytest.mark.parametrize("name", ALL)
def test_each_function_on_edge_values(name: str) -> None:
    """Every function on every pair of special values (and NaN) against torch."""
    f = FUNCTIONS[OPCODE[name] - 1]
    a, b = np.meshgrid(SPECIAL, SPECIAL, indexing="ij")
    X = torch.from_numpy(np.stack([a.ravel(), b.ravel()], 1))
    prog = [(FIRST_VAR, 0.0), (FIRST_VAR + 1, 0.0)][: f.arity] + [(OPCODE[name], 0.0)]
    ops, consts, length = to_tensors([prog])
    got = eval_numba.evaluate_numba(ops, consts, length, X)[0]
    want = f.fn(*(X[:, i] for i in range(f.arity)))
    if name in EXACT:
        assert_same(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0, equal_nan=True)
    zero = got == 0  # signed zeros too
    assert torch.equal(got[zero].signbit(), want[zero].signbit())
    if name in ("min", "max"):
        nan_in = X.isnan().any(1)
        assert bool(got[nan_in].isnan().all()) and not bool(got[~nan_in].isnan().any())


def test_transcendentals_within_tolerance_on_dense_ranges() -> None:
    """exp over its whole float32 range (subnormal results included), log over many decades,
    tanh across its small/large switch at 0.625."""
    rng = np.random.default_rng(3)
    x = np.concatenate([
        rng.uniform(-110, 90, 40000), rng.normal(size=20000) * 1e-3, rng.uniform(-1, 1, 20000),
        np.sign(rng.normal(size=20000)) * 10.0 ** rng.uniform(-5, 38, 20000),
    ]).astype(np.float32)
    X = torch.from_numpy(x)[:, None]
    for name in ("log", "exp", "tanh", "sqrt"):
        ops, consts, length = to_tensors([[(FIRST_VAR, 0.0), (OPCODE[name], 0.0)]])
        got = eval_numba.evaluate_numba(ops, consts, length, X)[0]
        want = FUNCTIONS[OPCODE[name] - 1].fn(X[:, 0])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-40, equal_nan=True, msg=name)
        assert torch.equal(got.isinf(), want.isinf()), name


def test_leaves_pad_and_out_argument() -> None:
    X = torch.tensor([[1.0, 2.0], [3.0, -4.0], [float("nan"), 5.0]])
    progs = [[(FIRST_VAR + 1, 0.0)], [(CONST, 2.5)], [(FIRST_VAR, 0.0), (FIRST_VAR + 1, 0.0), (OPCODE["sub"], 0.0)]]
    ops, consts, length = to_tensors(progs)
    # PAD inside a program is skipped; garbage after length is ignored
    ops = torch.cat([ops[:, :1], torch.zeros(3, 1, dtype=torch.int32), ops[:, 1:]], 1)
    consts = torch.cat([consts[:, :1], torch.zeros(3, 1), consts[:, 1:]], 1)
    length = length + 1
    ops[0, 3] = OPCODE["neg"]
    for dedup in (False, True):
        out = torch.full((3, 3), 7.0)
        res = eval_numba.evaluate_numba(ops, consts, length, X, out=out, dedup=dedup)
        assert res is out
        assert_same(out, torch.tensor([[2.0, -4.0, 5.0], [2.5, 2.5, 2.5], [-1.0, 7.0, float("nan")]]))


def test_block_chunk_threads_do_not_change_results() -> None:
    m = 5
    rng, progs = population(11, ALL, 97, m)
    X = edge_X(rng, 1000, m, 0.1)
    ops, consts, length = to_tensors(progs)
    base = eval_numba.evaluate_numba(ops, consts, length, X, block=256, chunk=64, n_threads=1)
    for block, chunk, nt in ((1, 1, 1), (17, 5, 2), (64, 200, 3), (1024, 1, 1), (8, 3, 8)):
        assert_same(eval_numba.evaluate_numba(ops, consts, length, X, block=block, chunk=chunk, n_threads=nt), base)
    for block, nt in ((33, 1), (8, 4), (4096, 2)):
        assert_same(eval_numba.evaluate_numba(ops, consts, length, X, block=block, n_threads=nt, dedup=True), base)


def test_dedup_counts_shared_subtrees() -> None:
    x0, x1 = (FIRST_VAR, 0.0), (FIRST_VAR + 1, 0.0)
    add, mul = (OPCODE["add"], 0.0), (OPCODE["mul"], 0.0)
    shared = [x0, x1, add]  # (x0 + x1) appears in all three programs
    progs = [shared, shared + [x0, mul], shared + shared + [mul]]
    ops, consts, length = to_tensors(progs)
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    stats: list = []
    got = eval_numba.evaluate_numba(ops, consts, length, X, dedup=True, stats=stats)
    s = X.sum(1)
    assert_same(got, torch.stack([s, s * X[:, 0], s * s]))
    # distinct nodes: x0, x1, add, mul(add, x0), mul(add, add)
    assert (stats[0].population_nodes, stats[0].executed_nodes, stats[0].instructions) == (3 + 5 + 7, 5, 3)
    assert stats[0].registers == 2  # x0 + x1 stays live while the products use it
    assert stats[0].plain_instructions == 1 + 2 + 3 and stats[0].used


def test_dedup_auto_runs_the_dag_only_when_it_pays() -> None:
    m = 4
    rng, progs = population(5, ALL, 40, m)
    X = edge_X(rng, 700, m, 0.1)
    distinct = [p for i, p in enumerate(progs) if p not in progs[:i] and len(p) > 1]
    for pop_, expect in ((distinct * 3, True), (distinct[:1], False)):
        ops, consts, length = to_tensors(pop_)
        want = eval_numba.evaluate_numba(ops, consts, length, X, dedup=False)
        stats: list = []
        assert_same(eval_numba.evaluate_numba(ops, consts, length, X, dedup=None, block=64, n_threads=2, stats=stats), want)
        assert stats[0].used is expect
        assert (stats[0].instructions <= stats[0].plain_instructions / 3 + 1) is expect
    # one row block cannot feed two threads: the plain path runs
    stats = []
    ops, consts, length = to_tensors(distinct * 3)
    eval_numba.evaluate_numba(ops, consts, length, X[:50], dedup=None, n_threads=2, stats=stats)
    assert not stats[0].used


def test_constants_distinguished_by_bits_in_dedup() -> None:
    progs = [[(CONST, 0.0)], [(CONST, -0.0)], [(CONST, 1.0)], [(CONST, 1.0)]]
    ops, consts, length = to_tensors(progs)
    stats: list = []
    got = eval_numba.evaluate_numba(ops, consts, length, torch.zeros(4, 1), dedup=True, stats=stats)
    assert got[:, 0].tolist() == [0.0, -0.0, 1.0, 1.0] and torch.signbit(got[1, 0])
    assert stats[0].executed_nodes == 3


@pytest.mark.parametrize("dedup", [False, True])
def test_invalid_programs_raise(dedup: bool) -> None:
    X = torch.zeros(4, 2)
    bad = [
        [(FIRST_VAR, 0.0), (OPCODE["add"], 0.0)],  # underflow
        [(FIRST_VAR, 0.0), (FIRST_VAR, 0.0)],  # two values left
        [(FIRST_VAR + 2, 0.0)],  # feature out of range
        [(99, 0.0)],
    ]
    for prog in bad:
        ops, consts, length = to_tensors([[(FIRST_VAR, 0.0)], prog])
        with pytest.raises(ValueError, match="program 1"):
            eval_numba.evaluate_numba(ops, consts, length, X, dedup=dedup)
    ops, consts, length = to_tensors([[(FIRST_VAR, 0.0)]])
    with pytest.raises(ValueError, match="program 0"):
        eval_numba.evaluate_numba(ops, consts, torch.zeros(1, dtype=torch.int32), X)  # empty program


def test_empty_population_and_rows() -> None:
    ops, consts, length = to_tensors([[(FIRST_VAR, 0.0)]])
    assert eval_numba.evaluate_numba(ops, consts, length, torch.zeros(0, 1)).shape == (1, 0)
    assert eval_numba.evaluate_numba(ops[:0], consts[:0], length[:0], torch.zeros(5, 1)).shape == (0, 5)


def test_matches_on_init_population() -> None:
    """Programs from the real initialiser (add/sub/mul/div only), exact."""
    from tensorgp.engine.population import init_population
    from tensorgp.engine.primitives import PrimitiveSet

    pset = PrimitiveSet(tuple(f"x{i}" for i in range(6)), functions=("add", "sub", "mul", "div"))
    pop = init_population(200, pset, torch.Generator().manual_seed(0), max_len=64, depth_range=(0, 6))
    X = edge_X(np.random.default_rng(0), 517, 6, 0.2)
    got = eval_numba.evaluate_numba(pop.ops, pop.consts, pop.length, X)
    for i in range(pop.size):
        n = int(pop.length[i])
        prog = list(zip(pop.ops[i, :n].tolist(), pop.consts[i, :n].tolist()))
        assert_same(got[i], reference(prog, X))
    assert_same(eval_numba.evaluate_numba(pop.ops, pop.consts, pop.length, X, dedup=True), got)


def test_half_precision_inputs_are_widened_before_numpy():
    from tensorgp.engine.evaluate import evaluate
    from tensorgp.engine.population import Population
    from tensorgp.engine.primitives import FIRST_VAR, OPCODE

    pop = Population(torch.tensor([[FIRST_VAR, FIRST_VAR + 1, OPCODE["add"]]], dtype=torch.int32),
                     torch.zeros(1, 3), torch.tensor([3], dtype=torch.int32))
    for dt in (torch.bfloat16, torch.float16):
        X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dt)
        assert torch.equal(evaluate(pop, X, "numba"), torch.tensor([[3.0, 7.0]]))
