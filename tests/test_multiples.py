"""Rank multiples chosen inside the optimisation (solvers.multiples): every method gives ranks
that are multiples of k (or full), and every budget holds by the independent count."""
import numpy as np
import pytest
import torch

import lowrank
import solvers
from lowrank import Budget
from lowrank.resources import count
from solvers.multiples import Multiples
from solvers.synthetic import from_shapes


def _fits(result, x):
    counted = count(result.model, x[:1], list(result.plan.limits))
    return all(counted[r] <= result.plan.limits[r] for r in counted)


@pytest.mark.parametrize("method", solvers.methods())
@pytest.mark.parametrize("k", [4, 8])
def test_every_method_gives_multiples_of_k_and_keeps_the_budget(method, k):
    torch.manual_seed(0)
    from lowrank.zoo import LeNet5

    model = LeNet5().eval()
    x = torch.randn(48, 1, 28, 28)
    y = torch.randint(0, 10, (48,))
    budget = Budget(macs=0.45, params=0.5)
    result = lowrank.compress(model, [(x[:32], y[:32]), (x[32:], y[32:])], budget, method=method, rank_multiple=k, basis="weight")
    for row in result.plan.rows:
        assert row.rank % k == 0 or row.rank == row.full_rank, (row.name, row.rank, row.full_rank)
    assert result.allocation.info["rank_multiple"] == k
    assert _fits(result, x)


def test_blocks_keep_energy_costs_and_objectives_consistent():
    problem = from_shapes([(64, 147, 100, 64), (96, 30, 49, 96), (10, 7, 1, 10)], seed=1)
    m = Multiples(problem, 8)
    for g, b in zip(problem.groups, m.problem.groups):
        assert b.full_rank == -(-g.full_rank // 8)
        np.testing.assert_allclose(np.cumsum(b.values**2)[:-1], np.cumsum(g.values**2)[7:-1:8][: b.full_rank - 1])
        np.testing.assert_allclose(b.rank_cost, 8 * g.rank_cost)
    # the blocked cost of any block counts is never below the true cost of the ranks they map to
    rng = np.random.default_rng(0)
    for _ in range(200):
        units = [rng.integers(0, b.full_rank + 1) for b in m.problem.groups]
        assert np.all(problem.cost(m.ranks(units)) <= m.problem.cost(units) + 1e-9)
    # ranks -> blocks rounds down (never more expensive), full rank stays full
    ranks = [g.full_rank for g in problem.groups]
    assert list(m.ranks(m.blocks(ranks))) == ranks
    assert list(m.blocks([13, 17, 3])) == [1, 2, 0]


def test_the_network_loss_sees_whole_blocks_and_its_gradient_sums_over_them():
    problem = from_shapes([(20, 12, 1, 0)], seed=0)
    name = problem.groups[0].name
    weights = np.arange(12, dtype=np.float64)
    seen = {}

    def loss(masks):
        seen["m"] = masks[name]
        return float(weights @ masks[name]), {name: weights.copy()}

    blocked = Multiples(problem, 5).objective(solvers.Differentiable(loss))
    value, grads = blocked({name: np.array([1.0, 0.5, 0.0])})
    np.testing.assert_array_equal(seen["m"], [1] * 5 + [0.5] * 5 + [0, 0])
    assert value == pytest.approx(weights[:5].sum() + 0.5 * weights[5:10].sum())
    np.testing.assert_allclose(grads[name], [weights[:5].sum(), weights[5:10].sum(), weights[10:].sum()])


def test_rank_multiple_must_be_a_positive_integer():
    problem = from_shapes([(20, 12, 1, 0)], seed=0)
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="rank_multiple must be a positive integer"):
            Multiples(problem, bad)


def test_sweep_rows_with_rank_multiples(tmp_path):
    pytest.importorskip("sklearn")
    from lowrank.experiment.runner import RunSpec
    from lowrank.experiment.store import ResultStore
    from lowrank.experiment.sweep import SweepConfig, run_sweep

    config = SweepConfig(name="mult", models=["lenet5-digits"], budgets=[{"macs": 0.5}], methods=["exact", "cobla"],
                         rank_multiples=[1, 4], bases=["weight"], calib_samples=64, select_samples=64, eval_samples=None)
    run_sweep(config, db=tmp_path / "runs.sqlite", cache_dir=tmp_path / "cache", workers=1, progress=False)
    with ResultStore(tmp_path / "runs.sqlite") as store:
        rows = store.rows(sweep="mult")
    assert len(rows) == 4 and all(r["status"] == "ok" and r["fits"] == 1 for r in rows)
    for r in rows:
        assert all(rank % r["rank_multiple"] == 0 or rank == r["full_ranks"][n] for n, rank in r["ranks"].items())
    assert {r["rank_multiple"] for r in rows} == {1, 4}
    # a run without rank multiples keeps the key it had before they existed
    plain = RunSpec(model="lenet5-digits", method="exact", limits=(("macs", 0.5),))
    assert plain.key == RunSpec(model="lenet5-digits", method="exact", limits=(("macs", 0.5),), rank_multiple=1).key
    assert plain.key != RunSpec(model="lenet5-digits", method="exact", limits=(("macs", 0.5),), rank_multiple=4).key
    from lowrank.report.labels import method_label

    assert method_label({"method": "cobla", "basis": "activation", "rank_multiple": 4}) == "cobla (activation, ranks x4)"


def test_the_default_rank_multiple_follows_the_device(monkeypatch):
    import importlib

    compress_module = importlib.import_module("lowrank.compress")
    from lowrank.cli import build_parser

    model = torch.nn.Linear(4, 4)
    assert compress_module.device_rank_multiple(model) == 1  # the CPU: measured, multiples buy nothing here
    monkeypatch.setattr(compress_module, "model_device", lambda m: torch.device("cuda"))
    assert compress_module.device_rank_multiple(model) == 8
    parser = build_parser()
    assert parser.parse_args(["compress", "--model", "m", "--macs", "0.5"]).rank_multiple == "auto"
    assert parser.parse_args(["compress", "--model", "m", "--macs", "0.5", "--rank-multiple", "8"]).rank_multiple == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["compress", "--model", "m", "--macs", "0.5", "--rank-multiple", "0"])


def test_auto_on_the_cpu_is_rank_multiple_one():
    torch.manual_seed(0)
    from lowrank.zoo import LeNet5

    model, x = LeNet5().eval(), torch.randn(16, 1, 28, 28)
    auto = lowrank.compress(model, x, Budget(macs=0.5), method="exact", basis="weight")
    one = lowrank.compress(model, x, Budget(macs=0.5), method="exact", basis="weight", rank_multiple=1)
    assert auto.plan.ranks == one.plan.ranks
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        lowrank.compress(model, x, Budget(macs=0.5), method="exact", rank_multiple="big")
