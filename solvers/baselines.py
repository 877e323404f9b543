"""Reference allocation policies that need no objective beyond the singular values."""
from __future__ import annotations

import numpy as np

from .problem import Allocation, Problem
from .registry import register


def _largest_feasible(problem: Problem, candidates: np.ndarray, ranks_at, active):
    """Binary search over an increasing parameter whose ranks (and so costs) grow with it."""
    lo, hi = 0, len(candidates) - 1  # candidates[0] must be feasible
    if not problem.fits(problem.cost(ranks_at(candidates[0]), active)):
        problem.check_feasible()  # raises with the smallest achievable cost
        raise ValueError("the smallest candidate does not fit the budget")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if problem.fits(problem.cost(ranks_at(candidates[mid]), active)):
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo], ranks_at(candidates[lo])


@register("uniform")
def uniform(problem: Problem) -> Allocation:
    """The same fraction of rank in every layer: the largest fraction that fits every budget."""
    active = problem.default_active()
    groups = [g for g, a in zip(problem.groups, active) if a]
    full = np.array([g.full_rank for g in problem.groups])
    # Every fraction at which some layer's floor(f * R) steps up; ranks are monotone in f.
    fractions = np.unique(np.concatenate([np.arange(g.full_rank + 1) / g.full_rank for g in groups]))

    def ranks_at(f):
        return np.floor(f * full + 1e-9).astype(np.int64)

    f, ranks = _largest_feasible(problem, fractions, ranks_at, active)
    return Allocation(problem, ranks, "uniform", active=active, info={"rank_fraction": float(f)})
