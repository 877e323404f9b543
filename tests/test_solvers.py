import numpy as np
import pytest

from solvers import Group, Problem, Separable, solve
from solvers.lagrangian import lower_hull
from solvers.objectives import discarded_energy, from_samples, spectral_error
from solvers.synthetic import from_shapes

from helpers import brute_force


def random_problem(seed, n_layers=12, macs=0.3, params=0.35):
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(n_layers):
        c = int(rng.integers(8, 48))
        shapes.append((c, c * int(rng.choice([1, 9])), int(rng.choice([1, 16, 64, 256])), int(rng.integers(0, 2)) * c))
    return from_shapes(shapes, macs=macs, params=params, seed=seed)


def test_exact_matches_brute_force_on_tiny_problems():
    for seed in range(5):
        p = from_shapes([(4, 6, 3, 1), (5, 5, 1, 0), (3, 7, 2, 3)], macs=0.45, params=0.5, seed=seed)
        alloc = solve(p, "exact")
        assert alloc.objective == pytest.approx(brute_force(p, discarded_energy(p)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_exact_is_within_its_certified_gap_of_the_milp(seed):
    p = random_problem(seed)
    ex, mi = solve(p, "exact"), solve(p, "milp")
    assert ex.feasible and mi.feasible
    assert ex.info["gap"] <= 1e-4
    assert ex.info["lower_bound"] <= mi.objective + 1e-12  # the bound really is a lower bound
    assert ex.objective <= mi.objective * (1 + ex.info["gap"]) + 1e-12


def test_exact_handles_nonconvex_measured_curves_and_alternatives():
    rng = np.random.default_rng(3)
    groups = []
    for i in range(4):
        for scheme, (m, n) in (("channel", (8, 18)), ("spatial", (6, 24))):
            s = np.sort(rng.uniform(0.1, 2.0, min(m, n)))[::-1]
            groups.append(Group(f"l{i}/{scheme}", s, [16 * (m + n), m + n], [0, 0], [16 * 8 * 18, 144], layer=f"l{i}", option=scheme))
    dense = np.array([4 * 16 * 144, 4 * 144])
    p = Problem(groups, budgets=0.4 * dense, reference_cost=dense)
    curves = {g.name: np.concatenate([np.cumsum(rng.uniform(0, 1, g.full_rank))[::-1], [0.0]]) for g in groups}
    curves = {k: np.maximum.accumulate(v[::-1])[::-1] + rng.uniform(0, 0.05, v.size) * (np.arange(v.size) < v.size - 1) for k, v in curves.items()}
    obj = Separable(curves, "measured")
    ex = solve(p, "exact", objective=obj)
    mi = solve(p, "milp", objective=obj)
    assert ex.feasible and ex.objective <= mi.objective + 1e-9
    assert ex.active.sum() == 4


def test_lower_hull():
    y = np.array([5.0, 3.0, 2.9, 1.0, 0.5, 0.4])
    assert list(lower_hull(y)) == [0, 1, 3, 4, 5]
    assert list(lower_hull(np.array([4.0, 2.0, 1.0, 0.5]))) == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["uniform", "energy", "alds", "zhang", "svdllm", "svdllm2", "exact", "milp"])
def test_every_method_meets_every_budget(method):
    for seed in range(3):
        p = random_problem(seed, macs=[0.2, 0.5, 1.0][seed], params=[0.3, 0.25, 0.6][seed])
        alloc = solve(p, method)
        assert alloc.feasible, (method, seed)
        assert p.fits(p.cost(alloc.ranks, alloc.active))


def test_exact_beats_every_baseline_on_its_objective():
    p = random_problem(11, n_layers=20)
    obj = discarded_energy(p)
    best = solve(p, "exact").objective
    for method in ("uniform", "energy", "alds", "zhang"):
        a = solve(p, method)
        assert best <= obj.total(p, a.ranks, a.active) + 1e-12


def test_baselines_do_what_they_say():
    p = random_problem(5)
    e = solve(p, "energy")
    frac = e.info["energy_fraction"]
    for g, r in zip(p.groups, e.ranks):
        assert g.energy_kept(r) >= frac - 1e-9  # every layer keeps at least the shared fraction
    a = solve(p, "alds")
    err = spectral_error(p)
    worst = max(err.loss(g, r) for g, r in zip(p.groups, a.ranks))
    assert worst == pytest.approx(a.info["max_spectral_error"], abs=1e-12)


def test_svdllm2_gives_each_matrix_type_ratios_in_proportion_to_its_truncation_loss():
    from solvers.truncation_loss import matrix_type

    assert matrix_type("model.layers.12.mlp.up_proj") == "model.layers.*.mlp.up_proj"
    # Two blocks, each a 'q' (8 x 8: 4 ranks per unit of ratio) and an 'up' (8 x 24: 6 per unit).
    # Block 0's matrices have flat spectra (truncating loses much), block 1's decay fast.
    flat, fast = np.linspace(1.0, 0.8, 8), np.geomspace(1.0, 1e-3, 8)
    groups = [Group(f"b.{i}.{kind}", spectrum, [m + n, m + n], [0.0, 0.0], [m * n, m * n])
              for kind, m, n in (("q", 8, 8), ("up", 8, 24)) for i, spectrum in enumerate((flat, fast))]
    dense = sum(g.dense_cost for g in groups)
    p = Problem(groups, budgets=[np.inf, 0.5 * dense[1]], reference_cost=dense)
    alloc = solve(p, "svdllm2")
    ratio, ranks = alloc.info["ratio"], dict(zip([g.name for g in groups], alloc.ranks))
    assert alloc.feasible and alloc.info["types"] == 2
    for kind, per_ratio in (("q", 4.0), ("up", 6.0)):
        names = [f"b.0.{kind}", f"b.1.{kind}"]
        at_ratio = int(np.floor(ratio * per_ratio + 1e-9))  # both at the common ratio R first
        loss = np.array([np.sqrt(np.sum(g.values[at_ratio:] ** 2)) for g in groups if g.name in names])
        expected = np.minimum(np.floor(ratio * 2 * loss / loss.sum() * per_ratio + 1e-9), 8)
        assert [ranks[n] for n in names] == list(expected)
        assert ranks[names[0]] > ranks[names[1]]  # the flat spectrum keeps more


def test_separable_objective_errors():
    p = random_problem(0, n_layers=3)
    with pytest.raises(ValueError, match="no curve"):
        solve(p, "exact", objective=Separable({}, "empty"))
    bad = {g.name: np.full(g.full_rank + 1, np.nan) for g in p.groups}
    with pytest.raises(ValueError, match="NaN"):
        solve(p, "exact", objective=Separable(bad, "nan"))
    short = {g.name: np.zeros(2) for g in p.groups}
    with pytest.raises(ValueError, match="shape"):
        solve(p, "exact", objective=Separable(short, "short"))
    with pytest.raises(ValueError, match="unknown separable objective"):
        solve(p, "exact", objective="entropy")
    with pytest.raises(ValueError, match="must include 0"):
        from_samples(p, {g.name: ([1, g.full_rank], [1.0, 0.0]) for g in p.groups})


def measured_alternatives_problem(budget_share):
    """Two schemes per layer under one measured resource: the more compressible one ('spatial',
    a fast-decaying spectrum) is the slower one even at rank 0, as a timed layer can be."""
    groups = []
    for i in range(3):
        fast = np.geomspace(4.0, 0.01, 8)
        flat = np.linspace(1.0, 0.9, 8)
        groups.append(Group(f"l{i}/channel", flat, [1.0], [2.0], [20.0], layer=f"l{i}", option="channel"))
        groups.append(Group(f"l{i}/spatial", fast, [1.0], [9.0], [20.0], layer=f"l{i}", option="spatial"))
    dense = np.array([60.0])
    return Problem(groups, budgets=budget_share * dense, resources=("latency",), reference_cost=dense)


@pytest.mark.parametrize("method", ["uniform", "energy", "alds", "zhang", "svdllm", "svdllm2"])
def test_a_baseline_takes_the_alternative_that_can_reach_the_budget(method):
    # At 30% only the cheaper-at-rank-0 scheme fits (3 x 2 = 6 at rank 0 versus 3 x 9 = 27).
    p = measured_alternatives_problem(0.3)
    alloc = solve(p, method)
    assert alloc.feasible and all(p.groups[i].option == "channel" for i in np.flatnonzero(alloc.active))
    # Where the preferred scheme can reach the budget, the baseline keeps it.
    roomy = measured_alternatives_problem(0.9)
    assert all(roomy.groups[i].option == "spatial" for i in np.flatnonzero(solve(roomy, method).active))


def test_a_baseline_below_the_reachable_cost_says_the_smallest_achievable():
    from solvers import InfeasibleBudgetError

    with pytest.raises(InfeasibleBudgetError, match=r"smallest achievable .*10.0% of the original"):
        solve(measured_alternatives_problem(0.05), "uniform")


def test_a_baseline_whose_scheme_choice_cannot_fit_two_budgets_says_so():
    from solvers import InfeasibleBudgetError

    # One layer, two schemes: each is cheap in one resource and dear in the other at rank 0, so
    # each resource alone could be met (the problem's smallest cost fits) but no choice meets both.
    values = np.linspace(1.0, 0.5, 4)
    groups = [Group("l/a", values, [1.0, 1.0], [1.0, 10.0], [20.0, 20.0], layer="l", option="a"),
              Group("l/b", values, [1.0, 1.0], [10.0, 1.0], [20.0, 20.0], layer="l", option="b")]
    p = Problem(groups, budgets=[5.0, 5.0], reference_cost=np.array([20.0, 20.0]))
    p.check_feasible()  # per resource the least cost fits
    with pytest.raises(InfeasibleBudgetError, match="choose schemes inside the search"):
        solve(p, "uniform")


def test_svdllm_keeps_the_same_share_of_parameters_in_every_matrix():
    # An 8 x 8 matrix (4 ranks per unit of parameter share) and an 8 x 24 one (6 per unit).
    groups = [Group("sq", np.linspace(1, 0.5, 8), [16, 16], [0, 0], [64, 64]),
              Group("wide", np.linspace(1, 0.5, 8), [32, 32], [0, 0], [192, 192])]
    p = Problem(groups, budgets=[np.inf, 0.5 * 256], reference_cost=np.array([256.0, 256.0]))
    alloc = solve(p, "svdllm")
    share = alloc.info["ratio"]
    assert list(alloc.ranks) == [int(np.floor(share * 4 + 1e-9)), int(np.floor(share * 6 + 1e-9))]
    assert alloc.ranks[1] > alloc.ranks[0]  # 'uniform' (the same share of rank) gives both rank 2
