"""The models and inputs users really bring: models in train mode, broken weights, wrong
calibration shapes, Conv1d and Hugging Face Conv1D layers, tied weights, fp16 / bf16."""
import io

import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget, LayerTable, rebuild
from lowrank.kinds import schemes_for
from lowrank.factorise.basis import weight_svd
from lowrank.util.inputs import ModelCallError

from helpers import counted_macs, n_params, rel_err


def bn_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def snapshot(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


# --- the original model is never touched ------------------------------------------------------
@pytest.mark.parametrize("method", ["cobla", "sensitivity", "exact"])
def test_a_model_in_train_mode_comes_back_byte_for_byte_unchanged(method):
    model = bn_net().train()
    model[1].eval()  # mixed flags must survive too
    flags = {n: m.training for n, m in model.named_modules()}
    before = snapshot(model)
    torch.manual_seed(1)
    calib = (torch.randn(32, 3, 12, 12), torch.randint(0, 10, (32,)))
    result = lowrank.compress(model, calib, Budget(macs=0.5), method=method)
    assert snapshot(model) == before  # BatchNorm running stats and num_batches_tracked included
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(p.grad is None for p in model.parameters()), "gradients were accumulated on the user's parameters"
    assert result.model.training and not result.model[1].training  # the rebuilt model keeps the user's modes


def test_the_loss_cobla_optimises_is_the_eval_mode_loss():
    model = bn_net().train()
    torch.manual_seed(1)
    x = torch.randn(16, 3, 12, 12)
    table = LayerTable(model, x[:1])
    masked = table.masked_model()
    out = masked(x, masked.full_masks(requires_grad=False))
    with torch.no_grad():
        expected = model.eval()(x)
    assert torch.allclose(out, expected, atol=1e-5)  # running statistics, not batch statistics


# --- broken weights and wrong inputs: clear errors ----------------------------------------------
def test_nan_and_infinite_weights_are_refused_naming_every_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 10)).eval()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
        model[3].weight[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinite values in the model's '0.weight' \(1 NaN, 0 infinite of 216\), '3.weight' \(0 NaN, 1 infinite"):
        lowrank.compress(model, torch.randn(4, 3, 12, 12), Budget(macs=0.5), method="exact")


def test_a_calibration_input_of_the_wrong_shape_names_the_shape_and_the_error():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 10 * 10, 10)).eval()
    with pytest.raises(ModelCallError, match=r"running the model on the .* failed: input tensor \(1, 1, 12, 12\) float32; "
                                             r"the model raised RuntimeError: .*3 channels"):
        lowrank.compress(model, torch.randn(4, 1, 12, 12), Budget(macs=0.5), method="exact")
    # a later batch of the wrong shape (the first one is fine) fails just as clearly
    for y in (None, torch.randint(0, 10, (4,))):  # with targets, the masked pass is the first to run it
        batches = [(torch.randn(4, 3, 12, 12), y), (torch.randn(4, 3, 9, 9), y), (torch.randn(4, 3, 12, 12), y)]
        with pytest.raises(ModelCallError, match=r"input tensor \(4, 3, 9, 9\) float32"):
            lowrank.compress(model, batches, Budget(macs=0.5), method="cobla")


# --- Conv1d -------------------------------------------------------------------------------------
CONV1D_CONFIGS = [dict(kernel_size=5, padding=2), dict(kernel_size=3, stride=2), dict(kernel_size=3, dilation=2, padding="same"),
                  dict(kernel_size=4, padding="valid", bias=False), dict(kernel_size=3, padding=1, padding_mode="reflect")]


