"""Sweeps and the results store: configs, resuming, and surviving SIGKILL at any moment.

Runs use the ``lenet5-digits`` zoo entry (scikit-learn's digits, no system package), so
each run takes a fraction of a second to a few seconds.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytest.importorskip("sklearn")

from lowrank.experiment import runner  # noqa: E402
from lowrank.experiment.runner import RunSpec, execute_run  # noqa: E402
from lowrank.experiment.store import ResultStore  # noqa: E402
from lowrank.experiment.sweep import SweepConfig, run_sweep  # noqa: E402

# What a run's values are; times, hosts and timestamps legitimately differ between runs.
VALUE_COLUMNS = ("status", "model", "method", "budget_macs", "budget_params", "seed", "macs", "params", "planned_macs",
                 "planned_params", "fits", "metric_original", "metric_before", "metric_after", "ranks", "schemes", "error")

SMALL = dict(
    name="small", models=["lenet5-digits"], budgets=[{"macs": 0.3}, {"macs": 0.5}, {"params": 0.4}],
    methods=["cobla", "sensitivity", "exact", "uniform", "energy"], seeds=[0, 1, 2], calib_samples=64, select_samples=64,
    eval_samples=None, bases=["weight"],
)
SWEEP_ARGS = ["--name", "small", "--models", "lenet5-digits", "--macs", "0.3,0.5", "--params", "0.4",
              "--methods", "cobla,sensitivity,exact,uniform,energy", "--seeds", "0,1,2", "--calib-samples", "64",
              "--select-samples", "64", "--eval-samples", "all", "--bases", "weight", "--no-report", "--quiet"]


def values(rows):
    return {r["key"]: tuple(r[c] for c in VALUE_COLUMNS) for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The small sweep run once, uninterrupted, in this process."""
    d = tmp_path_factory.mktemp("reference")
    runner._LOADED.clear()  # models other tests loaded in this process: start as a fresh worker does
    summary = run_sweep(SweepConfig(**SMALL), db=d / "runs.sqlite", cache_dir=d / "cache", workers=1, progress=False)
    with ResultStore(d / "runs.sqlite") as store:
        rows = store.rows(sweep="small")
    return summary, rows, d


def test_config_expands_and_validates(tmp_path):
    config = SweepConfig(**SMALL)
    runs = config.runs()
    assert len(runs) == 1 * 3 * 5 * 3 == len({r.key for r in runs})
    # data-free methods draw calibration samples only to refit on; without the refit, those are not part of their identity
    exact = next(r for r in runs if r.method == "exact")
    assert exact.calib_samples == 64 and exact.select_samples is None
    exact = next(r for r in SweepConfig(**SMALL, refit=False).runs() if r.method == "exact")
    assert exact.calib_samples is None and exact.select_samples is None
    with pytest.raises(ValueError, match="unknown method"):
        SweepConfig(methods=["nope"])
    with pytest.raises(ValueError, match="unknown setting.*colour"):
        SweepConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="a budget is a table with any of macs, params"):
        SweepConfig(budgets=[{"flops": 0.5}])
    with pytest.raises(ValueError, match="calib_samples=5000.*has 200"):
        SweepConfig(models=["lenet5-digits"], calib_samples=5000).check_models()
    with pytest.raises(ValueError, match="no zoo entry"):
        SweepConfig(models=["no-such-model"]).check_models()


def test_toml_and_yaml_files_give_the_same_sweep(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('name = "small"\nmodels = ["lenet5-digits"]\nmacs = [0.3, 0.5]\nparams = [0.4]\n'
                    'methods = ["cobla", "sensitivity", "exact", "uniform", "energy"]\nseeds = [0, 1, 2]\n'
                    'calib_samples = 64\nselect_samples = 64\neval_samples = "all"\nbases = ["weight"]\n')
    from_toml = SweepConfig.from_file(toml)
    assert [r.key for r in from_toml.runs()] == [r.key for r in SweepConfig(**SMALL).runs()]
    yaml = pytest.importorskip("yaml")
    y = tmp_path / "s.yaml"
    y.write_text(yaml.safe_dump({**SMALL}))
    assert [r.key for r in SweepConfig.from_file(y).runs()] == [r.key for r in from_toml.runs()]
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        SweepConfig.from_file(bad)


def test_a_run_records_what_the_issue_asks_for(reference):
    summary, rows, _ = reference
    assert summary.expected == summary.ran == len(rows) == 45 and summary.failed == 0
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["fits"] == 1 and r["macs"] <= r["original_macs"] and r["params"] <= r["original_params"]
        if r["budget_macs"] is not None:
            assert r["macs"] <= r["budget_macs"] * r["original_macs"]
        assert r["macs"] == r["planned_macs"] and r["params"] == r["planned_params"]  # cost model == independent count
        assert 0 <= r["metric_before"] <= 1 and r["metric_original"] > 0.9
        assert list(r["ranks"]) == ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]  # network order
        assert set(r["ranks"]) == set(r["full_ranks"]) and all(0 <= r["ranks"][n] <= r["full_ranks"][n] for n in r["ranks"])
        assert r["versions"]["torch"] and r["git_revision"] and r["solver_seconds"] >= 0 and r["total_seconds"] > 0
        assert r["dataset"] == "digits" and r["eval_samples"] == 300
    # seeds draw different calibration samples: each seed is its own run
    cobla = [r for r in rows if r["method"] == "cobla" and r["budget_macs"] == 0.3]
    assert {r["seed"] for r in cobla} == {0, 1, 2}


