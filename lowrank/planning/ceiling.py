"""The ceiling of a measured budget: how much of the original's cost sits in layers a plan can
change, and the least any plan reaches, measured, not estimated.

A plan's measured cost (latency) is predicted from layers read alone plus the rest of the
model (the whole read less its layers). Layers read alone can run slower or faster than
inside the network, so the predicted least cost (every layer at its cheapest) can be far
from what that plan measures: a small CNN whose all-rank-0 rebuild ran at 0.40-0.42 of the
original was refused at a budget of 0.6 as "smallest achievable 0.62-0.65". So the cheapest
plan is rebuilt and read against the original, and the layer readings are moved onto the
network's clock by the two plans measured whole (the original and the cheapest): a budget
the cheapest plan meets is planned (the rebuilt model is still checked, and planned again
where it misses), and one it does not is refused with the measured least. Where the readings
put every plan that keeps a rank in every layer over the budget, the cheapest such plan is
rebuilt and read too, and anchors the clock instead: vgg-fmnist at latency 0.5 (channel)
predicted it at 0.51 and so cut a layer, where plans that kept every layer measured 0.48.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch import nn

from .. import resources
from ..solvers import Allocation, Group, Problem
from ..solvers.floors import Floors
from .plan import Plan
from .rebuild import rebuild
from .table import LayerTable


@dataclass
class Ceiling:
    """One measured resource's ceiling, as fractions of the original."""

    resource: str
    in_layers: float  # the share of the original the changeable layers cost, read alone
    predicted_floor: float  # the cheapest plan, as the layer readings predict it
    measured_floor: float  # the cheapest plan, rebuilt and read against the original
    alive_floor: float | None = None  # the cheapest plan keeping a rank in every layer, predicted on the network's clock
    alive_predicted: float | None = None  # that plan as the layer readings predict it (where it was measured)
    alive_measured: float | None = None  # that plan rebuilt and read against the original (only where the readings refuse it)

    @property
    def best_speedup(self) -> float:
        """The most any plan can gain: the original over the cheapest plan, as measured."""
        return 1.0 / self.measured_floor if self.measured_floor > 0 else float("inf")

    def __str__(self) -> str:
        how = "measured" if self.alive_measured is not None else "predicted"
        alive = ("" if self.alive_floor is None else
                 f"; a plan that keeps a rank in every layer costs at least {self.alive_floor:.0%} ({how}): at most "
                 f"{1 / self.alive_floor:.2f}x cheaper with no layer cut")
        return (f"{self.resource} ceiling: the layers a plan can change cost {self.in_layers:.0%} of the original (read "
                f"alone); the cheapest plan (every one at rank 0, a cut network) measured {self.measured_floor:.0%} of the "
                f"original (predicted {self.predicted_floor:.0%}): no plan is more than {self.best_speedup:.2f}x cheaper"
                + alive)

    def to_info(self) -> dict:
        r = self.resource
        return {f"{r}_in_layers": self.in_layers, f"{r}_floor_predicted": self.predicted_floor,
                f"{r}_floor_measured": self.measured_floor, f"{r}_floor_alive": self.alive_floor,
                f"{r}_floor_alive_predicted": self.alive_predicted, f"{r}_floor_alive_measured": self.alive_measured}


def cheapest(problem: Problem, resource: int) -> Allocation:
    """Every layer at rank 0 in its alternative that costs least there in ``resource``."""
    active = problem.cheapest_active(np.eye(len(problem.resources))[resource])
    return Allocation(problem, np.zeros(len(problem.groups), dtype=np.int64), "cheapest", active=active)


def cheapest_alive(problem: Problem, resource: int) -> Allocation | None:
    """Every layer at rank 1 in its alternative that costs least there in ``resource`` (a layer
    dense at rank 1 stays dense); None where every layer would."""
    try:
        floors = Floors(problem, 1)
    except ValueError:
        return None
    return floors.allocation(cheapest(floors.problem, resource))


