"""The bridge from a model to a solver objective: the network's loss as a function of masks.

- :class:`NetworkLoss`: loss on calibration batches through the masked model, with its
  gradient with respect to every singular-value mask (autograd); also scores whole rank
  allocations (prefix masks), which is how candidate roundings are compared on a selection
  split.
- :func:`measure_sensitivity`: per-layer loss at candidate ranks (one layer truncated at a
  time), for the AIMET-style ``sensitivity`` method.

The loss is cross-entropy against the targets when the batches have them, otherwise the
mean squared distance to the original model's outputs (distillation).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from solvers import Differentiable, Problem, Separable
from solvers.objectives import from_samples
from solvers.selection import Score

from .graph import severing
from .inputs import call_checked, main_output, model_device, naming_input, size, take, to_device
from .modes import evaluating
from .table import LayerTable

Batch = tuple[Any, Any]  # (inputs, targets or None)


def as_batches(calib: Any) -> list[Batch]:
    """Normalise calibration data to a list of (inputs, targets-or-None) batches."""
    if isinstance(calib, (torch.Tensor, dict)):
        return [(calib, None)]
    if isinstance(calib, tuple) and len(calib) == 2 and isinstance(calib[0], (torch.Tensor, dict)):
        return [(calib[0], calib[1])]
    if isinstance(calib, Iterable):
        out = []
        for b in calib:
            out += as_batches(b)
        if not out:
            raise ValueError("calib is empty: give at least one batch of inputs")
        return out
    raise ValueError(f"calib must be a tensor, a dict, an (inputs, targets) pair or an iterable of batches, not {type(calib).__name__}")


def split_calibration(batches: list[Batch], selection_fraction: float = 0.25) -> tuple[list[Batch], list[Batch]]:
    """Disjoint (gradient, selection) parts: the last batches, or the last samples of one batch."""
    if len(batches) >= 2:
        n_sel = max(1, int(round(len(batches) * selection_fraction)))
        return batches[:-n_sel], batches[-n_sel:]
    (x, y), = batches
    n = size(x)
    if n < 2:
        raise ValueError("calibration data needs at least 2 samples: one part for gradients, one to select the rounding")
    cut = n - max(1, int(round(n * selection_fraction)))
    first, last = slice(0, cut), slice(cut, n)
    return [(take(x, first), None if y is None else y[first])], [(take(x, last), None if y is None else y[last])]


def in_chunks(batches: Iterable[Batch], most: int = 128) -> list[Batch]:
    """The batches cut to at most ``most`` samples each: the passes are repeated many times,
    and on a CPU a few hundred images at once run slower per image than a hundred (the
    activations leave the cache; measured 20% on vgg-fmnist's forward and backward)."""
    out = []
    for x, y in batches:
        n = size(x)
        for i in range(0, n, most):
            part = slice(i, min(i + most, n))
            out.append((take(x, part), None if y is None else y[part]))
    return out


class NetworkLoss:
    """Loss of the masked model on fixed batches; masks and gradients keyed by group name."""

    def __init__(self, table: LayerTable, problem: Problem, batches: Sequence[Batch], loss: Callable | None = None):
        self.table, self.problem, self.batches = table, problem, in_chunks(batches)
        self.groups = {g.name: g for g in problem.groups}
        self.loss_fn = loss
        self._models: dict[tuple, Any] = {}
        model = table.model
        self.device = model_device(model)  # masks are made here; gradients come back to the CPU as numpy
        self.references = []
        with torch.no_grad(), evaluating(model):
            for x, y in self.batches:
                self.references.append(main_output(call_checked(model, x)) if y is None else None)

    def _masked(self, names: Sequence[str]):
        key = tuple(sorted(names))
        if key not in self._models:
            schemes = {self.groups[n].layer: self.groups[n].option for n in names}
            self._models[key] = self.table.masked_model(schemes, names=list(schemes))
        return self._models[key]

    def _loss(self, out, y, ref):
        if self.loss_fn is not None:
            return self.loss_fn(out, to_device(y, self.device) if y is not None else ref)
        out = main_output(out)
        if y is not None:
            return F.cross_entropy(out, y.to(out.device))
        return F.mse_loss(out, ref)

    def evaluate(self, masks: dict[str, np.ndarray], grad: bool = True, errors: bool = False):
        """(loss, gradients by group name) at ``masks``; with ``errors``, also the top-1 error
        on the batches' class labels (None when they have none)."""
        masked = self._masked(list(masks))
        by_layer = {}
        tensors = {}
        for name, m in masks.items():
            t = torch.as_tensor(np.asarray(m), dtype=torch.float64, device=self.device).requires_grad_(grad)
            tensors[name] = t
            by_layer[self.groups[name].layer] = t
        total_n = sum(size(x) for x, _ in self.batches)
        value = 0.0
        wrong = 0 if errors else None
        with torch.set_grad_enabled(grad):
            for (x, y), ref in zip(self.batches, self.references):
                with naming_input(x):
                    out = masked(x, by_layer)
                loss = self._loss(out, y, ref) * (size(x) / total_n)
                if grad:
                    loss.backward()
                value += float(loss.detach())
                if wrong is not None:
                    miss = top1_misses(main_output(out), y)
                    wrong = None if miss is None else wrong + miss
        error = None if wrong is None else wrong / total_n
        grads = None if not grad else {n: (t.grad.cpu().numpy().copy() if t.grad is not None else np.zeros(t.shape)) for n, t in tensors.items()}
        return (value, grads, error) if errors else (value, grads)

    def __call__(self, masks):
        return self.evaluate(masks, grad=True)

    def differentiable(self) -> Differentiable:
        return Differentiable(self, "network loss")

    def score_allocations(self, allocations: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Score]:
        """Loss of each (ranks, active) allocation with prefix masks, and its top-1 error when
        the batches carry class labels (see solvers.selection for how COBLA uses both).

        An allocation that zeroes a layer every input-to-output path passes through scores an
        infinite loss and an error of 1: its model predicts a constant that no fine-tuning
        can recover, so COBLA keeps it only when every candidate does. Near chance a cut
        model and a live one score alike on the split; after fine-tuning only the live one
        recovers (reports/latency-finetune: resnet20-fmnist at 50% latency, channel scheme)."""
        n = sum(size(x) for x, _ in self.batches)
        out = []
        for ranks, active in allocations:
            value, _, error = self.evaluate(self.problem.prefix_masks(ranks, active), grad=False, errors=True)
            if self.severs(ranks, active):
                value, error = float("inf"), (None if error is None else 1.0)
            out.append(Score(value, error, None if error is None else n))
        return out

    def severs(self, ranks, active) -> bool:
        """Whether the allocation cuts the model's input off from its output (see graph.severing)."""
        zeroed = [g.layer or g.name for g, r, a in zip(self.problem.groups, ranks, active) if a and r == 0]
        return bool(severing(self.table.graph, zeroed))


def top1_misses(out: torch.Tensor, y) -> int | None:
    """How many rows of ``out`` miss their class label ``y``; None when ``y`` is not one class
    index per row of a 2-D output (no labels, a regression target, a sequence)."""
    if y is None or not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1:
        return None
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or len(y) != len(out):
        return None
    return int((out.argmax(1).cpu() != y.cpu()).sum())


def sensitivity_samples(
    table: LayerTable, problem: Problem, batches: Sequence[Batch], loss: Callable | None = None,
    fractions: Sequence[float] = (0, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1), progress=None,
) -> dict[str, tuple[list[int], list[float]]]:
    """Per group: (candidate ranks, loss with only that group truncated there). These depend
    on the layers and data, not on the budget, so a sweep measures them once per model."""
    net = NetworkLoss(table, problem, batches, loss)
    samples = {}
    layers = problem.layers
    for gi, g in enumerate(problem.groups):
        # the other layers at full rank, in their first alternative
        others = {problem.groups[idx[0]].name: np.ones(problem.groups[idx[0]].full_rank) for layer, idx in layers.items() if layer != g.layer}
        ranks = sorted({int(round(f * g.full_rank)) for f in fractions} | {0, g.full_rank})
        losses = []
        for r in ranks:
            m = g.prefix_mask(r)
            losses.append(net.evaluate({**others, g.name: m}, grad=False)[0])
        samples[g.name] = (ranks, losses)
        if progress:
            progress(gi + 1, len(problem.groups))
    return samples


def measure_sensitivity(
    table: LayerTable, problem: Problem, batches: Sequence[Batch], loss: Callable | None = None, progress=None,
) -> Separable:
    """Loss with one group truncated at each candidate rank, all other layers exact."""
    return from_samples(problem, sensitivity_samples(table, problem, batches, loss, progress=progress), "measured loss")