@pytest.mark.parametrize("config", CONV1D_CONFIGS, ids=str)
def test_conv1d_factorises_exactly_and_costs_what_flopcounter_counts(config):
    torch.manual_seed(0)
    dense = nn.Conv1d(6, 10, **config)
    x = torch.randn(3, 6, 33)
    scheme = schemes_for(dense)["channel"]
    factors = weight_svd(dense.weight, scheme)
    full = scheme.factorized(dense, 10, factors)
    assert rel_err(full(x), dense(x)) < 1e-5
    zero = scheme.factorized(dense, 0, factors)
    bias = dense.bias if dense.bias is not None else torch.zeros(10)
    assert zero(x).shape == dense(x).shape and torch.allclose(zero(x), bias[None, :, None].expand_as(zero(x)))
    model = nn.Sequential(dense, nn.ReLU(), nn.Conv1d(10, 10, 3)).eval()
    table = LayerTable(model, x[:1])
    assert [l.kind for l in table.compressible] == ["conv1d", "conv1d"]
    assert table.total_macs == counted_macs(model, x[:1])
    for r0, r2 in ((0, 3), (2, 5), (4, 1)):
        small = rebuild(model, {"0": r0, "2": r2}, table=table)
        groups = {n: table.group(n, "channel") for n in ("0", "2")}
        base = table.dense_base_cost()
        assert counted_macs(small, x[:1]) == base[0] + groups["0"].cost(r0)[0] + groups["2"].cost(r2)[0]
        assert n_params(small) == base[1] + groups["0"].cost(r0)[1] + groups["2"].cost(r2)[1]


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 layer, as transformers.pytorch_utils.Conv1D defines it: y = x W + b, W (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def test_hugging_face_conv1d_is_a_transposed_linear_with_exact_costs():
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(48, 16), nn.GELU(), Conv1D(16, 48)).eval()
    x = torch.randn(2, 7, 16)  # (batch, tokens, features)
    table = LayerTable(model, x[:1])
    assert [l.kind for l in table.compressible] == ["hf_conv1d", "hf_conv1d"]
    assert table.total_macs == counted_macs(model, x[:1])
    for ranks in ({"0": 0, "2": 16}, {"0": 5, "2": 3}, {"0": 16, "2": 16}):
        small = rebuild(model, ranks, table=table)
        base = table.dense_base_cost()
        groups = {n: table.group(n, "channel") for n in ranks}
        assert counted_macs(small, x[:1]) == base[0] + sum(groups[n].cost(r)[0] for n, r in ranks.items())
        assert n_params(small) == base[1] + sum(groups[n].cost(r)[1] for n, r in ranks.items())
    scheme = schemes_for(model[0])["channel"]
    layer = scheme.factorized(model[0], 16, weight_svd(model[0].weight, scheme))
    assert rel_err(layer(x), model[0](x)) < 1e-5
    result = lowrank.compress(model, x, Budget(macs=0.4), method="cobla")
    assert counted_macs(result.model, x[:1]) <= 0.4 * table.total_macs


def test_a_layer_whose_weight_is_tied_stays_dense_and_says_why():
    emb = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = emb.weight

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.mid, self.head = emb, nn.Linear(16, 16), head

        def forward(self, ids):
            return self.head(torch.relu(self.mid(self.emb(ids))))

    model = Tied().eval()
    table = LayerTable(model, torch.randint(0, 50, (1, 8)))
    assert [l.name for l in table.compressible] == ["mid"]
    assert "tied to 'emb'" in table.layers["head"].reason
    result = lowrank.compress(model, torch.randint(0, 50, (4, 8)), Budget(params=0.95), method="exact")
    assert n_params(result.model) <= 0.95 * n_params(model)


# --- half precision -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("method", ["exact", "cobla"])
def test_half_precision_models_keep_their_dtype_and_lose_nothing_at_full_rank(dtype, method):
    from lowrank.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval().to(dtype)
    x, y = torch.randn(16, 1, 28, 28).to(dtype), torch.randint(0, 10, (16,))
    result = lowrank.compress(model, (x, y), Budget(macs=0.5), method=method)
    assert {p.dtype for p in result.model.parameters()} == {dtype} and result.model(x).dtype == dtype
    table = result.table
    assert table.svd("features.0", "channel")[1].dtype == torch.float64  # the SVD runs in float64
    full = rebuild(model, {l.name: l.full_ranks["channel"] for l in table.compressible}, table=table)
    assert torch.equal(full(x), model(x))  # full rank: the exact dense layers, no loss at all
    # a layer factorised at full rank (not the dense fallback) matches its dense layer to the dtype's precision
    conv = model.features[3]
    scheme = schemes_for(conv)["channel"]
    layer = scheme.factorized(conv, table.layers["features.3"].full_ranks["channel"], table.svd("features.3", "channel"))
    h = torch.randn(4, 6, 14, 14).to(dtype)
    assert rel_err(layer(h).float(), conv(h).float()) < 10 * torch.finfo(dtype).eps
