"""What pruning a conv's input channels also removes upstream, counted exactly for a plan.

The solvers price a pruned conv by its own kept channels: linear in the count, and an upper
bound (the producing layer and the BatchNorms between lose the same channels, which is a
product of two choices, the producer's rank and the consumer's count). A plan is a fixed
choice, so here those savings are counted exactly, per resource that is counted (MACs and
parameters; time is measured on the rebuilt model), and the plan reports what the pruned
model really costs. compress then spends what the upper bound left unused
(:class:`lowrank.compress._Attempts`).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

import torch

from ..layers.channels import PRUNE
from ..solvers import MACS, PARAMS


def _pruning(rows):
    """The plan's pruned convs that keep channels (at rank 0 a conv reads nothing, and its
    producer is left whole)."""
    return [row for row in rows if row.scheme == PRUNE and not row.dense and row.rank > 0]


def narrowed_outputs(rows, layers: Mapping) -> dict[str, int]:
    """Producer name -> the output channels it keeps, for each pruned conv of the plan."""
    return {layers[row.name].pruning.producer: row.rank for row in _pruning(rows)}


def pruned_costs(rows, layers: Mapping, dense_costs: Mapping[str, Mapping[str, float]]) -> tuple[dict, dict]:
    """(producer name -> {resource: its cost with the kept output channels only}, {resource:
    what the BatchNorms between lose}) for the counted resources among the rows' ``after``.
    ``dense_costs``: resource -> layer -> the dense layer's cost (for producers the plan leaves
    out, which stay dense)."""
    by_name = {r.name: r for r in rows}
    costs, norms = {}, {}
    for row in _pruning(rows):
        chain = layers[row.name].pruning
        producer, kept = layers[chain.producer], row.rank
        c_out = producer.weight_shape[0]
        for res in row.after:
            if res in (MACS, PARAMS):
                dense = dense_costs[res][chain.producer]
                costs.setdefault(chain.producer, {})[res] = _at_width(producer, by_name.get(chain.producer), res, kept, dense)
        lost = sum(layers[n].params for n in chain.norms if n in layers) * (c_out - kept) // c_out  # weight and bias per channel
        if lost:
            norms[PARAMS] = norms.get(PARAMS, 0) + lost
    return costs, norms


def _at_width(layer, row, res: str, kept: int, dense: float) -> int:
    """The producer's cost with ``kept`` output channels, as the plan has it (dense, or
    factorised or pruned at its rank): dense costs scale with the output channels; a
    factorised layer's are its scheme's formulas on the narrower weight."""
    c_out = layer.weight_shape[0]
    if row is None or row.dense:
        return int(round(dense * kept / c_out))
    bias = getattr(layer.module, "bias", None) is not None
    if row.rank == 0:
        return kept if (res == PARAMS and bias) else 0
    scheme = layer.schemes[row.scheme]
    shape = (kept, *layer.weight_shape[1:])
    if res == PARAMS:
        return row.rank * scheme.params_per_rank(shape) + (kept if bias else 0)
    narrow = SimpleNamespace(weight=torch.empty(shape, device="meta"))
    calls = [(i, (*o[:-3], kept, *o[-2:]), n * kept // c_out) for i, o, n in layer.calls]
    return row.rank * scheme.macs_per_rank(narrow, calls)
