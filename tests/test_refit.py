"""Refit after truncation (lowrank.factorise.refit): each layer's output factor re-solved by least
squares, in run order, so that the rebuilt layer gives the original layer's output."""
import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget
from lowrank.factorise.refit import refit
from lowrank.kinds.conv2d import FactorizedConv2d
from lowrank.kinds.linear import FactorizedLinear
from lowrank.planning.table import LayerTable


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 5),
    ).eval()


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 3, 8, 8, generator=g), None) for _ in range(n)]


def _output_error(original, rebuilt, batches):
    with torch.no_grad():
        return sum(float((original(x) - rebuilt(x)).pow(2).sum()) for x, _ in batches)


def test_refit_lowers_the_error_of_a_rebuilt_model_and_keeps_every_shape():
    model, batches = _net(), _batches()
    table = LayerTable(model, batches[0][0][:1])
    table.use_basis("activation", batches)
    ranks = {"3": 3, "6": 4, "9": 2}
    plain = lowrank.rebuild(model, ranks, table=table)
    refit_model = lowrank.rebuild(model, ranks, table=table, refit_on=batches)
    held_out = _batches(seed=7)
    for data in (batches, held_out):  # measured: 0.90 of the error on both (a random net; a trained one: see below)
        assert _output_error(model, refit_model, data) < 0.97 * _output_error(model, plain, data)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in refit_model.parameters()]
    assert isinstance(refit_model[3], FactorizedConv2d) and isinstance(refit_model[9], FactorizedLinear)
    # the first factors are the truncated bases still: only the output factors moved
    for name in (3, 6):
        assert torch.equal(plain[name].first.weight, refit_model[name].first.weight)
        assert not torch.equal(plain[name].second.weight, refit_model[name].second.weight)


def test_refit_of_a_layer_whose_inputs_are_exact_restores_the_original_layer():
    """Dense layers before any truncation see the original inputs: their refit is the identity
    map back to themselves (least squares recovers the weights), up to the ridge."""
    model, batches = _net(), _batches(8)
    rebuilt = lowrank.rebuild(model, {"9": 2}, table=LayerTable(model, batches[0][0][:1]))
    errors = refit(model, rebuilt, ["0", "3", "6", "9", "11"], batches)
    for name in ("0", "3", "6"):  # before the truncated layer: their weights come back
        assert torch.allclose(rebuilt.get_submodule(name).weight, model.get_submodule(name).weight, atol=1e-3), name
        assert errors[name] < 1e-6
    assert errors["11"] < 1.0  # after it: corrected as far as a Linear can


def test_refit_leaves_the_original_untouched_and_its_modes():
    model, batches = _net(), _batches()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rebuilt = lowrank.rebuild(model, {"3": 3}, table=LayerTable(model, batches[0][0][:1]))
    rebuilt.train()
    refit(model, rebuilt, ["3", "9"], batches)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats too: read in eval mode
    assert model.training and rebuilt.training


def test_the_calibration_pass_and_the_refit_show_their_progress(capsys, monkeypatch):
    from lowrank.factorise import basis

    monkeypatch.setattr(basis, "BAR_DELAY", 0.0)  # (a pass shorter than that shows no bar)
    model, batches = _net(), _batches()
    lowrank.compress(model, batches, Budget(macs=0.5), method="exact", progress=True)
    err = capsys.readouterr().err
    assert "refit" in err and "layer" in err, err[-500:]
    assert "calibration" in err and "batch" in err, err[-500:]  # the whitening's one pass over the batches
    lowrank.compress(model, batches, Budget(macs=0.5), method="exact")
    err = capsys.readouterr().err
    assert "refit" not in err and "calibration" not in err


def test_compress_refits_by_default_and_not_when_told():
    model, batches = _net(), _batches()
    with_refit = lowrank.compress(model, batches, Budget(macs=0.5), method="exact")
    without = lowrank.compress(model, batches, Budget(macs=0.5), method="exact", refit=False)
    assert with_refit.plan.ranks == without.plan.ranks  # the same plan, the same counts
    assert with_refit.held and without.held
    assert "refit" in with_refit.plan.info and "refit" not in without.plan.info
    assert _output_error(model, with_refit.model, batches) < _output_error(model, without.model, batches)


def test_refit_recovers_most_of_what_truncation_lost_on_a_trained_model():
    pytest.importorskip("sklearn")
    from lowrank.util.batches import sample_batches
    from lowrank.zoo import get

    entry = get("lenet5-digits")
    model = entry.load()
    calib = sample_batches(entry.splits.calib, 128, 0)
    acc = {refit_: entry.evaluate(lowrank.compress(model, calib, Budget(macs=0.2), method="exact", basis="weight",
                                                   refit=refit_).model) for refit_ in (False, True)}
    assert acc[True] > acc[False] + 0.05, acc  # measured here: 0.857 -> 0.947


