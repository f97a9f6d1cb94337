"""sin, cos, pow and user-registered functions: one semantics on every backend, in the constant
optimiser's Jacobians, in expressions and sympy, and saved programs that survive the opcode layout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tensorgp.engine import expression as E
from tensorgp.engine.evaluate import evaluate, evaluate_torch, numba_available, triton_available
from tensorgp.engine.export import node_to_sympy
from tensorgp.engine.population import Population
from tensorgp.engine.primitives import (CONST, FIRST_VAR, LAYOUT_V1, OPCODE, POW_MAX, PrimitiveSet, function,
                                        opcode_layout, register_function, remap_opcodes, unregister_function)
from tensorgp.sr.constants import jacobian

EDGE = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-7, -1e-7, 1e-6, 80.0, 1e30, -1e30, 3.4e38, math.inf, -math.inf,
        math.nan]
RTOL = 1e-5  # the documented contract of the inexact operators (log exp tanh sin cos pow)


def pop_of(formulas: list[str], names: tuple[str, ...]) -> Population:
    rows = [E.to_postfix(E.parse(f, names)) for f in formulas]
    L = max(len(o) for o, _ in rows)
    ops = torch.tensor([o + [0] * (L - len(o)) for o, _ in rows], dtype=torch.int32)
    consts = torch.tensor([c + [0.0] * (L - len(c)) for _, c in rows], dtype=torch.float32)
    return Population(ops, consts, torch.tensor([len(o) for o, _ in rows], dtype=torch.int32))


def tens(p: Population) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return p.ops, p.consts, p.length


def edge_pairs() -> torch.Tensor:
    """``float32[289, 2]``: every pair of edge values (pow's base and exponent)."""
    a, b = np.meshgrid(np.array(EDGE, np.float32), np.array(EDGE, np.float32))
    return torch.from_numpy(np.stack([a.ravel(), b.ravel()], 1))


def assert_same(got: torch.Tensor, ref: torch.Tensor) -> None:
    # same NaN positions, same infinities, values within the contract
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=1e-6, equal_nan=True)


def test_pow_semantics_on_edges() -> None:
    X = edge_pairs()
    got = evaluate_torch(*tens(pop_of(["pow(a, b)"], ("a", "b"))), X)[0]
    a, b = X[:, 0].double(), X[:, 1].double()
    nan = torch.isnan(a) | torch.isnan(b)
    assert torch.equal(torch.isnan(got), nan)  # NaN exactly where an input is NaN (IEEE pow(1, nan) = 1 is not)
    assert bool(torch.isfinite(got[~nan]).all()) and float(got[~nan].max()) == float(np.float32(POW_MAX))
    want = torch.pow(a.abs(), b).clamp(max=POW_MAX).float().double()  # float32 underflow included
    torch.testing.assert_close(got[~nan].double(), want[~nan], rtol=1e-6, atol=0)
    # the cases the design names: sign of the base dropped, 0^-1 at the ceiling, 0^0 = 1
    small = evaluate_torch(*tens(pop_of(["pow(a, b)"], ("a", "b"))),
                           torch.tensor([[-2.0, 2.0], [0.0, -1.0], [0.0, 0.0], [-8.0, 1 / 3]]))[0]
    torch.testing.assert_close(small, torch.tensor([4.0, float(np.float32(POW_MAX)), 1.0, 2.0]))


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("formula", ["sin(a)", "cos(a)", "sin(b)", "cos(b)", "pow(a, b)", "pow(b, a)",
                                     "pow(sin(a), cos(b))", "sin(pow(a, 2.5)) * cos(a - b)"])
def test_numba_matches_torch_on_edges(formula: str) -> None:
    X = edge_pairs()
    pop = pop_of([formula], ("a", "b"))
    assert_same(evaluate(pop, X, "numba"), evaluate(pop, X, "torch"))


