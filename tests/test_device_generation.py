"""The device generation path (``EvolutionConfig.variation="device"``) on the CPU: counter RNG,
fixed-op structure, breeding operators, hall of fame, determinism, resume, and the launch count
of one generation (flat in the population, at most 300)."""
import pytest
import torch

from tensorgp.engine import structure_dense as sd
from tensorgp.engine.counter_rng import below, generation_key, key_tensor, uniform
from tensorgp.engine.device_random import random_bits
from tensorgp.engine.device_init import init_device
from tensorgp.engine.device_selection import hall_of_fame_update
from tensorgp.engine.device_variation import breed_device, device_tables, random_tree_arities
from tensorgp.engine.evolve import EvolutionConfig, Evolver, _update_hof, resolve_variation
from tensorgp.engine.population import Population, arity_of, init_population, is_valid, program_depth, program_keys, \
    structure_torch
from tensorgp.engine.primitives import CONST, FIRST_VAR, PrimitiveSet
from tensorgp.engine.variation import Limits, VariationRates
from tensorgp.runtime.op_count import OpCounter

PSET = PrimitiveSet(("a", "b", "c", "d"), ("add", "sub", "mul", "div", "log", "neg", "max"))
LIM = Limits(max_len=40, max_depth=7)


def _pop(n=120, seed=0, L=40):
    return init_population(n, PSET, torch.Generator().manual_seed(seed), max_len=L, depth_range=(1, 5), const_prob=0.2)


def _breed(pop, rates, seed=1, gen=1, n=None, fit=None):
    n = pop.size if n is None else n
    fit = torch.rand(pop.size, generator=torch.Generator().manual_seed(seed)) if fit is None else fit
    return breed_device(pop, fit, key_tensor(seed, gen, "cpu"), n, PSET, LIM, rates, 5, 0.2)


def _assert_programs(kids: Population):
    assert bool(is_valid(kids.ops, kids.length, PSET.n_vars).all())
    assert int(kids.length.max()) <= LIM.max_len
    assert int(program_depth(kids.ops, kids.length).max()) <= LIM.max_depth
    # constants only at CONST nodes, PAD after the end
    assert bool(((kids.consts != 0) <= (kids.ops == CONST)).all())


# ---------------------------------------------------------------- counter RNG


def test_random_bits_are_a_pure_function_of_key_stream_and_counter():
    k = key_tensor(7, 3, "cpu")
    a = random_bits(k, 1, (50, 40))
    assert torch.equal(a, random_bits(k, 1, (50, 40)))
    assert torch.equal(a.view(-1)[:400], random_bits(k, 1, (400,)))  # element c depends on c only
    assert a.min() >= 0 and a.max() < 2**32 and len(torch.unique(a)) == a.numel()  # a bijection of counters
    assert not torch.equal(a, random_bits(key_tensor(7, 4, "cpu"), 1, (50, 40)))
    assert not torch.equal(a, random_bits(key_tensor(8, 3, "cpu"), 1, (50, 40)))
    assert not torch.equal(a, random_bits(k, 2, (50, 40)))
    assert generation_key(7, 3)[0] % 2 == 1


def test_uniform_and_below_are_in_range_and_roughly_uniform():
    b = random_bits(key_tensor(0, 0, "cpu"), 0, (200_000,))
    u = uniform(b)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.01
    c = torch.bincount(below(b, 7), minlength=7)
    assert len(c) == 7 and int(c.min()) > 0.95 * 200_000 / 7


# ---------------------------------------------------------------- structure


def test_dense_structure_equals_the_stack_walk(monkeypatch):
    pop = _pop(200, L=40)
    ref = structure_torch(pop.ops, pop.length)
    valid = torch.arange(40)[None, :] < pop.length[:, None]
    for chunk in (sd.CHUNK_ELEMENTS, 40 * 40 * 7):  # one pass, and chunks of 7 rows
        monkeypatch.setattr(sd, "CHUNK_ELEMENTS", chunk)
        got = sd.structure_dense(pop.ops, pop.length, backend="torch")
        W = ref.start.shape[1]
        for f in ("start", "depth", "height"):
            r, g = getattr(ref, f), getattr(got, f)
            assert torch.equal(torch.where(valid[:, :W], r, 0), torch.where(valid[:, :W], g[:, :W], 0)), f
        pad = ~valid
        assert torch.equal(got.start[pad], torch.arange(40).expand(200, 40)[pad])
        assert int(got.depth[pad].abs().sum() + got.height[pad].abs().sum()) == 0


