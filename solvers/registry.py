"""One entry point, ``solve(problem, method=...)``, and the table of methods behind it."""
from __future__ import annotations

import time
from typing import Callable

from .problem import Allocation, Problem

_METHODS: dict[str, Callable[..., Allocation]] = {}


def register(name: str):
    """Decorator: make ``fn(problem, **options) -> Allocation`` reachable as ``solve(..., method=name)``."""

    def wrap(fn):
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = fn
        return fn

    return wrap


def methods() -> list[str]:
    return sorted(_METHODS)


def solve(problem: Problem, method: str = "uniform", **options) -> Allocation:
    """Allocate ranks under the problem's budgets; the result always fits every budget."""
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods())}")
    problem.check_feasible()
    t0 = time.perf_counter()
    alloc = _METHODS[method](problem, **options)
    alloc.info.setdefault("solve_seconds", time.perf_counter() - t0)
    if not alloc.feasible:  # a promise, not a hope: never hand back an over-budget plan
        raise AssertionError(
            f"method {method!r} returned an allocation over budget: cost {alloc.cost} > budgets {problem.budgets}"
        )
    return alloc
