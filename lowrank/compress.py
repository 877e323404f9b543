"""``compress(model, calib, budget=...)``: the one entry point from a model to a smaller model."""
from __future__ import annotations

from dataclasses import dataclass
import sys
from typing import Any, Callable

import torch
from torch import nn

import solvers

from .budget import Budget
from .layers import LayerTable
from .objective import NetworkLoss, as_batches, measure_sensitivity, split_calibration
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


DATA_METHODS = ("cobla", "sensitivity")  # methods that run the network on calibration data


def compress(
    model: nn.Module,
    calib: Any,
    budget: Budget,
    method: str = "uniform",
    scheme: str = "channel",
    table: LayerTable | None = None,
    loss: Callable | None = None,
    selection: Any = None,
    progress: bool = False,
    include=None,
    **solver_options,
) -> CompressionResult:
    """Factorise ``model``'s layers so that the result fits ``budget``.

    ``calib``: an input tensor, an ``(inputs, targets)`` pair, an iterable of those (a
    DataLoader), or a zoo entry (its calibration and selection splits). MACs are counted for
    one sample. ``scheme``: ``channel``, ``spatial`` or ``auto`` (the solver picks one per
    conv layer). ``method``: any of ``solvers.methods()``.
    ``cobla`` and ``sensitivity`` run the network: ``loss(outputs, targets)`` defaults to
    cross-entropy with targets, else distance to the original outputs. ``cobla`` takes its
    gradients on ``calib`` and picks its rounding on ``selection`` (default: the last quarter
    of ``calib``, held out from the gradients). Pass a prebuilt ``table`` to reuse its SVDs;
    ``include`` (name prefixes or a predicate) limits which layers may be factorised.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a lowrank.Budget, e.g. Budget(macs=0.5), not {type(budget).__name__}")
    if method not in solvers.methods():
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(solvers.methods())}")
    if hasattr(calib, "calibration") and hasattr(calib, "selection"):  # a zoo entry: its own splits
        include = calib.include if include is None else include
        calib, selection = calib.calibration(), (calib.selection() if selection is None else selection)
    batches = as_batches(calib)
    if table is None:
        table = LayerTable(model, first_sample(batches[0][0]), include=include)
    problem = table.problem(budget, scheme)
    problem.check_feasible()
    if method in DATA_METHODS:
        if selection is None:
            batches, select_batches = split_calibration(batches)
        else:
            select_batches = as_batches(selection)
        # (built only when not given: a sweep passes its cached sensitivity table)
        if method == "cobla":
            if "objective" not in solver_options:
                solver_options["objective"] = NetworkLoss(table, problem, batches, loss).differentiable()
            if "select" not in solver_options:
                solver_options["select"] = NetworkLoss(table, problem, select_batches, loss).score_allocations
            if progress:
                solver_options.setdefault("progress", _print_progress("cobla"))
        elif "objective" not in solver_options:
            bar = _progress_bar("sensitivity: layers measured") if progress else None
            solver_options["objective"] = measure_sensitivity(table, problem, batches, loss, progress=bar)
            if bar:
                print(file=sys.stderr)
    alloc = solvers.solve(problem, method=method, **solver_options)
    if progress and method == "cobla":
        print(file=sys.stderr)  # end the progress line
    plan = Plan.from_allocation(table, alloc, budget.limits(table.totals))
    rebuilt = rebuild(model, plan.ranks, plan.schemes, table=table)
    return CompressionResult(rebuilt, plan, alloc, table)


def _progress_bar(label):
    def show(done, total):
        print(f"\r{label} {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


def _print_progress(name):
    def show(iteration, value):
        print(f"\r{name}: iteration {iteration}, loss {value:.5f}", end="", file=sys.stderr, flush=True)

    return show
