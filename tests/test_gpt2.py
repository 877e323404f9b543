"""A GPT-2-shaped model built from transformers' own classes with a random config (no
download): its Hugging Face Conv1D layers compress end to end, by a data-free method and by
COBLA, within the budget by an independent count; the tied LM head stays dense."""
import os

import pytest
import torch

import lowrank
from lowrank import Budget, LayerTable

from helpers import counted_macs, n_params

transformers = pytest.importorskip("transformers", reason="install the minilm extra (it brings transformers)")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("method", ["exact", "cobla"])
def test_gpt2_compresses_end_to_end(method):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 128, (4, 16))
    example = {"input_ids": ids[:1]}
    table = LayerTable(model, example)
    assert {l.kind for l in table.compressible} == {"hf_conv1d"} and len(table.compressible) == 8
    assert "tied to 'transformer.wte'" in table.layers["lm_head"].reason
    assert table.total_macs == counted_macs(model, example)
    budget = Budget(macs=0.6, params=0.9)
    result = lowrank.compress(model, [({"input_ids": ids}, None)], budget, method=method)
    limits = budget.limits(table.totals)
    macs, params = counted_macs(result.model, example), n_params(result.model)
    assert macs == result.plan.totals_after["macs"] <= limits["macs"]
    assert params == result.plan.totals_after["params"] <= limits["params"]
    assert any(not r.dense for r in result.plan.rows)
    with torch.no_grad():
        logits = result.model(input_ids=ids).logits
    assert logits.shape == (4, 16, 128) and torch.isfinite(logits).all()