@pytest.mark.skipif(not triton_available(), reason="triton not installed")
def test_triton_matches_torch_on_edges() -> None:
    import os

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    dev = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    X = edge_pairs().to(dev)
    pop = pop_of(["sin(a)", "cos(b)", "pow(a, b)", "pow(sin(b), a)"], ("a", "b")).to(dev)
    assert_same(evaluate(pop, X, "triton").cpu(), evaluate(pop, X, "torch").cpu())


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_jacobian_of_new_operators(backend: str) -> None:
    if backend == "numba" and not numba_available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(0.2, 2.0, (50, 2)).astype(np.float32))
    X[:5, 0] = torch.tensor([0.0, -1.0, 1e-8, -0.5, 3.0])
    pop = pop_of(["sin(a * 1.3) + cos(b * -0.7)", "pow(a, 1.7) * 0.5", "pow(2.0, b * 0.3)", "pow(a * 0.0, 2.0)"],
                 ("a", "b"))
    f, J = jacobian(pop.ops, pop.consts, pop.length, X, backend=backend)
    assert_same(f.float(), evaluate_torch(*tens(pop), X))
    # central differences in float64 through the torch rules, per constant
    from tensorgp.sr.constants import _jacobian_torch, const_slots

    is_c, slot, C = const_slots(pop.ops, pop.length)
    for j in range(C):
        h = 1e-6
        bump = torch.where(is_c & (slot == j), torch.full_like(pop.consts, h, dtype=torch.float64), 0.0)
        fp, _ = _jacobian_torch(pop.ops, pop.consts.double() + bump, pop.length, X)
        fm, _ = _jacobian_torch(pop.ops, pop.consts.double() - bump, pop.length, X)
        fd = (fp - fm) / (2 * h)
        ok = X[:, 0].abs() > 1e-3  # pow's protected point |a| <= EPS has derivative 0 by definition
        torch.testing.assert_close(J[:, j][:, ok], fd[:, ok], rtol=1e-4, atol=1e-5)
    assert float(J[3].abs().max()) == 0.0  # pow(0, 2): the protected base gets no gradient


def test_expression_round_trip_simplify_and_sympy() -> None:
    sp = pytest.importorskip("sympy")
    names = ("x", "y")
    for text in ("sin(x)", "cos((x * y))", "pow(x, 2.5)", "pow(sin(x), cos(y))"):
        node = E.parse(text, names)
        assert E.to_infix(node, names) == text
    # constant folding uses the protected forms
    assert E.simplify(E.parse("pow(-2, 2)", names)).value == 4.0
    assert E.simplify(E.parse("pow(0, -1)", names)).value == float(np.float32(POW_MAX))
    assert E.simplify(E.parse("sin(0)", names)).value == 0.0
    x, y = sp.symbols("x y")
    s = node_to_sympy(E.parse("(sin(x) * cos(y)) + pow(x, 2)", names), [x, y])
    assert sp.simplify(s - (sp.sin(x) * sp.cos(y) + sp.Abs(x) ** 2)) == 0
    xp = sp.Symbol("x", positive=True)
    assert sp.simplify(node_to_sympy(E.parse("pow(x, 2)", names), [xp, y]) - xp ** 2) == 0


def test_unassigned_function_slot_is_invalid() -> None:
    from tensorgp.engine.population import is_valid

    ops = torch.tensor([[FIRST_VAR, OPCODE["sin"]], [FIRST_VAR, 40]], dtype=torch.int32)  # 40: no function there
    assert is_valid(ops, torch.tensor([2, 2]), 1).tolist() == [True, False]


def test_primitive_set_and_cli_names_accept_new_operators() -> None:
    assert PrimitiveSet.parse_functions("add,sin,cos,pow") == ("add", "sin", "cos", "pow")
    ps = PrimitiveSet(("x",), ("sin", "pow"))
    assert sorted(ps.function_ops(1).tolist()) == [OPCODE["sin"]] and ps.function_ops(2).tolist() == [OPCODE["pow"]]
    with pytest.raises(ValueError, match="tan"):
        PrimitiveSet.parse_functions("add,tan")


# ------------------------------------------------------------------ opcode layout


def test_version1_programs_are_remapped() -> None:
    # "(x1 * 2.5) + log(x0)" written with layout 1: CONST 15, features 16+
    v1 = torch.tensor([[17, 15, 3, 16, 6, 1]], dtype=torch.int32)
    ops = remap_opcodes(v1, None)
    node = E.from_postfix(ops[0].tolist(), [0, 2.5, 0, 0, 0, 0])
    assert E.to_infix(node, ["x0", "x1"]) == "((x1 * 2.5) + log(x0))"
    assert remap_opcodes(ops, opcode_layout()) is ops  # the current layout maps to itself