def test_runs_stored_before_the_refit_keep_their_keys_and_a_refit_run_is_a_run_of_its_own():
    """The spec and key are a row the code wrote before the refit existed (tests/test_basis.py):
    read back, it is a run without the refit, under its old key."""
    from lowrank.experiment.runner import RunSpec

    old_spec = {"model": "lenet5-fmnist", "method": "exact", "budget_macs": 0.3, "budget_params": None, "scheme": "channel",
                "seed": 0, "calib_samples": None, "select_samples": None, "eval_samples": 2000, "finetune_epochs": 0,
                "finetune_samples": None, "kd": 0.0}
    old = RunSpec.from_dict(old_spec)
    assert old.key == "479347f845d3d9f78e4fea2a" and not old.refit and not old.uses_data
    new = RunSpec(model="lenet5-fmnist", method="exact", limits=(("macs", 0.3),), calib_samples=128)
    assert new.refit and new.uses_data and new.key != old.key  # a data-free method draws calibration samples to refit on
    assert RunSpec.from_dict(new.to_dict()).key == new.key


def test_sweeps_frontiers_and_compress_take_no_refit():
    from lowrank.experiment.runner import RunSpec
    from lowrank.cli import build_parser
    from lowrank.cli.frontier import same_recipe
    from lowrank.experiment.sweep import SweepConfig

    base = {"name": "f", "models": ["lenet5-digits"], "budgets": [{"latency": 0.8}], "methods": ["exact"], "schemes": ["channel"],
            "bases": ["weight"]}
    refit_run = SweepConfig.from_dict(base, source="test").runs()[0]
    config = SweepConfig.from_dict({**base, "refit": False}, source="test")
    (plain,) = config.runs()
    assert refit_run.refit and refit_run.calib_samples and not plain.refit and plain.calib_samples is None
    stored_before = {k: v for k, v in plain.to_dict().items() if k != "refit"}  # a row from before the option
    rows = [{**r, "spec": r, "key": RunSpec.from_dict(r).key} for r in (refit_run.to_dict(), stored_before)]
    assert [r["key"] for r in same_recipe(rows, config, "latency")] == [plain.key]
    for argv in (["sweep", "--no-refit"], ["frontier", "--model", "lenet5-digits", "--no-refit"], ["compress", "--model", "lenet5-digits", "--macs", "0.5", "--no-refit"]):
        assert build_parser().parse_args(argv).refit is False
    assert build_parser().parse_args(["compress", "--model", "lenet5-digits", "--macs", "0.5"]).refit is True


