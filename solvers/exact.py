"""Exact rank allocation for separable objectives: a multiple-choice knapsack with several budgets.

Every layer picks one option: a rank r below its dense fallback in one of its groups, or
dense. ``exact`` maximises the Lagrangian dual over the budget multipliers (a certified lower
bound), builds a feasible allocation from the multipliers and fills the leftover budget
greedily; if the certified gap is still above ``gap_tol`` it closes it by branch-and-bound
(HiGHS through ``scipy.optimize.milp``), warm from that bound.

Costs in the Lagrangian are linear in r inside a group, so only the lower convex hull of each
group's loss curve matters there; the hulls are computed once. Measured step-shaped costs
(latency tables) break that linearity: such problems go to branch-and-bound directly, which
takes every rank's measured cost as it is.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np
from scipy import optimize, sparse

from .objectives import Separable, separable_objective
from .problem import Allocation, Problem
from .registry import Need, register


def lower_hull(y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points (i, y[i]), i = 0..len(y)-1."""
    if len(y) < 3 or np.all(np.diff(y, 2) > 0):  # strictly convex already (e.g. discarded energy)
        return np.arange(len(y), dtype=np.int64)
    hull: list[int] = []
    for i in range(len(y)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the segment a -> i
            if (y[b] - y[a]) * (i - a) >= (y[i] - y[a]) * (b - a):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.asarray(hull, dtype=np.int64)


@dataclass
class _Choice:
    ranks: np.ndarray
    active: np.ndarray
    cost: np.ndarray  # absolute, every resource
    loss: float


class Lagrangian:
    """Evaluates the Lagrangian dual and its minimiser x(lambda) in O(number of hull segments)."""

    def __init__(self, problem: Problem, objective: Separable):
        self.problem, self.objective = problem, objective
        groups = problem.groups
        self.limited = np.flatnonzero(np.isfinite(problem.budgets))
        self.capacity = problem.budgets - problem.base_cost  # what the groups may spend
        scale = np.where(np.isfinite(self.capacity) & (self.capacity > 0), self.capacity, 1.0)
        self.scale = scale  # multipliers work on costs normalised by capacity
        self.capacity_normalised = np.where(np.isfinite(self.capacity), self.capacity / scale, 0.0)
        self.rank_cost_abs = np.array([g.rank_cost for g in groups])
        self.fixed_abs = np.array([g.fixed_cost for g in groups])
        self.dense_abs = np.array([g.dense_cost for g in groups])
        self.rank_cost, self.fixed, self.dense = self.rank_cost_abs / scale, self.fixed_abs / scale, self.dense_abs / scale
        self.full_rank = np.array([g.full_rank for g in groups])
        self.dense_loss = np.array([objective.curves[g.name][g.full_rank] for g in groups])
        self.dense_from = np.array([min(g.dense_from, g.full_rank + 1) for g in groups])
        hull_r, hull_loss, starts, seg_slope, seg_group = [], [], [], [], []
        offset = 0
        for gi, g in enumerate(groups):
            curve = objective.curves[g.name][: self.dense_from[gi]]  # factorised ranks only
            h = lower_hull(curve)
            starts.append(offset)
            offset += h.size
            hull_r.append(h)
            hull_loss.append(curve[h])
            if h.size > 1:
                seg_slope.append(-np.diff(curve[h]) / np.diff(h))  # loss saved per extra rank
                seg_group.append(np.full(h.size - 1, gi))
        self.hull_r, self.hull_loss = np.concatenate(hull_r), np.concatenate(hull_loss)
        self.starts = np.asarray(starts)
        self.seg_slope = np.concatenate(seg_slope) if seg_slope else np.zeros(0)
        self.seg_group = np.concatenate(seg_group) if seg_group else np.zeros(0, dtype=np.int64)
        layer_ids = {name: i for i, name in enumerate(problem.layers)}
        self.layer_of = np.array([layer_ids[g.layer] for g in groups])
        self.n_layers = len(layer_ids)
        self.evaluations = 0

    def choose(self, lam: np.ndarray) -> tuple[_Choice, float]:
        """x(lambda) and the dual value g(lambda) (a lower bound on the optimum)."""
        self.evaluations += 1
        w = self.rank_cost @ lam  # Lagrangian price of one more rank, per group
        above = self.seg_slope > w[self.seg_group]
        counts = np.bincount(self.seg_group, weights=above, minlength=len(w)).astype(np.int64)
        vertex = self.starts + counts
        r = self.hull_r[vertex]
        fact_val = self.hull_loss[vertex] + r * w + self.fixed @ lam
        dense_val = self.dense_loss + self.dense @ lam
        use_dense = dense_val < fact_val
        val = np.where(use_dense, dense_val, fact_val)
        # per layer, the cheapest of its alternatives
        order = np.lexsort((val, self.layer_of))
        first = np.ones(order.size, dtype=bool)
        first[1:] = self.layer_of[order][1:] != self.layer_of[order][:-1]
        active = np.zeros(len(w), dtype=bool)
        active[order[first]] = True
        dual = float(val[active].sum() - lam @ self.capacity_normalised)
        ranks = np.where(use_dense, self.full_rank, r)
        group_cost = np.where(use_dense[:, None], self.dense_abs, self.fixed_abs + r[:, None] * self.rank_cost_abs)
        cost = self.problem.base_cost + group_cost[active].sum(axis=0)
        loss = float(np.where(use_dense, self.dense_loss, self.hull_loss[vertex])[active].sum())
        return _Choice(ranks, active, cost, loss), dual

    def evaluate(self, ranks, active) -> _Choice:
        p = self.problem
        ranks = np.asarray(ranks, dtype=np.int64)
        return _Choice(ranks, active, p.cost(ranks, active), self.objective.total(p, ranks, active))


# Over 60 lines on purpose: the nested bisection reads better whole than split across helpers.
def maximise_dual(lag: Lagrangian, tol: float = 1e-7, max_iter: int = 60):
    """Nested bisection over the budget multipliers (one level per limited resource).

    Returns (best dual value, multipliers, best feasible choice seen or None).
    """
    p = lag.problem
    best = {"dual": -np.inf, "lam": None, "feasible": None}
    k = len(p.resources)

    def record(lam):
        choice, dual = lag.choose(lam)
        if dual > best["dual"]:
            best["dual"], best["lam"] = dual, lam.copy()
        if p.fits(choice.cost) and (best["feasible"] is None or choice.loss < best["feasible"].loss):
            best["feasible"] = choice
        return choice, dual

    def dual_and_slope(lam, res):
        """The inner maximum and a supergradient in lam[res] (normalised over-spend)."""
        choice, dual = solve_level(level_of[res] + 1, lam)
        return dual, (choice.cost[res] - p.budgets[res]) / lag.scale[res]

    level_of = {int(r): i for i, r in enumerate(lag.limited)}

    def solve_level(level: int, lam: np.ndarray):
        """Maximise over lam[limited[level:]] with the earlier ones fixed; returns (choice, dual)."""
        if level == len(lag.limited):
            return record(lam)
        res = lag.limited[level]
        over = lambda choice: choice.cost[res] > p.budgets[res]  # noqa: E731
        lam = lam.copy()
        lam[res] = 0.0
        choice, dual = solve_level(level + 1, lam)
        if not over(choice):
            return choice, dual  # this budget is slack at multiplier 0
        lo, hi = 0.0, 1.0
        while True:
            lam[res] = hi
            choice, dual = solve_level(level + 1, lam)
            if not over(choice) or hi > 1e12:
                break
            lo, hi = hi, hi * 4
        # Bracket [lo, hi]: over budget at lo, within at hi. The dual is concave in lam[res], so
        # on the bracket it lies below both tangents; stop once that ceiling is within tol.
        lam[res] = lo
        g_lo, s_lo = dual_and_slope(lam, res)
        lam[res] = hi
        g_hi, s_hi = dual_and_slope(lam, res)
        for _ in range(max_iter):
            ceiling = min(g_lo + s_lo * (hi - lo), g_hi - s_hi * (hi - lo))
            if hi - lo <= 1e-14 * max(hi, 1e-12) or ceiling - max(g_lo, g_hi) <= tol * max(abs(g_lo), abs(g_hi), 1e-12):
                break
            lam[res] = 0.5 * (lo + hi)
            g_mid, s_mid = dual_and_slope(lam, res)
            if s_mid > 0:
                lo, g_lo, s_lo = lam[res], g_mid, s_mid
            else:
                hi, g_hi, s_hi = lam[res], g_mid, s_mid
        lam[res] = hi
        return solve_level(level + 1, lam)

    solve_level(0, np.zeros(k))
    return best["dual"], best["lam"], best["feasible"]


def greedy_fill(lag: Lagrangian, start: _Choice) -> _Choice:
    """Spend the leftover budget: repeatedly take the move with most loss saved per budget share.

    Moves of a group: one more rank, a jump to its next hull vertex, or going dense. A move
    that does not fit now never fits later, so it is dropped.
    """
    p, obj = lag.problem, lag.objective
    ranks, active = start.ranks.copy(), start.active.copy()
    slack = p.budgets - start.cost
    weight = np.where(np.isfinite(p.budgets), 1.0 / lag.scale, 0.0)
    heap: list = []
    version = np.zeros(len(p.groups), dtype=np.int64)

    def push_moves(gi):
        g = p.groups[gi]
        r = int(ranks[gi])
        if g.is_dense(r):
            return
        curve = obj.curves[g.name]
        now_cost, now_loss = g.cost(r), curve[r]
        targets = {g.full_rank}
        if r + 1 < g.dense_from:
            targets.add(r + 1)
            hv = lag.hull_r[lag.starts[gi]: lag.starts[gi] + np.searchsorted(lag.hull_r[lag.starts[gi]:], g.dense_from)]
            nxt = hv[hv > r]
            if nxt.size:
                targets.add(int(nxt[0]))
        for t in targets:
            delta = g.cost(t) - now_cost
            gain = now_loss - curve[g.normalise(t)]
            if gain <= 0:
                continue
            share = float(delta @ weight)
            prio = gain / share if share > 0 else np.inf
            heapq.heappush(heap, (-prio, gi, t, int(version[gi]), delta))

    for gi in np.flatnonzero(active):
        push_moves(gi)
    while heap:
        _, gi, t, ver, delta = heapq.heappop(heap)
        if ver != version[gi]:
            continue
        if np.any(delta > slack):
            continue
        slack = slack - delta
        ranks[gi] = t
        version[gi] += 1
        push_moves(gi)
    return lag.evaluate(ranks, active)


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


def _from_options(problem: Problem, x: np.ndarray, owner) -> tuple[np.ndarray, np.ndarray]:
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
    res = optimize.milp(
        loss - offset, constraints=constraints, integrality=np.ones(loss.size), bounds=optimize.Bounds(0, 1),
        options={"time_limit": time_limit, "mip_rel_gap": gap, "disp": False},
    )
    if res.x is None:
        return None
    ranks, active = _from_options(problem, res.x, owner)
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
