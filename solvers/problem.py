"""The rank-allocation problem, free of any model code.

A *group* is one layer (or one layer under one factorisation scheme): an ordered list of
singular values of which a prefix (the top r) is kept. Keeping r values costs
``fixed_cost + r * rank_cost`` per resource (MACs, parameters, ...), which is what makes the
budgets linear constraints on the 0/1 masks. Once factorising stops paying (from rank
``dense_from`` on) the layer is left dense at ``dense_cost`` and full accuracy.

A measured resource (latency) is step-shaped in r, not linear: a group may carry a
``cost_table`` with its cost at every rank 0..full. Where it has one, the table is the
truth (costs, feasibility, ``dense_from``) and ``fixed_cost + r * rank_cost`` is only the
linear model that relaxations use; methods built on the linear model repair their result
against the table (see ``solvers.registry.solve``).

Groups that share a ``layer`` label are alternatives (e.g. ``channel`` versus ``spatial``
for one conv): exactly one of them is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import numpy as np


# The two resources every problem is priced in, spelled here once (lowrank's resources take
# their names from these; a problem's default resources).
MACS, PARAMS = "macs", "params"


class InfeasibleBudgetError(ValueError):
    """No allocation meets the budgets, not even rank 0 everywhere."""


class PlanOverBudgetError(RuntimeError):
    """A method returned an allocation over a budget: a bug in the method, never handed on as
    a plan (the promise every method keeps), and said as one, in words a user can act on."""


def _as_costs(x, n: int, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"{what} must have one entry per resource ({n}), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{what} must be finite and non-negative, got {a}")
    return a


@dataclass(eq=False)
class Group:
    """One layer's ordered singular values and what keeping them costs."""

    name: str
    values: np.ndarray
    rank_cost: np.ndarray
    fixed_cost: np.ndarray
    dense_cost: np.ndarray
    layer: str | None = None  # groups with the same layer are alternatives (schemes)
    option: str | None = None  # e.g. the scheme name
    cost_table: np.ndarray | None = None  # (full_rank + 1, resources): factorised cost per rank; NaN = linear

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if self.values.size == 0:
            raise ValueError(f"group {self.name!r} has no singular values")
        if not np.all(np.isfinite(self.values)) or np.any(self.values < 0):
            raise ValueError(f"group {self.name!r}: singular values must be finite and >= 0")
        if np.any(np.diff(self.values) > 1e-9 * max(1.0, float(self.values[0]))):
            raise ValueError(f"group {self.name!r}: singular values must be in descending order")
        k = np.asarray(self.rank_cost).size
        self.rank_cost = _as_costs(self.rank_cost, k, f"group {self.name!r} rank_cost")
        self.fixed_cost = _as_costs(self.fixed_cost, k, f"group {self.name!r} fixed_cost")
        self.dense_cost = _as_costs(self.dense_cost, k, f"group {self.name!r} dense_cost")
        if self.layer is None:
            self.layer = self.name
        if self.cost_table is not None:
            t = np.asarray(self.cost_table, dtype=np.float64)
            if t.shape != (self.full_rank + 1, k):
                raise ValueError(f"group {self.name!r}: cost_table must have shape {(self.full_rank + 1, k)}, got {t.shape}")
            if np.any(t[~np.isnan(t)] < 0) or np.any(np.isinf(t)):
                raise ValueError(f"group {self.name!r}: cost_table entries must be finite and non-negative (NaN: linear)")
            self.cost_table = None if np.all(np.isnan(t)) else t

    @property
    def has_table(self) -> bool:
        return self.cost_table is not None

    def factorised_cost(self, rank) -> np.ndarray:
        """Cost per resource of the two-layer form at ``rank`` (scalar or array), no dense fallback."""
        r = np.asarray(rank)
        linear = self.fixed_cost + r[..., None] * self.rank_cost
        if self.cost_table is None:
            return linear
        measured = self.cost_table[r.astype(np.int64)]
        return np.where(np.isnan(measured), linear, measured)

    @property
    def full_rank(self) -> int:
        return int(self.values.size)

    @cached_property
    def dense_from(self) -> int:
        """Smallest rank whose factorised form is not cheaper than dense in some resource.

        From this rank on the layer stays dense (at full accuracy); ``full_rank + 1`` means
        factorising pays even at full rank.
        """
        factorised = self.factorised_cost(np.arange(self.full_rank + 1))
        not_cheaper = np.any(factorised >= self.dense_cost[None, :], axis=1)
        hits = np.flatnonzero(not_cheaper)
        return int(hits[0]) if hits.size else self.full_rank + 1

    def normalise(self, rank: int) -> int:
        """Ranks at which the layer stays dense all mean 'full rank'."""
        rank = int(rank)
        if not 0 <= rank <= self.full_rank:
            raise ValueError(f"group {self.name!r}: rank {rank} outside 0..{self.full_rank}")
        return self.full_rank if rank >= self.dense_from else rank

    def step_down(self, rank: int, weight: np.ndarray | None = None) -> int:
        """The next cheaper rank: one less, or from dense down to the last rank that pays; on a
        measured (step-shaped) table, down to the first rank that saves something (weighted
        by ``weight`` per resource, e.g. zero for resources without a budget)."""
        rank = int(rank)
        now = self.cost(rank)
        new = max((self.dense_from if self.is_dense(rank) else rank) - 1, 0)
        w = np.ones_like(now) if weight is None else np.asarray(weight)
        while self.has_table and new > 0 and not (now - self.cost(new)) @ w > 0:
            new -= 1
        return new

    def prefix_mask(self, rank: int) -> np.ndarray:
        """The 0/1 mask keeping the top ``rank`` values (all of them where the layer stays dense)."""
        return (np.arange(self.full_rank) < self.normalise(rank)).astype(np.float64)

    def is_dense(self, rank: int) -> bool:
        return int(rank) >= self.dense_from

    def cost(self, rank) -> np.ndarray:
        """Cost per resource at ``rank`` (scalar or array of ranks -> (..., K))."""
        r = np.asarray(rank)
        return np.where((r >= self.dense_from)[..., None], self.dense_cost, self.factorised_cost(r))

    def energy_kept(self, rank: int) -> float:
        """Fraction of squared Frobenius norm kept at ``rank`` (1 when dense)."""
        if self.is_dense(rank):
            return 1.0
        total = float(np.sum(self.values**2))
        return float(np.sum(self.values[: int(rank)] ** 2)) / total if total > 0 else 1.0


