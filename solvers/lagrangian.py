"""The Lagrangian relaxation of rank allocation with a separable objective, and what builds
on it: the dual maximised over the budget multipliers (a certified lower bound), the
allocation it implies, and a greedy fill of the leftover budget.

Costs are linear in r inside a group, so only the lower convex hull of each group's loss
curve matters; the hulls are computed once.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .objectives import Separable
from .problem import Problem


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
class Choice:
    """An allocation as the Lagrangian methods pass it around: ranks, the chosen alternative
    per group, the absolute cost per resource and the objective's loss."""

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

    def choose(self, lam: np.ndarray) -> tuple[Choice, float]:
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
        return Choice(ranks, active, cost, loss), dual

    def evaluate(self, ranks, active) -> Choice:
        p = self.problem
        ranks = np.asarray(ranks, dtype=np.int64)
        return Choice(ranks, active, p.cost(ranks, active), self.objective.total(p, ranks, active))


def maximise_dual(lag: Lagrangian, tol: float = 1e-7, max_iter: int = 60):
    """Nested bisection over the budget multipliers (one level per limited resource).

    Returns (best dual value, multipliers, best feasible choice seen or None).
    """
    search = _NestedBisection(lag, tol, max_iter)
    search.solve_level(0, np.zeros(len(lag.problem.resources)))
    return search.best_dual, search.best_lam, search.best_feasible


class _NestedBisection:
    """Each level maximises the dual over one limited resource's multiplier, the levels below
    it solved inside every evaluation; every choice met is recorded (the best dual, and the
    best feasible choice seen)."""

    def __init__(self, lag: Lagrangian, tol: float, max_iter: int):
        self.lag, self.p, self.tol, self.max_iter = lag, lag.problem, tol, max_iter
        self.level_of = {int(r): i for i, r in enumerate(lag.limited)}
        self.best_dual, self.best_lam, self.best_feasible = -np.inf, None, None

    def record(self, lam):
        choice, dual = self.lag.choose(lam)
        if dual > self.best_dual:
            self.best_dual, self.best_lam = dual, lam.copy()
        if self.p.fits(choice.cost) and (self.best_feasible is None or choice.loss < self.best_feasible.loss):
            self.best_feasible = choice
        return choice, dual

    def dual_and_slope(self, lam, res):
        """The inner maximum and a supergradient in lam[res] (normalised over-spend)."""
        choice, dual = self.solve_level(self.level_of[res] + 1, lam)
        return dual, (choice.cost[res] - self.p.budgets[res]) / self.lag.scale[res]

    def solve_level(self, level: int, lam: np.ndarray):
        """Maximise over lam[limited[level:]] with the earlier ones fixed; returns (choice, dual)."""
        if level == len(self.lag.limited):
            return self.record(lam)
        res = self.lag.limited[level]
        lam = lam.copy()
        lam[res] = 0.0
        choice, dual = self.solve_level(level + 1, lam)
        if choice.cost[res] <= self.p.budgets[res]:
            return choice, dual  # this budget is slack at multiplier 0
        lam[res] = self.bisect(lam, res, *self.bracket(lam, res, level))
        return self.solve_level(level + 1, lam)

    def bracket(self, lam, res, level) -> tuple[float, float]:
        """[lo, hi]: over budget at lo, within it at hi (hi grows by 4 until it fits)."""
        lo, hi = 0.0, 1.0
        while True:
            lam[res] = hi
            choice, _ = self.solve_level(level + 1, lam)
            if choice.cost[res] <= self.p.budgets[res] or hi > 1e12:
                return lo, hi
            lo, hi = hi, hi * 4

    def bisect(self, lam, res, lo, hi) -> float:
        """The bracket's feasible end once the dual's ceiling on it is within ``tol``: the dual is
        concave in lam[res], so on the bracket it lies below both tangents."""
        lam[res] = lo
        g_lo, s_lo = self.dual_and_slope(lam, res)
        lam[res] = hi
        g_hi, s_hi = self.dual_and_slope(lam, res)
        for _ in range(self.max_iter):
            ceiling = min(g_lo + s_lo * (hi - lo), g_hi - s_hi * (hi - lo))
            if hi - lo <= 1e-14 * max(hi, 1e-12) or ceiling - max(g_lo, g_hi) <= self.tol * max(abs(g_lo), abs(g_hi), 1e-12):
                break
            lam[res] = 0.5 * (lo + hi)
            g_mid, s_mid = self.dual_and_slope(lam, res)
            if s_mid > 0:
                lo, g_lo, s_lo = lam[res], g_mid, s_mid
            else:
                hi, g_hi, s_hi = lam[res], g_mid, s_mid
        return hi


def greedy_fill(lag: Lagrangian, start: Choice) -> Choice:
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
