"""Reference allocation policies that need no objective beyond the singular values."""
from __future__ import annotations

import numpy as np

from .problem import PARAMS, Allocation, InfeasibleBudgetError, Problem
from .registry import Need, register


def largest_feasible(problem: Problem, candidates: np.ndarray, ranks_at, active):
    """Binary search over an increasing parameter whose ranks (and so costs) grow with it."""
    lo, hi = 0, len(candidates) - 1  # candidates[0] must be feasible
    if not problem.fits(problem.cost(ranks_at(candidates[0]), active)):
        problem.check_feasible()  # raises with the smallest achievable cost
        raise InfeasibleBudgetError(
            "infeasible budget for this method: its smallest plan (one scheme per layer, chosen before the search) "
            f"costs {_shares(problem, problem.cost(ranks_at(candidates[0]), active))}, over the budget; another mix "
            "of schemes may fit. Raise the budget or use method='exact' or 'cobla', which choose schemes inside "
            "the search.")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if problem.fits(problem.cost(ranks_at(candidates[mid]), active)):
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo], ranks_at(candidates[lo])


def _shares(problem: Problem, cost: np.ndarray) -> str:
    ref = problem.reference_cost
    return ", ".join(f"{name} {c / ref[i]:.1%} of the original" if ref is not None and ref[i] > 0 else f"{name} {c:.4g}"
                     for i, (name, c) in enumerate(zip(problem.resources, cost)))


