"""A minimum rank per layer (solvers.floors), honoured by every method inside the
optimisation; by default 1 wherever the budget allows, so no plan cuts a path of the network
while one that keeps every path fits."""
import numpy as np
import pytest
import torch

import lowrank
import solvers
from lowrank import Budget
from lowrank.resources import count
from lowrank.zoo import LeNet5
from lowrank.zoo.archs import ResNet
from solvers.floors import Floors
from solvers.synthetic import from_shapes


def _data(n=48, seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    return x, [(x[:32], y[:32]), (x[32:], y[32:])]


def _fits(result, x):
    counted = count(result.model, x[:1], list(result.plan.limits))
    return all(counted[r] <= result.plan.limits[r] for r in counted)


@pytest.mark.parametrize("method", solvers.methods())
def test_every_method_keeps_the_minimum_rank_and_the_budget(method):
    x, calib = _data()
    min_rank = {"features.0": 2, "features.3": 3, "classifier.1": 4}
    result = lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.4, params=0.4), method=method, basis="weight",
                              min_rank=min_rank)
    ranks = {row.name: row for row in result.plan.rows}
    for name, m in min_rank.items():
        assert ranks[name].rank >= m or ranks[name].dense, (name, ranks[name].rank)
    assert _fits(result, x)


def test_floors_with_rank_multiples_reach_the_floor_in_whole_blocks():
    x, calib = _data()
    floors = {"classifier.1": 5, "classifier.3": 5}
    result = lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.4), method="exact", basis="weight", rank_multiple=4,
                              min_rank=floors)
    for row in result.plan.rows:
        assert row.dense or row.rank % 4 == 0 or row.rank == row.full_rank, (row.name, row.rank)
        if row.name in floors:
            assert row.dense or row.rank >= 8, (row.name, row.rank)
    assert _fits(result, x)


def test_restated_costs_values_and_objectives_match_the_original():
    problem = from_shapes([(64, 147, 100, 64), (96, 30, 49, 96), (10, 7, 1, 10)], seed=1)
    f = Floors(problem, {"layer0": 5, "layer1": 2})
    rng = np.random.default_rng(0)
    for _ in range(200):  # any restated allocation costs exactly what its original ranks cost
        ranks = [rng.integers(0, g.full_rank + 1) for g in f.problem.groups]
        active = np.ones(len(ranks), dtype=bool)
        original, on = f.ranks(ranks, active)
        np.testing.assert_allclose(problem.cost(original, on), f.problem.cost(ranks, active))
        assert original[0] >= 5 and original[1] >= 2
    seen = {}

    def loss(masks):
        seen.update(masks)
        return float(sum(m.sum() for m in masks.values())), {k: np.arange(m.size, dtype=float) for k, m in masks.items()}

    restated = f.objective(solvers.Differentiable(loss))
    value, grads = restated({"layer0": np.zeros(problem.groups[0].full_rank - 5)})
    np.testing.assert_array_equal(seen["layer0"][:5], 1)
    assert value == 5
    np.testing.assert_array_equal(grads["layer0"], np.arange(5, problem.groups[0].full_rank))


def test_a_floor_past_break_even_leaves_the_layer_dense_outside_the_problem():
    problem = from_shapes([(64, 147, 100, 64), (10, 7, 1, 10)], macs=0.9, params=0.9, seed=1)
    f = Floors(problem, {"layer1": 7})  # 7 of 7 values: only dense is left
    assert [g.name for g in f.problem.groups] == ["layer0"]
    np.testing.assert_allclose(f.problem.base_cost, problem.base_cost + problem.groups[1].dense_cost)
    alloc = f.allocation(solvers.solve(f.problem, method="exact"))
    assert alloc.ranks[1] == problem.groups[1].full_rank and alloc.feasible


def test_a_floor_that_breaks_the_budget_says_the_smallest_achievable_with_and_without_it():
    x, calib = _data()
    with pytest.raises(lowrank.InfeasibleBudgetError, match="with these minimum ranks.*without them.*Lower min_rank"):
        lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.1), method="uniform", basis="weight", min_rank=30)


