"""Truthful for any model a user brings: costs the counter cannot see, a fraction that would
silently become a count, one default method, a user's file named solvers.py, the CLI with the
user's own classes and damaged files, NaN and Inf beyond the weights, the inputs people pass,
wide layers in the data-aware basis, and messages that fit where they appear."""
import inspect
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lowrank
import solvers
from lowrank import Budget, InfeasibleBudgetError, LayerTable, SeveredModelWarning
from lowrank.cli import build_parser, main
from lowrank.compress import DEFAULT_METHOD
from lowrank.factorise.basis import collect_moments, input_side_matrix, projected_svd, whitened_svd
from lowrank.kinds import schemes_for

from helpers import counted_macs, hand_macs

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lowrank: error: "), err
    return err[0]


# --- costs the counter cannot see ------------------------------------------------------------
class LSTMNet(nn.Module):
    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.rnn, self.head = cell(32, 64, batch_first=True), nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha, self.head = nn.MultiheadAttention(64, 4, batch_first=True), nn.Linear(64, 10)

    def forward(self, x):
        a, _ = self.mha(x, x, x, need_weights=False)
        return self.head(a.mean(1))


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_work_is_counted_by_the_hand_formula(cell):
    model, x = LSTMNet(cell).eval(), torch.randn(1, 20, 32)
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    by_hand = 20 * gates * 64 * (32 + 64) + 64 * 10
    assert counted_macs(model, x) == by_hand  # the tests' own count
    assert LayerTable(model, x).total_macs == lowrank.resources.count(model, x)["macs"] == by_hand
    if cell is nn.LSTM:
        assert by_hand == 492_160


def test_attention_work_is_counted_by_the_hand_formula():
    model, x = AttentionNet().eval(), torch.randn(1, 16, 64)
    assert LayerTable(model, x).total_macs == counted_macs(model, x) == 295_552  # 4 L E^2 + 2 L^2 E + the head


def test_a_fused_encoder_layer_is_counted_whole():
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = torch.randn(2, 16, 64)
    attention = hand_macs(layer.self_attn, (x, x))
    assert lowrank.resources.count(layer, x)["macs"] == attention + 2 * 2 * 16 * 64 * 128


def test_a_mac_budget_is_a_share_of_the_real_work():
    model, x = LSTMNet().eval(), torch.randn(4, 20, 32)
    with pytest.raises(InfeasibleBudgetError, match=r"smallest achievable 99\.9%.*'rnn' 99\.9% \(LSTM"):
        lowrank.compress(model, x, Budget(macs=0.5), method="exact")


class Uncountable(nn.Module):
    """Runs an LSTM kernel from its own weights: no module the counter or lowrank knows."""

    def __init__(self):
        super().__init__()
        self.w_ih, self.w_hh = nn.Parameter(torch.randn(64, 8)), nn.Parameter(torch.randn(64, 16))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        state = (torch.zeros(1, x.shape[1], 16), torch.zeros(1, x.shape[1], 16))
        out = torch.lstm(x, state, [self.w_ih, self.w_hh], False, 1, 0.0, False, False, False)[0]
        return self.head(out[-1])


def test_work_nobody_can_count_is_named_and_refused_unless_accepted():
    model, x = Uncountable().eval(), torch.randn(5, 3, 8)
    with pytest.raises(ValueError, match=r"cannot count \(the model itself runs .*rnn.*accept_uncounted=True"):
        lowrank.compress(model, x, Budget(macs=0.9), method="exact")
    result = lowrank.compress(model, x, Budget(macs=0.9), method="exact", accept_uncounted=True)
    assert result.macs.held
    assert lowrank.compress(model, x, Budget(params=0.99), method="exact").params.held  # parameters are all counted


