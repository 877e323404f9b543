"""A plan that holds its budget by zeroing a layer every input-to-output path passes through
leaves a model that predicts a constant: compress must say so (lowrank.layers.graph.severing)."""
import warnings

import pytest
import torch

import lowrank
from lowrank import Budget
from lowrank.layers.graph import severing
from lowrank.zoo import LeNet5
from lowrank.zoo.archs import ResNet


def test_a_zeroed_layer_severs_a_chain_but_not_a_residual_branch():
    chain = lowrank.LayerTable(LeNet5().eval(), torch.randn(1, 1, 28, 28)).graph
    assert severing(chain, ["features.0"]) == ["features.0"]
    assert severing(chain, ["classifier.5", "features.3"]) == ["classifier.5", "features.3"]  # each alone cuts
    assert severing(chain, []) == []
    resnet = lowrank.LayerTable(ResNet(blocks=1).eval(), torch.randn(1, 1, 28, 28)).graph
    assert severing(resnet, ["stages.0.conv1"]) == []  # the identity shortcut carries the input past it
    assert severing(resnet, ["stages.1.conv1"]) == []  # the projection shortcut does too
    assert severing(resnet, ["stages.1.conv1", "stages.1.shortcut.0"]) == ["stages.1.conv1", "stages.1.shortcut.0"]


def _lenet_and_data():
    torch.manual_seed(0)
    return LeNet5().eval(), [(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))]


def test_compress_warns_when_the_plan_cuts_the_input_off():
    model, calib = _lenet_and_data()
    with pytest.warns(lowrank.SeveredModelWarning, match="no longer depends on its input"):
        result = lowrank.compress(model, calib, Budget(macs=0.005), method="exact", basis="weight")
    assert result.severed_by and all(result.plan.ranks[n] == 0 for n in result.severed_by)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out = result.model(x)
    assert torch.allclose(out, out[:1].expand_as(out))  # the same prediction for every input


def test_a_working_plan_is_not_flagged():
    model, calib = _lenet_and_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", lowrank.SeveredModelWarning)
        result = lowrank.compress(model, calib, Budget(macs=0.5), method="exact", basis="weight")
    assert result.severed_by == [] and min(result.plan.ranks.values()) > 0


def test_cobla_never_prefers_a_cut_model_on_the_selection_split():
    """Scoring gives an allocation that severs the input an infinite loss and full error, so
    solvers.selection.choose keeps a live candidate whenever there is one."""
    from lowrank.needs.network_loss import NetworkLoss
    from solvers.selection import choose

    model, calib = _lenet_and_data()
    table = lowrank.LayerTable(model, calib[0][0][:1])
    problem = table.problem(Budget(macs=0.5), "channel")
    full = [g.full_rank for g in problem.groups]
    active = [True] * len(full)
    cut = [0] + full[1:]  # the first conv at rank 0: a constant model
    live = [max(1, r // 2) for r in full]
    scores = NetworkLoss(table.model, table.bases, problem, calib, graph=table.graph).score_allocations([(cut, active), (live, active)])
    assert scores[0].loss == float("inf") and scores[0].error == 1.0
    assert scores[1].loss < float("inf") and scores[1].error < 1.0
    assert choose(scores) == 1
