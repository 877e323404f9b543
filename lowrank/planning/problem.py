"""The bridge from priced layers to the solvers' :class:`~solvers.Problem`: each compressible
layer under each allowed scheme becomes a group of ordered singular values with its cost per
kept value in every priced resource, and the budget becomes one limit per resource."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import kinds
from ..budget import Budget
from ..factorise.basis import Bases
from ..layers.channels import PRUNE
from ..layers.inventory import Layer
from ..resources import Prices
from ..solvers import Group, Problem

def layer_group(layer: Layer, scheme: str, prices: Mapping[str, Prices], bases: Bases) -> Group:
    """The layer under ``scheme`` as a solver group: singular values, the cost per kept value
    in each resource of ``prices`` (in order), the dense fallback."""
    costs = [prices[r].layers[layer.name].schemes[scheme] for r in prices]
    _, s, _ = bases.svd(layer.name, scheme)
    return Group(
        name=f"{layer.name}/{scheme}" if len(layer.schemes) > 1 else layer.name,
        values=s.detach().cpu().double().numpy(),
        rank_cost=[c.per_rank for c in costs],
        fixed_cost=[c.fixed for c in costs],
        dense_cost=[prices[r].layers[layer.name].dense for r in prices],
        layer=layer.name,
        option=scheme,
        cost_table=_cost_table(costs, layer.full_ranks[scheme]),
    )


def _cost_table(costs, full_rank: int):
    """Measured per-rank costs (one column per resource, NaN where linear), or None."""
    if all(c.table is None for c in costs):
        return None
    nan = np.full(full_rank + 1, np.nan)
    return np.stack([np.asarray(nan if c.table is None else c.table, dtype=np.float64) for c in costs], axis=1)


def options_of(layer: Layer, schemes: str | Mapping[str, str]) -> tuple[str, ...]:
    """The schemes a layer may use: all of them for ``"auto"`` (the solver chooses), else the
    one asked for (per layer where ``schemes`` is a mapping); none for ``"prune"`` where the
    layer cannot be pruned (it stays dense: ``prune`` prunes only)."""
    if schemes == "auto":
        return tuple(layer.schemes)
    asked = schemes if isinstance(schemes, str) else schemes[layer.name]
    if asked == PRUNE and PRUNE not in layer.schemes:
        return ()
    return (layer.scheme_for(asked),)


def unprunable_summary(layers: Sequence[Layer]) -> str:
    """Why the convs cannot be pruned, one clause per reason (with the layers it holds for)."""
    reasons: dict[str, list[str]] = {}
    for layer in layers:
        if layer.unprunable:
            reasons.setdefault(layer.unprunable, []).append(layer.name)
    if not reasons:
        return "it has no conv with groups=1 (lowrank prunes the input channels of such convs)"
    return "; ".join(f"{', '.join(repr(n) for n in names[:3])}{' and more' if len(names) > 3 else ''}: {why}"
                     for why, names in reasons.items())


def build_problem(layers: Sequence[Layer], prices: Mapping[str, Prices], bases: Bases, budget: Budget,
                  schemes: str | Mapping[str, str] = kinds.DEFAULT_SCHEME, objective=None) -> Problem:
    """The rank-allocation problem for ``budget`` over the compressible ``layers``, priced in
    every resource of ``prices`` (in that order)."""
    everything = layers
    if not layers:
        raise ValueError(f"the model has no compressible layer (lowrank factorises {kinds.supported()}); "
                         "table.summary() says why each layer stays dense")
    layers = [layer for layer in layers if options_of(layer, schemes)]
    if not layers:
        raise ValueError(f"no layer of the model can be pruned: {unprunable_summary(everything)}; "
                         "scheme='auto' factorises where it cannot prune")
    groups = [layer_group(layer, s, prices, bases) for layer in layers for s in options_of(layer, schemes)]
    totals = {r: p.total for r, p in prices.items()}
    limits = budget.limits(totals)
    names = [layer.name for layer in layers]  # the others are in the base cost
    return Problem(
        groups=groups,
        budgets=[limits[r] for r in prices],
        resources=tuple(prices),
        base_cost=[prices[r].base(names) for r in prices],
        reference_cost=[totals[r] for r in prices],
        objective=objective,
    )
