"""The data-aware (activation) basis: exact at full rank, optimal for output error on the
calibration data, safe on rank-deficient inputs, and usable by every method."""
import pytest
import torch
from torch import nn

import lowrank
import solvers
from lowrank import Budget, LayerTable
from lowrank.experiment.runner import RunSpec
from lowrank.kinds import schemes_for
from lowrank.factorise.basis import collect_moments, weight_svd, whitened_svd

from helpers import counted_macs, n_params


def _layers_and_inputs():
    torch.manual_seed(0)
    mix = torch.randn(6, 6) @ torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.3, 0.1, 0.03]))  # correlated inputs
    x2d = torch.einsum("nchw,cd->ndhw", torch.randn(64, 6, 10, 10), mix)
    return [
        (nn.Linear(6, 8), torch.randn(256, 6) @ mix),
        (nn.Conv2d(6, 8, 3, padding=1), x2d),
        (nn.Conv2d(6, 8, (3, 5), stride=(2, 1), padding=(1, 2), padding_mode="reflect"), x2d),
        (nn.Conv1d(6, 8, 3, padding=1), torch.einsum("ncl,cd->ndl", torch.randn(64, 6, 20), mix)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_whitened_factors_rebuild_the_weight_and_truncate_optimally_for_the_output(index):
    layer, x = _layers_and_inputs()[index]
    for scheme in schemes_for(layer).values():
        v = scheme.input_vectors(layer, x).double()
        moment = v.T @ v / v.shape[0]
        u, s, vh = whitened_svd(layer.weight, scheme, moment, ridge=1e-9)
        matrix = scheme.matrix(layer.weight.detach()).double()
        assert torch.allclose(u @ torch.diag(s) @ vh, matrix, atol=1e-6)  # full rank: the weight itself
        wu, ws, wvh = weight_svd(layer.weight, scheme)
        for r in range(1, len(s)):
            def output_error(a, b, c):
                approx = a[:, :r] @ torch.diag(b[:r]) @ c[:r]
                diff = approx - matrix
                return float(((v @ diff.T) if scheme.input_side == "cols" else (v @ diff)).norm())
            # the truncation minimises the error of the layer's output on the data, so it is never worse
            assert output_error(u, s, vh) <= output_error(wu, ws, wvh) * (1 + 1e-6), (scheme.name, r)


def test_rank_deficient_inputs_neither_crash_nor_produce_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10)).eval()
    with torch.no_grad():
        model[0].bias[:15] = -100.0  # half the hidden units never fire: their inputs to layer 2 are all zero
    x = torch.randn(5, 40)  # fewer samples than layer 1's 40 input dimensions
    table = LayerTable(model, x[:1])
    table.use_basis("activation", [(x, None)])
    for name in ("0", "2"):
        u, s, vh = table.svd(name, "channel")
        assert all(torch.isfinite(t).all() for t in (u, s, vh))
        w = model.get_submodule(name).weight.double()
        assert torch.allclose(u @ torch.diag(s) @ vh, w, atol=1e-6)
    moments = collect_moments(model, table.compressible, [(x, None)])
    assert moments[("2", "channel")][0][:15, :15].abs().max() == 0  # the dead inputs really are dead


@pytest.mark.parametrize("method", solvers.methods())
def test_every_method_compresses_in_the_activation_basis_within_budget(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12 * 8 * 8, 10)).eval()
    x, y = torch.randn(48, 3, 10, 10), torch.randint(0, 10, (48,))
    result = lowrank.compress(model, (x, y), Budget(macs=0.5, params=0.5), method=method, scheme="auto", basis="activation")
    assert result.table.basis.kind == "activation"
    limits = Budget(macs=0.5, params=0.5).limits(result.table.totals)
    assert counted_macs(result.model, x[:1]) <= limits["macs"] and n_params(result.model) <= limits["params"]
    masked = result.table.masked_model("channel")
    with torch.no_grad():
        assert torch.allclose(masked(x, masked.full_masks(requires_grad=False)), model(x), atol=1e-4)


def test_activation_basis_beats_the_weight_basis_on_a_trained_model():
    pytest.importorskip("sklearn")
    from lowrank.util.batches import sample_batches
    from lowrank.zoo import get

    entry = get("lenet5-digits")
    model = entry.load()
    calib = sample_batches(entry.splits.calib, 128, 0)
    acc = {b: entry.evaluate(lowrank.compress(model, calib, Budget(macs=0.2), method="exact", basis=b, refit=False).model)
           for b in ("weight", "activation")}
    assert acc["activation"] > acc["weight"] + 0.03, acc  # measured here: 0.857 -> 0.920 (with the refit: 0.947 -> 0.950)


def test_weight_basis_runs_keep_the_keys_they_were_stored_under():
    """Adding ``basis`` (and resources as a registry) must not re-key runs already in a store:
    the spec and key below are a row written by the code before either existed."""
    old_spec = {"model": "lenet5-fmnist", "method": "exact", "budget_macs": 0.3, "budget_params": None, "scheme": "channel",
                "seed": 0, "calib_samples": None, "select_samples": None, "eval_samples": 2000, "finetune_epochs": 0,
                "finetune_samples": None, "kd": 0.0}
    assert RunSpec.from_dict(old_spec).key == "479347f845d3d9f78e4fea2a"
    assert RunSpec.from_dict({**old_spec, "basis": "activation", "calib_samples": 128}).key != "479347f845d3d9f78e4fea2a"


@pytest.mark.parametrize("index", [1, 2])
def test_conv_moments_summed_over_batch_slices_equal_the_whole_batch(index):
    """Convs unfold a few samples at a time (bounded memory); the moment is the same sum."""
    from lowrank.kinds import conv2d

    layer, x = _layers_and_inputs()[index]
    assert len(x) > conv2d.WINDOW_BATCH
    for scheme in schemes_for(layer).values():
        v = scheme.input_vectors(layer, x).double()
        total, n, squares = scheme.input_moment(layer, x)
        assert n == v.shape[0] and squares == pytest.approx(float((v * v).sum()))
        if scheme.selects:  # prune: the moment of [v, 1], for each channel's mean beside its square
            v = torch.cat([v, torch.ones(len(v), 1, dtype=v.dtype)], dim=1)
        torch.testing.assert_close(total, v.T @ v, rtol=1e-10, atol=1e-8)
