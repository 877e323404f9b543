"""``compress(model, calib, budget=...)``: the one entry point from a model to a smaller model."""
from __future__ import annotations

import numbers
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

import solvers
from solvers.multiples import Multiples

from .budget import Budget
from .latency import LatencyTarget, SpeedCheck, check_latency, measured_on
from .model import needs
from .model.graph import severing
from .model.inputs import first_sample, model_device
from .model.network_loss import as_batches, split_calibration
from .model.plan import Plan
from .model.surgery import rebuild
from .model.table import LayerTable


@dataclass
class CompressionResult:
    model: nn.Module  # the rebuilt model
    plan: Plan
    allocation: solvers.Allocation
    table: LayerTable
    latency: SpeedCheck | None = None  # with a latency budget: the rebuilt model timed against the original

    @property
    def severed_by(self) -> list[str]:
        """Layers at rank 0 that leave the output independent of the input (a constant model)."""
        return self.plan.info.get("severed_by", [])

    def flag_severed(self) -> "CompressionResult":
        """Say so, loudly, when the plan zeroes a layer every input-to-output path passes
        through: the budget held, but the model now predicts a constant."""
        zeroed = [r.name for r in self.plan.rows if r.rank == 0 and not r.dense]
        cut = severing(self.table.graph, zeroed)
        if cut:
            self.plan.info["severed_by"] = cut
            warnings.warn(
                f"the plan keeps {', '.join(repr(n) for n in cut)} at rank 0, which cuts every path from the input to "
                "the output, so the rebuilt model's output no longer depends on its input. The budget "
                "is too tight for a working model with this method and scheme: loosen it, or try another scheme "
                "(e.g. scheme='spatial' or 'auto').", SeveredModelWarning, stacklevel=3)
        return self