def test_bad_min_rank_values_and_unknown_layer_names_are_named():
    x, calib = _data()
    for bad in (-1, 1.5, True, "some"):
        with pytest.raises(ValueError, match="min_rank must be"):
            lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.5), method="uniform", min_rank=bad)
    with pytest.raises(ValueError, match="min_rank names no compressible layer: 'feature.0'"):
        lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.5), method="uniform", min_rank={"feature.0": 2})


def test_by_default_no_layer_is_cut_while_a_plan_that_keeps_every_path_fits():
    """A tight MAC budget: with min_rank=0 the exact method zeroes whole residual branches;
    the default keeps a rank in every layer, and the budget still holds."""
    torch.manual_seed(0)
    model = ResNet(blocks=1).eval()
    x, y = torch.randn(48, 1, 28, 28), torch.randint(0, 10, (48,))
    calib = [(x[:32], y[:32]), (x[32:], y[32:])]
    budget = Budget(macs=0.12)
    free = lowrank.compress(model, calib, budget, method="exact", basis="weight", min_rank=0)
    assert any(row.rank == 0 and not row.dense for row in free.plan.rows)
    kept = lowrank.compress(model, calib, budget, method="exact", basis="weight")
    assert all(row.rank >= 1 or row.dense for row in kept.plan.rows)
    assert _fits(kept, x)


def test_by_default_a_budget_too_tight_for_every_path_still_plans_and_warns():
    x, calib = _data()
    with pytest.warns(lowrank.SeveredModelWarning):
        result = lowrank.compress(LeNet5().eval(), calib, Budget(macs=0.005), method="exact", basis="weight")
    assert _fits(result, x)


def test_the_cli_takes_min_rank(tmp_path, capsys):
    import json

    from lowrank.cli import main

    torch.manual_seed(0)
    torch.save(LeNet5().eval(), tmp_path / "mine.pt")
    torch.save(torch.randn(16, 1, 28, 28), tmp_path / "calib.pt")
    for floors, expect in (("2", {}), ("features.3=3,classifier.1=7", {"features.3": 3, "classifier.1": 7})):
        rc = main(["compress", "--model", str(tmp_path / "mine.pt"), "--calib", str(tmp_path / "calib.pt"), "--macs", "0.3",
                   "--method", "uniform", "--min-rank", floors, "--plan", str(tmp_path / "plan.json"), "--quiet"])
        assert rc == 0 and "within the budget" in capsys.readouterr().out
        plan = json.loads((tmp_path / "plan.json").read_text())
        for layer in plan["layers"]:
            least = expect.get(layer["name"], 0) if expect else 2
            assert layer["rank"] >= min(least, layer["full_rank"]), layer
    with pytest.raises(SystemExit):
        main(["compress", "--model", str(tmp_path / "mine.pt"), "--calib", str(tmp_path / "calib.pt"), "--macs", "0.3",
              "--min-rank", "x=-1"])
    assert "expected auto, a non-negative integer or LAYER=N pairs" in capsys.readouterr().err


def test_a_plan_that_keeps_a_path_is_never_traded_for_one_that_cuts_the_network():
    """At 4% of the MACs, min_rank=0 zeroes four residual branches (the skips keep the model
    alive); floors on those four made the next plan zero a downsampling block's branch and
    its shortcut together, a constant model. The default keeps the plan with a path."""
    torch.manual_seed(0)
    model = ResNet(blocks=1).eval()
    x, y = torch.randn(48, 1, 28, 28), torch.randint(0, 10, (48,))
    calib = [(x[:32], y[:32]), (x[32:], y[32:])]
    result = lowrank.compress(model, calib, Budget(macs=0.04), method="exact", basis="weight")
    assert "severed_by" not in result.plan.info
    assert _fits(result, x)


