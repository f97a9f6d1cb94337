import pytest
import torch

from reference import edge_matrix, eval_tree, random_pop
from tensorgp.engine import expression as E
from tensorgp.engine.primitives import OPCODE


def test_print_parse_round_trip():
    pop, pset = random_pop(500, seed=4, const_prob=0.3)
    for i in range(pop.size):
        node = E.row(pop.ops, pop.consts, pop.length, i)
        text = E.to_infix(node, pset.variables)
        assert E.parse(text, pset.variables) == node, text
        ops, consts = E.to_postfix(node)
        n = int(pop.length[i])
        assert ops == pop.ops[i, :n].tolist()
        assert consts == pop.consts[i, :n].tolist()


def test_simplify_keeps_values_bit_for_bit():
    pop, pset = random_pop(400, seed=5, const_prob=0.4)
    X = edge_matrix(64, 4)
    shrunk = 0
    for i in range(pop.size):
        node = E.row(pop.ops, pop.consts, pop.length, i)
        s = E.simplify(node)
        shrunk += E.size(s) < E.size(node)
        a, b = eval_tree(node, X), eval_tree(s, X)
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        ok = torch.isnan(a) | (a == b)
        assert bool(ok.all()), E.to_infix(node, pset.variables)
        assert E.parse(E.to_infix(s, pset.variables), pset.variables) == s
    assert shrunk > 20  # constants fold in a good share of random programs


def test_simplify_identities():
    v = ("x", "y")
    cases = {
        "(x - 0)": "x", "(x + -0)": "x", "(x + 0)": "(x + 0)", "(1 * y)": "y", "(x - (-y))": "(x + y)", "(-(-x))": "x", "abs(abs(x))": "abs(x)",
        "(log(2) * x)": "(0.693147182 * x)", "min(x, x)": "x", "(x * 0)": "(x * 0)",
    }
    for src, want in cases.items():
        assert E.to_infix(E.simplify(E.parse(src, v)), v) == want


def test_simplify_keeps_signed_zeros_and_tells_apart_zeros_of_either_sign():
    import torch

    from tensorgp.engine.evaluate import evaluate
    from tensorgp.engine.population import Population

    v = ("x",)
    X = torch.tensor([[-0.0], [0.0], [float("nan")], [-1.5]])
    for src in ("(x + 0)", "(0 + x)", "(x - -0)", "(x - 0)", "(x + -0)", "min((x * 0), (x * -0))"):
        before, after = E.parse(src, v), E.simplify(E.parse(src, v))
        a, b = (evaluate(Population.from_rows([E.to_postfix(n)]), X, "torch")[0] for n in (before, after))
        assert torch.equal(torch.signbit(a), torch.signbit(b)) and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)), src


def test_parse_precedence_and_negative_constants():
    v = ("a", "b")
    n = E.parse("a - b * -2.5 / log(a)", v)
    assert E.to_infix(n, v) == "(a - ((b * -2.5) / log(a)))"
    assert E.parse("-(2)", v).op == OPCODE["neg"]
    assert E.parse("-2", v).value == -2.0


@pytest.mark.parametrize("bad, msg", [
    ("a +", "end of formula"), ("foo(a)", "unknown function"), ("zz + a", "unknown variable"),
    ("min(a)", "takes 2 argument"), ("a b", "after a complete formula"), ("a $ b", "cannot read"),
])
def test_parse_errors(bad, msg):
    with pytest.raises(E.ParseError, match=msg):
        E.parse(bad, ("a", "b"))


def test_names_in():
    assert E.names_in("log(nwot) + synflow * nwot - max(jacov, 1)") == ["nwot", "synflow", "jacov"]
