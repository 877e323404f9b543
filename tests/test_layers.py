import torch
from torch import nn

from lowrank import LayerTable
from lowrank.layers.graph import severing

from conftest import make
from helpers import counted_macs, n_params


def test_dense_totals_agree_with_flop_counter(arch, x28):
    model = make(arch)
    table = LayerTable(model, x28)
    assert table.other_macs == 0  # every MAC of these nets belongs to a layer we count
    assert table.total_macs == counted_macs(model, x28)
    assert table.total_params == n_params(model)


def test_batch_and_sequence_dims_scale_linear_costs():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(4, 7, 6)  # batch 4, sequence 7
    table = LayerTable(model, x)
    assert table.total_macs == counted_macs(model, x) == 28 * (6 * 5 + 5 * 3)
    assert table.prices("macs").layers["0"].schemes["channel"].per_rank == 28 * (6 + 5)
    assert table.layers["0"].input_shape == (4, 7, 6) and table.layers["0"].output_shape == (4, 7, 5)


def test_which_layers_are_compressible_and_why_not():
    table = LayerTable(make("mobilenet"), torch.randn(1, 1, 28, 28))
    depthwise = table.layers["blocks.0.block.3"]
    assert not depthwise.compressible and "depthwise" in depthwise.reason
    assert "normalisation" in table.layers["stem.1"].reason
    assert table.layers["blocks.0.block.0"].compressible  # 1x1 conv, groups=1
    assert table.layers["fc"].compressible
    assert depthwise.macs > 0  # counted in the totals even though it stays dense


def test_conv_costs_per_scheme():
    conv = nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2))
    x = torch.randn(1, 3, 16, 20)
    table = LayerTable(nn.Sequential(conv), x)
    layer = table.layers["0"]
    ho, wo = layer.output_shape[-2:]
    macs, params = table.prices("macs").layers["0"].schemes, table.prices("params").layers["0"].schemes
    assert layer.matrix_shape("channel") == (8, 3 * 15) and layer.full_ranks["channel"] == 8
    assert macs["channel"].per_rank == ho * wo * (3 * 15 + 8) and params["channel"].per_rank == 3 * 15 + 8
    assert layer.matrix_shape("spatial") == (3 * 3, 8 * 5) and layer.full_ranks["spatial"] == 9
    assert macs["spatial"].per_rank == ho * 20 * 3 * 3 + ho * wo * 8 * 5 and params["spatial"].per_rank == 3 * 3 + 8 * 5
    assert params["channel"].fixed == 8  # the bias, paid at any rank


class Attention(nn.Module):
    """Functional matmuls outside layers, plus an nn.MultiheadAttention whose out_proj is never called."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2), -1) @ v
        return self.mha(att, att, att, need_weights=False)[0]


def test_functional_matmuls_are_a_fixed_cost_and_unreached_linears_stay_dense():
    model = Attention().eval()
    x = torch.randn(1, 5, 16)
    table = LayerTable(model, x)
    assert table.total_macs == counted_macs(model, x)
    assert table.other_macs > 0
    assert not table.layers["mha.out_proj"].compressible
    assert "never called" in table.layers["mha.out_proj"].reason
    assert "MultiheadAttention" in table.layers["mha"].reason
    assert [l.name for l in table.compressible] == ["qkv"]


def test_graph_from_fx_knows_which_layers_every_path_passes():
    model = make("resnet20")
    table = LayerTable(model, torch.randn(1, 1, 28, 28))
    g = table.graph
    assert g.graph["source"] == "torch.fx"
    assert severing(g, ["stem.0"]) == ["stem.0"] and severing(g, ["fc"]) == ["fc"]
    assert severing(g, ["stages.0.conv1", "stages.0.conv2"]) == []  # the residual path goes around the block


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = -x
        return self.b(self.a(x))


def test_graph_falls_back_to_hook_order():
    table = LayerTable(Untraceable(), torch.randn(3, 4))
    assert table.graph.graph["source"].startswith("hook order")
    assert list(table.graph.edges) == [("a", "b")]


def test_svd_is_cached_and_float64():
    table = LayerTable(make("lenet5"), torch.randn(1, 1, 28, 28))
    first = table.svd("features.3", "spatial")
    assert table.svd("features.3", "spatial") is first
    assert first[1].dtype == torch.float64
    assert first[1].numel() == min(6 * 5, 16 * 5)


def test_summary_lists_every_layer():
    table = LayerTable(make("mobilenet"), torch.randn(1, 1, 28, 28))
    text = table.summary()
    for name in table.layers:
        assert name in text


def test_include_restricts_the_compressible_layers():
    model = make("lenet5")
    table = LayerTable(model, torch.randn(1, 1, 28, 28), include=["classifier."])
    assert [l.name for l in table.compressible] == ["classifier.1", "classifier.3", "classifier.5"]
    assert "excluded" in table.layers["features.0"].reason
    assert table.total_macs == counted_macs(model, torch.randn(1, 1, 28, 28))
    only_last = LayerTable(model, torch.randn(1, 1, 28, 28), include=lambda name: name == "classifier.5")
    assert [l.name for l in only_last.compressible] == ["classifier.5"]