# ---------------------------------------------------------------- breeding


def test_random_trees_are_valid_programs_of_the_enabled_arities():
    tab = device_tables(PSET, VariationRates(), torch.device("cpu"))
    bits = random_bits(key_tensor(1, 1, "cpu"), 1, (500, 1 + tab.tree_width))
    arity, length = random_tree_arities(bits[:, :len(tab.arities)], uniform(bits[:, 1:1 + tab.tree_width]), tab)
    # a stand-in opcode of each arity makes the shapes checkable as programs
    stand_in = torch.tensor([FIRST_VAR, PSET.function_ops(1)[0], PSET.function_ops(2)[0]], dtype=torch.int32)
    inside = torch.arange(tab.tree_width)[None, :] < length[:, None]
    ops = torch.where(inside, stand_in[arity], 0)
    assert bool(is_valid(ops, length.int(), PSET.n_vars).all())
    assert set(length.tolist()) > {1, 3} and int(length.max()) <= tab.tree_width


def test_each_operator_alone_gives_valid_children_with_its_signature():
    pop = _pop()
    copy = _breed(pop, VariationRates(0, 0, 0, 0))
    parents_key = set(program_keys(pop).tolist())
    assert set(program_keys(copy).tolist()) <= parents_key  # copies of tournament winners
    for rates in (VariationRates(1, 0, 0, 0), VariationRates(0, 1, 0, 0), VariationRates(0, 0, 1, 0),
                  VariationRates(0, 0, 0, 1)):
        kids = _breed(pop, rates)
        _assert_programs(kids)
        assert (~torch.isin(program_keys(kids), torch.tensor(sorted(parents_key)))).float().mean() > 0.5
    # hoist only shrinks; point mutation keeps every length and arity and redraws >= 1 node per
    # child (a redraw may give the same symbol back: 2 unary functions here, 4 variables)
    fit = torch.rand(pop.size, generator=torch.Generator().manual_seed(1))
    hoisted = _breed(pop, VariationRates(0, 0, 1, 0), fit=fit)
    winners = _breed(pop, VariationRates(0, 0, 0, 0), fit=fit)  # same key and fitness: the same parents
    assert bool((hoisted.length <= winners.length).all()) and bool((hoisted.length < winners.length).any())
    pointed = _breed(pop, VariationRates(0, 0, 0, 1), fit=fit)
    assert torch.equal(pointed.length, winners.length)
    assert torch.equal(arity_of(pointed.ops), arity_of(winners.ops))
    changed = (pointed.ops != winners.ops) | (pointed.consts != winners.consts)
    assert bool(changed.any(1).float().mean() > 0.75)


def test_breeding_is_deterministic_per_key_and_respects_runs():
    pop = _pop(120)
    a, b = _breed(pop, VariationRates(), gen=3), _breed(pop, VariationRates(), gen=3)
    assert torch.equal(a.ops, b.ops) and torch.equal(a.consts, b.consts) and torch.equal(a.length, b.length)
    assert not torch.equal(a.ops, _breed(pop, VariationRates(), gen=4).ops)
    # 3 runs of 40: with copies only, run r's children are programs of run r
    fit = torch.rand(120, generator=torch.Generator().manual_seed(2))
    kids = breed_device(pop, fit, key_tensor(0, 1, "cpu"), 60, PSET, LIM, VariationRates(0, 0, 0, 0), 5, 0.2,
                        groups=3, group_size=40)
    keys = program_keys(pop).view(3, 40)
    for r in range(3):
        assert bool(torch.isin(program_keys(kids)[r * 20:(r + 1) * 20], keys[r]).all())


