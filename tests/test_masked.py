import torch

from lowrank import LayerTable, rebuild

from conftest import make
from helpers import rel_err


def test_all_ones_masks_reproduce_the_model_and_every_mask_gets_a_gradient(arch, x28):
    model = make(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = LayerTable(model, x28)
    for scheme in ("channel", "spatial"):
        masked = table.masked_model(scheme)
        masks = masked.full_masks()
        x = torch.randn(4, 1, 28, 28)
        out = masked(x, masks)
        assert rel_err(out, model(x)) < 1e-5
        out.square().mean().backward()
        for name, m in masks.items():
            assert m.grad is not None and m.grad.shape == m.shape, name
            assert torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0, name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prefix_masks_equal_the_rebuilt_model(x28):
    model = make("vgg")
    table = LayerTable(model, x28)
    ranks = {l.name: max(1, l.full_ranks[table.scheme_for(l.name, "spatial")] // 4) for l in table.compressible}
    masked = table.masked_model("spatial")
    masks = {n: (torch.arange(m.numel()) < ranks[n]).double() for n, m in masked.full_masks(False).items()}
    rebuilt = rebuild(model, ranks, "spatial", table=table)
    x = torch.randn(2, 1, 28, 28)
    assert rel_err(masked(x, masks), rebuilt(x)) < 1e-4