# --- a fraction that silently becomes a count -----------------------------------------------
def test_a_fraction_above_one_is_refused_and_counts_are_spelled_out():
    with pytest.raises(ValueError, match=r"macs=1.5: a fraction .* Budget\(macs_abs=1.5\)"):
        Budget(macs=1.5)
    assert Budget(macs_abs=1.5).limits({"macs": 100})["macs"] == 1.5
    assert Budget(params_abs=2000).is_absolute("params") and not Budget(params=0.5).is_absolute("params")
    assert Budget.from_stored({"macs": 3000.0, "params": 0.5}) == Budget(macs_abs=3000, params=0.5)


@pytest.mark.parametrize("argv, flag", [(["--macs", "1.5"], "--macs-abs 1.5"), (["--params", "2"], "--params-abs 2")])
def test_the_cli_refuses_a_fraction_above_one_in_its_own_words(argv, flag, capsys):
    assert main(["compress", "--model", "lenet5-digits", *argv]) == 2
    line = one_line_error(capsys)
    assert flag in line and "=" not in line.split("error:")[1]


def test_the_cli_takes_absolute_budgets(capsys, tmp_path):
    pytest.importorskip("sklearn")
    assert main(["compress", "--model", "lenet5-digits", "--macs-abs", "200000", "--method", "exact", "--quiet"]) == 0
    assert "within the budget" in capsys.readouterr().out