def measured_ceilings(model: nn.Module, table: LayerTable, problem: Problem, settings: Mapping[str, Any],
                      keep_alive: bool = False) -> dict[str, Ceiling]:
    """Per measured resource of ``problem``: its :class:`Ceiling`, the cheapest plan rebuilt and
    read against ``model``; with ``keep_alive`` (min_rank="auto"), the cheapest plan with a rank
    in every layer too, where the readings predict it over the budget."""
    out = {}
    prices = table.prices_of(problem.resources, settings)

    def read(alloc: Allocation, name: str) -> float:
        """``alloc`` rebuilt and read against ``model`` in resource ``name``: a fraction of the original."""
        resource = resources.get(name)
        plan = Plan.from_allocation(alloc, table.layers, prices, {r: float("inf") for r in problem.resources})
        rebuilt = rebuild(model, plan, table=table)
        check = resource.compare(model, rebuilt, table.example_input, settings.get(name) or resource.default_settings())
        return check.rebuilt / check.original

    for i, name in enumerate(problem.resources):
        if resources.get(name).cheap:
            continue
        total = float(problem.reference_cost[i])
        alloc = cheapest(problem, i)
        in_layers = layers_dense(problem, i)
        out[name] = Ceiling(name, in_layers / total, float(alloc.cost[i]) / total, read(alloc, name))
        alive = cheapest_alive(problem, i) if keep_alive else None
        if alive is not None and alive.cost[i] > problem.budgets[i]:
            out[name].alive_predicted = float(alive.cost[i]) / total
            out[name].alive_measured = read(alive, name)
    return out


def layers_dense(problem: Problem, resource: int) -> float:
    """What the changeable layers cost left dense (one alternative each: their dense cost is the same)."""
    return sum(float(problem.groups[j].dense_cost[resource]) for j in np.flatnonzero(problem.default_active()))


def with_alive_floors(problem: Problem, ceilings: Mapping[str, Ceiling]) -> None:
    """Set each ceiling's least cost of a plan with a rank in every layer, on ``problem``'s
    (the network's) clock."""
    try:
        lowest = Floors(problem, 1).problem.min_cost()
    except ValueError:  # every layer only dense at rank 1
        lowest = problem.cost([g.full_rank for g in problem.groups])
    for name, ceiling in ceilings.items():
        i = problem.resources.index(name)
        ceiling.alive_floor = float(lowest[i]) / float(problem.reference_cost[i])


def on_the_network_clock(problem: Problem, ceilings: Mapping[str, Ceiling]) -> Problem:
    """``problem`` with each measured resource's layer costs scaled by one factor and its fixed
    cost set so that two plans cost what was measured: the original (every layer dense: the
    whole model's reading) and the cheapest plan (its rebuilt model's reading), or the cheapest
    plan with a rank in every layer where that was measured within the budget. Layers read
    alone run at another speed than inside the network; this moves them onto the network's.
    Only where the readings alone would refuse the budget (their least cost above it): a
    two-point fit moves plans in between too, and there the readings alone measured closer
    (resnet20-fmnist at 0.8-0.9 latency). Unchanged where the two readings leave no positive
    factor (the cheapest plan no cheaper)."""
    groups, base = list(problem.groups), problem.base_cost.copy()
    lowest = problem.min_cost()
    for name, ceiling in ceilings.items():
        i = problem.resources.index(name)
        total = float(problem.reference_cost[i])
        if ceiling.alive_measured is not None and ceiling.alive_measured * total <= problem.budgets[i]:
            anchor, measured = ceiling.alive_predicted * total, ceiling.alive_measured  # a live plan the network runs in budget
        elif lowest[i] > problem.budgets[i]:
            anchor, measured = float(lowest[i]), ceiling.measured_floor
        else:
            continue
        dense = layers_dense(problem, i)
        at_cheapest = anchor - float(problem.base_cost[i])  # the anchoring plan's layers
        scale = (1.0 - measured) * total / (dense - at_cheapest) if dense > at_cheapest else 0.0
        if not np.isfinite(scale) or scale <= 0:
            continue
        base[i] = total - scale * dense
        if base[i] < 0 and at_cheapest > 0:  # the rest of the model cannot cost less than nothing: meet the anchor
            base[i], scale = 0.0, measured * total / at_cheapest
        groups = [_scaled(g, i, scale) for g in groups]
    if groups == list(problem.groups):
        return problem
    return Problem(groups, problem.budgets, problem.resources, base, problem.reference_cost, problem.objective,
                   dict(problem.meta))


def _scaled(g: Group, i: int, scale: float) -> Group:
    """``g`` with its costs in resource ``i`` times ``scale``."""
    def times(v):
        v = np.array(v, dtype=np.float64, copy=True)
        v[..., i] *= scale
        return v

    table = None if g.cost_table is None else times(g.cost_table)
    return Group(g.name, g.values, times(g.rank_cost), times(g.fixed_cost), times(g.dense_cost), g.layer, g.option, table)
