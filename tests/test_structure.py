"""The house rules the layout promises: solvers/ stays free of torch and of lowrank, and the
registries are what callers consult (a new resource, method or scheme is one file)."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import lowrank
import solvers
from lowrank import Budget, LayerTable, kinds, resources


def test_importing_solvers_imports_neither_torch_nor_lowrank():
    code = "import sys, solvers; bad = [m for m in ('torch', 'lowrank') if m in sys.modules]; print(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"solvers imported {out.stdout.strip()}"


def test_every_method_declares_its_need():
    assert {m: solvers.method(m).needs for m in solvers.methods()} == {
        "alds": solvers.Need.NOTHING, "energy": solvers.Need.NOTHING, "uniform": solvers.Need.NOTHING,
        "zhang": solvers.Need.NOTHING, "exact": solvers.Need.SEPARABLE, "milp": solvers.Need.SEPARABLE,
        "cobla": solvers.Need.NETWORK_LOSS, "sensitivity": solvers.Need.SENSITIVITY,
    }
    assert [m for m in solvers.methods() if solvers.method(m).uses_data] == ["cobla", "sensitivity"]
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        solvers.method("nope")


def test_budget_is_a_mapping_over_registered_resources():
    b = Budget(macs=0.5, params_abs=1000)
    assert dict(b) == {"macs": 0.5, "params": 1000} and b.macs == 0.5 and b.params is None and b.params_abs == 1000
    assert Budget({"macs": 0.5}) == Budget(macs=0.5, params=None)
    assert b.limits({"macs": 200, "params": 5000}) == {"macs": 100.0, "params": 1000.0}
    assert Budget(macs=0.5).limits({"macs": 200, "params": 5000})["params"] == float("inf")
    with pytest.raises(ValueError, match="unknown resource 'flops'.*macs, params"):
        Budget(flops=0.5)
    with pytest.raises(ValueError, match="give at least one"):
        Budget(macs=None)


class _Weights(resources.Resource):
    """A throwaway resource for the test: weight-matrix elements only (no biases, no norms)."""

    name, label, axis = "test_weights", "weights", "weight budget"

    def count(self, model, example_input):
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))

    def dense_cost(self, layer):
        return layer.module.weight.numel() if isinstance(layer.module, (nn.Linear, nn.Conv2d)) else 0

    def rank_cost(self, layer, scheme):
        return scheme.params_per_rank(layer.weight_shape), 0


@pytest.fixture
def weights_resource(monkeypatch):
    res = _Weights()
    monkeypatch.setitem(resources._RESOURCES, res.name, res)
    return res


def test_a_registered_resource_flows_through_budget_problem_and_plan(weights_resource, monkeypatch):
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10)).eval()
    x = torch.randn(8, 20)
    result = lowrank.compress(model, x, Budget(test_weights=0.4), method="exact")
    assert result.allocation.problem.resources == ("macs", "params", "test_weights")
    assert result.plan.totals_before["test_weights"] == 20 * 30 + 30 * 10
    kept = weights_resource.count(result.model, x)  # counted on the rebuilt model, not planned
    assert kept == result.plan.totals_after["test_weights"] <= 0.4 * 900
    assert "weights before" in result.plan.table()
    # an expensive resource is priced only when a budget names it
    monkeypatch.setattr(weights_resource, "cheap", False)
    assert resources.priced() == ("macs", "params")
    assert resources.priced(["test_weights"]) == ("macs", "params", "test_weights")


def test_layer_schemes_are_looked_up_not_branched_on():
    conv, depthwise, linear = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Linear(4, 5)
    assert list(kinds.schemes_for(conv)) == ["channel", "spatial"]
    assert list(kinds.schemes_for(linear)) == ["channel"]
    assert kinds.schemes_for(depthwise) == {}
    assert kinds.scheme_names() == ("channel", "spatial")
    for scheme in kinds.schemes_for(conv).values():  # weight -> matrix -> weight is the identity
        assert torch.equal(scheme.weight(scheme.matrix(conv.weight), conv.weight.shape), conv.weight)
    table = LayerTable(nn.Sequential(conv, nn.ReLU(), depthwise), torch.randn(1, 3, 12, 12))
    assert [l.name for l in table.compressible] == ["0"]
    assert "depthwise" in table.layers["2"].reason


def test_old_module_paths_still_import():
    from lowrank.layers import LayerTable as old_table, call_model  # noqa: F401
    from lowrank.objective import NetworkLoss  # noqa: F401
    from lowrank.runner import RunSpec  # noqa: F401
    from lowrank.sweep import SweepConfig  # noqa: F401
    from solvers.knapsack import exact  # noqa: F401
    from solvers.sqp import cobla  # noqa: F401

    assert old_table is LayerTable
    assert callable(lowrank.finetune) and callable(lowrank.evaluate)
