import numpy as np
import pytest
import torch
from torch import nn

from lowrank import FactorizedConv2d, FactorizedLinear, LayerTable, rebuild
from lowrank.kinds import schemes_for
from lowrank.factorise.basis import weight_svd

from conftest import make
from helpers import counted_macs, n_params, rel_err

CONV_SCHEMES = list(schemes_for(nn.Conv2d(1, 1, 1)))  # channel, spatial, input, prune: every registered one

CONV_CONFIGS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(kernel_size=3, stride=2, padding=0, dilation=2),
    dict(kernel_size=(5, 3), stride=(1, 3), padding=(2, 0), dilation=(1, 2), bias=False),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=(2, 4), padding="same", dilation=(2, 1)),
    dict(kernel_size=3, padding="valid", stride=1),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(2, 1), padding_mode="circular", stride=2),
    dict(kernel_size=1),
]


def svd(layer, scheme):
    """(U, s, Vh) of a layer's weight under a scheme, as the layer table computes it."""
    return weight_svd(layer.weight, schemes_for(layer)[scheme])


@pytest.mark.parametrize("scheme", CONV_SCHEMES)
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=str)
def test_full_rank_factorised_conv_reproduces_dense(scheme, config):
    torch.manual_seed(0)
    dense = nn.Conv2d(5, 7, **config)
    x = torch.randn(2, 5, 13, 17)
    s_full = svd(dense, scheme)[1].numel()
    layer = FactorizedConv2d.from_dense(dense, s_full, scheme, svd(dense, scheme))
    assert rel_err(layer(x), dense(x)) < 1e-5


def test_full_rank_factorised_linear_reproduces_dense():
    torch.manual_seed(0)
    dense = nn.Linear(12, 9)
    x = torch.randn(3, 4, 12)
    layer = FactorizedLinear.from_dense(dense, 9, svd(dense, "channel"))
    assert rel_err(layer(x), dense(x)) < 1e-5


@pytest.mark.parametrize("scheme", CONV_SCHEMES)
def test_truncated_factorisation_is_the_best_rank_r_weight(scheme):
    torch.manual_seed(0)
    dense = nn.Conv2d(4, 6, 3, padding=1)
    u, s, vh = svd(dense, scheme)
    r = 3
    layer = FactorizedConv2d.from_dense(dense, r, scheme, (u, s, vh))
    x = torch.randn(1, 4, 9, 9)
    expected_w = (u[:, :r] * s[:r]) @ vh[:r]
    weight = schemes_for(dense)[scheme].weight(expected_w, dense.weight.shape)
    ref = nn.functional.conv2d(x, weight.float(), dense.bias, padding=1)
    assert rel_err(layer(x), ref) < 1e-5


@pytest.mark.parametrize("config", CONV_CONFIGS[:5], ids=str)
def test_rank_zero_conv_outputs_its_bias_at_the_right_size(config):
    dense = nn.Conv2d(3, 4, **config)
    x = torch.randn(2, 3, 11, 12)
    for scheme in CONV_SCHEMES:
        layer = FactorizedConv2d.from_dense(dense, 0, scheme, svd(dense, scheme))
        y = layer(x)
        assert y.shape == dense(x).shape
        bias = dense.bias if dense.bias is not None else torch.zeros(4)
        assert torch.allclose(y, bias[None, :, None, None].expand_as(y))


def test_rank_zero_linear_outputs_its_bias():
    dense = nn.Linear(5, 3)
    layer = FactorizedLinear.from_dense(dense, 0, svd(dense, "channel"))
    assert torch.allclose(layer(torch.randn(2, 5)), dense.bias.expand(2, 3))


@pytest.mark.parametrize("scheme", CONV_SCHEMES)
def test_random_ranks_match_independent_counts(arch, scheme, x28):
    model = make(arch)
    table = LayerTable(model, x28)
    rng = np.random.default_rng(0)
    for _ in range(5):
        ranks = {}
        for layer in table.compressible:
            full = layer.full_ranks[table.scheme_for(layer.name, scheme)]
            ranks[layer.name] = int(rng.integers(0, full + 1))
        new = rebuild(model, ranks, scheme, table=table)
        groups = {l.name: table.group(l.name, scheme) for l in table.compressible}
        macs = table.dense_base_cost()[0] + sum(groups[n].cost(r)[0] for n, r in ranks.items())
        params = table.dense_base_cost()[1] + sum(groups[n].cost(r)[1] for n, r in ranks.items())
        if scheme == "prune":  # the producers lose the pruned channels too: the prices are an upper bound
            assert counted_macs(new, x28) <= macs and n_params(new) <= params  # (exact counts: tests/test_prune.py)
        else:
            assert counted_macs(new, x28) == macs
            assert n_params(new) == params
        assert new(x28).shape == model(x28).shape


def test_rebuild_keeps_unprofitable_layers_dense_and_leaves_original_alone(x28):
    model = make("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = LayerTable(model, x28)
    new = rebuild(model, {"features.0": 6, "classifier.1": 10}, table=table)
    assert isinstance(new.features[0], nn.Conv2d)  # rank 6 of 6 costs more than dense
    assert isinstance(new.classifier[1], FactorizedLinear) and new.classifier[1].rank == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.classifier[1], nn.Linear)


def test_rebuild_rejects_bad_requests(x28):
    model = make("mobilenet")
    table = LayerTable(model, x28)
    with pytest.raises(ValueError, match="no layer named"):
        rebuild(model, {"nope": 1}, table=table)
    with pytest.raises(ValueError, match="depthwise"):
        rebuild(model, {"blocks.0.block.3": 1}, table=table)
    with pytest.raises(ValueError, match="outside"):
        rebuild(model, {"fc": 999}, table=table)
    with pytest.raises(ValueError, match="example_input"):
        rebuild(model, {"fc": 1})
    assert isinstance(rebuild(model, {"fc": 1}, example_input=x28).fc, FactorizedLinear)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["batched", "unbatched", "channels_last"])
def test_channel_scheme_pointwise_product_is_the_1x1_conv(bias, layout):
    """The 1x1 factor runs as a batched matrix product (faster on CPU); it must compute
    exactly what the stored 1x1 conv computes, for every input layout."""
    torch.manual_seed(0)
    dense = nn.Conv2d(5, 7, 3, padding=1, bias=bias)
    layer = FactorizedConv2d.from_dense(dense, 3, "channel", svd(dense, "channel"))
    x = torch.randn(4, 5, 9, 11)
    if layout == "unbatched":
        x = x[0]
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    as_conv = layer.second(layer.first(x))
    out = layer(x)
    assert out.shape == as_conv.shape
    assert torch.allclose(out, as_conv, atol=1e-6)
    if layout == "batched":  # the product path really ran: the conv is not called
        layer.second.forward = None
        assert torch.allclose(layer(x), as_conv, atol=1e-6)
