"""What lowrank supplies for each kind of method need (``solvers.Need``).

The solvers declare what a method needs; this module knows how to make it from a model and
calibration data. Each provider has an optional expensive ``measure`` step that depends only
on the model, the data and the scheme (not the budget), which a sweep caches on disk under
``cache_kind``, and an ``options`` step that turns it into the solver's keyword options.
A new need is one provider here; a new method with an existing need touches nothing here.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import solvers
from solvers import Need
from solvers.objectives import from_samples

from .network_loss import NetworkLoss, sensitivity_samples


@dataclass(frozen=True)
class Provider:
    cache_kind: str | None  # on-disk cache name of ``measure``'s result; None: nothing to cache
    measure: Callable[..., Any] | None  # (table, problem, batches, loss, progress) -> measurement
    options: Callable[..., dict]  # (table, problem, measured, batches, select_batches, loss, progress) -> solver options;
    # ``progress``: a label to print progress under, or None


def _network_loss_options(table, problem, measured, batches, select_batches, loss, progress):
    """COBLA's objective and selection scorer; the sensitivity method's allocation (from the
    measured table) joins its starts, so COBLA cannot lose to it either."""
    sensitivity = solvers.solve(problem, method="sensitivity", objective=from_samples(problem, measured, "measured loss"))
    options = {
        "objective": NetworkLoss(table, problem, batches, loss).differentiable(),
        "select": NetworkLoss(table, problem, select_batches, loss).score_allocations,
        "starts": {"sensitivity": sensitivity},
    }
    if progress:
        options["progress"] = _show_iteration(progress)
    return options


def _sensitivity_measure(table, problem, batches, loss, progress):
    show = _show_count("sensitivity: layers measured") if progress else None
    samples = sensitivity_samples(table, problem, batches, loss, progress=show)
    if progress:
        print(file=sys.stderr)
    return samples


def _sensitivity_options(table, problem, measured, batches, select_batches, loss, progress):
    return {"objective": from_samples(problem, measured, "measured loss")}


PROVIDERS: dict[Need, Provider] = {
    Need.NETWORK_LOSS: Provider("sensitivity", _sensitivity_measure, _network_loss_options),
    Need.SENSITIVITY: Provider("sensitivity", _sensitivity_measure, _sensitivity_options),
}


def provider(need: Need) -> Provider | None:
    """The provider for a need that uses data (None for needs lowrank supplies nothing for)."""
    if need.uses_data and need not in PROVIDERS:
        raise NotImplementedError(f"no provider for the need {need.value!r}: add one to lowrank/model/needs.py")
    return PROVIDERS.get(need)


def _show_count(label):
    def show(done, total):
        print(f"\r{label} {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


def _show_iteration(label):
    def show(iteration, value):
        print(f"\r{label}: iteration {iteration}, loss {value:.5f}", end="", file=sys.stderr, flush=True)

    return show
