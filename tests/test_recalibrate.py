"""BatchNorm statistics re-estimated on calibration data after rebuilding
(lowrank.recalibrate): exact averages over every batch, nothing else changed, and the
option that sweeps and frontiers pass through."""
import torch
from torch import nn

import lowrank
from lowrank.experiment.runner import RunSpec


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3))


def test_the_statistics_become_the_average_over_every_calibration_batch():
    model = _model()
    batches = [(torch.randn(5, 2, 6, 6) * 3 + 1, None), (torch.randn(7, 2, 6, 6), None)]
    model(batches[0][0])  # materialise the lazy layer
    model.eval()
    norm = model[1]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert lowrank.recalibrate_batchnorm(model, batches) == 1
    with torch.no_grad():
        pre = [model[0](x) for x, _ in batches]
    # the cumulative average of the per-batch statistics (PyTorch's momentum=None rule), not of the last batch
    mean = sum(p.mean(dim=(0, 2, 3)) for p in pre) / len(pre)
    var = sum(p.var(dim=(0, 2, 3), unbiased=True) for p in pre) / len(pre)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
    assert not model.training and not norm.training and norm.momentum == 0.1  # modes and momentum restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # no weight changed


def test_a_rebuilt_model_normalises_its_calibration_data_again_and_a_model_without_norms_is_left_alone():
    """A rank-1 conv shifts what the norm after it sees: the original's statistics no longer
    centre it. Recalibrated, the norm's output over the calibration data has the mean its
    bias says, per channel, as in the original."""
    model = _model()
    x = torch.randn(64, 2, 6, 6) * 2 + 0.5
    model(x)
    lowrank.recalibrate_batchnorm(model, [(x, None)])
    model.eval()
    result = lowrank.compress(model, x, lowrank.Budget(params=0.5), method="uniform", basis="weight", min_rank=1,
                              refit=False)  # (a refit recentres the conv's output itself)
    norm = result.model[1]

    def off_centre() -> float:
        with torch.no_grad():
            out = norm(result.model[0](x))
        return float((out.mean(dim=(0, 2, 3)) - norm.bias).abs().max())

    before = off_centre()
    lowrank.recalibrate_batchnorm(result.model, x)
    assert off_centre() < 1e-4 < before
    plain = nn.Sequential(nn.Linear(3, 2))
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    assert lowrank.recalibrate_batchnorm(plain, torch.randn(4, 3)) == 0
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())


def test_a_run_with_recalibration_is_a_run_of_its_own_and_one_without_keeps_its_key():
    run = dict(model="lenet5-fmnist", method="exact", limits=(("macs", 0.5),))
    assert RunSpec(**run).key == RunSpec.from_dict({k: v for k, v in RunSpec(**run).to_dict().items() if k != "recalibrate"}).key
    assert RunSpec(**run, recalibrate=1024).key != RunSpec(**run).key


def test_sweeps_and_frontiers_take_the_option():
    from lowrank.cli import main
    from lowrank.cli.frontier import same_recipe
    from lowrank.experiment.sweep import SweepConfig

    config = SweepConfig.from_dict({"name": "f", "models": ["lenet5-digits"], "budgets": [{"latency": 0.8}],
                                    "methods": ["exact"], "schemes": ["channel"], "recalibrate": 512}, source="test")
    (run,) = config.runs()
    assert run.recalibrate == 512
    plain = SweepConfig.from_dict({**config.__dict__, "recalibrate": 0, "budgets": [{"latency": 0.8}]}, source="test").runs()[0]
    rows = [{**r.to_dict(), "spec": r.to_dict(), "key": r.key} for r in (run, plain)]
    assert [r["recalibrate"] for r in same_recipe(rows, config, "latency")] == [512]  # not drawn beside unrecalibrated runs
