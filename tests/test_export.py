"""Export of a rebuilt model (torch.export and ONNX), checked against the PyTorch model."""
import copy

import pytest
import torch
from torch import nn

import lowrank
from lowrank import Budget
from lowrank.export import export
from lowrank.kinds import schemes_for
from lowrank.zoo import LeNet5


def _rebuilt(scheme: str):
    torch.manual_seed(0)
    model = nn.Sequential(LeNet5(), nn.LogSoftmax(-1)).eval()
    x = torch.randn(16, 1, 28, 28)
    return lowrank.compress(model, x, Budget(macs=0.5), method="exact", scheme=scheme, basis="weight").model, x


def _onnx_available():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason="ONNX export needs the extra: pip install -e '.[export]'")


@pytest.mark.parametrize("scheme", list(schemes_for(torch.nn.Conv2d(1, 1, 1))))
@pytest.mark.parametrize("fmt", ["torch", "onnx"])
def test_exported_model_matches_the_rebuilt_model_at_another_batch_size(tmp_path, scheme, fmt):
    if fmt == "onnx":
        _onnx_available()
    model, x = _rebuilt(scheme)
    assert any(type(m).__name__.startswith("Factorized") for m in model.modules())  # really the factorised layers
    check = export(model, x, tmp_path / f"m.{fmt}", fmt, check_inputs=x[:5])
    assert check.path.is_file() and check.dynamic_batch
    assert check.check_shapes == [[5, 1, 28, 28]]
    assert check.max_abs_diff < 1e-4, check
    if fmt == "torch":  # the saved program loads without lowrank's classes and runs at yet another batch size
        out = torch.export.load(check.path).module()(x[:3])
        torch.testing.assert_close(out, model(x[:3]), atol=1e-5, rtol=1e-5)


def test_a_wrong_export_is_caught_not_reported_as_a_match(tmp_path, monkeypatch):
    """The check really compares: a saved file that differs shows the difference."""
    model, x = _rebuilt("channel")
    program = torch.export.export(copy.deepcopy(model), (x,))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the model moves on after its copy was exported
    monkeypatch.setattr("lowrank.export._exported_program", lambda *a: (program, None))
    check = export(model, x, tmp_path / "m.pt2", "torch")
    assert check.max_abs_diff > 1e-3 and not check.dynamic_batch


def test_unknown_format_and_cli_without_out(tmp_path, capsys):
    from lowrank.cli import main

    model, x = _rebuilt("channel")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(model, x, tmp_path / "m", "tflite")
    assert main(["compress", "--model", "lenet5-digits", "--macs", "0.5", "--method", "exact", "--export", "torch"]) == 2
    assert "--export needs --out" in capsys.readouterr().err


def test_cli_compress_exports_and_states_the_difference(tmp_path, capsys):
    pytest.importorskip("sklearn")
    _onnx_available()
    from lowrank.cli import main

    out = tmp_path / "small.pt"
    assert main(["compress", "--model", "lenet5-digits", "--macs", "0.5", "--method", "exact", "--quiet", "--out", str(out),
                 "--export", "onnx", "torch"]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "small.onnx").is_file() and (tmp_path / "small.pt2").is_file()
    lines = [line for line in text.splitlines() if "export written to" in line]
    assert len(lines) == 2 and all("largest difference from the PyTorch model" in line for line in lines)
    assert all(float(line.rsplit(": ", 1)[1]) < 1e-4 for line in lines)