@dataclass(eq=False)
class Problem:
    """Groups, per-resource budgets, and the cost of everything outside the groups."""

    groups: Sequence[Group]
    budgets: np.ndarray
    resources: tuple[str, ...] = (MACS, PARAMS)
    base_cost: np.ndarray | None = None  # cost of layers that are never factorised
    reference_cost: np.ndarray | None = None  # cost of the original model, for messages
    objective: Callable | None = None  # optional: see solvers.objectives
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        k = len(self.resources)
        if k == 0:
            raise ValueError("a problem needs at least one resource")
        self.groups = list(self.groups)
        if not self.groups:
            raise ValueError("a problem needs at least one group (no compressible layer?)")
        b = np.asarray(self.budgets, dtype=np.float64).reshape(-1)
        if b.shape != (k,):
            raise ValueError(f"budgets must have one entry per resource {self.resources}, got {b}")
        if np.any(np.isnan(b)) or np.any(b < 0):
            raise ValueError(f"budgets must be non-negative numbers (np.inf = unconstrained), got {b}")
        self.budgets = b
        self.base_cost = _as_costs(np.zeros(k) if self.base_cost is None else self.base_cost, k, "base_cost")
        if self.reference_cost is not None:
            self.reference_cost = _as_costs(self.reference_cost, k, "reference_cost")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("group names must be unique")
        for g in self.groups:
            if g.rank_cost.size != k:
                raise ValueError(f"group {g.name!r} has {g.rank_cost.size} costs, expected {k}")

    # --- structure -----------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, list[int]]:
        """Layer label -> indices of its alternative groups, in first-seen order."""
        out: dict[str, list[int]] = {}
        for i, g in enumerate(self.groups):
            out.setdefault(g.layer, []).append(i)
        return out

    @property
    def has_tables(self) -> bool:
        """Whether some group's costs are a measured per-rank table (not linear in the rank)."""
        return any(g.has_table for g in self.groups)

    @property
    def n_masks(self) -> int:
        return int(sum(g.full_rank for g in self.groups))

    # --- costs -------------------------------------------------------------------------
    def cost(self, ranks: Sequence[int], active: Sequence[bool] | None = None) -> np.ndarray:
        """Total cost of a rank per group; ``active`` marks the chosen alternative per layer."""
        ranks = np.asarray(ranks)
        if ranks.shape != (len(self.groups),):
            raise ValueError(f"expected {len(self.groups)} ranks, got shape {ranks.shape}")
        active = self.default_active() if active is None else np.asarray(active, dtype=bool)
        total = self.base_cost.copy()
        for g, r, a in zip(self.groups, ranks, active):
            if a:
                total += g.cost(int(r))
        return total

    def prefix_masks(self, ranks: Sequence[int], active: Sequence[bool]) -> dict[str, np.ndarray]:
        """Group name -> prefix mask, for the active group of every layer: an allocation as the
        masks a network-loss objective takes."""
        return {g.name: g.prefix_mask(int(r)) for g, r, a in zip(self.groups, ranks, active) if a}

    def default_active(self) -> np.ndarray:
        """First alternative of every layer."""
        active = np.zeros(len(self.groups), dtype=bool)
        for idx in self.layers.values():
            active[idx[0]] = True
        return active

    def subset(self, keep: Sequence[bool], frozen_dense: Sequence[bool] | None = None) -> "Problem":
        """The same budgets over only the kept groups; ``frozen_dense`` groups become base cost."""
        keep = np.asarray(keep, dtype=bool)
        base = self.base_cost.copy()
        if frozen_dense is not None:
            for g, f in zip(self.groups, np.asarray(frozen_dense, dtype=bool)):
                if f:
                    base += g.dense_cost
            keep = keep & ~np.asarray(frozen_dense, dtype=bool)
        groups = [g for g, k in zip(self.groups, keep) if k]
        return Problem(groups, self.budgets, self.resources, base, self.reference_cost, self.objective, dict(self.meta))

    def with_budgets(self, budgets: Sequence[float]) -> "Problem":
        """The same problem under other budgets (one per resource)."""
        return Problem(self.groups, budgets, self.resources, self.base_cost, self.reference_cost, self.objective, dict(self.meta))

    def fits(self, cost: np.ndarray) -> bool:
        return bool(np.all(np.asarray(cost) <= self.budgets))

    def cheapest_active(self, weight: np.ndarray) -> np.ndarray:
        """Per layer, the alternative whose rank-0 cost weighted by ``weight`` (one entry per
        resource) is least: the scheme choice of the cheapest plan."""
        active = np.zeros(len(self.groups), dtype=bool)
        for idx in self.layers.values():
            active[min(idx, key=lambda i: float(self.groups[i].cost(0) @ weight))] = True
        return active

    def min_cost(self) -> np.ndarray:
        """Smallest achievable cost per resource (every layer at rank 0, cheapest alternative)."""
        total = self.base_cost.copy()
        for idx in self.layers.values():
            total += np.min([self.groups[i].cost(0) for i in idx], axis=0)
        return total

    def check_feasible(self) -> None:
        """Raise InfeasibleBudgetError naming each budget below the smallest achievable cost."""
        lo = self.min_cost()
        bad = [i for i in range(len(self.resources)) if lo[i] > self.budgets[i]]
        if not bad:
            return
        parts = []
        for i in bad:
            name, limit = self.resources[i], self.budgets[i]
            if self.reference_cost is not None and self.reference_cost[i] > 0:
                ref = self.reference_cost[i]
                parts.append(f"{name} budget {_amount(limit)} ({limit / ref:.1%} of the original) is below the smallest "
                             f"achievable {_amount(lo[i])} ({lo[i] / ref:.1%} of the original: every compressible layer at "
                             "rank 0 plus the layers that stay dense)")
            else:
                parts.append(f"{name} budget {_amount(limit)} is below the smallest achievable {_amount(lo[i])}")
        raise InfeasibleBudgetError("infeasible budget: " + "; ".join(parts) + ". Raise the budget.")


def _amount(value: float) -> str:
    """A cost in words: thousands separated, never in exponent notation."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


@dataclass
class Allocation:
    """A rank per group (0..full rank), the chosen alternative per layer, and how it was found."""

    problem: Problem
    ranks: np.ndarray
    method: str
    active: np.ndarray | None = None
    objective: float | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        p = self.problem
        self.ranks = np.array([g.normalise(r) for g, r in zip(p.groups, np.asarray(self.ranks))], dtype=np.int64)
        self.active = p.default_active() if self.active is None else np.asarray(self.active, dtype=bool)
        for layer, idx in p.layers.items():
            if int(self.active[idx].sum()) != 1:
                raise ValueError(f"layer {layer!r} must have exactly one active alternative")

    @property
    def cost(self) -> np.ndarray:
        return self.problem.cost(self.ranks, self.active)

    @property
    def feasible(self) -> bool:
        return self.problem.fits(self.cost)

    def by_layer(self) -> dict[str, tuple[Group, int]]:
        """Layer label -> (chosen group, its rank)."""
        out = {}
        for layer, idx in self.problem.layers.items():
            i = next(j for j in idx if self.active[j])
            out[layer] = (self.problem.groups[i], int(self.ranks[i]))
        return out