def test_device_init_is_valid_seeded_and_ramped():
    a = init_device(300, PSET, key_tensor(3, 0, "cpu"), max_len=40, depth_range=(1, 5), const_prob=0.2)
    b = init_device(300, PSET, key_tensor(3, 0, "cpu"), max_len=40, depth_range=(1, 5), const_prob=0.2)
    assert torch.equal(a.ops, b.ops) and torch.equal(a.consts, b.consts)
    _assert_programs(a)
    d = program_depth(a.ops, a.length)
    assert int(d.min()) >= 1 and int(d.max()) == 5 and len(torch.unique(program_keys(a))) > 250


# ---------------------------------------------------------------- hall of fame


def test_hall_of_fame_keeps_the_best_distinct_programs_like_the_compiled_one():
    a, b = _pop(40, seed=4), _pop(40, seed=5)
    pop = Population.cat([a, a[:20], b, b[:20]])  # 2 runs of 60, each with 20 duplicated programs
    fa, fb = (torch.rand(40, generator=torch.Generator().manual_seed(s)) for s in (6, 7))
    fit = torch.cat([fa, fa[:20], fb, fb[:20]])
    fit[7] = float("nan")
    hp, hf = hall_of_fame_update(None, None, pop, fit, runs=2, size=10)
    ref = _update_hof(None, pop, fit, 2, 10, pop.max_len)
    assert torch.equal(hf, ref.fitness)
    assert torch.equal(hp.ops, ref.pop.ops) and torch.equal(hp.length, ref.pop.length)
    for r in range(2):
        assert len(torch.unique(program_keys(hp[r * 10:(r + 1) * 10]))) == 10
    # the same candidates again: nothing enters twice, nothing changes
    hp2, hf2 = hall_of_fame_update(hp, hf, pop, fit, runs=2, size=10)
    assert torch.equal(hf2, hf) and torch.equal(hp2.ops, hp.ops)
    # tiny runs: fewer candidates than slots leave empty (length-0, -inf) slots
    hp3, hf3 = hall_of_fame_update(None, None, pop[:4], fit[:4], runs=2, size=5)
    assert hf3.view(2, 5)[:, 2:].isinf().all() and int(hp3.length.view(2, 5)[:, 2:].sum()) == 0


# ---------------------------------------------------------------- the evolver


def _fitness(pop: Population) -> torch.Tensor:
    """A fixed-op objective (no host sync): short programs with a large constant sum win."""
    return -(pop.length.float() - 9).abs() + pop.consts.sum(1)


def _evolver(seed=0, gens=6, variation="device", P=80, runs=2):
    cfg = EvolutionConfig(population=P, generations=gens, runs=runs, seed=seed, max_len=40, max_depth=7,
                          init_depth=(1, 4), const_prob=0.2, variation=variation)
    return Evolver(cfg, PSET, _fitness)


def test_variation_setting_resolves_per_device():
    assert resolve_variation("auto", "cpu") == "compiled" and resolve_variation("auto", "cuda") == "device"
    assert not _evolver(variation="auto").device_path and _evolver().device_path
    with pytest.raises(ValueError):
        EvolutionConfig(variation="fast")


def test_device_runs_are_deterministic_improve_and_stay_valid():
    a, b, c = (_evolver(seed=s).run() for s in (1, 1, 2))
    assert torch.equal(a.pop.ops, b.pop.ops) and torch.equal(a.pop.consts, b.pop.consts)
    assert torch.equal(a.hof.fitness, b.hof.fitness)
    assert not torch.equal(a.pop.ops, c.pop.ops)
    hist = [h.best for h in a.history]
    assert all(y >= x for x, y in zip(hist, hist[1:])) and hist[-1] > hist[0]
    _assert_programs(a.pop)


def test_device_resume_is_bit_identical():
    full = _evolver(gens=6)
    full.run()
    part = _evolver(gens=6)
    part.config.generations = 3
    st = part.run()
    resumed = _evolver(seed=999, gens=6)  # everything must come from the saved state
    resumed.restore(st)
    resumed.run()
    x, y = full.state, resumed.state
    for f in ("ops", "consts", "length"):
        assert torch.equal(getattr(x.pop, f), getattr(y.pop, f))
        assert torch.equal(getattr(x.hof.pop, f), getattr(y.hof.pop, f))
    assert torch.equal(x.fitness, y.fitness) and torch.equal(x.hof.fitness, y.hof.fitness)


