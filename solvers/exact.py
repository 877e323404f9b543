"""Exact rank allocation for separable objectives: a multiple-choice knapsack with several budgets.

Every layer picks one option: a rank r below its dense fallback in one of its groups, or
dense. ``exact`` maximises the Lagrangian dual over the budget multipliers (a certified lower
bound), builds a feasible allocation from the multipliers and fills the leftover budget
greedily; if the certified gap is still above ``gap_tol`` it closes it by branch-and-bound
(HiGHS through ``scipy.optimize.milp``), warm from that bound.

The Lagrangian (:mod:`.lagrangian`) takes costs linear in the rank inside a group; measured
step-shaped costs (latency tables) are not, so such problems go to branch-and-bound
directly, which takes every rank's measured cost as it is.
"""
from __future__ import annotations

import time

import numpy as np
from scipy import optimize, sparse

from .lagrangian import Lagrangian, greedy_fill, maximise_dual
from .objectives import Separable, separable_objective
from .problem import Allocation, Problem
from .quiet import native_output_silenced
from .registry import Need, register


def _relative_gap(primal: float, dual: float) -> float:
    return max(0.0, primal - dual) / max(abs(primal), 1e-12)


def option_matrix(problem: Problem, objective: Separable):
    """One binary per option (group, factorised rank or dense): losses, costs, layer rows."""
    loss, cost, layer_rows, owner = [], [], [], []
    layer_ids = {name: i for i, name in enumerate(problem.layers)}
    for gi, g in enumerate(problem.groups):
        n_fact = min(g.dense_from, g.full_rank + 1)
        r = np.arange(n_fact)
        loss.append(objective.curves[g.name][:n_fact])
        cost.append(g.factorised_cost(r))
        owner += [(gi, int(k)) for k in r]
        if g.dense_from <= g.full_rank:
            loss.append([objective.curves[g.name][g.full_rank]])
            cost.append(g.dense_cost[None, :])
            owner.append((gi, g.full_rank))
        layer_rows.append(np.full(n_fact + (g.dense_from <= g.full_rank), layer_ids[g.layer]))
    loss, cost, layer_rows = np.concatenate(loss), np.concatenate(cost), np.concatenate(layer_rows)
    n = loss.size
    one_hot = sparse.csr_matrix((np.ones(n), (layer_rows, np.arange(n))), shape=(len(layer_ids), n))
    return loss, cost, one_hot, owner, layer_rows


def from_options(problem: Problem, x: np.ndarray, owner) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.zeros(len(problem.groups), dtype=np.int64)
    active = np.zeros(len(problem.groups), dtype=bool)
    for j in np.flatnonzero(x > 0.5):
        gi, r = owner[j]
        ranks[gi], active[gi] = r, True
    return ranks, active


def branch_and_bound(problem: Problem, objective: Separable, time_limit: float, gap: float, prune=None):
    """The multiple-choice knapsack as a MILP solved by HiGHS (formulation: one-hot per layer).

    ``prune = (multipliers per unit cost, lower bound, upper bound)`` drops every option whose
    Lagrangian reduced cost exceeds upper - lower: no optimal solution can use it.
    """
    loss, cost, one_hot, owner, layer_rows = option_matrix(problem, objective)
    kept = loss.size
    if prune is not None:
        lam, lower, upper = prune
        val = loss + cost @ lam
        best = np.full(one_hot.shape[0], np.inf)
        np.minimum.at(best, layer_rows, val)
        keep = val - best[layer_rows] <= (upper - lower) + 1e-9 * max(1.0, abs(upper))
        loss, cost, layer_rows = loss[keep], cost[keep], layer_rows[keep]
        owner = [o for o, k in zip(owner, keep) if k]
        one_hot = sparse.csr_matrix((np.ones(loss.size), (layer_rows, np.arange(loss.size))), shape=(one_hot.shape[0], loss.size))
        kept = loss.size
    limited = np.flatnonzero(np.isfinite(problem.budgets))
    constraints = [optimize.LinearConstraint(one_hot, 1, 1)]
    if limited.size:
        # Costs are integers in practice; a tiny margin keeps HiGHS' feasibility tolerance honest.
        cap = problem.budgets[limited] - problem.base_cost[limited]
        constraints.append(optimize.LinearConstraint(cost[:, limited].T, -np.inf, cap - 1e-7 * np.maximum(cap, 1)))
    offset = loss.min()
    with native_output_silenced():
        res = optimize.milp(
            loss - offset, constraints=constraints, integrality=np.ones(loss.size), bounds=optimize.Bounds(0, 1),
            options={"time_limit": time_limit, "mip_rel_gap": gap, "disp": False},
        )
    if res.x is None:
        return None
    ranks, active = from_options(problem, res.x, owner)
    bound = getattr(res, "mip_dual_bound", None)
    return ranks, active, (None if bound is None else float(bound) + offset * len(problem.layers)), res.message, kept


