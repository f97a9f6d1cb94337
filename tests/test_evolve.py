import pytest
import torch

from tensorgp.nas.data import Batch
from tensorgp.engine.evolve import EvolutionConfig, Evolver
from tensorgp.nas.objective import RankObjective
from tensorgp.engine.population import is_valid, program_depth
from tensorgp.engine.primitives import PrimitiveSet


def _toy_batch(seed=0, tasks=3, n=120):
    """Accuracy = x0 * x1 + noise-free monotone link: a formula can reach tau 1."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(tasks * n, 4, generator=g) + 0.1
    acc = torch.log(X[:, 0] * X[:, 1])
    return Batch([f"t{i}" for i in range(tasks)], ["a", "b", "c", "d"], X, acc,
                 torch.arange(0, tasks * n + 1, n), "raw")


def _evolver(seed=0, runs=1, gens=15, backend="auto"):
    batch = _toy_batch()
    pset = PrimitiveSet(("a", "b", "c", "d"), ("add", "sub", "mul", "div", "log"))
    cfg = EvolutionConfig(population=200, generations=gens, runs=runs, seed=seed, max_depth=6, max_len=32,
                          init_depth=(1, 4))
    return Evolver(cfg, pset, RankObjective(batch, backend=backend), "cpu", count_rows=360)


def test_evolution_improves_and_finds_the_toy_formula():
    ev = _evolver()
    st = ev.run()
    hist = [h.best for h in st.history]
    assert hist[-1] >= hist[0] and all(b2 >= b1 - 1e-6 for b1, b2 in zip(hist, hist[1:]))  # elitism + hof: monotone
    assert hist[-1] > 0.99  # a * b (or a monotone transform) ranks perfectly
    assert bool(is_valid(st.pop.ops, st.pop.length, 4).all())
    assert int(program_depth(st.pop.ops, st.pop.length).max()) <= 6


def test_seeded_runs_are_deterministic_and_differ_across_seeds():
    a, b, c = (_evolver(seed=s, gens=5).run() for s in (1, 1, 2))
    assert torch.equal(a.pop.ops, b.pop.ops) and torch.equal(a.fitness.nan_to_num(-9), b.fitness.nan_to_num(-9))
    assert not torch.equal(a.pop.ops, c.pop.ops)


def test_batched_runs_are_independent_populations():
    ev = _evolver(runs=3, gens=4)
    st = ev.run()
    assert st.pop.size == 600 and st.hof.fitness.shape[0] == 3 * ev.config.hall_of_fame
    per_run = st.hof.fitness.view(3, -1)[:, 0]
    assert bool(torch.isfinite(per_run).all())
    # hall of fame of each run holds programs whose fitness it reports
    for r in range(3):
        p, f = st.hof.best(r)
        assert abs(float(ev.fitness_fn(p)[0]) - f) < 1e-6


def test_early_stop_on_target_and_patience():
    ev = _evolver(gens=50)
    ev.config.target = 0.5
    st = ev.run()
    assert st.generation < 50
    ev2 = _evolver(gens=200)
    ev2.config.patience = 3
    st2 = ev2.run()
    assert st2.generation < 200 and st2.stale >= 3


def test_objective_scores_every_program_as_if_alone():
    """Structural and semantic deduplication (programs with equal predictions, e.g. a * b and
    b * a, a and min(a, a)) must not change any score, whatever the population's order."""
    from tensorgp.engine.evaluate import evaluate
    from tensorgp.engine.fitness import aggregate, kendall_tau_b
    from tensorgp.nas.objective import correlation
    from tensorgp.engine.expression import parse, to_postfix
    from tensorgp.engine.population import Population

    batch = _toy_batch()
    pset = PrimitiveSet(("a", "b", "c", "d"), ("add", "sub", "mul", "div", "log", "min"))
    exprs = ["c", "a * b", "b * a", "min(a, a)", "a", "log(c)", "a * b", "d - d", "b / a", "c"]
    progs = [to_postfix(parse(e, pset.variables)) for e in exprs]
    L = max(len(o) for o, _ in progs)
    ops = torch.tensor([o + [0] * (L - len(o)) for o, _ in progs], dtype=torch.int32)
    consts = torch.tensor([c + [0.0] * (L - len(c)) for _, c in progs], dtype=torch.float32)
    pop = Population(ops, consts, torch.tensor([len(o) for o, _ in progs], dtype=torch.int32))
    obj = RankObjective(batch)
    for order in (torch.arange(len(exprs)), torch.tensor([4, 0, 9, 2, 1, 3, 8, 7, 6, 5])):
        p = pop[order]
        want = kendall_tau_b(evaluate(p, batch.X, "torch"), batch.accuracy, batch.offsets, "torch")
        assert torch.allclose(obj.scores(p), want, atol=1e-6)
        assert torch.allclose(obj(p), aggregate(want), atol=1e-6)
    distinct = pop[torch.tensor([0, 1, 5, 8])]  # no two alike: the objective's own ordering path
    want = kendall_tau_b(evaluate(distinct, batch.X, "torch"), batch.accuracy, batch.offsets, "torch")
    assert torch.allclose(obj.scores(distinct), want, atol=1e-6)
    assert torch.allclose(correlation(evaluate(distinct, batch.X), batch, "kendall"), want, atol=1e-6)


def test_replace_writes_programs_fitness_and_hall_of_fame():
    ev = _evolver(runs=2, gens=3)
    with pytest.raises(RuntimeError):
        ev.replace(torch.tensor([0]), ev.state, torch.zeros(1))
    st = ev.run()
    rng = ev.generator.get_state()
    donor = st.pop[torch.tensor([5, 6])]
    rows = torch.tensor([1, 250])  # one individual of each run (population 200 per run)
    ev.replace(rows, donor, torch.tensor([2.0, 3.0]))
    assert torch.equal(st.pop.ops[rows], donor.ops) and torch.equal(st.pop.consts[rows], donor.consts)
    assert torch.equal(st.fitness[rows], torch.tensor([2.0, 3.0]))
    assert st.hof.fitness.view(2, -1)[:, 0].tolist() == [2.0, 3.0]  # each run's new best
    assert torch.equal(ev.generator.get_state(), rng)
    with pytest.raises(ValueError):
        ev.replace(rows, donor, torch.zeros(3))
    ev.step()  # breeding goes on from the replaced population