def test_where_a_rank_for_every_cut_layer_does_not_fit_the_layers_that_sever_get_one():
    """resnet20-fmnist at latency 0.7 cut its stem and five residual-branch layers; a rank for
    all six did not fit, a rank for the stem alone did: the stem gets it, the branches stay cut."""
    from lowrank.compress import wanted_floors
    from lowrank.layers.graph import severing

    graph = lowrank.LayerTable(ResNet(blocks=3).eval(), torch.randn(1, 1, 28, 28)).graph
    cut = ["stem.0", "stages.7.conv1", "stages.7.conv2", "stages.8.conv1", "stages.8.conv2"]
    assert severing(graph, cut) == ["stem.0"]
    few = lambda floors: len(floors) <= 2  # the budget allows a rank in two more layers at most
    assert wanted_floors(cut, {"stages.6.conv1": 1}, few, lambda c: severing(graph, c)) == {"stages.6.conv1": 1, "stem.0": 1}
    assert wanted_floors(cut, {}, lambda f: True, lambda c: severing(graph, c)) == {name: 1 for name in cut}  # all, where they fit
    assert wanted_floors(cut[1:], {}, few, lambda c: severing(graph, c)) is None  # only branches: the skips keep the path
    # a downsampling block's branch and shortcut cut together: one rank, in the shortcut, reconnects it
    block = ["stages.6.conv1", "stages.6.conv2", "stages.6.shortcut.0", "stages.7.conv1"]
    assert severing(graph, block) == block
    assert wanted_floors(block, {}, lambda f: len(f) <= 1, lambda c: severing(graph, c)) == {"stages.6.shortcut.0": 1}
    # where a rank in every layer fits, every layer gets one (floors on the cut ones alone let the next plan cut others)
    every = [layer.name for layer in lowrank.LayerTable(ResNet(blocks=3).eval(), torch.randn(1, 1, 28, 28)).compressible]
    assert wanted_floors(cut[1:], {}, lambda f: True, lambda c: severing(graph, c), every) == {name: 1 for name in every}
    assert wanted_floors(cut, {}, few, lambda c: severing(graph, c), every) == {"stem.0": 1}  # not all fit: as before
    assert wanted_floors([], {}, lambda f: True, lambda c: severing(graph, c), every) is None  # nothing cut: no new plan


def test_a_solver_that_moves_its_cut_each_round_still_ends_with_every_path(monkeypatch):
    """resnet20-fmnist at latency 0.625 (spatial): a plan with a rank in every layer fit, but
    each round of floors on the cut layers moved the cut to another block (the stepped latency
    tables always made some rank 0 cheapest), and after four rounds the plan kept two branches
    cut. Here a solver that always cuts one layer without a floor stands in for it: the default
    must still return a plan that cuts nothing, within the budget."""
    import sys

    from solvers.problem import Allocation

    module = sys.modules["lowrank.compress"]
    solve = module._solve

    def moving_cut(problem, method, rank_multiple, min_rank, options):
        alloc = solve(problem, method, rank_multiple, min_rank, options)
        floored = min_rank if isinstance(min_rank, dict) else {}
        free = [layer for layer in sorted(problem.layers) if layer not in floored]
        if free:  # cut the first layer left without a floor (cheaper: the budget still holds)
            ranks, active = alloc.ranks.copy(), alloc.active
            ranks[next(i for i in problem.layers[free[0]] if active[i])] = 0
            alloc = Allocation(problem, ranks, alloc.method, active, info=alloc.info)
        return alloc

    monkeypatch.setattr(module, "_solve", moving_cut)
    torch.manual_seed(0)
    model = ResNet(blocks=3).eval()
    x, y = torch.randn(48, 1, 28, 28), torch.randint(0, 10, (48,))
    calib = [(x[:32], y[:32]), (x[32:], y[32:])]
    result = lowrank.compress(model, calib, Budget(macs=0.3), method="exact", basis="weight")
    assert all(row.rank >= 1 or row.dense for row in result.plan.rows)
    assert _fits(result, x)
    with pytest.warns(lowrank.SeveredModelWarning):  # the stand-in does cut without floors (the fc: every path)
        free = lowrank.compress(model, calib, Budget(macs=0.3), method="exact", basis="weight", min_rank=0)
    assert any(row.rank == 0 and not row.dense for row in free.plan.rows)