def test_a_cli_run_that_severs_the_model_saves_nothing_unless_asked(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "cut.pt"
    args = ["compress", "--model", "lenet5-digits", "--macs", "0.05", "--method", "uniform", "--basis", "weight", "--quiet",
            "--out", str(out)]
    assert main(args) == 3 and not out.exists()
    err = capsys.readouterr().err
    assert "cuts every path" in err and "--keep-severed" in err and "scheme=" not in err
    assert main(args + ["--keep-severed"]) == 0 and out.exists()


# --- one default ----------------------------------------------------------------------------
def test_one_default_method_everywhere():
    assert inspect.signature(lowrank.compress).parameters["method"].default == DEFAULT_METHOD == "cobla"
    assert build_parser().parse_args(["compress", "--model", "m", "--macs", "0.5"]).method == DEFAULT_METHOD
    assert build_parser().parse_args(["demo"]).method == DEFAULT_METHOD
    assert "method" not in inspect.signature(solvers.solve).parameters or \
        inspect.signature(solvers.solve).parameters["method"].default is inspect.Parameter.empty


# --- a user's solvers.py --------------------------------------------------------------------
def test_a_users_solvers_py_breaks_nothing(tmp_path):
    (tmp_path / "solvers.py").write_text("MINE = 'the user solvers'\n")
    env = {**os.environ, "PYTHONPATH": ""}
    code = ("import lowrank, solvers, torch; from lowrank import Budget; print(solvers.MINE); "
            "m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)); "
            "print(lowrank.compress(m, torch.randn(16, 8), Budget(macs=0.5)).macs.held)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["the", "user", "solvers", "True"]
    cli = subprocess.run([sys.executable, "-m", "lowrank", "zoo", "list"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=300)
    assert cli.returncode == 0 and "lenet5-fmnist" in cli.stdout, cli.stderr


# --- the CLI with the user's own model classes and files -------------------------------------
MYMODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
"""


def _console_script() -> str:
    script = Path(sys.executable).parent / "lowrank"
    if not script.exists():
        pytest.skip("the lowrank console script is not installed beside this Python")
    return str(script)


def test_the_console_script_finds_the_users_classes_in_the_working_directory(tmp_path):
    (tmp_path / "mymodel.py").write_text(MYMODEL)
    subprocess.run([sys.executable, "-c", "import torch, mymodel; torch.manual_seed(0); "
                    "torch.save(mymodel.Net(), 'net.pt'); torch.save(torch.randn(32, 16), 'calib.pt')"],
                   cwd=tmp_path, check=True, timeout=120)
    done = subprocess.run([_console_script(), "compress", "--model", "net.pt", "--calib", "calib.pt", "--macs", "0.5",
                           "--method", "exact", "--out", "small.pt", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "small.pt").exists()


def test_a_class_from_a_scripts_main_gets_one_line_and_a_way_out(tmp_path):
    (tmp_path / "train.py").write_text(MYMODEL + "\ntorch.save(Net(), 'net.pt')\ntorch.save(torch.randn(8, 16), 'calib.pt')\n")
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True, timeout=120)
    done = subprocess.run([_console_script(), "compress", "--model", "net.pt", "--calib", "calib.pt", "--macs", "0.5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "class Net was defined in the script that saved it" in lines[0] and "move the class into a module" in lines[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
@pytest.mark.parametrize("which", ["--model", "--calib"])
def test_damaged_files_end_in_one_line(damage, which, tmp_path, capsys):
    torch.save(nn.Linear(4, 4), tmp_path / "m.pt")
    torch.save(torch.randn(8, 4), tmp_path / "c.pt")
    bad = tmp_path / "bad.pt"
    good = (tmp_path / ("m.pt" if which == "--model" else "c.pt")).read_bytes()
    bad.write_bytes({"truncated": good[: len(good) // 2], "empty": b"", "text": b"x,y\n1,2\n"}[damage])
    files = {"--model": str(tmp_path / "m.pt"), "--calib": str(tmp_path / "c.pt"), which: str(bad)}
    assert main(["compress", "--model", files["--model"], "--calib", files["--calib"], "--macs", "0.5"]) == 2
    line = one_line_error(capsys)
    assert str(bad) in line and "weights_only" not in line


# --- NaN and Inf beyond the weights ----------------------------------------------------------
def _conv_bn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()


@pytest.mark.parametrize("where, tensor", [("1", "weight"), ("1", "running_var"), ("4", "bias")])
@pytest.mark.parametrize("basis", ["activation", "weight"])
def test_non_finite_values_anywhere_in_the_model_are_named_before_any_work(where, tensor, basis):
    model = _conv_bn()
    with torch.no_grad():
        getattr(model.get_submodule(where), tensor)[0] = float("nan")
    with pytest.raises(ValueError, match=rf"'{where}\.{tensor}' \(1 NaN"):
        lowrank.compress(model, torch.randn(8, 3, 8, 8), Budget(macs=0.5), method="exact", basis=basis)


def test_non_finite_calibration_inputs_are_named():
    x = torch.randn(8, 3, 8, 8)
    x[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"calibration batch 0 .* 1 infinite"):
        lowrank.compress(_conv_bn(), x, Budget(macs=0.5), method="exact")


# --- the inputs people pass -------------------------------------------------------------------
def test_numpy_arrays_and_lists_of_arrays_are_calibration_data():
    model = _conv_bn()
    rng = np.random.default_rng(0)
    one = lowrank.compress(model, rng.standard_normal((8, 3, 8, 8)), Budget(macs=0.5), method="exact")
    many = lowrank.compress(model, [rng.standard_normal((4, 3, 8, 8)) for _ in range(3)], Budget(macs=0.5), method="cobla")
    pair = lowrank.compress(model, (rng.standard_normal((8, 3, 8, 8)), rng.integers(0, 10, 8)), Budget(macs=0.5), method="cobla")
    assert one.held and many.held and pair.held


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(5, 8)

    def forward(self, x1, x2):
        return self.a(x1) + self.b(x2)


def test_a_pair_is_inputs_and_targets_and_a_two_input_model_is_told_how():
    x1, x2 = torch.randn(8, 6), torch.randn(8, 5)
    with pytest.raises(ValueError, match=r"read as \(inputs, targets\).*\(\(a, b\), None\)"):
        lowrank.compress(TwoInputs(), (x1, x2), Budget(macs=0.5), method="exact")
    assert lowrank.compress(TwoInputs(), ((x1, x2), None), Budget(macs=0.5), method="exact").held


def test_a_model_on_the_meta_device_is_told_to_load_its_weights():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'meta' device.*load_state_dict"):
        lowrank.compress(model, torch.randn(4, 4), Budget(macs=0.5), method="exact")


# --- wide layers in the default basis ----------------------------------------------------------
@pytest.mark.parametrize("index", range(3))
def test_the_small_side_route_gives_the_whitened_factors(index):
    """Squaring the other side of the matrix gives the same singular values and the same
    truncations as whitening its input side."""
    torch.manual_seed(index)
    layer, x = [(nn.Linear(40, 12), torch.randn(300, 40)), (nn.Conv2d(6, 5, 3, padding=1), torch.randn(16, 6, 9, 9)),
                (nn.Conv2d(8, 3, (3, 1)), torch.randn(16, 8, 9, 9))][index]
    for scheme in schemes_for(layer).values():
        v = scheme.input_vectors(layer, x).double()
        a = input_side_matrix(layer.weight, scheme)
        p = v @ a
        u, s, vh = projected_svd(layer.weight, scheme, p.T @ p, v.shape[0], float((v * v).sum()), ridge=1e-2)
        moment = v.T @ v / v.shape[0]
        wu, ws, wvh = whitened_svd(layer.weight, scheme, moment, ridge=1e-2)
        k = min(len(s), len(ws))
        torch.testing.assert_close(s[:k], ws[:k], rtol=1e-8, atol=1e-10)
        matrix = scheme.matrix(layer.weight.detach()).double()
        torch.testing.assert_close(u @ torch.diag(s) @ vh, matrix, rtol=1e-8, atol=1e-9)
        for r in range(1, k):  # the same rank-r approximations
            torch.testing.assert_close(u[:, :r] @ torch.diag(s[:r]) @ vh[:r], wu[:, :r] @ torch.diag(ws[:r]) @ wvh[:r],
                                       rtol=1e-6, atol=1e-8)


def test_a_wide_layer_squares_only_its_small_side():
    """20,000 inputs, 16 outputs: the old route summed a 20,000-square moment (3.2 GB) and
    took its eigendecomposition; now a 16-square Gram is all there is."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20_000, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(64, 20_000)
    table = LayerTable(model, x[:1])
    t0 = time.perf_counter()
    table.use_basis("activation", [(x, None)])
    u, s, vh = table.svd("0", "channel")
    assert time.perf_counter() - t0 < 30
    assert table.basis.moments[("0", "channel")][0].shape == (16, 16)
    assert u.shape == (16, 16) and vh.shape == (16, 20_000)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, model[0].weight.detach().double(), rtol=1e-6, atol=1e-7)


# --- messages that fit where they appear --------------------------------------------------------
def test_an_infeasible_budget_says_which_layers_stay_dense_and_why():
    from conftest import make

    with pytest.raises(InfeasibleBudgetError) as err:
        lowrank.compress(make("mobilenet"), torch.randn(4, 1, 28, 28), Budget(macs=0.05), method="exact")
    text = str(err.value)
    assert "smallest achievable" in text and "depthwise conv (groups=" in text and "Ask for at least" in text
    assert "e+" not in text  # one number format: percentages and thousands


def test_a_severed_plan_warns_at_the_users_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lowrank.compress(_conv_bn(), torch.randn(8, 3, 8, 8), Budget(macs=0.02), method="uniform", basis="weight")
    severed = [w for w in caught if issubclass(w.category, SeveredModelWarning)]
    assert severed and severed[0].filename == __file__


def test_a_misspelt_method_option_is_named():
    with pytest.raises(ValueError, match=r"method 'exact' takes no option 'gap_tolerance'; its options: .*gap_tol"):
        lowrank.compress(_conv_bn(), torch.randn(8, 3, 8, 8), Budget(macs=0.5), method="exact", gap_tolerance=1e-3)


def test_the_solvers_print_nothing_into_the_terminal(capfd):
    problem = solvers.synthetic.from_shapes([(64, 576, 196, True), (128, 1152, 49, True), (10, 256, 1, True)] * 4,
                                            macs=0.4, params=0.3, seed=1)
    solvers.solve(problem, "exact", gap_tol=1e-9)  # closed by branch-and-bound (HiGHS)
    solvers.solve(problem, "milp")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_cli_messages_name_flags_not_python_keywords(capsys):
    assert main(["compress", "--model", "lenet5-digits"]) == 2
    line = one_line_error(capsys)
    assert "--macs" in line and "macs=" not in line
