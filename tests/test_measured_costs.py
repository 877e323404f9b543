"""Measured, step-shaped costs (solvers.problem cost tables): exact takes them as they are,
every method's answer fits them, rank multiples restate them exactly."""
import numpy as np
import pytest

import solvers
from solvers import Group, Problem
from solvers.multiples import Multiples
from solvers.objectives import discarded_energy

from helpers import brute_force


def _stepped_problem(seed: int, fraction: float = 0.5) -> Problem:
    """Three small layers; resource 0 (a 'latency') costs a step every 4 ranks plus noise and
    is not linear in the rank; resource 1 ('params') is linear."""
    rng = np.random.default_rng(seed)
    groups = []
    for i, n in enumerate((6, 7, 5)):
        values = np.sort(rng.gamma(1.0, 1.0, n))[::-1] + 1e-3
        per_rank = rng.uniform(1, 3)
        steps = 2.0 + per_rank * 4 * np.ceil(np.arange(n + 1) / 4) + rng.uniform(0, 0.5, n + 1)
        table = np.stack([steps, np.full(n + 1, np.nan)], axis=1)
        dense = [steps[-1] * 1.1, 10.0 * n]
        groups.append(Group(f"g{i}", values, [per_rank, 11.0], [2.0, 0.0], dense, cost_table=table))
    dense_total = np.sum([g.dense_cost for g in groups], axis=0)
    return Problem(groups, budgets=[fraction * dense_total[0], np.inf], reference_cost=dense_total)


def test_a_table_overrides_the_linear_model_in_costs_and_dense_fallback():
    table = np.array([[1.0], [5.0], [5.0], [9.0]])
    g = Group("g", [3.0, 2.0, 1.0], [1.0], [0.0], [8.0], cost_table=table)
    assert g.cost(1)[0] == 5.0 and g.cost(2)[0] == 5.0  # the measured step, not 1 and 2
    assert g.dense_from == 3  # rank 3 measured at 9 > dense 8: from there the layer stays dense
    assert g.cost(3)[0] == 8.0
    with pytest.raises(ValueError, match="cost_table must have shape"):
        Group("g", [3.0, 2.0, 1.0], [1.0], [0.0], [8.0], cost_table=np.zeros((3, 1)))


@pytest.mark.parametrize("seed", range(5))
def test_exact_is_optimal_on_step_shaped_costs(seed):
    problem = _stepped_problem(seed)
    objective = discarded_energy(problem)
    alloc = solvers.solve(problem, method="exact", objective=objective)
    assert alloc.feasible
    assert alloc.objective == pytest.approx(brute_force(problem, objective), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("method", ["uniform", "energy", "alds", "zhang", "exact"])
@pytest.mark.parametrize("fraction", [0.35, 0.6])
def test_every_method_fits_the_measured_table(method, fraction):
    problem = _stepped_problem(3, fraction)
    alloc = solvers.solve(problem, method=method)
    measured = problem.base_cost[0] + sum(g.cost_table[r, 0] if r < g.dense_from else g.dense_cost[0]
                                          for g, r in zip(problem.groups, alloc.ranks))
    assert measured <= problem.budgets[0]


def test_an_allocation_over_the_measured_table_is_repaired_to_fit():
    from solvers.problem import Allocation
    from solvers.rounding import fit_measured

    problem = _stepped_problem(2, 0.5)
    over = Allocation(problem, [g.full_rank - 1 for g in problem.groups], "test")
    assert not over.feasible
    fixed = fit_measured(over)
    assert fixed.feasible and fixed.info["repaired_to_measured_costs"]
    assert np.all(fixed.ranks <= over.ranks) and fixed.ranks.sum() > 0


def test_rank_multiples_restate_the_table_exactly():
    problem = _stepped_problem(1)
    m = Multiples(problem, 4)
    for g, b in zip(problem.groups, m.problem.groups):
        for u in range(b.full_rank + 1):
            r = min(4 * u, g.full_rank)
            assert b.factorised_cost(u)[0] == g.factorised_cost(r)[0]
    alloc = m.allocation(solvers.solve(m.problem, method="exact"))
    assert alloc.feasible
    assert all(r % 4 == 0 or r == g.full_rank for g, r in zip(problem.groups, alloc.ranks))


def test_cobla_plans_where_the_line_through_a_measured_table_starts_above_its_first_step():
    """A latency table jumps from rank 0 to rank 1 (a thin conv's extra call) and is flat
    after: the least-squares line through it starts well above the rank-0 reading. COBLA's
    relaxation took that line's intercepts as its fixed costs; where their sum left no room
    under the budget, the starting masks were scaled by a negative factor, rounded to negative
    ranks, and compress failed with "rounding: nothing left to remove" (resnet20-fmnist under
    latency 0.541 and 0.55). The relaxation now starts at each table's rank-0 reading."""
    from solvers import Differentiable

    groups = []
    for i in range(3):
        n = 8
        table = np.concatenate([[1.0], np.full(n, 10.0)])[:, None]  # rank 0: 1; any rank: 10
        groups.append(Group(f"g{i}", np.linspace(2.0, 0.5, n), [0.1], [8.0], [12.0], cost_table=table))
    problem = Problem(groups, budgets=[3.0 + 10.0 + 2.0], resources=("latency",), reference_cost=[36.0])  # rank 0 everywhere, one layer at a rank
    assert sum(g.fixed_cost[0] for g in groups) > problem.budgets[0] - problem.base_cost[0]  # the line's intercepts alone overrun

    def loss(masks):
        value = sum(float(((1.0 - m) * g.values ** 2).sum()) for g, m in zip(groups, masks.values()))
        return value, {name: -np.asarray([g for g in groups if g.name == name][0].values ** 2) for name in masks}

    from solvers.cobla import RelaxedBudgets

    assert RelaxedBudgets(problem).cap[0] >= 0  # all masks at zero fit the relaxed budget, as rank 0 fits the real one
    for iterations in (0, 30):  # 0: the rounding of the starting point itself
        alloc = solvers.solve(problem, method="cobla", objective=Differentiable(loss), max_iter=iterations)
        assert alloc.feasible and np.all(alloc.ranks >= 0)
        assert max(alloc.ranks) > 0  # the budget pays for one layer at a rank, and it is spent


def test_repair_switches_a_layers_scheme_where_rank_zero_of_the_chosen_one_is_over_the_budget():
    """A budget at the least cost there is holds only with each layer's cheapest scheme at
    rank 0; an allocation with the other scheme used to fail ('nothing left to remove') once
    its ranks were all 0 (a plan for less, aimed at the cheapest live plan)."""
    from solvers.problem import Allocation

    groups = []
    for i in range(2):
        groups.append(Group(f"l{i}/channel", [3.0, 2.0, 1.0], [1.0], [2.0], [20.0], layer=f"l{i}", option="channel"))
        groups.append(Group(f"l{i}/spatial", [3.0, 2.0, 1.0], [1.0], [5.0], [20.0], layer=f"l{i}", option="spatial",
                            cost_table=np.array([[5.0], [6.0], [7.0], [8.0]])))
    problem = Problem(groups, budgets=[4.0], resources=("latency",), reference_cost=[40.0])  # = min_cost: both layers channel at rank 0
    on_spatial = Allocation(problem, np.array([0, 2, 0, 1]), "exact", active=np.array([False, True, False, True]))
    fixed = solvers.rounding.fit_measured(on_spatial)
    assert fixed.feasible and fixed.cost[0] == pytest.approx(4.0)
    assert [g.option for g, r in fixed.by_layer().values()] == ["channel", "channel"]
