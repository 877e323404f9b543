"""Ranks in multiples of k, chosen inside the optimisation by every method.

Hardware runs a factorised layer fastest when its rank fills whole vector or tensor-core
widths, so a rank of 19 costs about what 32 does. Rounding ranks after solving would break
budgets or waste them; instead the problem itself is restated over *blocks* of k singular
values: block j of a layer holds values jk .. jk+k-1 and costs k times one value. Every
method (and COBLA's relaxation, whose masks become one per block) solves that problem
unchanged; a block count u maps back to rank min(u k, full rank).

Budgets stay exact promises: a layer's last block may hold fewer than k values but is
charged for k, so the true cost of the mapped ranks is at most the blocked problem's. A
measured cost table (latency) is restated exactly: block count u costs what rank
min(u k, full) was measured at.
"""
from __future__ import annotations

import numpy as np

from .objectives import Differentiable, Separable
from .problem import Allocation, Group, Problem
from .selection import Scorer


class Multiples:
    """``Multiples(problem, k)``: ``.problem`` over blocks of k, and the maps between the two."""

    def __init__(self, problem: Problem, k: int):
        if int(k) != k or k < 1:
            raise ValueError(f"rank_multiple must be a positive integer, got {k!r}")
        self.original, self.k = problem, int(k)
        self.sizes = [g.full_rank for g in problem.groups]
        groups = [Group(g.name, _block_values(g.values, self.k), g.rank_cost * self.k, g.fixed_cost, g.dense_cost, g.layer, g.option,
                        _block_table(g, self.k)) for g in problem.groups]
        self.problem = Problem(groups, problem.budgets, problem.resources, problem.base_cost, problem.reference_cost,
                               self.objective(problem.objective), {**problem.meta, "rank_multiple": self.k})

    # --- ranks --------------------------------------------------------------------------
    def ranks(self, blocks) -> np.ndarray:
        """Block counts per group -> ranks (multiples of k, or the full rank)."""
        return np.array([min(int(u) * self.k, n) for u, n in zip(blocks, self.sizes)], dtype=np.int64)

    def blocks(self, ranks) -> np.ndarray:
        """Ranks -> the most blocks that fit inside them (rounding down keeps every budget)."""
        out = []
        for g, r in zip(self.original.groups, ranks):
            r = g.normalise(int(r))
            out.append(-(-r // self.k) if r == g.full_rank else r // self.k)  # full stays full
        return np.array(out, dtype=np.int64)

    def allocation(self, blocked: Allocation) -> Allocation:
        """A solution of the blocked problem as an allocation of the original one."""
        info = {**blocked.info, "rank_multiple": self.k}
        return Allocation(self.original, self.ranks(blocked.ranks), blocked.method, active=blocked.active,
                          objective=blocked.objective, info=info)

    # --- what the methods are given -----------------------------------------------------
    def objective(self, objective):
        """An objective over values -> the same over blocks (names of separable objectives
        stay names: the block values keep each block's energy)."""
        if objective is None or isinstance(objective, str):
            return objective
        if isinstance(objective, Separable):
            curves = {name: np.asarray(c)[[min(u * self.k, len(c) - 1) for u in range(-(-(len(c) - 1) // self.k) + 1)]]
                      for name, c in objective.curves.items()}
            return Separable(curves, objective.name)
        if isinstance(objective, Differentiable):
            return self._blocked(objective)
        raise ValueError(f"cannot restate a {type(objective).__name__} objective over rank multiples")

    def options(self, options: dict) -> dict:
        """Solver options built for the original problem, restated for the blocked one by
        what they are: objectives, scorers (:class:`~solvers.selection.Scorer`) and
        allocations (alone or in a dict) change; anything else passes as it is."""
        return {key: self._restated(value) for key, value in options.items()}

    def _restated(self, value):
        if isinstance(value, (Separable, Differentiable)):
            return self.objective(value)
        if isinstance(value, Scorer):
            return Scorer(lambda allocations: value([(self.ranks(units), active) for units, active in allocations]))
        if isinstance(value, Allocation):
            return Allocation(self.problem, self.blocks(value.ranks), value.method, active=value.active)
        if isinstance(value, dict) and value and all(isinstance(v, Allocation) for v in value.values()):
            return {name: self._restated(a) for name, a in value.items()}
        return value

    def _blocked(self, objective: Differentiable) -> Differentiable:
        sizes = {g.name: g.full_rank for g in self.original.groups}
        k = self.k
        return objective.restated(
            lambda masks: {name: np.repeat(np.asarray(m, dtype=np.float64), k)[: sizes[name]] for name, m in masks.items()},
            lambda masks, grads: {name: np.add.reduceat(grads[name], np.arange(0, sizes[name], k)) for name in masks})


def _block_table(g: Group, k: int) -> np.ndarray | None:
    """A measured cost table per block count u: the original's cost at rank min(u k, full)."""
    if not g.has_table:
        return None
    n = g.full_rank
    return g.cost_table[[min(u * k, n) for u in range(-(-n // k) + 1)]]


def _block_values(values: np.ndarray, k: int) -> np.ndarray:
    """One value per block: the root of its squared sum, so a prefix of blocks keeps exactly
    the energy of the values it covers (and the order stays descending)."""
    n = values.size
    return np.sqrt(np.add.reduceat(values.astype(np.float64) ** 2, np.arange(0, n, k)))
