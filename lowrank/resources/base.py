"""What every resource is (:class:`Resource`), what pricing and checking hand back
(:class:`Prices`, :class:`Check`, :class:`Limit`), and the registry of resources. See the
package doc (:mod:`lowrank.resources`)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from torch import nn



@dataclass(frozen=True)
class SchemePrice:
    """What a layer factorised under one scheme costs: ``fixed + r * per_rank`` at rank r, or,
    where the resource is measured, ``table[r]`` (the truth; the line is its least-squares
    fit, what relaxations use)."""

    per_rank: float
    fixed: float  # paid at any rank (the bias)
    table: np.ndarray | None = None  # cost at every rank 0..full rank, where measured


@dataclass(frozen=True)
class LayerPrice:
    dense: float  # the layer as it is
    schemes: Mapping[str, SchemePrice] = field(default_factory=dict)  # empty for a layer that stays dense


@dataclass(frozen=True)
class Prices:
    """One resource's costs for one model: its total and every priced layer's costs."""

    resource: str
    total: float  # the whole original model, the reference a fractional budget is taken of
    layers: Mapping[str, LayerPrice]
    unknown: tuple[str, ...] = ()  # work the total leaves out because nobody can count it ("module: op")

    def base(self, factorisable: Iterable[str]) -> float:
        """The cost of everything but the ``factorisable`` layers: what no plan changes."""
        return max(0.0, self.total - sum(self.layers[n].dense for n in factorisable))


@dataclass(frozen=True)
class Limit:
    """A budget on one resource: a fraction of the original's total, or an absolute amount."""

    value: float
    absolute: bool = False

    def at(self, total: float) -> float:
        """The limit in the resource's own units, given the original's ``total``."""
        return float(self.value) if self.absolute else float(self.value) * float(total)


@dataclass
class Check:
    """A rebuilt model held against its limit in one resource: counted independently of our
    cost model, or measured alongside the original (``noise``: how far a measurement may be
    off; an exact count has none)."""

    resource: str
    original: float
    rebuilt: float
    limit: float
    planned: float | None = None  # what the plan predicted
    noise: float = 0.0

    @property
    def held(self) -> bool:
        return self.rebuilt <= self.limit + self.noise

    @property
    def fraction(self) -> float:
        return self.rebuilt / self.original if self.original else float("nan")

    def __str__(self) -> str:
        res = get(self.resource)
        return (f"{res.heading}: {self.rebuilt:,.0f} of the original's {self.original:,.0f} ({self.fraction:.1%}); "
                f"limit {self.limit:,.0f}: " + ("held" if self.held else "NOT held"))


