"""What a provider is (:class:`Provider`), the registry of providers by need, and the progress
lines they print. See the package doc (:mod:`lowrank.needs`)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from .. import solvers
from ..solvers import Need
@dataclass(frozen=True)
class Provider:
    need: Need
    cache_kind: str | None  # on-disk cache name of ``measure``'s result; None: nothing to cache
    measure: Callable[..., Any] | None  # (table, problem, batches, loss, progress) -> measurement
    options: Callable[..., dict]  # (table, problem, measured, batches, select_batches, loss, progress) -> solver options;
    # ``progress``: a label to print progress under, or None
    order: int = 0  # sweeps start runs of lower order first: the long ones, so no worker is left with a straggler
    measures: Callable[[Any], bool] = lambda problem: True  # whether ``measure`` runs for this problem (else None is measured)


_PROVIDERS: dict[Need, Provider] = {}


def register(provider: Provider) -> Provider:
    if provider.need in _PROVIDERS:
        raise ValueError(f"a provider for the need {provider.need.value!r} is registered twice")
    _PROVIDERS[provider.need] = provider
    return provider


def provider(need: Need) -> Provider | None:
    """The provider for a need that uses data (None for needs lowrank supplies nothing for)."""
    if need.uses_data and need not in _PROVIDERS:
        raise NotImplementedError(f"no provider for the need {need.value!r}: add a module that registers one to lowrank/needs/")
    return _PROVIDERS.get(need)


def run_order(method: str) -> int:
    """Where a sweep puts runs of ``method``: those with a slow provider first, data-free last."""
    found = _PROVIDERS.get(solvers.method(method).needs)
    return found.order if found is not None else 1000


def show_count(label: str) -> Callable[[int, int], None]:
    """Progress of a count on one line of stderr: ``label done/total``."""
    def show(done, total):
        print(f"\r{label} {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


def show_iteration(label: str) -> Callable[[int, float], None]:
    """Progress of an optimisation on one line of stderr: ``label: iteration i, loss v``."""
    def show(iteration, value):
        print(f"\r{label}: iteration {iteration}, loss {value:.5f}", end="", file=sys.stderr, flush=True)

    return show
