"""Rebuild a model with chosen layers factorised at chosen ranks; the original is untouched."""
from __future__ import annotations

import copy
from typing import Any, Mapping

from torch import nn

from .modes import copy_modes
from .table import LayerTable


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def rebuild(
    model: nn.Module,
    ranks: Mapping[str, int],
    schemes: str | Mapping[str, str] = "channel",
    *,
    table: LayerTable | None = None,
    example_input: Any = None,
) -> nn.Module:
    """A copy of ``model`` whose layers in ``ranks`` are factorised at those ranks.

    A layer whose factorised form at that rank is not cheaper than dense (in MACs or in
    parameters) stays dense. Costs need the layers' input sizes: pass the ``table`` (or an
    ``example_input`` to build one from).
    """
    if table is None:
        if example_input is None:
            raise ValueError("rebuild needs table= or example_input= to count each layer's costs")
        table = LayerTable(model, example_input)
    new = copy.deepcopy(model)
    for name, rank in ranks.items():
        if name not in table.layers:
            raise ValueError(f"no layer named {name!r} in the model")
        layer = table.layers[name]
        if not layer.compressible:
            raise ValueError(f"layer {name!r} cannot be factorised: {layer.reason}")
        scheme = table.scheme_for(name, schemes if isinstance(schemes, str) else schemes.get(name, "channel"))
        full = layer.costs[scheme].full_rank
        if not 0 <= int(rank) <= full:
            raise ValueError(f"rank {rank} for layer {name!r} is outside 0..{full}")
        if table.group(name, scheme).is_dense(int(rank)):
            continue  # factorising does not pay at this rank: keep the exact dense layer
        factorized = layer.scheme_objects[scheme].factorized(model.get_submodule(name), int(rank), table.svd(name, scheme))
        _set_module(new, name, factorized)
    copy_modes(model, new)  # factorised layers take their place's train/eval flag
    return new
