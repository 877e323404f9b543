"""Channel pruning as one more choice per layer (scheme ``prune``): which convs can be pruned
(torch-pruning's DependencyGraph groups), the physically pruned rebuild against the masked
model, exact counts on the pruned model, and the messages where pruning is unavailable."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget, LayerTable, rebuild
from lowrank.kinds.prune import PrunedConv2d

from helpers import counted_macs, n_params

pytest.importorskip("torch_pruning", reason="torch-pruning (the channel groups) not installed")


class Block(nn.Module):
    """A residual block: conv1's input is the residual stream, conv2's is conv1's alone."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 8, 3, padding=1), Block(8), nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.stem(x))).mean((2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 4, 1), nn.Conv2d(10, 8, 3, padding=1)

    def forward(self, x):
        return self.c(torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1))


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def _settled(model):
    """BatchNorm statistics that are not the identity, so dropping a channel shows in the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_only_a_conv_whose_input_channels_are_its_own_can_be_pruned():
    torch.manual_seed(0)
    table = LayerTable(Residual().eval(), torch.randn(1, 3, 8, 8))
    layers = table.layers
    assert "prune" in layers["block.conv2"].schemes
    assert layers["block.conv2"].pruning.producer == "block.conv1" and layers["block.conv2"].pruning.norms == ("block.bn1",)
    assert "prune" not in layers["block.conv1"].schemes and "tied to" in layers["block.conv1"].unprunable  # the residual add
    assert "model's input" in layers["stem"].unprunable
    concat = LayerTable(Concat().eval(), torch.randn(1, 3, 8, 8)).layers["c"]
    assert "prune" not in concat.schemes and "'a'" in concat.unprunable and "'b'" in concat.unprunable
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              nn.ReLU(), nn.Conv2d(8, 6, 1), nn.Conv2d(6, 6, 3, groups=2)).eval()
    table = LayerTable(depthwise, torch.randn(1, 3, 8, 8))
    assert "'3'" in table.layers["5"].unprunable and "tied to" in table.layers["5"].unprunable  # the depthwise conv between
    assert not table.layers["6"].compressible and "grouped" in table.layers["6"].reason


@pytest.mark.parametrize("basis", ["weight", "activation"])
@pytest.mark.parametrize("producer_scheme", ["dense", "channel", "spatial", "input", "prune"])
def test_the_pruned_model_equals_the_masked_model_and_is_physically_smaller(producer_scheme, basis):
    model = _settled(_chain())
    x = torch.randn(4, 3, 12, 12)
    table = LayerTable(model, x[:1])
    table.use_basis(basis, [(torch.randn(16, 3, 12, 12), None)])  # activation: dropped channels' means go to the bias
    ranks, schemes = {"3": 7, "7": 5}, {"3": "prune", "7": "prune"}
    if producer_scheme != "dense":  # the first conv's outputs are pruned by the second; it may itself be factorised
        layer = "0" if producer_scheme != "prune" else None
        if layer:
            ranks[layer], schemes[layer] = 2, producer_scheme
    new = rebuild(model, ranks, schemes, table=table)
    assert not any(isinstance(m, PrunedConv2d) for m in new.modules())  # every selection folded away
    assert new[0].out_channels == 7 and new[1].num_features == 7 and new[1].running_mean.numel() == 7
    assert (new[3].in_channels, new[3].out_channels, new[4].num_features, new[7].in_channels) == (7, 5, 5, 5)
    masked = table.masked_model(schemes, names=list(ranks))
    masks = {n: (torch.arange(masked.factors[n][2].numel()) < r).double() for n, r in ranks.items()}
    with torch.no_grad():
        assert torch.allclose(new(x), masked(x, masks).to(new(x).dtype), atol=1e-5)
        if basis == "activation":  # the compensation is there, and it is what makes them equal
            assert "3" in masked.shifts and float(masked.shifts["3"][1][7:].abs().sum()) > 0
    assert n_params(new) < n_params(model) and counted_macs(new, x[:1]) < counted_macs(model, x[:1])


def test_a_pruning_plan_is_counted_exactly_and_holds_its_budget():
    model = _settled(_chain())
    x = torch.randn(64, 3, 12, 12)
    for scheme in ("prune", "auto"):
        for macs in (0.5, 0.8):
            result = lowrank.compress(model, x, Budget(macs=macs), method="exact", scheme=scheme)
            counted = counted_macs(result.model, x[:1]), n_params(result.model)
            assert counted == (result.plan.totals_after["macs"], result.plan.totals_after["params"])
            assert counted[0] <= macs * counted_macs(model, x[:1])
    result = lowrank.compress(model, x, Budget(macs=0.7), method="exact", scheme="prune")
    assert {r.scheme for r in result.plan.rows if not r.dense} == {"prune"}  # prune prunes only: the others stay dense
    assert "output channels the next layer's pruning keeps" in str(result.plan)
    # the prices leave the producers' savings out (the first plan here counts 49.3% of the MACs);
    # planning again for more spends them
    assert result.plan.info["attempts"] > 1 and result.macs.rebuilt > 0.55 * result.macs.original, result.plan.info
    assert result.plan.info["plans_made"] >= result.plan.info["attempts"]


def test_a_budget_below_every_pruning_plan_is_refused_with_the_least_and_why():
    model = _settled(_chain())
    x = torch.randn(64, 3, 12, 12)
    with pytest.raises(lowrank.InfeasibleBudgetError, match=r"smallest achievable [\d.]+%.*every pruned conv at rank 0"):
        lowrank.compress(model, x, Budget(macs=0.05), method="exact", scheme="prune")


def test_the_pruned_model_exports_and_reloads(tmp_path):
    from lowrank.export import export

    model = _settled(_chain())
    x = torch.randn(2, 3, 12, 12)
    result = lowrank.compress(model, x, Budget(macs=0.6), method="exact", scheme="prune")
    for fmt in ["torch"] + (["onnx"] if _has("onnxruntime") and _has("onnxscript") else []):
        check = export(result.model, x, tmp_path / f"pruned.{fmt}", fmt)
        assert check.max_abs_diff < 1e-4, check


def test_pruning_unavailable_is_said_in_one_line(monkeypatch):
    import torch_pruning as tp

    def refuse(self, *args, **kwargs):
        raise RuntimeError("cannot follow this graph")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", refuse)
    model, x = _chain(), torch.randn(8, 3, 12, 12)
    with pytest.raises(ValueError, match="pruning is unavailable for this model: torch-pruning could not trace"):
        lowrank.compress(model, x, Budget(macs=0.6), method="exact", scheme="prune")
    with pytest.warns(UserWarning, match="chooses among the factorisations only"):
        result = lowrank.compress(model, x, Budget(macs=0.6), method="exact", scheme="auto")
    assert result.held and "prune" not in {r.scheme for r in result.plan.rows}


def test_a_model_with_nothing_to_prune_says_why():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with pytest.raises(ValueError, match="no layer of the model can be pruned"):
        lowrank.compress(mlp, torch.randn(8, 8), Budget(macs=0.6), method="exact", scheme="prune")
    with pytest.raises(ValueError, match="'0'.*model's input"):
        lowrank.compress(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), torch.randn(2, 3, 8, 8), Budget(macs=0.6),
                         method="exact", scheme="prune")


def test_channels_are_ranked_by_what_they_carry_on_the_data():
    model = _chain()
    x = torch.randn(32, 3, 12, 12)
    table = LayerTable(model, x[:1])
    with torch.no_grad():  # channel 5 of the second conv's input is silenced by its BatchNorm: it carries nothing
        model[1].weight[5], model[1].bias[5] = 0.0, -10.0
    table = LayerTable(model, x[:1])
    table.use_basis("activation", [(x, None)])
    u, s, vh = table.svd("3", "prune")
    assert int(u[:, -1].argmax()) == 5 and float(s[-1]) < 0.2 * float(s[-2])  # only the ridge keeps it a value
    assert torch.allclose((u * s) @ vh, table.layers["3"].schemes["prune"].matrix(model[3].weight).double(), atol=1e-10)
    assert np.all(np.diff(s.numpy()) <= 1e-12)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_pruning_plan_aims_higher_only_with_room_beyond_the_timing_noise():
    """Raising after a pruning plan: not where the room under a timed limit is within the
    measured noise (a higher aim could not be told from a miss); COBLA gets fewer raises."""
    from types import SimpleNamespace

    from lowrank.compress import RAISES, _Raising
    from lowrank.resources import Check

    budget = Budget(latency=0.6)
    pruned = (None, SimpleNamespace(info={"pruned_outputs": "conv 4/8"}), None, None)

    def timed(rebuilt, noise):
        return {"latency": Check("latency", 100.0, rebuilt, 60.0, noise=noise)}

    assert _Raising().start(pruned, timed(55.0, 1.0), budget, {})  # 5 of room, noise 1: aim higher
    assert not _Raising().start(pruned, timed(55.0, 6.0), budget, {})  # room within the noise: stop
    assert not _Raising().start((None, SimpleNamespace(info={}), None, None), timed(40.0, 1.0), budget, {})  # nothing pruned
    raising = _Raising(tries=4)
    assert raising.start(pruned, timed(50.0, 1.0), budget, {})
    second = (None, SimpleNamespace(info={"pruned_outputs": "conv 5/8"}), None, None)
    assert not raising.tried(second, timed(59.5, 1.0), budget) and raising.best is second  # held, within noise: kept, stop
    assert RAISES["cobla"] < 4
