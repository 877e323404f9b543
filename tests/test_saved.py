"""lowrank.save / lowrank.load: a compressed model written to disk and rebuilt without the
original weights, for a pruned and factorised CNN, a zoo CNN and a tied-embedding language
model; the loaded model runs and exports in a process that never imports the solvers."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget

from helpers import n_params

ROOT = Path(__file__).resolve().parents[1]


def _chain():
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def _trained_chain():
    torch.manual_seed(0)
    model = _chain()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("scheme", ["prune", "auto", "channel"])
def test_a_compressed_cnn_loads_on_its_architecture_alone_with_equal_outputs(tmp_path, scheme):
    pytest.importorskip("torch_pruning")
    model = _trained_chain()
    x = torch.randn(16, 3, 12, 12)
    result = lowrank.compress(model, x, Budget(macs=0.5), method="exact", scheme=scheme)
    saved = lowrank.save(result, tmp_path, original=model)
    assert saved.bytes < saved.original_bytes and 0 < saved.ratio < 0.75, saved
    untrained = _chain()  # the base's own weights are never read, and it is not changed
    before = [p.clone() for p in untrained.parameters()]
    loaded = lowrank.load(tmp_path, base=untrained)
    assert all(torch.equal(a, b) for a, b in zip(before, untrained.parameters()))
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-5, rtol=0)
    assert n_params(loaded) == n_params(result.model) < n_params(model)
    assert not loaded.training
    if scheme == "prune":  # physically narrower layers came back at their saved widths
        widths = [(m.in_channels, m.out_channels) for m in result.model.modules() if isinstance(m, nn.Conv2d)]
        assert widths == [(m.in_channels, m.out_channels) for m in loaded.modules() if isinstance(m, nn.Conv2d)]
        assert widths != [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    manifest = json.loads((tmp_path / "lowrank.json").read_text())
    factorised = {n for n, m in result.model.named_modules() if isinstance(m, (lowrank.FactorizedConv2d, lowrank.FactorizedLinear))}
    assert set(manifest["layers"]) == factorised and (factorised or scheme == "prune")


def test_a_zoo_cnn_saved_with_its_entry_name_loads_with_no_base(tmp_path):
    from lowrank.zoo import get

    entry = get("lenet5-digits")
    model = entry.load()
    result = lowrank.compress(model, entry, Budget(params=0.4), method="exact", scheme="auto")
    lowrank.save(result, tmp_path, zoo=entry.name)
    loaded = lowrank.load(tmp_path)
    x = entry.example_input()
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-5, rtol=0)


def test_a_base_of_another_architecture_or_none_is_refused_with_what_to_pass(tmp_path):
    model = _trained_chain()
    result = lowrank.compress(model, torch.randn(8, 3, 12, 12), Budget(macs=0.6), method="exact", scheme="channel")
    lowrank.save(result, tmp_path)
    with pytest.raises(ValueError, match="does not say how to build its architecture.*pass base="):
        lowrank.load(tmp_path)
    wider = nn.Sequential(*list(_chain())[:-1], nn.Linear(16, 7))
    with pytest.raises(ValueError, match="do not fit the base model.*Pass base= the architecture"):
        lowrank.load(tmp_path, base=wider)
    assert json.loads((tmp_path / "lowrank.json").read_text())["layers"]  # something factorised, to stand in for
    with pytest.raises(ValueError, match="has no layer .* can stand in for.*Pass base= the architecture"):
        lowrank.load(tmp_path, base=nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(FileNotFoundError, match="not a directory lowrank.save wrote"):
        lowrank.load(tmp_path / "elsewhere")


def test_the_loaded_model_runs_and_exports_without_the_solvers(tmp_path):
    model = _trained_chain()
    x = torch.randn(4, 3, 12, 12)
    result = lowrank.compress(model, x, Budget(macs=0.5), method="exact", scheme="auto")
    lowrank.save(result, tmp_path / "saved")
    with torch.no_grad():
        torch.save({"x": x, "y": result.model(x)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from torch import nn
        def _chain():
            return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1),
                                 nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
        from lowrank.saved import load
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = load({str(tmp_path / 'saved')!r}, base=_chain)
        program = torch.export.export(model, (io["x"],))
        with torch.no_grad():
            assert torch.allclose(program.module()(io["x"]), io["y"], atol=1e-5, rtol=0)
        loaded = [m for m in sys.modules if m.split(".")[0] in ("solvers", "cvxpy", "highspy", "scipy") or m.startswith("lowrank.solvers")]
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_tied_language_model_round_trips_with_its_config_and_stays_tied(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_llm import tiny_llama, windows

    model = tiny_llama()
    x, y = windows()
    result = lowrank.compress(model, (x, y), Budget(params=0.7), method="exact", include=["model.layers."])
    saved = lowrank.save(result, tmp_path, original=model)
    assert (tmp_path / "config.json").exists() and saved.bytes < saved.original_bytes
    loaded = lowrank.load(tmp_path)  # no base: the config beside the weights, no network
    assert isinstance(loaded, transformers.LlamaForCausalLM)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.allclose(loaded(**x).logits, result.model(**x).logits, atol=1e-5, rtol=0)
    assert n_params(loaded) == n_params(result.model)
    lowrank.save(result.model, tmp_path / "bare", original=model)  # the module itself, not its inner ``.model``
    again = lowrank.load(tmp_path / "bare")
    with torch.no_grad():
        assert torch.allclose(again(**x).logits, result.model(**x).logits, atol=1e-5, rtol=0)


def test_the_cli_saves_a_zoo_model_that_loads(tmp_path, capsys):
    from lowrank.cli import main

    code = main(["compress", "--model", "lenet5-digits", "--macs", "0.5", "--method", "exact", "--eval-samples", "100",
                 "--save", str(tmp_path / "saved"), "--quiet"])
    assert code == 0
    assert "load with lowrank.load(" in capsys.readouterr().out
    loaded = lowrank.load(tmp_path / "saved")
    assert any(isinstance(m, (lowrank.FactorizedConv2d, lowrank.FactorizedLinear)) for m in loaded.modules())


def test_a_rebuilt_module_saved_with_its_original_says_what_pruning_narrowed(tmp_path):
    pytest.importorskip("torch_pruning")
    model = _trained_chain()
    x = torch.randn(16, 3, 12, 12)
    table = lowrank.LayerTable(model, x[:1])
    new = lowrank.rebuild(model, {"0": 3, "3": 7}, {"0": "channel", "3": "prune"}, table=table)  # a factorised producer, narrowed
    assert new[0].out_channels == 7
    lowrank.save(new, tmp_path, original=model)
    assert json.loads((tmp_path / "lowrank.json").read_text())["narrowed"] == ["0", "1", "3"]
    loaded = lowrank.load(tmp_path, base=_chain)
    with torch.no_grad():
        assert torch.allclose(loaded(x), new(x), atol=1e-5, rtol=0)
    lowrank.save(new, tmp_path / "bare")  # neither a result nor the original: the file cannot say, and load says so
    with pytest.raises(ValueError, match="save the CompressionResult"):
        lowrank.load(tmp_path / "bare", base=_chain)