@register("exact", needs=Need.SEPARABLE)
def exact(problem: Problem, objective=None, gap_tol: float = 1e-4, time_limit: float = 60.0) -> Allocation:
    """Optimal for separable objectives, with a certified relative gap <= ``gap_tol``."""
    obj = separable_objective(problem, objective)
    if problem.has_tables:
        return _exact_on_tables(problem, obj, gap_tol, time_limit)
    t0 = time.perf_counter()
    lag = Lagrangian(problem, obj)
    dual, lam, feasible = maximise_dual(lag)
    if feasible is None:  # the bisection always ends on a feasible side; rank 0 is the last resort
        feasible = lag.evaluate(np.zeros(len(problem.groups)), problem.default_active())
    best = greedy_fill(lag, feasible)
    info = {"dual_bound": dual, "lagrangian_evaluations": lag.evaluations, "multipliers": None if lam is None else (lam / lag.scale).tolist(),
            "lagrangian_seconds": time.perf_counter() - t0, "closed_by": "lagrangian"}
    gap = _relative_gap(best.loss, dual)
    if gap > gap_tol:
        lam_abs = np.zeros(len(problem.resources)) if lam is None else lam / lag.scale
        out = branch_and_bound(problem, obj, time_limit, gap_tol / 2, prune=(lam_abs, dual, best.loss))
        if out is not None:
            ranks, active, bound, message, kept = out
            info["milp_options"] = kept
            cand = lag.evaluate(ranks, active)
            if problem.fits(cand.cost) and cand.loss <= best.loss:
                best = cand
            if bound is not None:
                dual = max(dual, bound)
            info.update(closed_by="branch-and-bound", milp_message=message)
        gap = _relative_gap(best.loss, dual)
    info.update(lower_bound=float(dual), gap=float(gap), objective_name=obj.name)
    return Allocation(problem, best.ranks, "exact", active=best.active, objective=best.loss, info=info)


def _exact_on_tables(problem: Problem, obj: Separable, gap_tol: float, time_limit: float) -> Allocation:
    """Step-shaped measured costs: the multiple-choice knapsack over every rank's measured
    cost, by branch-and-bound alone (the Lagrangian's linear costs would misprice it)."""
    t0 = time.perf_counter()
    out = branch_and_bound(problem, obj, time_limit, gap_tol / 2)
    info = {"closed_by": "branch-and-bound (measured cost tables)", "objective_name": obj.name}
    if out is None:  # no answer in the time limit: rank 0 everywhere (feasible, as checked before)
        ranks, active = np.zeros(len(problem.groups), dtype=np.int64), problem.default_active()
        info["milp_message"] = "no solution within the time limit; every layer at rank 0"
    else:
        ranks, active, bound, message, kept = out
        info.update(milp_message=message, milp_options=kept, lower_bound=bound)
    loss = obj.total(problem, ranks, active)
    if info.get("lower_bound") is not None:
        info["gap"] = _relative_gap(loss, info["lower_bound"])
    info["milp_seconds"] = time.perf_counter() - t0
    return Allocation(problem, ranks, "exact", active=active, objective=loss, info=info)
