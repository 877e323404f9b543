"""A minimum rank per layer, honoured by every method.

A user who needs every layer to keep at least r values (so no branch of the network is cut,
or a kernel stays efficient) states it once; rounding a method's answer up afterwards would
break budgets. Instead the problem is restated with the first r values of each group always
kept: the restated group holds values r.., and its fixed cost includes the r kept ones, so
every method (and COBLA's relaxation) solves it unchanged and rank u maps back to u + r.

A floor at or past a group's break-even rank leaves only "dense": such an alternative is
dropped (the layer's other alternatives still reach dense), and a layer left with none
stays dense outside the problem, at its dense cost.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .objectives import Differentiable, Separable
from .problem import Allocation, Group, InfeasibleBudgetError, Problem
from .selection import Scorer


class Floors:
    """``Floors(problem, floors)``: ``.problem`` with each group's first ``floors[name]``
    values always kept, and the maps between the two. ``floors``: one int for every group,
    or group (or layer) name -> int (absent names: 0)."""

    def __init__(self, problem: Problem, floors: int | Mapping[str, int]):
        self.original = problem
        self.floors = {g.name: _floor_of(floors, g) for g in problem.groups}
        self.kept: list[int] = []  # indices of the original groups left in the restated problem
        frozen = np.zeros(len(problem.groups), dtype=bool)  # layers that can only stay dense
        for idx in problem.layers.values():
            live = [i for i in idx if self.floors[problem.groups[i].name] < min(problem.groups[i].dense_from, problem.groups[i].full_rank)]
            if live:
                self.kept += live
            else:
                frozen[idx[0]] = True
        self.kept.sort()
        self.frozen = frozen
        if not self.kept:
            raise ValueError("the minimum ranks keep every layer at or past its break-even rank, where it stays dense: "
                             "nothing is left to compress. Lower min_rank.")
        base = problem.base_cost + sum((problem.groups[i].dense_cost for i in np.flatnonzero(frozen)), np.zeros_like(problem.base_cost))
        groups = [self._restated_group(problem.groups[i]) for i in self.kept]
        self.problem = Problem(groups, problem.budgets, problem.resources, base, problem.reference_cost,
                               self.objective(problem.objective), {**problem.meta, "min_rank": dict(self.floors)})

    def _restated_group(self, g: Group) -> Group:
        m = self.floors[g.name]
        table = None if not g.has_table else g.cost_table[m:]
        return Group(g.name, g.values[m:], g.rank_cost, g.fixed_cost + m * g.rank_cost, g.dense_cost, g.layer, g.option, table)

    # --- feasibility ---------------------------------------------------------------------
    def check_feasible(self) -> None:
        """Raise InfeasibleBudgetError naming each budget the floors put out of reach, with the
        smallest cost with and without them."""
        lo, lo_free = self.problem.min_cost(), self.original.min_cost()
        bad = [i for i in range(len(lo)) if lo[i] > self.problem.budgets[i]]
        if not bad:
            return
        ref = self.original.reference_cost
        parts = []
        for i in bad:
            share = (lambda v: f" ({v / ref[i]:.1%} of the original)") if ref is not None and ref[i] > 0 else (lambda v: "")
            parts.append(f"{self.original.resources[i]} budget {self.problem.budgets[i]:,.0f}{share(self.problem.budgets[i])} is "
                         f"below the smallest achievable with these minimum ranks, {lo[i]:,.0f}{share(lo[i])} (without "
                         f"them {lo_free[i]:,.0f}{share(lo_free[i])})")
        raise InfeasibleBudgetError("infeasible budget: " + "; ".join(parts) + ". Lower min_rank or raise the budget.")

    # --- ranks ---------------------------------------------------------------------------
    def ranks(self, ranks, active) -> tuple[np.ndarray, np.ndarray]:
        """Ranks and active alternatives of the restated problem -> the original's."""
        out = np.zeros(len(self.original.groups), dtype=np.int64)
        on = self.frozen.copy()
        for i in np.flatnonzero(self.frozen):
            out[i] = self.original.groups[i].full_rank
        for j, i in enumerate(self.kept):
            out[i] = int(ranks[j]) + self.floors[self.original.groups[i].name]
            on[i] = bool(active[j])
        return out, on

    def restate_ranks(self, ranks, active) -> tuple[np.ndarray, np.ndarray]:
        """The original's ranks -> the restated problem's (raised to the floors), with an
        active alternative for every layer."""
        ranks, active = np.asarray(ranks), np.asarray(active, dtype=bool)
        new = np.array([max(int(ranks[i]) - self.floors[self.original.groups[i].name], 0) for i in self.kept], dtype=np.int64)
        on = np.array([bool(active[i]) for i in self.kept])
        for idx in self.problem.layers.values():
            if not on[idx].any():
                on[idx[0]] = True
        return new, on

    def allocation(self, restated: Allocation) -> Allocation:
        """A solution of the restated problem as an allocation of the original one."""
        ranks, active = self.ranks(restated.ranks, restated.active)
        return Allocation(self.original, ranks, restated.method, active=active, objective=restated.objective,
                          info={**restated.info, "min_rank": self.described()})

    def described(self) -> int | str:
        """The floors in a word: one number where every group has it, else name=rank pairs."""
        values = set(self.floors.values())
        if len(values) == 1:
            return values.pop()
        return ", ".join(f"{name}={m}" for name, m in self.floors.items() if m)

    # --- what the methods are given --------------------------------------------------------
    def objective(self, objective):
        """An objective over the original groups -> the same over the restated ones."""
        if objective is None or isinstance(objective, str):
            return objective
        if isinstance(objective, Separable):
            curves = {}
            for i in self.kept:
                name = self.original.groups[i].name
                curves[name] = np.asarray(objective.curves[name])[self.floors[name]:]
            return Separable(curves, objective.name)
        if isinstance(objective, Differentiable):
            return self._restated_objective(objective)
        raise ValueError(f"cannot restate a {type(objective).__name__} objective over minimum ranks")

    def options(self, options: dict) -> dict:
        """Solver options built for the original problem, restated by what they are (as
        :meth:`solvers.multiples.Multiples.options`)."""
        return {key: self._restated(value) for key, value in options.items()}

    def _restated(self, value):
        if isinstance(value, (Separable, Differentiable)):
            return self.objective(value)
        if isinstance(value, Scorer):
            return Scorer(lambda allocations: value([self.ranks(ranks, active) for ranks, active in allocations]))
        if isinstance(value, Allocation):
            ranks, active = self.restate_ranks(value.ranks, value.active)
            return Allocation(self.problem, ranks, value.method, active=active)
        if isinstance(value, dict) and value and all(isinstance(v, Allocation) for v in value.values()):
            return {name: self._restated(a) for name, a in value.items()}
        return value

    def _restated_objective(self, objective: Differentiable) -> Differentiable:
        floors = self.floors
        dense = {g.name: np.ones(g.full_rank) for g, f in zip(self.original.groups, self.frozen) if f}
        return objective.restated(
            lambda masks: {**{name: np.concatenate([np.ones(floors[name]), np.asarray(m, dtype=np.float64)])
                              for name, m in masks.items()}, **dense},
            lambda masks, grads: {name: np.asarray(grads[name])[floors[name]:] for name in masks})


def _floor_of(floors, g: Group) -> int:
    m = floors.get(g.name, floors.get(g.layer, 0)) if isinstance(floors, Mapping) else floors
    if isinstance(m, bool) or int(m) != m or m < 0:
        raise ValueError(f"min_rank must be a non-negative integer, got {m!r} for {g.name!r}")
    return min(int(m), g.full_rank)
