"""``solve(problem, method=...)``: the one entry point to every registered method, and the
promise it keeps: the allocation it returns fits every budget."""
from __future__ import annotations

import inspect
import time

from .problem import Allocation, PlanOverBudgetError, Problem
from .registry import method as find_method
from .rounding import fit_measured


def solve(problem: Problem, method: str, **options) -> Allocation:
    """Allocate ranks under the problem's budgets; the result always fits every budget."""
    fn = find_method(method).fn
    _check_options(method, fn, options)
    problem.check_feasible()
    t0 = time.perf_counter()
    alloc = fn(problem, **options)
    if problem.has_tables and not alloc.feasible:  # a linear cost model overshot a measured table
        alloc = fit_measured(alloc)
    alloc.info.setdefault("solve_seconds", time.perf_counter() - t0)
    if not alloc.feasible:  # a promise, not a hope: never hand back an over-budget plan
        raise PlanOverBudgetError(
            f"method {method!r} returned an allocation over budget (cost {alloc.cost} > budgets {problem.budgets}), so no "
            "plan was made. That is a bug in lowrank, not in your model or budget: please report it with both; meanwhile "
            "another method (e.g. method='exact') may plan it.")
    return alloc


def _check_options(method: str, fn, options: dict) -> None:
    """A clear error for an option the method does not take (a typo, or another method's)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in params.items() if n != "problem" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(f"method {method!r} takes no option {', '.join(repr(u) for u in unknown)}; its options: "
                         + (", ".join(takes) if takes else "none"))
