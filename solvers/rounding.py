"""From relaxed masks to ranks that meet every budget exactly.

Each candidate turns relaxed masks into a rank per group, repairs feasibility by the cheapest
removals and spends what is left greedily; the importance of each singular value is the
first-order loss change from the gradient at the relaxed point. The caller picks among the
candidates by the real loss on a selection split.
"""
from __future__ import annotations

import numpy as np

from .exact import exact
from .lagrangian import Choice, Lagrangian, greedy_fill
from .objectives import Separable, discarded_energy
from .problem import Allocation, Problem


def linearised_curves(problem: Problem, masks: list[np.ndarray], grads: list[np.ndarray]) -> Separable:
    """curve[r] = first-order loss of keeping the top r values: sum of -grad over dropped ones."""
    curves = {}
    for g, m, d in zip(problem.groups, masks, grads):
        importance = np.maximum(-d, 0.0)  # loss saved per unit of mask
        curves[g.name] = np.concatenate([np.cumsum(importance[::-1])[::-1], [0.0]])
    return Separable(curves, "linearised loss")


def repair(lag: Lagrangian, ranks: np.ndarray, active: np.ndarray) -> Choice:
    """Remove ranks, least loss per budget share first, until every budget holds."""
    p, curves = lag.problem, lag.objective.curves
    ranks, active = ranks.copy(), np.asarray(active, dtype=bool).copy()
    weight = np.where(np.isfinite(p.budgets), 1.0 / lag.scale, 0.0)
    cost = p.cost(ranks, active)
    while not p.fits(cost):
        best, best_score = None, np.inf
        for gi in np.flatnonzero(active & (ranks > 0)):
            g, r = p.groups[gi], int(ranks[gi])
            new = g.step_down(r, weight)
            saved = float((g.cost(r) - g.cost(new)) @ weight)
            if saved <= 0:
                continue
            score = (curves[g.name][new] - curves[g.name][g.normalise(r)]) / saved
            if score < best_score:
                best, best_score = (gi, new), score
        if best is None:
            switch = _cheaper_alternative(p, ranks, active, weight)
            if switch is None:
                p.check_feasible()
                raise ValueError("rounding: nothing left to remove but the budget still does not hold")
            ranks, active = switch
            cost = p.cost(ranks, active)
            continue
        gi, new = best
        cost = cost - p.groups[gi].cost(int(ranks[gi])) + p.groups[gi].cost(new)
        ranks[gi] = new
    return lag.evaluate(ranks, active)


def _cheaper_alternative(p: Problem, ranks: np.ndarray, active: np.ndarray, weight: np.ndarray):
    """Where every active group is at rank 0 and the budget still does not hold, a layer's
    other alternative can cost less at rank 0 (a budget at the least cost there is only holds
    with the cheapest scheme per layer): the switch that saves most, or None."""
    best, best_saved = None, 0.0
    for idx in p.layers.values():
        now = next(i for i in idx if active[i])
        for j in idx:
            saved = float((p.groups[now].cost(int(ranks[now])) - p.groups[j].cost(0)) @ weight)
            if j != now and saved > best_saved:
                best, best_saved = (now, j), saved
    if best is None:
        return None
    now, j = best
    ranks, active = ranks.copy(), active.copy()
    ranks[now], ranks[j], active[now], active[j] = 0, 0, False, True
    return ranks, active


def fit_measured(alloc: Allocation) -> Allocation:
    """An allocation a linear-cost method chose, made to fit the measured cost tables (see
    solvers.problem): ranks are removed, least discarded energy per budget share first."""
    if alloc.feasible:
        return alloc
    p = alloc.problem
    fixed = repair(Lagrangian(p, discarded_energy(p)), alloc.ranks, alloc.active)
    return Allocation(p, fixed.ranks, alloc.method, active=fixed.active, objective=None,
                      info={**alloc.info, "repaired_to_measured_costs": True})


def candidates(problem: Problem, active: np.ndarray, masks: list[np.ndarray], grads: list[np.ndarray]) -> dict[str, tuple]:
    """Named candidate roundings (ranks, active), every one within every budget."""
    lin = linearised_curves(problem, masks, grads)
    lag = Lagrangian(problem, lin)
    sums = np.array([m.sum() for m in masks])
    starts = {
        "floor": np.floor(sums + 1e-9),
        "nearest": np.round(sums),
        "threshold": np.array([np.count_nonzero(m > 0.5) for m in masks]),
    }
    out = {}
    for name, r in starts.items():
        r = np.minimum(r.astype(np.int64), [g.full_rank for g in problem.groups])
        fixed = repair(lag, r, active)
        filled = greedy_fill(lag, fixed)
        out[f"{name}+fill"] = (filled.ranks, filled.active)
    lin_opt = exact(problem, objective=lin)
    out["linearised-exact"] = (lin_opt.ranks, lin_opt.active)
    return out