def test_legacy_checkpoint_population_loads() -> None:
    from tensorgp.runtime.checkpoint import _pop_dict, _pop_from

    pop = pop_of(["sin(x0) + pow(x1, 2)"], ("x0", "x1"))
    back = _pop_from(_pop_dict(pop), torch.device("cpu"))
    assert torch.equal(back.ops, pop.ops)
    old = pop_of(["(x0 * x1) - 0.5"], ("x0", "x1"))
    legacy = {"ops": remap_opcodes(old.ops, {**LAYOUT_V1, "functions": dict(LAYOUT_V1["functions"]),
                                             "const": CONST, "first_var": FIRST_VAR}), "consts": old.consts,
              "length": old.length}
    # build the v1 tensor by hand: features 16+, CONST 15
    legacy["ops"] = torch.where(old.ops >= FIRST_VAR, old.ops - FIRST_VAR + 16,
                                torch.where(old.ops == CONST, torch.full_like(old.ops, 15), old.ops))
    assert torch.equal(_pop_from(legacy, torch.device("cpu")).ops, old.ops)


# ------------------------------------------------------------------ user functions


@pytest.fixture
def softplus():
    op = register_function("softplus", 1, lambda a: torch.nn.functional.softplus(a), "softplus({0})",
                           sympy=lambda a: __import__("sympy").log(1 + __import__("sympy").exp(a)))
    yield op
    unregister_function("softplus")


def test_user_function_every_backend(softplus: int) -> None:
    names = ("a", "b")
    pop = pop_of(["softplus(a) * b", "sin(a)"], names)
    assert softplus in pop.ops[0].tolist() and softplus < CONST and function(softplus).name == "softplus"
    X = edge_pairs()
    ref = evaluate(pop, X, "torch")
    torch.testing.assert_close(ref[0], torch.nn.functional.softplus(X[:, 0]) * X[:, 1], equal_nan=True)
    if numba_available():
        with pytest.warns(UserWarning, match="softplus"):
            got = evaluate(pop, X, "numba")
        assert_same(got, ref)
    assert E.to_infix(E.row(pop.ops, pop.consts, pop.length, 0), names) == "(softplus(a) * b)"
    with pytest.raises(ValueError, match="already exists"):
        register_function("softplus", 1, torch.sin)
    with pytest.raises(ValueError, match="arity"):
        register_function("f3", 3, torch.sin)


def test_user_function_jacobian_sympy_and_layout(softplus: int) -> None:
    sp = pytest.importorskip("sympy")
    X = torch.linspace(-2, 2, 30)[:, None]
    pop = pop_of(["softplus(x * 1.5)"], ("x",))
    f, J = jacobian(pop.ops, pop.consts, pop.length, X)  # auto: falls back to the torch rules
    x = X[:, 0].double()
    torch.testing.assert_close(J[0, 0], torch.sigmoid(1.5 * x) * x, rtol=1e-5, atol=1e-7)
    s = node_to_sympy(E.parse("softplus(x)", ("x",)), [sp.Symbol("x")])
    assert s == sp.log(1 + sp.exp(sp.Symbol("x")))
    # a program saved when softplus had another opcode is matched by name
    saved = opcode_layout()
    saved["functions"] = {**saved["functions"], "softplus": 40}
    moved = torch.where(pop.ops == softplus, torch.full_like(pop.ops, 40), pop.ops)
    assert torch.equal(remap_opcodes(moved, saved), pop.ops)
    saved["functions"]["unknown_fn"] = 41
    with pytest.raises(ValueError, match="unknown_fn"):
        remap_opcodes(torch.tensor([[FIRST_VAR, 41]]), saved)


def test_regressor_uses_user_function(softplus: int) -> None:
    from tensorgp import SymbolicRegressor

    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, (300, 1)).astype(np.float32)
    y = np.log1p(np.exp(X[:, 0]))
    est = SymbolicRegressor(population_size=60, generations=3, function_set=("add", "mul", "softplus"),
                            random_state=0, backend="torch").fit(X, y)
    assert est.score(X, y) > 0.999 and "softplus" in est.expression_


def _softplus_scalar(a):
    # numba form of torch's softplus (beta 1, threshold 20): x above 20, else log1p(exp(x))
    if a > 20.0:
        return a
    return math.log1p(math.exp(a))


def _hinge_scalar(a, b):
    # max(a - b, 0) with torch.clamp's NaN propagation
    d = a - b
    if d != d:
        return d
    return d if d > 0.0 else 0.0


