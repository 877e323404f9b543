"""The command line as a user runs it: compress, sweep, report, help, and one-line errors."""
import json
import subprocess
import sys

import pytest
import torch

from lowrank.cli import build_parser, main

from helpers import counted_macs, n_params

try:
    import sklearn  # noqa: F401

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn (the digits dataset) not installed")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lowrank: error: "), err
    return err[0]


def the_error_line(capsys) -> str:
    """The one error line, after whatever progress a sweep printed first; no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lowrank: error: ")]
    assert len(errors) == 1 and "Traceback" not in err and err.strip().endswith(errors[0]), err
    return errors[0]


@pytest.mark.parametrize("verb", [["sweep"], ["report"], ["compress"], ["zoo", "train"], ["demo"]])
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*verb, "--help"])
    assert exit_.value.code == 0
    assert "example" in capsys.readouterr().out


@needs_sklearn
def test_compress_a_zoo_entry_and_save_it(tmp_path, capsys):
    out = tmp_path / "small.pt"
    rc = main(["compress", "--model", "lenet5-digits", "--macs", "0.5", "--params", "0.6", "--method", "exact",
               "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "within the budget" in text and "top-1 accuracy: original 0.9633" in text
    model = torch.load(out, weights_only=False)
    plan = json.loads(out.with_suffix(".plan.json").read_text())
    x = torch.randn(1, 1, 28, 28)
    assert counted_macs(model, x) <= 0.5 * plan["totals_before"]["macs"]
    assert n_params(model) <= 0.6 * plan["totals_before"]["params"]
    assert counted_macs(model, x) == plan["totals_after"]["macs"]


@needs_sklearn
def test_compress_and_finetune_from_the_cli(capsys):
    rc = main(["compress", "--model", "lenet5-digits", "--macs", "0.3", "--method", "uniform", "--finetune-epochs", "1",
               "--finetune-samples", "512", "--kd", "0.5", "--quiet"])
    assert rc == 0 and "after each fine-tuning epoch" in capsys.readouterr().out


def test_compress_a_saved_module_with_calibration_data(tmp_path, capsys):
    from lowrank.zoo import LeNet5

    torch.manual_seed(0)
    torch.save(LeNet5().eval(), tmp_path / "mine.pt")
    torch.save(torch.randn(16, 1, 28, 28), tmp_path / "calib.pt")
    rc = main(["compress", "--model", str(tmp_path / "mine.pt"), "--calib", str(tmp_path / "calib.pt"), "--macs", "0.4",
               "--method", "cobla", "--out", str(tmp_path / "small.pt"), "--quiet"])
    assert rc == 0 and "within the budget" in capsys.readouterr().out
    assert isinstance(torch.load(tmp_path / "small.pt", weights_only=False), torch.nn.Module)


def test_user_mistakes_are_one_line(tmp_path, capsys):
    assert main(["compress", "--model", "no-such-thing", "--macs", "0.5"]) == 2
    assert "neither a zoo entry" in one_line_error(capsys)
    torch.save(torch.nn.Linear(4, 4), tmp_path / "m.pt")
    assert main(["compress", "--model", str(tmp_path / "m.pt"), "--macs", "0.5"]) == 2
    assert "--calib" in one_line_error(capsys)
    assert main(["compress", "--model", "lenet5-digits"]) == 2
    assert "give a budget: --macs" in one_line_error(capsys)
    assert main(["sweep", "--models", "no-such-model", "--quiet"]) == 2
    assert "no zoo entry 'no-such-model'" in one_line_error(capsys)
    assert main(["sweep", "--methods", "magic"]) == 2
    assert "unknown method" in one_line_error(capsys)
    assert main(["sweep", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in one_line_error(capsys)


@needs_sklearn
def test_infeasible_budget_says_the_smallest(capsys):
    assert main(["compress", "--model", "lenet5-digits", "--params", "0.0001", "--method", "exact"]) == 2
    assert "smallest" in one_line_error(capsys)


@needs_sklearn
def test_sweep_then_report_from_the_shell(tmp_path):
    """The installed ``lowrank`` command, as a user types it."""
    cmd = [sys.executable, "-m", "lowrank", "sweep", "--name", "shell", "--models", "lenet5-digits", "--macs", "0.4,0.6",
           "--methods", "exact,uniform", "--bases", "weight", "--db", str(tmp_path / "r.sqlite"), "--cache", str(tmp_path / "c"),
           "--report-dir", str(tmp_path / "rep"), "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 runs; 0 already stored, 4 run now" in done.stderr
    assert (tmp_path / "rep" / "index.html").exists() and (tmp_path / "rep" / "plots" / "lenet5-digits-macs.png").exists()
    again = subprocess.run(cmd + ["--no-report"], capture_output=True, text=True, timeout=300)
    assert "4 already stored, 0 run now" in again.stderr
    dry = subprocess.run(cmd[:-2] + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert dry.stdout.count("lenet5-digits") == 4


# --- files a user points the command line at: one line each, the file untouched --------------------
def _saved_lenet(tmp_path):
    from lowrank.zoo import LeNet5

    torch.manual_seed(0)
    torch.save(LeNet5().eval(), tmp_path / "mine.pt")
    torch.save(torch.randn(16, 1, 28, 28), tmp_path / "calib.pt")
    return ["compress", "--model", str(tmp_path / "mine.pt"), "--calib", str(tmp_path / "calib.pt"), "--macs", "0.5",
            "--method", "exact", "--quiet"]


def test_out_in_a_folder_that_cannot_be_written_ends_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import tempfile

    import lowrank.cli.compress as cli_compress
    from lowrank.cli import files

    def refused(*a, dir=None, **k):  # what the OS answers in a read-only folder (root passes permission bits)
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", refused)
    monkeypatch.setattr(cli_compress, "compress", lambda *a, **k: pytest.fail("compressed before checking --out"))
    assert main([*_saved_lenet(tmp_path), "--out", str(tmp_path / "ro" / "small.pt")]) == 2
    line = one_line_error(capsys)
    assert "cannot write --out" in line and "Permission denied" in line and "small.pt" in line
    monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", tempfile.NamedTemporaryFile)
    (tmp_path / "a-file").write_text("x")
    assert main([*_saved_lenet(tmp_path), "--out", str(tmp_path / "a-file" / "small.pt")]) == 2  # a real OS refusal
    assert "cannot write --out" in one_line_error(capsys)


def test_a_save_that_fails_part_way_leaves_the_existing_file_untouched(tmp_path, capsys, monkeypatch):
    import lowrank.cli.compress as cli_compress

    out = tmp_path / "small.pt"
    out.write_bytes(b"the user's earlier model")
    args = _saved_lenet(tmp_path)

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a mod")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli_compress.torch, "save", broken_save)
    assert main([*args, "--out", str(out)]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert out.read_bytes() == b"the user's earlier model" and sorted(p.name for p in tmp_path.iterdir()) == [
        "calib.pt", "mine.pt", "small.pt"]


@pytest.mark.parametrize("verb", [["sweep", "--models", "lenet5-digits", "--macs", "0.5", "--methods", "exact", "--quiet"],
                                  ["report"]])
def test_a_db_that_is_not_a_database_ends_in_one_line_and_is_left_as_it_was(verb, tmp_path, capsys):
    db = tmp_path / "results.db"
    db.write_bytes(b"my notes, not a database\n" * 100)
    before = db.read_bytes()
    assert main([*verb, "--name", "t", "--db", str(db)]) == 2
    line = the_error_line(capsys)
    assert str(db) in line and "not a results database" in line and "--db" in line
    assert db.read_bytes() == before


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux's /proc: a folder nobody can write to")
def test_a_db_in_a_folder_that_cannot_be_written_ends_in_one_line(capsys):
    verb = ["sweep", "--models", "lenet5-digits", "--macs", "0.5", "--methods", "exact", "--quiet", "--name", "t"]
    assert main([*verb, "--db", "/proc/lowrank-results.db"]) == 2  # /proc takes no new files, not even root's
    assert "/proc/lowrank-results.db cannot be opened or created" in the_error_line(capsys)
    assert main([*verb, "--db", "/proc/lowrank/results.db"]) == 2  # its folder cannot be made
    assert "cannot use /proc/lowrank" in the_error_line(capsys)


def test_a_db_that_is_a_folder_ends_in_one_line(tmp_path, capsys):
    assert main(["report", "--name", "t", "--db", str(tmp_path)]) == 2
    assert "is a folder" in one_line_error(capsys)