class Resource:
    name: str = ""
    label: str = ""  # in tables and plots: "MACs"
    unit: str = ""  # what a count is in, where the label does not say it (latency: "us")
    axis: str = ""  # the budget kind in words: "MAC budget"
    integer: bool = True  # counts are whole numbers (the store's column type)
    cheap: bool = True  # priced for every problem; an expensive one only when a budget names it
    order: int = 100  # place in tables, columns and flags (MACs 0, params 1; new ones after)
    checked_by: str = "its own count"  # how the report says the rebuilt model's total was checked
    attempts: int = 1  # plans made at most while a rebuilt model misses this resource's limit
    # Where the resource is measured, for one that is: compress(measure_on=...) takes an
    # instance, and the CLI has a flag --NAME-FIELD for each field in ``settings_flags``
    # ({field: help}).
    settings_type: type | None = None
    settings_flags: Mapping[str, str] = {}
    sweep_defaults: tuple[float, ...] = ()  # the budgets `lowrank sweep` runs without being told (fractions)
    demo_default: float | None = None  # `lowrank demo`'s budget when not told

    @property
    def heading(self) -> str:
        """A column heading over counts: "MACs", "latency us"."""
        return f"{self.label} {self.unit}".strip()

    def amount(self, value: float) -> str:
        """A total in words for reports: "30,317,056 MACs per sample"."""
        return f"{value:,.0f} {self.label}"

    # --- counting and pricing -------------------------------------------------------------
    def count(self, model: nn.Module, example_input: Any) -> float:
        """The whole model's total, counted without our per-layer cost model (a measured
        resource also takes its ``settings``)."""
        raise NotImplementedError

    def dense_cost(self, layer) -> float:
        """What the layer costs as it is (``layer``: a :class:`lowrank.layers.inventory.Layer`)."""
        raise NotImplementedError

    def rank_cost(self, layer, scheme) -> tuple[float, float]:
        """(per kept rank, fixed) cost of the layer factorised under ``scheme``."""
        raise NotImplementedError

    def price(self, layers, model: nn.Module, example_input: Any, settings: Any = None) -> Prices:
        """Every layer's costs (dense, and per scheme that can factorise it) and the total."""
        return Prices(self.name, self.count(model, example_input), self.layer_prices(layers))

    def layer_prices(self, layers) -> dict[str, LayerPrice]:
        """Each layer on its own: dense, and per scheme that can factorise it."""
        out = {}
        for layer in layers:
            schemes = {s: SchemePrice(*self.rank_cost(layer, obj)) for s, obj in layer.schemes.items()}
            out[layer.name] = LayerPrice(self.dense_cost(layer), schemes)
        return out

    # --- checking a rebuilt model ---------------------------------------------------------
    def delivered(self, model: nn.Module, settings: Any = None) -> nn.Module:
        """The rebuilt model (lowrank's own copy) as ``compress`` hands it over, in the form
        this resource was measured in, so the budget holds for a user who does nothing
        special: as it is, unless a measured resource says otherwise."""
        return model

    def check(self, original: nn.Module, rebuilt: nn.Module, example_input: Any, limit: Limit, reference: float,
              planned: float | None = None, settings: Any = None) -> Check:
        """The rebuilt model counted against ``limit`` (``reference``: the original's total,
        as priced)."""
        return Check(self.name, reference, self.count(rebuilt, example_input), limit.at(reference), planned)

    def replan(self, check: Check, fraction: float) -> float | None:
        """After ``check`` failed while the plan aimed at ``fraction`` of the limit: the share
        to aim at next, or None when another plan cannot help (an exact count missed: a bug)."""
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


@contextmanager
def registered(resource: Resource) -> Iterator[Resource]:
    """``resource`` registered inside the block only (for tests and experiments)."""
    register(resource)
    try:
        yield resource
    finally:
        del _RESOURCES[resource.name]


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


def count(model: nn.Module, example_input: Any, which: Iterable[str] | None = None) -> dict[str, float]:
    """Each resource (default: those every problem prices) counted on the whole module,
    independently of our cost model: MACs by FlopCounterMode / 2, parameters by numel."""
    return {r: get(r).count(model, example_input) for r in (priced() if which is None else which)}


def default_sweep_budgets() -> list[dict[str, float]]:
    """The budgets a sweep runs when none is given: each resource's own defaults, one budget each."""
    return [{name: f} for name in names() for f in get(name).sweep_defaults]


def settings_by_resource(measure_on: Any) -> dict[str, Any]:
    """{resource name: settings} from ``measure_on``: one settings object (e.g. a
    LatencyTarget), several, or None; each goes to the resource whose ``settings_type`` it is."""
    given = [] if measure_on is None else list(measure_on) if isinstance(measure_on, (list, tuple)) else [measure_on]
    out = {}
    for settings in given:
        owners = [n for n, r in _RESOURCES.items() if r.settings_type is not None and isinstance(settings, r.settings_type)]
        if not owners:
            kinds = ", ".join(f"{r.settings_type.__name__} ({n})" for n, r in _RESOURCES.items() if r.settings_type)
            raise ValueError(f"measure_on: a {type(settings).__name__} says where no resource is measured; give one of: {kinds}")
        out[owners[0]] = settings
    return out