@pytest.fixture
def compiled_user_functions():
    ops = (register_function("softplus_nb", 1, lambda a: torch.nn.functional.softplus(a), numba=_softplus_scalar),
           register_function("hinge", 2, lambda a, b: torch.clamp(a - b, min=0.0), numba=_hinge_scalar))
    yield ops
    unregister_function("hinge")
    unregister_function("softplus_nb")


def test_user_functions_run_in_generated_numba_code(compiled_user_functions) -> None:
    if not numba_available():
        pytest.skip("numba is not installed")
    import warnings

    names = ("a", "b")
    pop = pop_of(["softplus_nb(a) * b", "hinge(a, b)", "hinge(softplus_nb(b), a) + sin(a)", "a - b"], names)
    X = edge_pairs()
    ref = evaluate(pop, X, "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: numba runs them
        got = evaluate(pop, X, "numba")
    assert_same(got, ref)
    # the generated kernel is the one that ran: the direct call gives the same numbers
    from tensorgp.engine.eval_numba import evaluate_numba

    assert_same(evaluate_numba(pop.ops, pop.consts, pop.length, X), ref)


def test_numba_rejects_user_function_without_numba_form(softplus: int) -> None:
    if not numba_available():
        pytest.skip("numba is not installed")
    from tensorgp.engine.eval_numba import evaluate_numba

    pop = pop_of(["softplus(a)"], ("a",))
    with pytest.raises(ValueError, match="numba form"):
        evaluate_numba(pop.ops, pop.consts, pop.length, torch.ones(4, 1))


# ----------------------------------------------------------------- review: NaN, pow, names


@pytest.mark.parametrize("formula", ["inv(x)", "log(x)", "(1 / x)", "(x / y)", "(y / x)", "pow(x, y)", "pow(y, x)"])
def test_a_nan_input_stays_nan_in_every_backend_and_export(formula):
    """A failed proxy value (NaN) must make the architecture rank last: protected operators
    protect near-zero values, not NaN."""
    sp = pytest.importorskip("sympy")
    from tensorgp.engine.export import node_to_python

    v = ("x", "y")
    node = E.parse(formula, v)
    pop = Population.from_rows([E.to_postfix(node)])
    X = torch.tensor([[float("nan"), 2.0], [float("nan"), 0.0]])
    backends = ["torch"] + (["numba"] if numba_available() else [])
    for b in backends:
        assert torch.isnan(evaluate(pop, X, b)).all(), (b, evaluate(pop, X, b))
    ns: dict = {}
    exec(node_to_python(node, list(v)), ns)
    used = E.names_in(formula)
    assert np.isnan(ns["proxy"](**{n: X[:, i].numpy() for i, n in enumerate(v) if n in used})).all()
    xs, ys = sp.symbols("x y")
    f = sp.lambdify([xs, ys], node_to_sympy(node, [xs, ys], protected=True), "numpy")
    assert np.isnan(np.asarray(f(X[:, 0].numpy().astype(float), X[:, 1].numpy().astype(float)), dtype=float)).all()
    _, grad = jacobian(pop.ops, pop.consts, pop.length, X)  # the constant optimiser's view agrees
    assert grad.shape[0] == 1


def test_pow_of_a_row_does_not_depend_on_where_it_sits():
    pop = Population.from_rows([E.to_postfix(E.parse("pow(x, y)", ("x", "y")))])
    X = torch.tensor([[0.5012969970703125, -0.787860631942749]]).expand(33, 2).contiguous()
    out = evaluate(pop, X, "torch")[0]
    assert (out == out[0]).all()
    if numba_available():
        assert torch.equal(evaluate(pop, X, "numba")[0], out)


def test_nan_and_inf_are_not_names():
    with pytest.raises(ValueError, match="other than nan and inf"):
        register_function("inf", 1, torch.sin)
    with pytest.raises(ValueError, match="nan or inf"):
        PrimitiveSet(("nan", "x"), ("add",))


def test_python_export_parameters_never_hide_its_helpers():
    from tensorgp.engine.export import node_to_python

    node = E.parse("(log(_log) + _div)", ("_log", "_div"))
    ns: dict = {}
    src = node_to_python(node, ["_log", "_div"])
    exec(src, ns)
    x = np.array([1.0, np.e])
    np.testing.assert_allclose(ns["proxy"](x, x), np.log(x) + x)