class SeveredModelWarning(UserWarning):
    """A plan held its budget by cutting the network's input off from its output."""


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
    measured: Any = None,
    basis: str = "activation",
    rank_multiple: int | str = "auto",
    latency_target: LatencyTarget | None = None,
    **solver_options,
) -> CompressionResult:
    """Factorise ``model``'s layers so that the result fits ``budget``.

    ``calib``: an input tensor, an ``(inputs, targets)`` pair, an iterable of those (a
    DataLoader), or a zoo entry (its calibration and selection splits). MACs are counted for
    one sample. ``scheme``: ``channel``, ``spatial`` or ``auto`` (the solver picks one per
    conv layer). ``method``: any of ``solvers.methods()``.
    Methods whose need uses data (``cobla``, ``sensitivity``) run the network:
    ``loss(outputs, targets)`` defaults to cross-entropy with targets, else distance to the
    original outputs. ``cobla`` takes its gradients on ``calib`` and picks its rounding on
    ``selection`` (default: the last quarter of ``calib``, held out from the gradients).
    ``basis``: ``activation`` (default) whitens each layer by its input on the calibration
    data before its SVD, so truncation keeps the layer's output on that data; ``weight``
    truncates the plain weight SVD. Costs are the same; in the default sweep the activation
    basis was better in all 96 (model, budget, method) cells.
    ``rank_multiple``: every factorised layer's rank is a multiple of it (a dense layer keeps
    its full rank), chosen inside the optimisation by every method (see solvers.multiples);
    hardware runs such ranks faster, and every budget still holds. ``"auto"`` (default)
    follows the model's device: 1 on the CPU, 8 on CUDA (see :func:`device_rank_multiple`).
    ``Budget(latency=0.5)`` limits latency measured on ``latency_target`` (default: the
    model's device, one CPU thread, batch 64, float32; see lowrank.latency): every layer is
    timed dense and factorised at a grid of ranks (cached on disk), the plan predicts the
    total, and the rebuilt model is timed against the original (``result.latency`` says
    whether the budget held, within the measured noise).
    Pass a prebuilt ``table`` to reuse its SVDs, ``measured`` to reuse a method's
    budget-independent measurement (e.g. a cached sensitivity table); ``include`` (name
    prefixes or a predicate) limits which layers may be factorised.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a lowrank.Budget, e.g. Budget(macs=0.5), not {type(budget).__name__}")
    if rank_multiple == "auto":
        rank_multiple = device_rank_multiple(model)
    elif isinstance(rank_multiple, bool) or not isinstance(rank_multiple, numbers.Integral) or rank_multiple < 1:
        raise ValueError(f"rank_multiple must be a positive integer or 'auto', got {rank_multiple!r}")
    with measured_on(latency_target):
        return _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis,
                         rank_multiple, solver_options)


LATENCY_ATTEMPTS = 3  # plans re-made, each for less latency, while the measured model misses its latency budget


DEVICE_RANK_MULTIPLE = {"cpu": 1, "cuda": 8}


def device_rank_multiple(model: nn.Module) -> int:
    """The rank multiple ``"auto"`` means on the model's device. CPU: 1, measured
    (reports/speed.md: multiples of 8 or 16 bought no speed at equal MACs on one thread).
    CUDA: 8, NVIDIA's tensor-core alignment guidance for fp16/TF32 GEMMs, not measured here
    (no GPU was lent). Other devices: 1."""
    return DEVICE_RANK_MULTIPLE.get(model_device(model).type, 1)


def _solve(problem, method, rank_multiple, options) -> solvers.Allocation:
    if rank_multiple > 1:  # every method solves the problem restated over blocks of rank_multiple values
        multiples = Multiples(problem, rank_multiple)
        return multiples.allocation(solvers.solve(multiples.problem, method=method, **multiples.options(options)))
    return solvers.solve(problem, method=method, **options)


def _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis, rank_multiple,
              solver_options) -> CompressionResult:
    provider = needs.provider(solvers.method(method).needs)
    if hasattr(calib, "calibration") and hasattr(calib, "selection"):  # a zoo entry: its own splits
        include = calib.include if include is None else include
        calib, selection = calib.calibration(), (calib.selection() if selection is None else selection)
    batches = as_batches(calib)
    if table is None:
        table = LayerTable(model, first_sample(batches[0][0]), include=include)
    uses_provider = provider is not None and "objective" not in solver_options  # (a caller's own objective wins)
    if uses_provider:
        batches, select_batches = split_calibration(batches) if selection is None else (batches, as_batches(selection))
    table.use_basis(basis, batches)
    label = method if progress and uses_provider else None
    timed = "latency" in budget
    tighten = 1.0
    for attempt in range(1, LATENCY_ATTEMPTS + 1):
        problem = table.problem(budget, scheme)
        problem.check_feasible()
        lat = problem.resources.index("latency") if timed else None
        if tighten < 1:  # the last rebuilt model measured slower than its plan predicted: plan for less
            problem.budgets[lat] = max(problem.budgets[lat] * tighten, problem.min_cost()[lat])
        options = dict(solver_options)
        if uses_provider:
            if measured is None and provider.measure is not None:
                measured = provider.measure(table, problem, batches, loss, label)
            options = {**provider.options(table, problem, measured, batches, select_batches, loss, label), **solver_options}
        alloc = _solve(problem, method, rank_multiple, options)
        if progress and "progress" in options:
            print(file=sys.stderr)  # end the progress line
        plan = Plan.from_allocation(table, alloc, budget.limits(table.totals_of(problem.resources)))
        rebuilt = rebuild(model, plan.ranks, plan.schemes, table=table)
        if not timed:
            return CompressionResult(rebuilt, plan, alloc, table).flag_severed()
        predicted = float(alloc.cost[lat])
        check = check_latency(model, rebuilt, table.example_input, budget["latency"], budget.is_absolute("latency"), predicted)
        plan.info.update(latency_attempts=attempt, latency_plan_fraction=tighten)
        if progress:
            print(f"attempt {attempt}: {check}", file=sys.stderr)
        if check.held or problem.budgets[lat] <= problem.min_cost()[lat]:
            break
        tighten *= 0.99 * check.limit_us / check.rebuilt_us
    return CompressionResult(rebuilt, plan, alloc, table, check).flag_severed()