def test_one_generation_is_a_fixed_number_of_launches_without_host_syncs():
    counts = {}
    for P in (100, 1000, 10_000):
        ev = _evolver(P=P, runs=1, gens=3)
        ev.config.max_len, ev.config.max_depth = 64, 8
        ev.initialize()
        ev.step()  # caches (tables, aranges, key weights) are built on first use
        with OpCounter() as c:
            ev.advance()
        counts[P] = (c.launches, c.total, c.syncs)
    print("launches, dispatched ops, host syncs per generation:", counts)
    assert counts[100] == counts[1000] == counts[10_000]
    assert counts[1000][0] <= 300 and counts[1000][2] == 0


# ---------------------------------------------------------------- progress read every K generations
def _state_tuple(ev):
    st = ev.state
    return (st.pop.ops, st.pop.consts, st.pop.length, st.fitness, st.hof.pop.ops, st.hof.pop.consts, st.hof.fitness)


def _assert_same_run(a, b):
    for x, y in zip(_state_tuple(a), _state_tuple(b)):
        assert torch.equal(x, y)
    assert a.state.generation == b.state.generation and a.state.stale == b.state.stale
    ha = [(h.generation, h.best, h.mean, h.mean_size, h.nodes, h.programs, h.best_per_run) for h in a.state.history]
    hb = [(h.generation, h.best, h.mean, h.mean_size, h.nodes, h.programs, h.best_per_run) for h in b.state.history]
    assert ha == hb


@pytest.mark.parametrize("stop", [{}, {"patience": 2}, {"target": None}])
def test_the_run_is_the_same_whatever_sync_every(stop):
    if "target" in stop:  # a target first reached mid-run
        ref = _evolver(seed=3, gens=9)
        ref.run()
        stop = {"target": ref.state.history[5].best}
    runs = {}
    for K in (1, 2, 3, 8):
        ev = _evolver(seed=3, gens=9)
        ev.config.sync_every = K
        for k, v in stop.items():
            setattr(ev.config, k, v)
        seen = []
        ev.run(callback=lambda s: seen.append(s.generation))
        assert seen == list(range(ev.state.generation + 1))  # every generation reported once, in order
        runs[K] = ev
    for K in (2, 3, 8):
        _assert_same_run(runs[1], runs[K])
    if stop:  # the stop falls inside a block for some K: the state is the one at the stop
        assert runs[1].state.generation < 9


def test_patience_stop_inside_a_block_keeps_the_state_at_the_stop():
    ref = _evolver(seed=3, gens=40)
    ref.config.patience = 1
    ref.run()
    g = ref.state.generation
    assert 1 <= g < 39
    ev = _evolver(seed=3, gens=40)
    ev.config.patience, ev.config.sync_every = 1, 40
    ev.initialize()
    out = ev.steps(40)  # one block runs all 40 generations on the device; the stop is applied after
    assert [s.generation for s in out] == list(range(1, g + 1)) and ev.done()
    _assert_same_run(ref, ev)


def test_resume_with_sync_every_is_bit_identical():
    full = _evolver(gens=8)
    full.config.sync_every = 3
    full.run()
    part = _evolver(gens=8)
    part.config.generations, part.config.sync_every = 4, 3  # stops mid-way through its second block
    st = part.run()
    assert st.generation == 4
    resumed = _evolver(seed=999, gens=8)
    resumed.config.sync_every = 3
    resumed.restore(st)
    resumed.run()
    _assert_same_run(full, resumed)
    single = _evolver(gens=8)
    single.run()
    _assert_same_run(full, single)


def test_sync_every_must_be_a_positive_integer():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="sync_every"):
            EvolutionConfig(sync_every=bad)