def test_layers_that_read_one_input_are_refit_from_one_pass_with_the_result_of_one_at_a_time(monkeypatch):
    """q, k and v read the same tensor (so do an MLP's gate and up): one pair of passes serves
    them, and the weights come out as when each layer is refit on its own."""
    pytest.importorskip("transformers")
    from lowrank.factorise import refit as refit_module
    from test_llm import tiny_llama, windows

    model = tiny_llama()
    x, y = windows()
    table = LayerTable(model, x)
    ranks = {layer.name: 4 for layer in table.compressible}
    grouped = lowrank.rebuild(model, ranks, table=table, refit_on=[(x, y)])
    groups, sizes = refit_module._groups(grouped, list(ranks), [(x, y)])
    assert [m.name.rsplit(".", 1)[-1] for m in groups[0]] == ["q_proj", "k_proj", "v_proj"]
    assert [len(g) for g in groups[:4]] == [3, 1, 2, 1]  # q k v | o | gate up | down
    assert sizes[groups[0][0].name] == y.numel() * 32 * 4  # q's output over every window: tokens x width x 4 bytes
    one_group = refit_module._groups

    def one_a_group(*a):
        groups, sizes = one_group(*a)
        return [[m] for g in groups for m in g], sizes

    monkeypatch.setattr(refit_module, "_groups", one_a_group)
    alone = lowrank.rebuild(model, ranks, table=table, refit_on=[(x, y)])
    for (name, a), (_, b) in zip(grouped.named_parameters(), alone.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_one_pass_of_the_original_serves_every_layer_whose_outputs_fit_in_memory(monkeypatch):
    """The original's outputs for the layers refit next are kept (up to KEPT_BYTES) so that one
    pass of it serves them all; with room for one group at a time the weights are the same."""
    pytest.importorskip("transformers")
    from lowrank.factorise import refit as refit_module
    from test_llm import tiny_llama, windows

    model = tiny_llama()
    x, y = windows()
    table = LayerTable(model, x)
    ranks = {layer.name: 4 for layer in table.compressible}
    passes = []
    original_outputs = refit_module._original_outputs
    monkeypatch.setattr(refit_module, "_original_outputs", lambda *a: passes.append(1) or original_outputs(*a))
    together = lowrank.rebuild(model, ranks, table=table, refit_on=[(x, y)])
    assert len(passes) == 1
    monkeypatch.setattr(refit_module, "KEPT_BYTES", 1)
    apart = lowrank.rebuild(model, ranks, table=table, refit_on=[(x, y)])
    groups, _ = refit_module._groups(apart, list(ranks), [(x, y)])
    assert len(passes) == 1 + len(groups) > 2
    for (name, a), (_, b) in zip(together.named_parameters(), apart.named_parameters()):
        assert torch.equal(a, b), name


def test_a_refit_on_too_few_tokens_that_would_fit_noise_is_declined_by_its_held_out_check():
    """A dense 64-wide layer after a truncated one, refit on 10 windows of 4 tokens (fewer rows
    than its fan-in): least squares fits those tokens exactly and fresh data worse. Each half's
    solution scored on the other half shows it, and the layer keeps its weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64)).eval()
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(64, 64, generator=g) / 8
    calib = [(torch.randn(10, 4, 64, generator=g) @ mix, None)]
    fresh = [(torch.randn(100, 4, 64, generator=g) @ mix, None)]
    table = LayerTable(model, calib[0][0][:1])
    table.use_basis("activation", calib)
    plain = lowrank.rebuild(model, {"0": 6}, table=table)
    refit_model = lowrank.rebuild(model, {"0": 6}, table=table, refit_on=calib)
    assert torch.equal(plain[2].weight, refit_model[2].weight)
    assert _output_error(model, refit_model, fresh) <= _output_error(model, plain, fresh) * (1 + 1e-6)


class _Parallel(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        return sum(head(x) for head in self.heads)


def test_passes_resume_at_the_block_of_the_layers_refit_with_the_weights_of_passes_from_the_input(monkeypatch):
    """In a chain of blocks (a transformer's decoder layers) the blocks before the layers being
    refit stand in by their recorded outputs: the first block runs a fixed few times (the
    passes that find the chain and the groups, the original's, one recording), not once per
    group after it, and the weights equal those of passes that start from the input. (The copy
    ``rebuild`` makes carries the counting hook too: both models' runs are counted.)"""
    pytest.importorskip("transformers")
    from lowrank.factorise import refit as refit_module
    from lowrank.factorise.resume import Chain
    from test_llm import tiny_llama, windows

    model = tiny_llama()
    model.config.num_hidden_layers = 4
    model.model.layers.extend(tiny_llama(seed=1).model.layers[:2])
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    x, y = windows()
    assert Chain.find(model, x).prefix == "model.layers"
    assert Chain.find(_Parallel(), torch.ones(1, 4)) is None  # heads that each read the input: no chain
    table = LayerTable(model, x)
    ranks = {layer.name: 4 for layer in table.compressible}
    runs = []

    def rebuilt_counting():
        runs.clear()
        handle = model.model.layers[0].register_forward_hook(lambda *a: runs.append(1))
        try:
            return lowrank.rebuild(model, ranks, table=table, refit_on=[(x, y)]), len(runs)
        finally:
            handle.remove()

    resumed, first_block_runs = rebuilt_counting()
    monkeypatch.setattr(refit_module, "RESUME", False)
    from_input, first_block_runs_before = rebuilt_counting()
    assert first_block_runs <= 6 and first_block_runs_before >= 12  # 3 of the 4 blocks' 4 groups each ran it
    for (name, a), (_, b) in zip(resumed.named_parameters(), from_input.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_statistics_feed_the_basis_and_the_refit_in_place_of_the_calibration_data():
    """``statistics=``: what the whitening and the refit stream over (many samples, kept as
    sums), apart from the method's calibration; a zoo entry may bring its own."""
    model, few, many = _net(), _batches(1, seed=5), _batches(4)
    streamed = lowrank.compress(model, few, Budget(macs=0.5), method="uniform", statistics=many).model
    on_many = lowrank.compress(model, many, Budget(macs=0.5), method="uniform").model
    on_few = lowrank.compress(model, few, Budget(macs=0.5), method="uniform").model
    pairs = list(zip(streamed.parameters(), on_many.parameters(), on_few.parameters()))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)
    assert lowrank.zoo.get("lenet5-digits").statistics() is None  # the calibration draw serves

    class Entry:  # what compress reads of a zoo entry
        include = None

        def calibration(self):
            return few

        def selection(self):
            return None

        def statistics(self):
            return many

    from_entry = lowrank.compress(model, Entry(), Budget(macs=0.5), method="uniform").model
    assert all(torch.equal(a, b) for a, b in zip(from_entry.parameters(), on_many.parameters()))


def test_a_causal_language_model_refits_without_the_first_token_of_each_window():
    """The first token of a causal model's window is an attention sink of enormous norm that a
    squared error would fit alone: its rows stay out of the sequence Linears' fits; an encoder's
    first token (BERT's [CLS], which its classifier reads) stays in."""
    transformers = pytest.importorskip("transformers")
    from lowrank.factorise import refit as refit_module
    from test_llm import tiny_llama

    encoder = transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                             intermediate_size=32))
    assert refit_module._sink(tiny_llama()) == 1 and refit_module._sink(encoder) == 0 and refit_module._sink(_net()) == 0
    layer = nn.Linear(6, 3)
    z, y = torch.randn(4, 5, 6), torch.randn(4, 5, 3)
    z[:, 0] *= 1e4
    without_first, on_the_rest = refit_module._Folds(sink=1), refit_module._Folds()
    without_first.add(layer, [z], [y])
    on_the_rest.add(layer, [z[:, 1:]], [y[:, 1:]])
    for a, b in zip(without_first.halves, on_the_rest.halves):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:]
