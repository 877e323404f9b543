"""Data splits, zoo weights, evaluation and fine-tuning (Fashion-MNIST tests skip without the dataset)."""
import hashlib

import pytest
import torch

import lowrank
from lowrank import Budget
from lowrank.data import DatasetMissingError, digits, fashion_mnist
from lowrank.zoo import ZOO, get

from helpers import counted_macs, n_params


def have_fashion_mnist():
    try:
        fashion_mnist()
        return True
    except DatasetMissingError:
        return False


needs_fmnist = pytest.mark.skipif(not have_fashion_mnist(), reason="Debian package dataset-fashion-mnist not installed")
TRAINED = [name for name, e in ZOO.items() if e.weights_path.exists()]


def assert_disjoint(splits, n_train_official):
    parts = [splits.indices[p] for p in ("train", "calib", "select")]
    joined = torch.cat(parts)
    assert len(torch.unique(joined)) == len(joined) == n_train_official  # disjoint and complete
    for p in ("train", "calib", "select"):
        x, y = getattr(splits, p)
        assert len(x) == len(y) == len(splits.indices[p])


@needs_fmnist
def test_fashion_mnist_splits_are_disjoint_and_seeded():
    s = fashion_mnist()
    assert s.sizes() == {"train": 58000, "calib": 1000, "select": 1000, "test": 10000}
    assert_disjoint(s, 60000)
    assert s.train[0].shape[1:] == (1, 28, 28) and abs(float(s.train[0].mean())) < 0.01
    again = fashion_mnist()
    assert torch.equal(again.indices["calib"], s.indices["calib"])
    assert not torch.equal(fashion_mnist(seed=1).indices["calib"], s.indices["calib"])


def test_digits_splits_are_disjoint():
    s = digits()
    assert_disjoint(s, 1797 - 300)


def test_missing_dataset_names_the_package(tmp_path):
    with pytest.raises(DatasetMissingError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist(root=tmp_path)


def test_every_entry_is_described():
    assert {"lenet5-fmnist", "vgg-fmnist", "resnet20-fmnist"} <= set(ZOO)
    for entry in ZOO.values():
        assert entry.description and entry.metric and entry.train_config["seed"] == 0
    with pytest.raises(ValueError, match="lowrank zoo list"):
        get("no-such-model")


@needs_fmnist
@pytest.mark.parametrize("name", TRAINED)
def test_weights_match_their_hash_and_recorded_accuracy(name):
    entry = ZOO[name]
    assert entry.sha256 == hashlib.sha256(entry.weights_path.read_bytes()).hexdigest()
    model = entry.load()
    acc = entry.evaluate(model, limit=2000)
    assert entry.recorded_metric is not None
    assert abs(acc - entry.recorded_metric) < 0.03  # a 2,000-image subsample of the recorded test accuracy


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    entry = ZOO[TRAINED[0]] if TRAINED else pytest.skip("no committed weights")
    bad = tmp_path / f"{entry.name}.pt"
    bad.write_bytes(entry.weights_path.read_bytes() + b"x")
    monkeypatch.setattr("lowrank.zoo.entry.WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        entry.load()


@needs_fmnist
@pytest.mark.parametrize("name", TRAINED)
def test_every_entry_compresses_under_a_budget(name):
    entry = ZOO[name]
    model = entry.load()
    budget = Budget(macs=0.5, params=0.5)
    result = lowrank.compress(model, entry, budget, method="exact", scheme="auto")
    x = entry.example_input()
    limits = budget.limits(result.table.totals)
    assert counted_macs(result.model, x) <= limits["macs"]
    assert n_params(result.model) <= limits["params"]


@needs_fmnist
def test_finetuning_repairs_a_damaged_model():
    entry = ZOO["lenet5-fmnist"]
    if not entry.weights_path.exists():
        pytest.skip("no committed LeNet-5 weights")
    original = entry.load()
    result = lowrank.compress(original, entry, Budget(macs=0.3), method="uniform")
    before = lowrank.evaluate(result.model, entry, limit=2000)
    history = lowrank.finetune(result, entry, epochs=1, samples_per_epoch=6000, progress=False, eval_limit=2000)
    assert history[-1] > before + 0.1, (before, history)
    kd_result = lowrank.compress(original, entry, Budget(macs=0.3), method="uniform")
    kd_history = lowrank.finetune(kd_result, entry, epochs=1, teacher=original, kd=0.5, samples_per_epoch=6000, progress=False, eval_limit=2000)
    assert kd_history[-1] > before + 0.1
    with pytest.raises(ValueError, match="teacher"):
        lowrank.finetune(kd_result, entry, kd=0.5)


@needs_fmnist
@pytest.mark.slow
def test_retraining_lenet_reproduces_the_recorded_accuracy(tmp_path):
    entry = ZOO["lenet5-fmnist"]
    torch.set_num_threads(1)  # as recorded (bench/train_zoo.py --threads 1)
    _, history, _ = entry.train(progress=False, out=tmp_path / "lenet.pt")
    assert abs(history[-1] - entry.recorded_metric) <= 0.005


def test_compress_on_an_entry_takes_the_sweeps_seeded_draws():
    pytest.importorskip("sklearn")
    entry = get("lenet5-digits")
    calib = entry.calibration()
    assert sum(len(y) for _, y in calib) == entry.calib_samples  # the sweep's default draw, not the whole part
    again = entry.calibration()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(calib, again))  # seed 0: the same draw every time
    whole = len(entry.splits.select[1])
    assert sum(len(y) for _, y in entry.selection()) == (whole if entry.select_samples is None else entry.select_samples)


def test_a_finetune_recipe_with_an_unknown_setting_is_refused_by_name():
    from dataclasses import replace
    from lowrank.finetuning import recipe_for
    entry = get("lenet5-fmnist")
    assert recipe_for(replace(entry, finetune_recipe={"lr": 1e-3}))["lr"] == 1e-3
    with pytest.raises(ValueError, match=r"lenet5-fmnist.*'learning_rate'.*the settings are"):
        recipe_for(replace(entry, finetune_recipe={"learning_rate": 1e-3}))
