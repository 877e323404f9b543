"""The Ray executor gives the same rows as the local one (CI installs the ``ray`` extra)."""
import pytest

pytest.importorskip("ray")
pytest.importorskip("sklearn")

from lowrank.experiment.store import ResultStore  # noqa: E402
from lowrank.experiment.sweep import SweepConfig, run_sweep  # noqa: E402

from test_sweep import values  # noqa: E402

CONFIG = dict(name="ray", models=["lenet5-digits"], budgets=[{"macs": 0.4}, {"params": 0.3}],
              methods=["cobla", "sensitivity", "exact"], seeds=[0], calib_samples=64, select_samples=64, eval_samples=None,
              bases=["weight"])


def test_ray_and_local_sweeps_store_the_same_rows(tmp_path):
    rows = {}
    for executor in ("local", "ray"):
        db = tmp_path / f"{executor}.sqlite"
        summary = run_sweep(SweepConfig(**CONFIG), db=db, cache_dir=tmp_path / f"cache-{executor}", executor=executor,
                            workers=2, progress=False)
        assert summary.ran == 6 and summary.failed == 0
        with ResultStore(db) as store:
            rows[executor] = store.rows(sweep="ray")
    assert values(rows["ray"]) == values(rows["local"])
