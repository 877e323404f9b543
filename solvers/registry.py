"""One entry point, ``solve(problem, method=...)``, and the table of methods behind it.

Every method declares what it needs from its caller (:class:`Need`), so callers ask the
registry instead of comparing method names: a new method is one file that calls
``@register(name, needs=...)`` and is imported in ``solvers/__init__.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .problem import Allocation, Problem


class Need(Enum):
    """What a method needs beyond the problem (its singular values and costs)."""

    NOTHING = "nothing"  # the singular values are enough
    SEPARABLE = "separable objective"  # optional per-layer loss curves (default: discarded energy)
    NETWORK_LOSS = "network loss on data"  # objective=Differentiable and select= on held-out data
    SENSITIVITY = "sensitivity table"  # objective=Separable measured per layer on data

    @property
    def uses_data(self) -> bool:
        """Whether the caller must run the network on calibration data for this method."""
        return self in (Need.NETWORK_LOSS, Need.SENSITIVITY)


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Allocation]
    needs: Need

    @property
    def uses_data(self) -> bool:
        return self.needs.uses_data


_METHODS: dict[str, Method] = {}


def register(name: str, needs: Need = Need.NOTHING):
    """Decorator: make ``fn(problem, **options) -> Allocation`` reachable as ``solve(..., method=name)``."""

    def wrap(fn):
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = Method(name, fn, needs)
        return fn

    return wrap


def methods() -> list[str]:
    return sorted(_METHODS)


def _lookup(name: str) -> Method:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(methods())}")
    return _METHODS[name]


def method(name: str) -> Method:
    """The registered method ``name`` with what it needs; a clear error for an unknown name."""
    return _lookup(name)


def solve(problem: Problem, method: str = "uniform", **options) -> Allocation:
    """Allocate ranks under the problem's budgets; the result always fits every budget."""
    fn = _lookup(method).fn
    problem.check_feasible()
    t0 = time.perf_counter()
    alloc = fn(problem, **options)
    if problem.has_tables and not alloc.feasible:  # a linear cost model overshot a measured table
        from .rounding import fit_measured

        alloc = fit_measured(alloc)
    alloc.info.setdefault("solve_seconds", time.perf_counter() - t0)
    if not alloc.feasible:  # a promise, not a hope: never hand back an over-budget plan
        raise AssertionError(
            f"method {method!r} returned an allocation over budget: cost {alloc.cost} > budgets {problem.budgets}"
        )
    return alloc
