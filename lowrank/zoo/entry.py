"""A zoo entry: a named, trained model with its dataset, metric and checked weights."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .. import data
from ..util.batches import sample_batches
from ..util.inputs import take

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class ZooEntry:
    name: str
    description: str
    builder: Callable[[], nn.Module]
    dataset: str
    metric: str
    train_config: dict
    sha256: str | None = None  # of the committed weights file
    recorded_metric: float | None = None  # on the full test split, with the committed weights
    extras: dict = field(default_factory=dict)
    loader: Callable[[], nn.Module] | None = None  # for entries whose weights come from a package
    splits_fn: Callable[[], data.Splits] | None = None  # for entries with their own dataset
    include: Sequence[str] | None = None  # name prefixes of the layers compress may factorise
    scorer: Callable[[nn.Module, object, torch.Tensor], float] | None = None  # (model, x, y) -> metric; default top-1 accuracy
    constant_score: Callable[[torch.Tensor], float] | None = None  # y -> the best constant prediction's metric
    sampler: Callable[[nn.Module], str] | None = None  # model -> what it writes (a language model), shown in reports
    calib_samples: int | None = 128  # what a sweep draws for calibration by default (None: the whole part)
    select_samples: int | None = None  # ... and for choosing COBLA's candidate
    finetune_recipe: dict | None = None  # what finetune() uses where its caller sets nothing (lr, batch_size, train, clip, temperature)
    statistics_samples: int | None = None  # train-part samples the whitening and the refit stream over (None: the calibration draw)

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"

    @cached_property
    def splits(self) -> data.Splits:
        return self.splits_fn() if self.splits_fn else data.DATASETS[self.dataset]()

    def example_input(self):
        return take(self.splits.test[0], slice(0, 1))

    @property
    def has_weights(self) -> bool:
        return self.loader is not None or self.weights_path.exists()

    def calibration(self, batch_size: int = 250):
        """The calibration draw a sweep of seed 0 makes, as (inputs, labels) batches: what
        compress takes gradients on. The draw, not the whole part: the CLI then plans as the
        sweeps do, and a method that runs the network on every calibration sample per candidate
        (sensitivity, COBLA's start) takes seconds, not minutes."""
        return self._part("calib", self.calib_samples, batch_size)

    def selection(self, batch_size: int = 250):
        """The selection draw a sweep of seed 0 makes: scores candidate allocations, disjoint
        from calib and test."""
        return self._part("select", self.select_samples, batch_size)

    def statistics(self, batch_size: int = 8):
        """What compress's activation basis and refit stream over for this entry, drawn by
        seed 0 from the train part (disjoint from test): many more samples than the method's
        calibration draw, as both keep sums the size of a layer; None where the entry sets no
        ``statistics_samples`` (they use the calibration draw)."""
        return None if self.statistics_samples is None else self._part("train", self.statistics_samples, batch_size)

    def _part(self, part: str, sweep_samples: int | None, batch_size: int):
        whole = getattr(self.splits, part)
        n = sweep_samples if sweep_samples is not None and sweep_samples < len(whole[1]) else None  # a small part: all of it
        return sample_batches(whole, n, seed=0, batch_size=batch_size)

    def load(self, check: bool = True) -> nn.Module:
        """The trained model (eval mode), its weights checked against the recorded SHA-256."""
        if self.loader is not None:
            return self.loader().eval()
        path = self.weights_path
        if not path.exists():
            raise FileNotFoundError(f"no weights for {self.name!r} at {path}; make them with `lowrank zoo train {self.name}`")
        if check and self.sha256 is not None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != self.sha256:
                raise ValueError(f"weights of {self.name!r} do not match the recorded SHA-256 ({digest} != {self.sha256})")
        model = self.builder()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    def evaluate(self, model: nn.Module, limit: int | None = None) -> float:
        """The entry's metric (its scorer, else top-1 accuracy) on its test split (the first
        ``limit`` samples)."""
        from .train import accuracy

        x, y = self.splits.test
        if limit is not None:
            x, y = take(x, slice(0, limit)), y[:limit]
        return (self.scorer or accuracy)(model, x, y)

    def chance(self, limit: int | None = None) -> float:
        """The metric of the best constant prediction on the same test samples (the most common
        class, or the entry's own rule): where a wrecked model lands, drawn beside the results."""
        y = self.splits.test[1][:limit]
        if self.constant_score is not None:
            return self.constant_score(y)
        return float(torch.bincount(y).max()) / len(y)

    def train(self, device: str = "cpu", progress: bool = True, out: Path | None = None) -> tuple[nn.Module, list[float], str]:
        """Train from the recorded seed; save the weights; return (model, accuracy per epoch, sha256)."""
        from .train import fit

        if self.loader is not None:
            raise ValueError(f"{self.name!r} ships pretrained in a package; it is not trained here")
        cfg = self.train_config
        torch.manual_seed(cfg["seed"])
        model = self.builder()
        history = fit(model, self.splits, cfg["epochs"], cfg["lr"], cfg["seed"], device=device, progress=progress, aug=cfg.get("augment", True))
        model = model.cpu().eval()
        out = out or self.weights_path
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out)
        return model, history, hashlib.sha256(out.read_bytes()).hexdigest()
