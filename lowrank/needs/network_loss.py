"""The network's loss as a function of the singular-value masks (:class:`NetworkLoss`): its
value and gradient on calibration batches, scores of whole allocations on a held-out
selection split (how candidate roundings are compared), and per-layer loss tables
(:func:`sensitivity_samples`); and the provider that hands them to methods needing
``Need.NETWORK_LOSS`` (COBLA).

The loss is cross-entropy against the targets when the batches have them, otherwise the
mean squared distance to the original model's outputs (distillation).
"""
from __future__ import annotations

import sys

from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import solvers
from ..factorise.basis import Bases
from ..factorise.masked import MaskedModel
from ..layers.graph import severing
from ..solvers import Differentiable, Need, Problem
from ..solvers.objectives import from_samples
from ..solvers.selection import Score, Scorer
from ..util.batches import Batch, in_chunks
from ..util.inputs import call_checked, class_loss, main_output, model_device, naming_input, size, take, to_device
from ..util.modes import evaluating
from .base import Provider, register, show_count, show_iteration

class NetworkLoss:
    """Loss of the masked model on fixed batches; masks and gradients keyed by group name.
    ``graph`` (the model's, see lowrank.layers.graph) lets scores mark allocations that cut
    the input off from the output."""

    def __init__(self, model: nn.Module, bases: Bases, problem: Problem, batches: Sequence[Batch],
                 loss: Callable | None = None, graph: nx.DiGraph | None = None):
        self.model, self.bases, self.graph = model, bases, graph
        self.problem, self.batches = problem, in_chunks(batches)
        self.groups = {g.name: g for g in problem.groups}
        self.loss_fn = loss
        self._models: dict[tuple, Any] = {}
        self.device = model_device(model)  # masks are made here; gradients come back to the CPU as numpy
        self.references = []
        with torch.no_grad(), evaluating(model):
            for x, y in self.batches:
                self.references.append(main_output(call_checked(model, x)) if y is None else None)

    def _masked(self, names: Sequence[str]):
        key = tuple(sorted(names))
        if key not in self._models:
            chosen = {self.groups[n].layer: self.groups[n].option for n in names}
            self._models[key] = MaskedModel(self.model, {layer: self.bases.factors(layer, s) for layer, s in chosen.items()})
        return self._models[key]

    def _loss(self, out, y, ref):
        if self.loss_fn is not None:
            return self.loss_fn(out, to_device(y, self.device) if y is not None else ref)
        out = main_output(out)
        if y is not None:
            return class_loss(out, y)
        return F.mse_loss(out, ref)

    def evaluate(self, masks: dict[str, np.ndarray], grad: bool = True, errors: bool = False):
        """(loss, gradients by group name) at ``masks``; with ``errors``, also the top-1 error
        on the batches' class labels (None when they have none)."""
        masked = self._masked(list(masks))
        tensors, by_layer = self._mask_tensors(masks, grad)
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
        grads = self._grads(tensors) if grad else None
        return (value, grads, error) if errors else (value, grads)

    def _mask_tensors(self, masks: dict[str, np.ndarray], grad: bool) -> tuple[dict, dict]:
        """The masks as tensors, by group name (for their gradients) and by layer (for the masked model)."""
        tensors = {name: torch.as_tensor(np.asarray(m), dtype=torch.float64, device=self.device).requires_grad_(grad)
                   for name, m in masks.items()}
        return tensors, {self.groups[n].layer: t for n, t in tensors.items()}

    @staticmethod
    def _grads(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {n: (t.grad.cpu().numpy().copy() if t.grad is not None else np.zeros(t.shape)) for n, t in tensors.items()}

    def __call__(self, masks):
        return self.evaluate(masks, grad=True)

    def trial(self, masks: dict[str, np.ndarray]):
        """(loss, a function giving its gradients by group name): on batches that run as one
        pass the backward pass waits until the gradient is asked for (a line search's rejected
        step never needs it); over several, each pass goes back at once (holding every pass's
        graph would multiply the memory)."""
        if len(self.batches) != 1:
            value, grads = self.evaluate(masks, grad=True)
            return value, lambda: grads
        (x, y), ref = self.batches[0], self.references[0]
        tensors, by_layer = self._mask_tensors(masks, grad=True)
        with torch.enable_grad():
            with naming_input(x):
                out = self._masked(list(masks))(x, by_layer)
            loss = self._loss(out, y, ref)

        def gradient():
            loss.backward()
            return self._grads(tensors)

        return float(loss.detach()), gradient

    def differentiable(self) -> Differentiable:
        return Differentiable(self, "network loss", self.trial)

    def score_allocations(self, allocations: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Score]:
        """Loss of each (ranks, active) allocation with prefix masks, and its top-1 error when
        the batches carry class labels (see solvers.selection for how COBLA uses both).

        An allocation that zeroes a layer every input-to-output path passes through scores an
        infinite loss and an error of 1: its model predicts a constant that no fine-tuning
        can recover, so COBLA keeps it only when every candidate does. Near chance a cut
        model and a live one score alike on the split; after fine-tuning only the live one
        recovers (reports/speed/latency-finetune: resnet20-fmnist at 50% latency, channel scheme)."""
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
        if self.graph is None:
            return False
        zeroed = [g.layer or g.name for g, r, a in zip(self.problem.groups, ranks, active) if a and r == 0]
        return bool(severing(self.graph, zeroed))


def top1_misses(out: torch.Tensor, y) -> int | None:
    """How many rows of ``out`` miss their class label ``y``; None when ``y`` is not one class
    index per row of a 2-D output (no labels, a regression target, a sequence)."""
    if y is None or not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1:
        return None
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or len(y) != len(out):
        return None
    return int((out.argmax(1).cpu() != y.cpu()).sum())


# A problem with more groups than this is measured coarsely: at a quarter, half and three
# quarters of each layer's rank and on its first two calibration samples (a language model's
# 210 layers at ten ranks each would be 2,100 passes).
COARSE_FROM = 64
SENSITIVITY_START_UP_TO = 64  # groups; larger problems start COBLA from the data-free methods only
COARSE_FRACTIONS = (0, 1 / 4, 1 / 2, 3 / 4, 1)


def sensitivity_samples(
    model: nn.Module, bases: Bases, problem: Problem, batches: Sequence[Batch], loss: Callable | None = None,
    fractions: Sequence[float] | None = None, progress=None,
) -> dict[str, tuple[list[int], list[float]]]:
    """Per group: (candidate ranks, loss with only that group truncated there, every other
    layer as it is). These depend on the layers and data, not on the budget, so a sweep
    measures them once per model. ``fractions`` of each group's rank (default: ten, or
    :data:`COARSE_FRACTIONS` on the first two samples for problems of over
    :data:`COARSE_FROM` groups)."""
    if fractions is None:
        coarse = len(problem.groups) > COARSE_FROM
        fractions = COARSE_FRACTIONS if coarse else (0, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1)
        if coarse:
            batches = [(take(x, slice(0, 2)), None if y is None else y[:2]) for x, y in batches[:1]]
    net = NetworkLoss(model, bases, problem, batches, loss)
    full = net.evaluate({}, grad=False)[0]  # every layer at full rank: the original
    samples = {}
    for gi, g in enumerate(problem.groups):
        ranks = sorted({int(round(f * g.full_rank)) for f in fractions} | {0, g.full_rank})
        losses = [full if r == g.full_rank else net.evaluate({g.name: g.prefix_mask(r)}, grad=False)[0] for r in ranks]
        samples[g.name] = (ranks, losses)
        if progress:
            progress(gi + 1, len(problem.groups))
    return samples


def measure_sensitivity(table, problem, batches, loss, progress):
    """A provider's measure step: :func:`sensitivity_samples` for the table's model and bases,
    with progress on stderr under the label ``progress`` (None: quiet)."""
    show = show_count("sensitivity: layers measured") if progress else None
    samples = sensitivity_samples(table.model, table.bases, problem, batches, loss, progress=show)
    if progress:
        print(file=sys.stderr)
    return samples


def _options(table, problem, measured, batches, select_batches, loss, progress):
    """COBLA's objective and selection scorer; where it was measured (see
    :func:`starts_from_sensitivity`), the sensitivity method's allocation joins its starts, so
    COBLA cannot lose to it either."""
    options = {
        "objective": NetworkLoss(table.model, table.bases, problem, batches, loss, table.graph).differentiable(),
        "select": Scorer(NetworkLoss(table.model, table.bases, problem, select_batches, loss, table.graph).score_allocations),
    }
    if measured is not None:
        options["starts"] = {"sensitivity": solvers.solve(problem, method="sensitivity", objective=from_samples(problem, measured, "measured loss"))}
    if progress:
        options["progress"] = show_iteration(progress)
    return options


def starts_from_sensitivity(problem) -> bool:
    """Whether COBLA's sensitivity start is measured: for problems of at most
    :data:`SENSITIVITY_START_UP_TO` groups. On SmolLM2's 210 it took half of a 20-minute run;
    larger problems start from the data-free methods only."""
    return len(problem.groups) <= SENSITIVITY_START_UP_TO


register(Provider(Need.NETWORK_LOSS, "sensitivity", measure_sensitivity, _options, order=0, measures=starts_from_sensitivity))
