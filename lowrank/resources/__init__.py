"""Resources a budget can limit, as registered objects.

A :class:`Resource` knows its name, how to count it on a whole module independently of our
cost model (the check that a plan really fits), and what a layer costs in it: dense, and
factorised at rank r as ``fixed + r * per_rank`` (linear in r, which is what makes budgets
linear constraints on the masks). ``Budget``, plans, sweep rows, the store's columns, CLI
flags and report axes are all generated from this registry, so a new resource is one file
in this package that calls :func:`register` (every module here is imported, in name order).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from torch import nn

from .._plugins import import_submodules


class Resource:
    name: str = ""
    label: str = ""  # in tables and plots: "MACs"
    unit: str = ""  # what a count is in, where the label does not say it (latency: "us")
    axis: str = ""  # the budget kind in words: "MAC budget"
    integer: bool = True  # counts are whole numbers (the store's column type)
    cheap: bool = True  # priced for every problem; an expensive one only when a budget names it
    order: int = 100  # place in tables, columns and flags (MACs 0, params 1; new ones after)
    checked_by: str = "its own count"  # how the report says the rebuilt model's total was checked

    @property
    def heading(self) -> str:
        """A column heading over counts: "MACs", "latency us"."""
        return f"{self.label} {self.unit}".strip()

    def amount(self, value: float) -> str:
        """A total in words for reports: "30,317,056 MACs per sample"."""
        return f"{value:,.0f} {self.label}"

    def count(self, model: nn.Module, example_input: Any) -> float:
        """The whole model's total, counted without our per-layer cost model."""
        raise NotImplementedError

    def measure_total(self, table) -> float:
        """The original model's total, the reference a fractional budget is taken of
        (``table``: the model's LayerTable, its layers priced in this resource)."""
        return self.count(table.model, table.example_input)

    def dense_cost(self, layer) -> float:
        """What the layer costs as it is (``layer``: a recorded layer, see lowrank.model.record)."""
        raise NotImplementedError

    def rank_cost(self, layer, scheme) -> tuple[float, float]:
        """(per kept rank, fixed) cost of the layer factorised under ``scheme`` (not asked of a
        resource whose :meth:`rank_table` gives a table)."""
        raise NotImplementedError

    def rank_table(self, layer, scheme):
        """The factorised cost at every rank 0..full when it is measured and not linear in the
        rank (latency), else None; where given, it is the truth, and the linear model that
        relaxations use is its least-squares line (:func:`linear_fit`), not :meth:`rank_cost`."""
        return None

    def __repr__(self) -> str:
        return f"<resource {self.name}>"


def linear_fit(table) -> tuple[float, float]:
    """(per rank, fixed): the least-squares line through a measured per-rank table, clipped at 0."""
    table = np.asarray(table, dtype=np.float64)
    slope, intercept = np.polyfit(np.arange(table.size), table, 1) if table.size > 1 else (0.0, table[0])
    return max(float(slope), 0.0), max(float(intercept), 0.0)


_RESOURCES: dict[str, Resource] = {}


def register(resource: Resource) -> Resource:
    if resource.name in _RESOURCES:
        raise ValueError(f"resource {resource.name!r} registered twice")
    _RESOURCES[resource.name] = resource
    return resource


def names() -> tuple[str, ...]:
    """Every registered resource name, by ``order`` (then registration)."""
    return tuple(sorted(_RESOURCES, key=lambda n: _RESOURCES[n].order))


def get(name: str) -> Resource:
    if name not in _RESOURCES:
        raise ValueError(f"unknown resource {name!r}; budgets can limit: {', '.join(_RESOURCES)}")
    return _RESOURCES[name]


def priced(budgeted: Iterable[str] = ()) -> tuple[str, ...]:
    """Resources a problem prices: every cheap one, plus expensive ones a budget names."""
    budgeted = set(budgeted)
    return tuple(n for n in names() if _RESOURCES[n].cheap or n in budgeted)


import_submodules(__name__, __path__)  # each module registers its resource

__all__ = ["Resource", "get", "linear_fit", "names", "priced", "register"]
