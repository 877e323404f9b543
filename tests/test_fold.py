"""BatchNorm folded into the layer before it (lowrank.util.fold), as deployed models run:
exact against the unfolded outputs, in originals and rebuilt models (a factorised layer
folds it into its second factor, or its bias at rank 0), used when timing and exporting."""
import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget
from lowrank.timing import LatencyTarget, deployed
from lowrank.util.fold import batchnorms, fold_batchnorm
from lowrank.zoo.archs import ARCHITECTURES


def _with_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from the identity, so a fold that is
    wrong shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["vgg", "resnet20", "mobilenet"])
def test_folding_is_exact_in_the_original_and_every_rebuilt_form(arch):
    torch.manual_seed(0)
    model = _with_statistics(ARCHITECTURES[arch]())
    x = torch.randn(16, 1, 28, 28)
    assert batchnorms(model) > 0
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 0 and batchnorms(model) > 0  # the caller's model is left as it was
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    for scheme, macs in (("channel", 0.5), ("spatial", 0.4), ("channel", 0.2)):
        rebuilt = lowrank.compress(model, x, Budget(macs=macs), method="uniform", scheme=scheme, min_rank=0).model
        folded = fold_batchnorm(rebuilt)
        assert batchnorms(folded) == 0, scheme
        torch.testing.assert_close(folded(x), rebuilt(x), rtol=1e-4, atol=1e-5)


def test_a_layer_at_rank_zero_folds_the_norm_into_its_bias():
    torch.manual_seed(0)
    model = _with_statistics(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.Flatten(), nn.Linear(8 * 6 * 6, 4), nn.BatchNorm1d(4)))
    x = torch.randn(5, 3, 8, 8)
    result = lowrank.compress(model, x, Budget(params=0.03), method="uniform", min_rank=0, basis="weight")
    assert any(row.rank == 0 for row in result.plan.rows)
    folded = fold_batchnorm(result.model)
    assert batchnorms(folded) == 0
    torch.testing.assert_close(folded(x), result.model(x), rtol=1e-4, atol=1e-5)


def test_a_norm_whose_input_is_read_elsewhere_stays():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            h = self.conv(x)
            return self.norm(h) + h  # h is read twice: folding the norm into conv would change the sum

    model = _with_statistics(Both())
    x = torch.randn(2, 3, 4, 4)
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 1
    torch.testing.assert_close(folded(x), model(x))


def test_an_untraceable_model_folds_its_sequential_pairs():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.body(x)
            return -self.body(x)

    model = _with_statistics(Branchy())
    x = torch.randn(2, 3, 6, 6)
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 0
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_timing_runs_the_folded_model_where_the_target_says_so():
    model = _with_statistics(ARCHITECTURES["resnet20"]())
    cpu = torch.device("cpu")
    assert batchnorms(deployed(model, cpu, LatencyTarget())) == 0  # on by default: timed as deployed
    assert batchnorms(deployed(model, cpu, LatencyTarget(fold_batchnorm=False))) == batchnorms(model) > 0
    assert LatencyTarget(fold_batchnorm=False).key(cpu) != LatencyTarget().key(cpu)  # cached layer timings are keyed by it


@pytest.mark.parametrize("fold", [True, False])
def test_layers_are_timed_with_the_bias_a_folded_norm_gives_them(fold):
    """A bias-free conv that a BatchNorm follows runs folded with a bias, and so does each of
    its factorised forms (at rank 0 it writes that bias): timed without one, the cheapest
    plan of resnet20-fmnist was predicted at 0.21 of the original and measured 0.37."""
    from lowrank.layers.record import record_layers
    from lowrank.resources.latency import Latency

    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    (layer,) = [l for l in record_layers(model, x) if isinstance(l.module, nn.Conv2d)]
    timed = []

    class Recording(Latency):
        def time_in_turn(self, jobs, device, target):
            timed.extend(m for m, _ in jobs)
            return [1.0] * len(jobs)

    target = LatencyTarget(fold_batchnorm=fold, batch=2, cache_dir="")
    scheme = lowrank.kinds.schemes_for(layer.module)["channel"]
    Recording().measure_factorised(layer, scheme, [0, 2], target)
    Recording().measure_together(model, x, [layer], target)
    layers = [m for m in timed if not isinstance(m, nn.Sequential) and not hasattr(m, "graph")]
    assert len(layers) == 4  # rank 0, rank 2, dense; dense beside the whole model
    for m in layers:
        bias = m.second.bias if getattr(m, "second", None) is not None else m.bias  # a rank > 0 form's, else the layer's own
        assert (bias is not None) == fold, m
    assert layer.module.bias is None  # the caller's layer is left as it was
    rank0 = layers[0]
    if fold:  # the rank-0 form writes its bias, in one pass
        rank0.bias.data.copy_(torch.arange(8.0))
        out = rank0(torch.randn(2, 3, 8, 8))
        assert out.shape == (2, 8, 6, 6) and out.is_contiguous()
        torch.testing.assert_close(out, torch.arange(8.0)[None, :, None, None].expand(2, 8, 6, 6))


def test_export_folds_and_still_matches_the_unfolded_model(tmp_path):
    model = _with_statistics(ARCHITECTURES["vgg"]())
    x = torch.randn(4, 1, 28, 28)
    rebuilt = lowrank.compress(model, x, Budget(macs=0.5), method="uniform").model
    from lowrank.export import export

    check = export(rebuilt, x, tmp_path / "m.pt2", "torch")
    assert check.folded == batchnorms(rebuilt) > 0 and "BatchNorm folded" in str(check)
    assert check.max_abs_diff < 1e-4