@pytest.mark.parametrize("stop", [{}, {"patience": 50, "target": 1e9}])
def test_a_block_of_k_generations_reads_the_host_once(stop):
    syncs = {}
    for K in (1, 4, 12):
        ev = _evolver(P=200, runs=2, gens=30)
        for k, v in stop.items():
            setattr(ev.config, k, v)
        ev.initialize()
        ev.steps(1)  # caches
        with OpCounter() as c:
            out = ev.steps(K)
            ev.done()
        assert len(out) == K
        syncs[K] = c.syncs
        print(K, dict(c.sync_ops))
    assert syncs[1] == syncs[4] == syncs[12] <= 2


# ---------------------------------------------------------------- a whole generation as one CUDA graph
class _CapturableFitness:
    """``_fitness`` declared capturable; ``changes``: generations whose objective 'changes'."""

    capturable = True

    def __init__(self, changes=()):
        self.changes = set(changes)

    def __call__(self, pop):
        return _fitness(pop)

    def begin_generation(self, g):
        return g in self.changes


@pytest.mark.parametrize("stop", [{}, {"patience": 2}])
def test_cuda_graph_generation_equals_the_eager_one(stop):
    """``cuda_graph=True`` runs each generation through ``Evolver._generation`` (replayed from a
    graph on CUDA, eagerly here): the run is the plain device path's, bit for bit; a generation
    whose objective changes runs eagerly."""
    runs = []
    for graph, fit in ((False, _CapturableFitness()), (True, _CapturableFitness()), (True, _CapturableFitness({3, 4}))):
        ev = _evolver(seed=4, gens=8)
        ev.config.cuda_graph, ev.config.sync_every = graph, 3
        for k, v in stop.items():
            setattr(ev.config, k, v)
        ev.fitness_fn = fit
        calls = []
        ev._generation = lambda *a, ev=ev, calls=calls: (calls.append(1), Evolver._generation(ev, *a))[1]
        ev._graph_gen.fn = ev._generation
        ev.run()
        runs.append((ev, len(calls)))
    (plain, n0), (graphed, n1), (mixed, n2) = runs
    _assert_same_run(plain, graphed)
    _assert_same_run(plain, mixed)
    # every generation went through _generation (a stop inside a block computes a few more),
    # except generations 3 and 4 of the mixed run
    assert n0 == 0 and n1 >= plain.state.generation >= 4 and n2 == n1 - 2
    with pytest.raises(ValueError, match="cuda_graph"):
        EvolutionConfig(cuda_graph=1)


def test_cuda_graph_needs_a_capturable_fitness():
    ev = _evolver(seed=4, gens=3)
    ev.config.cuda_graph = True  # _fitness does not declare capturable: the eager generation
    ev._graph_gen.fn = lambda *a: pytest.fail("a fitness that is not capturable was captured")
    ev.run()
    assert ev.state.generation == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replay_equals_eager_on_cuda():
    def make(graph):
        cfg = EvolutionConfig(population=300, generations=6, runs=2, seed=5, max_len=40, max_depth=7, init_depth=(1, 4),
                              const_prob=0.2, variation="device", cuda_graph=graph, sync_every=2, patience=3)
        return Evolver(cfg, PSET, _CapturableFitness(), "cuda")

    a, b = make(False), make(True)
    a.run()
    b.run()
    assert not b._graph_gen.failed and b._graph_gen.replays >= b.state.generation
    _assert_same_run(a, b)


def test_device_tables_follow_a_function_registered_again_with_another_arity():
    from tensorgp.engine.primitives import register_function, unregister_function

    register_function("f_tables", 1, torch.sin)
    try:
        one = device_tables(PrimitiveSet(("x",), ("add", "f_tables")), VariationRates(), torch.device("cpu"))
    finally:
        unregister_function("f_tables")
    register_function("f_tables", 2, torch.add)
    try:
        two = device_tables(PrimitiveSet(("x",), ("add", "f_tables")), VariationRates(), torch.device("cpu"))
        assert two is not one
    finally:
        unregister_function("f_tables")


def test_stepping_a_finished_device_run_says_so():
    ev = Evolver(EvolutionConfig(population=16, generations=1, seed=0, max_depth=3, max_len=12, init_depth=(1, 2),
                                 variation="device"), PSET, _fitness)
    ev.run()
    with pytest.raises(RuntimeError, match="nothing to step"):
        ev.step()
