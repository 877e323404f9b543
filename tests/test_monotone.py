"""A method must not get worse when its budget grows.

What holds by construction, and is tested here: uniform, energy, alds, zhang and sensitivity
search one shared scalar (a rank fraction, a kept-energy level, a spectral error, a greedy
stopping point, a loss tolerance), so a larger budget never gives any layer a smaller rank.
Accuracy can still move a little with ranks that only grew (truncations interact in a network,
most visibly near chance level); a fall of more than noise was a bug, and is tested against on
a real model. ``exact`` and ``cobla`` re-optimise per budget, so their ranks may move both ways.
"""
import numpy as np
import pytest
import torch

import lowrank
from lowrank import Budget, LayerTable
from lowrank.needs.network_loss import sensitivity_samples
from lowrank.util.batches import as_batches, sample_batches
from solvers import Group, Problem, solve
from solvers.objectives import Separable

GRID = [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
MONOTONE = ["uniform", "energy", "alds", "zhang", "sensitivity"]


def test_sensitivity_whose_measured_loss_dips_below_full_rank_keeps_layers_at_full_rank():
    """The bug behind sensitivity collapsing to chance at generous budgets: a layer whose loss at
    some rank is below its full-rank loss made the tolerance negative, and every other layer,
    unable to meet a negative tolerance, was put at rank 0."""
    groups = [Group(f"g{i}", np.linspace(3, 1, 8), [10, 1], [0, 0], [1000, 100]) for i in range(3)]
    curves = {g.name: np.linspace(1.0, 0.2, 9) for g in groups}
    curves["g0"] = np.array([1.0, 0.8, 0.5, 0.15, 0.3, 0.25, 0.22, 0.21, 0.2])  # dips below full rank at rank 3
    problem = Problem(groups, budgets=[np.inf, 1e9])
    alloc = solve(problem, "sensitivity", objective=Separable(curves, "measured"))
    assert alloc.ranks.tolist() == [3, 8, 8]  # g0 at its dip, the others at full rank, none at 0


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from lowrank.zoo import get

    torch.set_num_threads(1)
    entry = get("lenet5-digits")
    model = entry.load()
    table = LayerTable(model, entry.example_input())
    calib = sample_batches(entry.splits.calib, 128, 0)
    measured = sensitivity_samples(table.model, table.bases, table.problem(Budget(macs=1.0)), as_batches(calib))
    return entry, model, table, calib, measured


@pytest.mark.parametrize("resource", ["macs", "params"])
@pytest.mark.parametrize("method", MONOTONE)
def test_ranks_never_shrink_and_accuracy_never_collapses_as_the_budget_grows(digits, method, resource):
    entry, model, table, calib, measured = digits
    previous, accuracies = None, []
    for fraction in GRID:
        try:
            result = lowrank.compress(model, calib, Budget(**{resource: fraction}), method=method, table=table,
                                      measured=measured if method == "sensitivity" else None)
        except lowrank.InfeasibleBudgetError:
            assert previous is None, f"{method}: {resource} {fraction} refused after a smaller budget fitted"
            continue
        ranks = result.plan.ranks  # full rank where a layer stays dense
        if previous is not None:
            shrunk = {n: (previous[n], r) for n, r in ranks.items() if r < previous[n]}
            assert not shrunk, f"{method}: growing {resource} to {fraction} shrank ranks {shrunk}"
        previous = ranks
        accuracies.append(entry.evaluate(result.model))
    # 300 test images: a binomial standard deviation of 1-3 points; 5 points is beyond noise
    worst_fall = max((max(accuracies[: i + 1]) - a for i, a in enumerate(accuracies)), default=0.0)
    assert worst_fall <= 0.05, f"{method}: accuracy fell by {worst_fall:.3f} as {resource} grew: {accuracies}"
