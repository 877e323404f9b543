"""``solve(problem, method=...)``: the one entry point to every registered method, and the
promise it keeps: the allocation it returns fits every budget."""
from __future__ import annotations

import time

from .problem import Allocation, Problem
from .registry import method as find_method
from .rounding import fit_measured


def solve(problem: Problem, method: str = "uniform", **options) -> Allocation:
    """Allocate ranks under the problem's budgets; the result always fits every budget."""
    fn = find_method(method).fn
    problem.check_feasible()
    t0 = time.perf_counter()
    alloc = fn(problem, **options)
    if problem.has_tables and not alloc.feasible:  # a linear cost model overshot a measured table
        alloc = fit_measured(alloc)
    alloc.info.setdefault("solve_seconds", time.perf_counter() - t0)
    if not alloc.feasible:  # a promise, not a hope: never hand back an over-budget plan
        raise AssertionError(
            f"method {method!r} returned an allocation over budget: cost {alloc.cost} > budgets {problem.budgets}"
        )
    return alloc
