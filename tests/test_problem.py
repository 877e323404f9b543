import numpy as np
import pytest

from solvers import Allocation, Group, InfeasibleBudgetError, Problem, solve


def group(name="g", values=(4.0, 3.0, 2.0, 1.0), rank_cost=(10, 5), fixed=(0, 1), dense=(32, 17), **kw):
    return Group(name, np.array(values), rank_cost, fixed, dense, **kw)


def test_dense_fallback_starts_where_factorising_stops_paying():
    g = group()  # rank 3 costs (30, 16) < (32, 17); rank 4 costs (40, 21)
    assert g.dense_from == 4
    assert np.array_equal(g.cost(3), [30, 16]) and np.array_equal(g.cost(4), [32, 17])
    assert g.normalise(4) == 4 and g.normalise(2) == 2
    assert np.array_equal(g.cost(np.array([0, 4])), [[0, 1], [32, 17]])
    g2 = group(dense=(25, 100))  # MACs stop paying at rank 3 already
    assert g2.dense_from == 3 and g2.normalise(3) == 4 and g2.is_dense(3)
    assert [g2.step_down(r) for r in (4, 2, 0)] == [2, 1, 0]  # dense drops to the last paying rank


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(values=(1.0, 2.0)), "descending"),
        (dict(values=()), "no singular values"),
        (dict(values=(1.0, np.nan)), "finite"),
        (dict(rank_cost=(1, -1)), "non-negative"),
        (dict(dense=(1, 2, 3)), "one entry per resource"),
    ],
)
def test_bad_groups_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        group(**kwargs)


def test_problem_validation_and_costs():
    p = Problem([group("a"), group("b")], budgets=[50, np.inf], base_cost=[7, 3], reference_cost=[71, 37])
    assert np.array_equal(p.cost([1, 2]), [7 + 10 + 20, 3 + 6 + 11])
    assert np.array_equal(p.min_cost(), [7, 5])
    with pytest.raises(ValueError, match="expected 2 ranks"):
        p.cost([1])
    with pytest.raises(ValueError, match="budgets"):
        Problem([group()], budgets=[1.0])
    with pytest.raises(ValueError, match="unique"):
        Problem([group("a"), group("a")], budgets=[1, 1])
    with pytest.raises(ValueError, match="at least one group"):
        Problem([], budgets=[1, 1])
    tight = Problem([group("a")], budgets=[50, 0.5], reference_cost=[32, 17])
    with pytest.raises(InfeasibleBudgetError, match=r"params budget 0.5 \(2.9% of the original\) is below the smallest achievable 1 \(5.9%"):
        tight.check_feasible()


def test_alternatives_need_exactly_one_active():
    p = Problem([group("a/x", layer="a"), group("a/y", layer="a"), group("b")], budgets=[100, 100])
    assert p.layers == {"a": [0, 1], "b": [2]}
    with pytest.raises(ValueError, match="exactly one active"):
        Allocation(p, [1, 1, 1], "test", active=[True, True, True])
    alloc = Allocation(p, [1, 2, 3], "test", active=[False, True, True])
    assert alloc.by_layer()["a"][1] == 2


def test_solve_uniform_and_unknown_method():
    p = Problem([group("a"), group("b", values=(2.0, 1.0), rank_cost=(3, 3), dense=(6, 7))], budgets=[24, np.inf])
    alloc = solve(p, "uniform")
    assert alloc.feasible and alloc.info["rank_fraction"] == 0.5
    assert list(alloc.ranks) == [2, 1]
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        solve(p, "nope")
