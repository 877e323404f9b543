"""Datasets that load offline, split into disjoint train / calibration / selection / test parts.

Split rule (documented, seeded, disjoint by construction): the dataset's official test set
is the test part; the official training set is permuted with ``torch.Generator`` seeded by
``seed`` (default 0) and cut into ``calib`` (first 1,000), ``select`` (next 1,000) and
``train`` (the rest). Compression sees only calib and select; reported accuracy is on test.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .util.inputs import take

FASHION_MNIST_DIR = Path(os.environ.get("LOWRANK_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530  # of the training images, scaled to [0, 1]


class DatasetMissingError(RuntimeError):
    """A dataset's package is not installed; the message names the install command."""


@dataclass
class Splits:
    """Disjoint parts of one dataset, each a pair of tensors (inputs, labels)."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    calib: tuple[torch.Tensor, torch.Tensor]
    select: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    indices: dict = None  # part -> indices into the official training set (test: into the test set)

    def batches(self, part: str, batch_size: int = 250) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = getattr(self, part)
        return [(take(x, slice(i, i + batch_size)), y[i : i + batch_size]) for i in range(0, len(y), batch_size)]

    def sizes(self) -> dict[str, int]:
        return {p: len(getattr(self, p)[1]) for p in ("train", "calib", "select", "test")}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def split_train(name, x, y, x_test, y_test, seed: int = 0, n_calib: int = 1000, n_select: int = 1000) -> Splits:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    calib, select, train = perm[:n_calib], perm[n_calib : n_calib + n_select], perm[n_calib + n_select :]
    indices = {"train": train, "calib": calib, "select": select, "test": torch.arange(len(y_test))}
    return Splits(name, (take(x, train), y[train]), (take(x, calib), y[calib]), (take(x, select), y[select]), (x_test, y_test), indices)


def _fashion_mnist_files(root: Path = FASHION_MNIST_DIR) -> dict[str, Path]:
    files = {k: root / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz" for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST not found ({missing[0]}). It comes from the Debian package dataset-fashion-mnist: "
            "run `apt-get update && apt-get install -y dataset-fashion-mnist` (as root)."
        )
    return files


def fashion_mnist(seed: int = 0, root: Path = FASHION_MNIST_DIR) -> Splits:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, normalised, N x 1 x 28 x 28."""
    files = _fashion_mnist_files(root)

    def images(key):
        x = torch.from_numpy(_read_idx(files[key]).copy()).float().div_(255.0)
        return ((x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD).unsqueeze(1)

    def labels(key):
        return torch.from_numpy(_read_idx(files[key]).astype(np.int64))

    return split_train("fashion-mnist", images("train-images"), labels("train-labels"), images("t10k-images"), labels("t10k-labels"), seed)


def digits(seed: int = 0, size: int = 28) -> Splits:
    """scikit-learn's bundled 8x8 digits, upsampled to ``size``; 300 test, 200 calib, 200 select."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DatasetMissingError("the digits dataset needs scikit-learn: pip install scikit-learn") from err
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 1))
    test, rest = perm[:300], perm[300:]
    return split_train("digits", x[rest], y[rest], x[test], y[test], seed, n_calib=200, n_select=200)


DATASETS = {"fashion-mnist": fashion_mnist, "digits": digits}


def check_available(name: str) -> None:
    """Raise DatasetMissingError (naming the install command) if a dataset cannot load here."""
    if name == "fashion-mnist":
        _fashion_mnist_files(FASHION_MNIST_DIR)
    elif name == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError as err:
            raise DatasetMissingError("the digits dataset needs scikit-learn: pip install scikit-learn") from err
    elif name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
