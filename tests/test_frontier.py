"""The speed-versus-accuracy frontier (lowrank.report.frontier, ``lowrank frontier``): the
fastest plan within a drop, before fine-tuning against the original and after it against
the control, the plans no other beats, and the command that runs and writes it."""
import pytest

from lowrank.report.frontier import frontier


def _row(method, budget, speedup, before, after=None, scheme="channel", control=0.92):
    return {"status": "ok", "model": "m", "metric_name": "top-1 accuracy", "metric_original": 0.93, "method": method,
            "scheme": scheme, "basis": "activation", "rank_multiple": 1, "budget_latency": budget, "latency": 100.0 / speedup,
            "original_latency": 100.0, "metric_before": before, "metric_after": after, "fits": 1,
            "metric_original_finetuned": control if after is not None else None}


ROWS = [
    _row("exact", 0.9, 1.1, 0.929, 0.925),
    _row("exact", 0.8, 1.3, 0.925, 0.921),   # within 1 point of 0.93 before; 0.1 below the control after
    _row("exact", 0.6, 1.7, 0.85, 0.915),    # 8 points down before; within 0.5 of the control after
    _row("exact", 0.5, 2.0, 0.30, 0.80),
    _row("exact", 0.8, 1.2, 0.90, 0.90, scheme="spatial"),  # slower and worse than exact channel at 0.8: off the front
]


def test_the_fastest_plan_within_the_drop_before_and_after_fine_tuning():
    f = frontier(ROWS, "latency", within=1.0)
    assert f.original == 0.93 and f.control == 0.92
    best = f.fastest_within(after=False)
    assert best.speedup == pytest.approx(1.3) and best.budget == 0.8
    assert f.fastest_within(after=True).speedup == pytest.approx(1.7)
    tight = frontier(ROWS, "latency", within=0.05)
    assert tight.fastest_within(after=False) is None  # nothing is that close: said, not guessed


def test_the_front_drops_the_plans_another_beats_on_both_counts():
    f = frontier(ROWS, "latency")
    front = f.front(after=False)
    assert [round(x, 2) for x, _ in front] == [1.1, 1.3, 1.7, 2.0]  # the spatial plan is beaten by exact at 0.8
    assert all(y1 >= y2 for (_, y1), (_, y2) in zip(front, front[1:]))  # faster costs accuracy along the front


def test_the_table_and_plot_say_it(tmp_path):
    f = frontier(ROWS, "latency")
    text = f.to_markdown()
    assert "Fastest within 1 point(s), before fine-tuning:** 1.30x" in text
    assert "after fine-tuning (against the control):** 1.70x" in text
    assert "| exact (channel) | 0.6 | 1.70x | 85.00% | +8.00 | 91.50% | +0.50 |" in text
    assert f.plot(tmp_path / "f.png").stat().st_size > 10_000


def test_rows_of_several_models_or_without_timings_are_refused():
    with pytest.raises(ValueError, match="one model"):
        frontier(ROWS + [{**ROWS[0], "model": "other"}], "latency")
    with pytest.raises(ValueError, match="no run with a measured"):
        frontier([{**ROWS[0], "latency": None}], "latency")


def test_the_command_runs_times_and_writes_the_frontier(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from lowrank.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOWRANK_LATENCY_CACHE", str(tmp_path / "latency"))
    rc = main(["frontier", "--model", "lenet5-digits", "--budgets", "0.98,0.9", "--schemes", "auto", "--eval-samples", "100",
               "--db", str(tmp_path / "runs.sqlite"), "--cache", str(tmp_path / "cache"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Fastest within 1 point(s), before fine-tuning" in out and "| exact | 0.98 |" in out
    folder = tmp_path / "reports" / "speed" / "frontier-lenet5-digits"  # the default: speed reports go to reports/speed/
    assert (folder / "frontier.md").exists() and (folder / "frontier.png").exists() and (folder / "index.md").exists()
    assert "Measured on: eager PyTorch, model device, 1 thread(s), batch 64, float32, BatchNorm folded, channels-last." in (folder / "frontier.md").read_text()


def test_a_later_call_adds_to_the_frontier(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from lowrank.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOWRANK_LATENCY_CACHE", str(tmp_path / "latency"))
    common = ["--model", "lenet5-digits", "--schemes", "auto", "--db", str(tmp_path / "runs.sqlite"),
              "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(["frontier", "--budgets", "0.98", "--methods", "exact", "--eval-samples", "100", *common]) == 0
    assert main(["frontier", "--budgets", "0.98", "--methods", "uniform", "--eval-samples", "100", *common]) == 0
    out = capsys.readouterr().out.split("## ")[-1]  # the second call's frontier
    assert "| exact | 0.98 |" in out and "| uniform | 0.98 |" in out
    assert main(["frontier", "--budgets", "0.98", "--methods", "uniform", "--eval-samples", "50", *common]) == 0
    assert "| exact |" not in capsys.readouterr().out.split("## ")[-1]  # another evaluation: not the same frontier


def test_runs_timed_on_another_target_are_left_out_of_the_frontier():
    """A run stored before the target changed (BatchNorm not folded: its key does not name
    the target it was timed on) is not drawn beside runs timed as deployed."""
    from lowrank.cli.frontier import same_recipe
    from lowrank.experiment.sweep import SweepConfig

    config = SweepConfig.from_dict({"name": "f", "models": ["lenet5-digits"], "budgets": [{"latency": 0.8}],
                                    "methods": ["exact"], "schemes": ["channel"]}, source="test")
    run = config.runs()[0]
    now = {**run.to_dict(), "spec": run.to_dict(), "key": run.key}
    before = {**now, "key": "479347f845d3d9f78e4fea2a"}
    assert same_recipe([now, before], config, "latency") == [now]
