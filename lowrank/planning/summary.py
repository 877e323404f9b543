"""The layer table in words: every layer with weights, its costs, and why a dense one stays dense."""
from __future__ import annotations

from typing import Iterable, Mapping

from .. import resources
from ..layers.inventory import Layer
from ..resources import Prices


def summary(layers: Iterable[Layer], prices: Mapping[str, Prices]) -> str:
    """One line per layer (its kind, weight shape, cost per resource of ``prices``, and its
    schemes or the reason it stays dense), what lies outside every layer (e.g. attention's
    matmuls), and the totals."""
    layers, shown = list(layers), list(prices)
    cols = "".join(f" {resources.get(r).heading:>12s}" for r in shown)
    lines = [f"{'layer':32s} {'kind':10s} {'weight':18s}{cols}  note"]
    for l in layers:
        note = "compressible: " + ", ".join(f"{s} rank {r}" for s, r in l.full_ranks.items()) if l.compressible else l.reason
        costs = "".join(f" {prices[r].layers[l.name].dense:12,.0f}" for r in shown)
        lines.append(f"{l.name:32s} {l.kind:10s} {str(l.weight_shape):18s}{costs}  {note}")
    outside = [max(0, prices[r].total - sum(prices[r].layers[l.name].dense for l in layers)) for r in shown]
    if any(outside):
        lines.append(f"{'(outside layers, e.g. matmuls)':32s} {'':10s} {'':18s}" + "".join(f" {v:12,.0f}" for v in outside))
    lines.append(f"{'total':32s} {'':10s} {'':18s}" + "".join(f" {prices[r].total:12,.0f}" for r in shown))
    return "\n".join(lines)
