"""``compress(model, calib, budget=...)``: the one entry point from a model to a smaller model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

import solvers

from .budget import Budget
from .layers import LayerTable
from .plan import Plan
from .surgery import rebuild


@dataclass
class CompressionResult:
    model: nn.Module  # the rebuilt model
    plan: Plan
    allocation: solvers.Allocation
    table: LayerTable


def first_sample(batch: Any) -> Any:
    """Slice every tensor in a batch to its first sample, so costs are counted per sample."""
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, dict):
        return {k: first_sample(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(first_sample(v) for v in batch)
    return batch


def example_from_calib(calib: Any) -> Any:
    """The model input of the first calibration batch.

    ``calib`` may be an input tensor, a dict of keyword inputs, an ``(inputs, targets)``
    pair, or an iterable (e.g. a DataLoader) of any of those.
    """
    if isinstance(calib, (torch.Tensor, dict)):
        return calib
    if isinstance(calib, tuple) and len(calib) == 2 and isinstance(calib[0], (torch.Tensor, dict)):
        return calib[0]
    if isinstance(calib, Iterable):
        for batch in calib:
            return example_from_calib(batch)
        raise ValueError("calib is empty: give at least one batch of inputs")
    raise ValueError(f"calib must be a tensor, a dict, an (inputs, targets) pair or an iterable of batches, not {type(calib).__name__}")


def compress(
    model: nn.Module,
    calib: Any,
    budget: Budget,
    method: str = "uniform",
    scheme: str = "channel",
    table: LayerTable | None = None,
    **solver_options,
) -> CompressionResult:
    """Factorise ``model``'s layers so that the result fits ``budget``.

    MACs are counted for one sample of the calibration input. ``scheme`` is ``channel`` or
    ``spatial`` for every conv layer. Pass a prebuilt ``table`` to reuse its SVDs across calls.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a lowrank.Budget, e.g. Budget(macs=0.5), not {type(budget).__name__}")
    if table is None:
        table = LayerTable(model, first_sample(example_from_calib(calib)))
    problem = table.problem(budget, scheme)
    alloc = solvers.solve(problem, method=method, **solver_options)
    plan = Plan.from_allocation(table, alloc, budget.limits(table.totals))
    rebuilt = rebuild(model, plan.ranks, plan.schemes, table=table)
    return CompressionResult(rebuilt, plan, alloc, table)
