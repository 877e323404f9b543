import json

import numpy as np
import pytest
import torch

import lowrank
from lowrank import Budget, InfeasibleBudgetError, LayerTable, compress, kinds

from conftest import make
from helpers import counted_macs, n_params


def test_fifty_random_budgets_are_met_or_refused_with_the_minimum(arch, x28):
    model = make(arch)
    table = LayerTable(model, x28)
    rng = np.random.default_rng(42)
    fits = refused = 0
    for i in range(50):
        scheme = ("channel", "spatial")[i % 2]
        kind = i % 3
        budget = Budget(
            macs=float(rng.uniform(0.01, 1.0)) if kind != 1 else None,
            params=float(rng.uniform(0.01, 1.0)) if kind != 0 else None,
        )
        limits = budget.limits(table.totals)
        try:
            result = compress(model, x28, budget, method="uniform", scheme=scheme, table=table)
        except InfeasibleBudgetError as err:
            refused += 1
            assert "smallest achievable" in str(err)
            lowest = table.problem(budget, scheme).min_cost()
            assert lowest[0] > limits["macs"] or lowest[1] > limits["params"]
            continue
        fits += 1
        macs, params = counted_macs(result.model, x28), n_params(result.model)
        assert macs <= limits["macs"] and params <= limits["params"]
        assert (macs, params) == (result.plan.totals_after["macs"], result.plan.totals_after["params"])
    assert fits >= 25


def test_uniform_takes_the_largest_fraction_that_fits(x28):
    model = make("vgg")
    table = LayerTable(model, x28)
    result = compress(model, x28, Budget(macs=0.5, params=0.4), method="uniform", table=table)
    f = result.allocation.info["rank_fraction"]
    for row in result.plan.rows:
        assert row.dense or row.rank == int(np.floor(f * row.full_rank + 1e-9))
    # the next fraction at which any layer gains a rank no longer fits
    problem = result.allocation.problem
    full = np.array([g.full_rank for g in problem.groups])
    steps = np.concatenate([np.arange(1, r + 1) / r for r in full])
    nxt = steps[steps > f + 1e-12].min()
    ranks = np.floor(nxt * full + 1e-9).astype(int)
    assert not problem.fits(problem.cost(ranks))


def test_plan_reports_every_layer_and_round_trips_to_json(x28):
    model = make("resnet20")
    result = compress(model, (x28, torch.tensor([3])), Budget(macs=0.5), method="uniform")
    plan = result.plan
    assert [r.name for r in plan.rows] == [l.name for l in result.table.compressible]
    data = json.loads(plan.to_json())
    assert data["totals_after"]["macs"] <= 0.5 * data["totals_before"]["macs"]
    assert data["limits"]["params"] is None
    assert len(data["layers"]) == len(plan.rows)
    row = data["layers"][0]
    assert {"name", "kind", "shape", "scheme", "full_rank", "rank", "macs_before", "macs_after", "params_before", "params_after"} <= set(row)
    text = plan.table()
    assert "whole model" in text and "stages.2.conv1" in text
    seconds = data["info"]["seconds"]  # where the call's time went, each part counted once
    assert set(seconds) == {"preparing", "ceilings", "planning", "rebuilding", "checking"} and data["info"]["plans_made"] == 1
    assert all(v >= 0 for v in seconds.values()) and seconds["rebuilding"] > 0


def test_infeasible_budget_states_the_smallest_achievable_fraction(x28):
    model = make("mobilenet")
    with pytest.raises(InfeasibleBudgetError, match=r"params at most [\d.]+% of the original .* below the smallest achievable [\d.]+% \("):
        compress(model, x28, Budget(params=0.01), method="uniform")


def test_calibration_data_forms(x28):
    model = make("lenet5")
    batch = torch.randn(8, 1, 28, 28)
    loader = [(batch, torch.zeros(8, dtype=torch.long))]
    a = compress(model, loader, Budget(macs=0.4), method="uniform")
    b = compress(model, batch, Budget(macs=0.4), method="uniform")
    assert a.plan.ranks == b.plan.ranks
    assert a.table.totals["macs"] == counted_macs(model, x28)  # costs are per sample
    with pytest.raises(ValueError, match="empty"):
        compress(model, [], Budget(macs=0.4))
    with pytest.raises(TypeError, match="Budget"):
        compress(model, batch, 0.5)
    with pytest.raises(ValueError, match="unknown method"):
        compress(model, batch, Budget(macs=0.4), method="magic")
    with pytest.raises(ValueError, match="unknown scheme"):
        compress(model, batch, Budget(macs=0.4), scheme="diagonal")


def test_public_api_is_importable():
    for name in lowrank.__all__:
        assert hasattr(lowrank, name)


@pytest.mark.parametrize("method", ["energy", "alds", "zhang", "exact", "milp", "sensitivity", "cobla"])
def test_every_method_from_compress_meets_the_budget_by_independent_count(method):
    model = make("vgg")
    torch.manual_seed(0)
    calib = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(2)]
    x = calib[0][0][:1]
    table = LayerTable(model, x)
    budget = Budget(macs=0.35, params=0.3)
    limits = budget.limits(table.totals)
    for scheme in ("spatial", "auto"):
        kwargs = {"max_iter": 3} if method == "cobla" else {}
        result = compress(model, calib, budget, method=method, scheme=scheme, table=table, **kwargs)
        assert counted_macs(result.model, x) == result.plan.totals_after["macs"] <= limits["macs"]
        assert n_params(result.model) == result.plan.totals_after["params"] <= limits["params"]


def test_auto_scheme_picks_one_scheme_per_conv_and_beats_a_fixed_scheme(x28):
    model = make("vgg")
    table = LayerTable(model, x28)
    budget = Budget(macs=0.4, params=0.4)
    auto = compress(model, x28, budget, method="exact", scheme="auto", table=table)
    schemes = auto.plan.schemes
    assert set(schemes) == {l.name for l in table.compressible}
    assert all(schemes[l.name] in kinds.scheme_names() for l in table.compressible if l.kind == "conv2d")
    for fixed in kinds.scheme_names():
        if fixed == "prune":  # prunes 4 of vgg's convs and leaves the rest dense: 40% of the parameters is out of its reach
            with pytest.raises(InfeasibleBudgetError, match="smallest achievable"):
                compress(model, x28, budget, method="exact", scheme=fixed, table=table)
            continue
        other = compress(model, x28, budget, method="exact", scheme=fixed, table=table)
        assert auto.allocation.objective <= other.allocation.objective * (1 + 1e-4) + 1e-12