def preferred_active(problem: Problem, share: float = 0.25) -> np.ndarray:
    """One alternative per layer for policies that cannot choose inside their search.

    Picks the alternative that keeps the most energy when spending the same ``share`` of the
    layer's dense parameters (the scheme whose spectrum is more compressible). A problem
    without a ``params`` resource compares by its last resource instead.

    A measured cost (latency) can make one alternative dearer than another even at rank 0.
    When the preferred choice cannot reach the budget at all, every layer takes instead the
    alternative that is cheapest at rank 0 (each resource as a share of its budget), so a
    budget the problem can meet is one the policy can meet.
    """
    size = size_resource(problem)
    active = np.zeros(len(problem.groups), dtype=bool)
    for idx in problem.layers.values():
        def kept(i):
            g = problem.groups[i]
            per_rank = g.rank_cost[size] if g.rank_cost[size] > 0 else 1.0
            r = int(min(g.full_rank, share * g.dense_cost[size] // per_rank))
            return g.energy_kept(r)
        active[max(idx, key=kept)] = True
    zeros = np.zeros(len(problem.groups), dtype=np.int64)
    if problem.fits(problem.cost(zeros, active)):
        return active
    cheapest = problem.cheapest_active(_per_budget(problem))
    return cheapest if problem.fits(problem.cost(zeros, cheapest)) else active


def size_resource(problem: Problem) -> int:
    """The resource that measures a layer's size: ``params``, or the problem's last resource."""
    return problem.resources.index(PARAMS) if PARAMS in problem.resources else len(problem.resources) - 1


def _per_budget(problem: Problem) -> np.ndarray:
    """Weights that read a cost per resource as shares of its budget (0 where unconstrained)."""
    return np.where(np.isfinite(problem.budgets), 1.0 / np.maximum(problem.budgets, 1e-300), 0.0)


@register("uniform")
def uniform(problem: Problem) -> Allocation:
    """The same fraction of rank in every layer: the largest fraction that fits every budget."""
    active = preferred_active(problem)
    groups = [g for g, a in zip(problem.groups, active) if a]
    full = np.array([g.full_rank for g in problem.groups])
    # Every fraction at which some layer's floor(f * R) steps up; ranks are monotone in f.
    fractions = np.unique(np.concatenate([np.arange(g.full_rank + 1) / g.full_rank for g in groups]))

    def ranks_at(f):
        return np.floor(f * full + 1e-9).astype(np.int64)

    f, ranks = largest_feasible(problem, fractions, ranks_at, active)
    return Allocation(problem, ranks, "uniform", active=active, info={"rank_fraction": float(f)})


@register("energy")
def energy(problem: Problem) -> Allocation:
    """The same kept-energy fraction in every layer: the largest that fits (found by bisection)."""
    active = preferred_active(problem)
    kept = [np.concatenate([[0.0], np.cumsum(g.values**2) / max(np.sum(g.values**2), 1e-300)]) for g in problem.groups]

    def ranks_at(e):  # smallest rank keeping at least a fraction e of the energy
        return np.array([min(int(np.searchsorted(k, e - 1e-12)), g.full_rank) for k, g in zip(kept, problem.groups)])

    levels = np.unique(np.concatenate([k for k, a in zip(kept, active) if a]))
    e, ranks = largest_feasible(problem, levels, ranks_at, active)
    return Allocation(problem, ranks, "energy", active=active, info={"energy_fraction": float(e)})


@register("alds")
def alds(problem: Problem) -> Allocation:
    """Minimise the largest per-layer relative spectral error s_r / s_0 (as ALDS does)."""
    active = preferred_active(problem)
    rel = [g.values / g.values[0] if g.values[0] > 0 else np.zeros_like(g.values) for g in problem.groups]

    def ranks_at(neg_eps):  # smallest rank whose next singular value is within eps of s_0
        eps = -neg_eps
        return np.array([int(np.count_nonzero(r > eps + 1e-15)) for r in rel])

    levels = -np.unique(np.concatenate([r for r, a in zip(rel, active) if a] + [[0.0]]))[::-1]
    levels = np.concatenate([[-1.0 - 1e-9], levels])  # first candidate: eps above every ratio -> rank 0
    neg_eps, ranks = largest_feasible(problem, levels, ranks_at, active)
    return Allocation(problem, ranks, "alds", active=active, info={"max_spectral_error": float(-neg_eps)})


@register("zhang")
def zhang(problem: Problem) -> Allocation:
    """Greedy on the product of kept energies (Zhang et al. 2016).

    Start dense everywhere and repeatedly drop the singular value whose removal costs the
    least log kept energy per share of budget saved, until every budget holds.
    """
    import heapq

    active = preferred_active(problem)
    groups = problem.groups
    ranks = np.array([g.full_rank for g in groups], dtype=np.int64)
    over_weight = _per_budget(problem)
    kept = [np.concatenate([[0.0], np.cumsum(g.values**2)]) for g in groups]

    def move(gi):
        g, r = groups[gi], int(ranks[gi])
        if r == 0:
            return None
        new = g.step_down(r, over_weight)
        saved = float((g.cost(r) - g.cost(new)) @ over_weight)
        loss = np.log(max(kept[gi][r], 1e-300)) - np.log(max(kept[gi][new], 1e-300))
        return (loss / saved if saved > 0 else np.inf), gi, new

    heap = [m for gi in np.flatnonzero(active) if (m := move(gi))]  # one pending move per group
    heapq.heapify(heap)
    cost = problem.cost(ranks, active)
    while not problem.fits(cost):
        if not heap:
            problem.check_feasible()
            raise InfeasibleBudgetError(f"infeasible budget for zhang: every layer at rank 0 still costs "
                                        f"{_shares(problem, cost)}. Raise the budget or use method='cobla' or 'exact'.")
        _, gi, new = heapq.heappop(heap)
        cost = cost - groups[gi].cost(int(ranks[gi])) + groups[gi].cost(new)
        ranks[gi] = new
        m = move(gi)
        if m:
            heapq.heappush(heap, m)
    return Allocation(problem, ranks, "zhang", active=active, info={})


@register("sensitivity", needs=Need.SENSITIVITY)
def sensitivity(problem: Problem, objective=None) -> Allocation:
    """AIMET-style: per-layer loss measured at candidate ranks, one shared tolerance for all.

    Each layer takes the smallest rank whose measured loss is within ``tau`` of its loss at
    full rank; ``tau`` is the smallest tolerance that fits every budget (bisection).
    """
    from .objectives import separable_objective

    obj = separable_objective(problem, objective)
    active = preferred_active(problem)
    excess = [obj.curves[g.name] - obj.curves[g.name][-1] for g in problem.groups]

    def ranks_at(neg_tau):
        # the smallest rank within tau of the full-rank loss (full rank always is, as tau >= 0):
        # ranks only grow as tau shrinks, which the bisection relies on
        tau = -neg_tau
        return np.array([int(np.flatnonzero(e <= tau + 1e-15)[0]) for e in excess])

    # Measured losses can dip below the full-rank loss (excess < 0); a negative tolerance
    # would ask some layers for the impossible, so tolerances start at 0.
    levels = np.unique(np.concatenate([np.maximum(e, 0.0) for e, a in zip(excess, active) if a]))
    candidates = -levels[::-1]  # from the largest tolerance (rank 0 fits) to the smallest
    neg_tau, ranks = largest_feasible(problem, candidates, ranks_at, active)
    return Allocation(problem, ranks, "sensitivity", active=active, info={"tolerance": float(-neg_tau), "objective_name": obj.name})
