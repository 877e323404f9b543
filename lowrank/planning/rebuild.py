"""Rebuild a model with chosen layers factorised at chosen ranks; the original is untouched."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .. import kinds
from ..factorise.pruning import fold_selections
from ..factorise.refit import refit
from ..factorise.surgery import replace_layers
from ..layers.channels import PRUNE
from ..util.parametrized import folded
from .plan import Plan
from .table import LayerTable


def rebuild(
    model: nn.Module,
    ranks: Mapping[str, int] | Plan,
    schemes: str | Mapping[str, str] = kinds.DEFAULT_SCHEME,
    *,
    table: LayerTable | None = None,
    example_input: Any = None,
    refit_on: list | None = None,
    progress: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose layers in ``ranks`` are factorised at those ranks, in the
    basis the ``table`` uses (or an ``example_input`` to build one from).

    ``ranks``: a rank per layer name, or a :class:`Plan` (its rows say each layer's scheme and
    whether it stays dense). Given ranks, a layer whose factorised form at that rank is not
    cheaper than dense in every counted resource (MACs, parameters) stays dense.

    ``refit_on``: calibration ``(inputs, targets)`` batches on which every layer the table
    holds (factorised, pruned or dense) is refit, in the order the model runs them, to give
    the original's outputs on the inputs it now sees (:mod:`lowrank.factorise.refit`); no
    shape, and so no count, changes. None: the factors are the truncated bases themselves.
    ``progress``: a bar over the layers refit.
    """
    model = folded(model)  # a parametrized layer is rebuilt from its effective weight (lowrank.util.parametrized)
    if table is None:
        if example_input is None:
            raise ValueError("rebuild needs table= or example_input= to count each layer's costs")
        table = LayerTable(model, example_input)
    if isinstance(ranks, Plan):
        chosen = {r.name: (r.scheme, r.rank) for r in ranks.rows if not r.dense}
    else:
        chosen = {}
        for name, rank in ranks.items():
            scheme = _checked(table, name, rank, schemes if isinstance(schemes, str) else schemes.get(name, kinds.DEFAULT_SCHEME))
            if not table.group(name, scheme).is_dense(int(rank)):  # else factorising does not pay: keep the exact dense layer
                chosen[name] = (scheme, int(rank))
    rebuilt = replace_layers(model, {
        name: table.layers[name].schemes[scheme].factorized(model.get_submodule(name), rank, table.bases.factors(name, scheme)[1:])
        for name, (scheme, rank) in chosen.items()
    })
    if refit_on:
        refit(model, rebuilt, [n for n, layer in table.layers.items() if layer.compressible], refit_on, progress)
    return fold_selections(rebuilt, {name: table.layers[name].pruning for name, (scheme, _) in chosen.items() if scheme == PRUNE})


def _checked(table: LayerTable, name: str, rank: int, scheme: str) -> str:
    """The scheme the layer uses, after checking that the layer and the rank exist."""
    if name not in table.layers:
        raise ValueError(f"no layer named {name!r} in the model")
    layer = table.layers[name]
    if not layer.compressible:
        raise ValueError(f"layer {name!r} cannot be factorised: {layer.reason}")
    scheme = layer.scheme_for(scheme)
    full = layer.full_ranks[scheme]
    if not 0 <= int(rank) <= full:
        raise ValueError(f"rank {rank} for layer {name!r} is outside 0..{full}")
    return scheme
