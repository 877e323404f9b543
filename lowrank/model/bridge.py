"""The bridge from a priced layer table to the solvers' :class:`~solvers.Problem`: each
compressible layer under each allowed scheme becomes a group of ordered singular values
with its cost per kept value, and the budget becomes one limit per resource."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from solvers import Group, Problem

from .. import kinds, resources
from ..budget import Budget

if TYPE_CHECKING:
    from .table import LayerTable


def layer_group(table: "LayerTable", name: str, scheme: str, priced) -> Group:
    """The layer as a solver group: singular values, cost per kept value, dense fallback."""
    layer = table.layers[name]
    scheme = table.scheme_for(name, scheme)
    c = layer.costs[scheme]
    _, s, _ = table.svd(name, scheme)
    return Group(
        name=f"{name}/{scheme}" if len(layer.costs) > 1 else name,
        values=s.detach().cpu().double().numpy(),
        rank_cost=[c.per_rank[r] for r in priced],
        fixed_cost=[c.fixed[r] for r in priced],
        dense_cost=[layer.dense[r] for r in priced],
        layer=name,
        option=scheme,
        cost_table=_cost_table(c, priced),
    )


def _cost_table(cost, priced):
    """Measured per-rank costs (one column per priced resource, NaN where linear), or None."""
    if not cost.tables:
        return None
    nan = np.full(cost.full_rank + 1, np.nan)
    return np.stack([np.asarray(cost.tables.get(r, nan), dtype=np.float64) for r in priced], axis=1)


def build_problem(table: "LayerTable", budget: Budget, schemes: str | Mapping[str, str] = "channel", objective=None) -> Problem:
    """The rank-allocation problem for ``budget``; ``schemes`` may be ``"auto"`` (every
    scheme per layer, the solver chooses)."""
    if not table.compressible:
        raise ValueError(f"the model has no compressible layer (lowrank factorises {kinds.supported()}); "
                         "table.summary() says why each layer stays dense")
    priced = resources.priced(budget)
    table.price(priced)
    groups = []
    for layer in table.compressible:
        if schemes == "auto":
            options = layer.schemes
        else:
            options = (table.scheme_for(layer.name, schemes if isinstance(schemes, str) else schemes[layer.name]),)
        groups += [layer_group(table, layer.name, s, priced) for s in options]
    totals = table.totals_of(priced)
    limits = budget.limits(totals)
    return Problem(
        groups=groups,
        budgets=[limits[r] for r in priced],
        resources=priced,
        base_cost=table.dense_base_cost(priced),
        reference_cost=[totals[r] for r in priced],
        objective=objective,
    )