def test_rerunning_skips_what_is_stored(reference, tmp_path):
    _, rows, d = reference
    again = run_sweep(SweepConfig(**SMALL), db=d / "runs.sqlite", cache_dir=d / "cache", workers=1, progress=False)
    assert again.ran == 0 and again.skipped == 45
    bigger = SweepConfig(**{**SMALL, "budgets": SMALL["budgets"] + [{"macs": 0.7}], "methods": ["exact", "uniform"]})
    grown = run_sweep(bigger, db=d / "runs.sqlite", cache_dir=d / "cache", workers=1, progress=False)
    assert grown.expected == 24 and grown.skipped == 18 and grown.ran == 6  # only the new budget's runs
    with ResultStore(d / "runs.sqlite") as store:
        assert len(store.rows(sweep="small")) == 24  # the sweep's membership follows its latest config
        assert len(store.rows()) == 51


def test_shared_work_is_cached_on_disk(reference):
    _, _, d = reference
    kinds = {p.parent.name for p in (d / "cache").rglob("*.pt")}
    assert {"svd", "sensitivity", "metric"} <= kinds
    # one sensitivity table per seed (calibration draw), shared by every budget
    assert len(list((d / "cache" / "sensitivity").glob("*.pt"))) == 3


def test_a_failing_run_is_recorded_not_fatal(tmp_path):
    spec = RunSpec.from_dict(dict(model="lenet5-digits", method="exact", budget_params=1e-6))  # less than the biases
    row = execute_run(spec.to_dict(), str(tmp_path))
    assert row["status"] == "infeasible" and "smallest" in row["error"]


def _sweep_process(db, cache, workers=2):
    return subprocess.Popen(
        [sys.executable, "-m", "lowrank", "sweep", *SWEEP_ARGS, "--db", str(db), "--cache", str(cache), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )


def _stored(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_sigkill_at_any_moment_resumes_with_nothing_lost_or_duplicated(reference, tmp_path):
    _, ref_rows, _ = reference
    db, cache = tmp_path / "runs.sqlite", tmp_path / "cache"
    # Kill three times: before any row can exist, after the first rows, and in the thick of it.
    for wait_for_rows, extra_delay in ((0, 0.3), (1, 0.0), (len(ref_rows) // 2, 0.1)):
        proc = _sweep_process(db, cache)
        deadline = time.time() + 120
        while _stored(db) < wait_for_rows and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(extra_delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _stored(db) < len(ref_rows), "the sweep finished before it could be killed"
    proc = _sweep_process(db, cache)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    with sqlite3.connect(db) as con:
        keys = [k for (k,) in con.execute("SELECT key FROM runs")]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(keys) == len(set(keys)) == len(ref_rows)  # every run exactly once
    with ResultStore(db) as store:
        resumed = store.rows(sweep="small")
    assert values(resumed) == values(ref_rows)  # the same values as the uninterrupted sweep


def test_sensitivity_is_measured_once_per_model_and_seed(tmp_path, monkeypatch):
    import lowrank.needs.network_loss

    calls = []
    real = lowrank.needs.network_loss.sensitivity_samples
    monkeypatch.setattr(lowrank.needs.network_loss, "sensitivity_samples", lambda *a, **k: calls.append(1) or real(*a, **k))
    for macs in (0.3, 0.5, 0.7):
        spec = RunSpec.from_dict(dict(model="lenet5-digits", method="sensitivity", budget_macs=macs, calib_samples=64, select_samples=64))
        assert execute_run(spec.to_dict(), str(tmp_path))["status"] == "ok"
    assert len(calls) == 1


def test_the_default_grid_keeps_its_eight_methods_and_all_adds_svd_llms_rules():
    # The README's main command and its committed report are this grid; `all` runs every method.
    import solvers
    from lowrank.experiment.sweep import DEFAULT_METHODS, SweepConfig

    assert SweepConfig().methods == list(DEFAULT_METHODS)
    assert {"svdllm", "svdllm2"} <= set(SweepConfig(methods=["all"]).methods) == set(solvers.methods())
    assert not {"svdllm", "svdllm2"} & set(DEFAULT_METHODS)
