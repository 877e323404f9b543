"""The layer table in words: every layer with weights, its costs, and why a dense one stays
dense; and why a budget cannot be met."""
from __future__ import annotations

from typing import Iterable, Mapping

from .. import resources
from ..layers.inventory import Layer
from ..resources import Prices


def summary(layers: Iterable[Layer], prices: Mapping[str, Prices]) -> str:
    """One line per layer (its kind, weight shape, cost per resource of ``prices``, and its
    schemes or the reason it stays dense), what lies outside every layer (e.g. attention's
    matmuls), work nobody can count, and the totals."""
    layers, shown = list(layers), list(prices)
    name_w = max([32, *(len(l.name) + 1 for l in layers)])
    kind_w = max([10, *(len(l.kind) + 1 for l in layers)])
    shape = lambda l: str(l.weight_shape) if l.weight_shape else "-"  # noqa: E731
    shape_w = max([18, *(len(shape(l)) + 1 for l in layers)])
    cols = "".join(f" {resources.get(r).heading:>12s}" for r in shown)
    lines = [f"{'layer':{name_w}s} {'kind':{kind_w}s} {'weight':{shape_w}s}{cols}  note"]
    pad = f"{'':{kind_w}s} {'':{shape_w}s}"
    for l in layers:
        note = "compressible: " + ", ".join(f"{s} rank {r}" for s, r in l.full_ranks.items()) if l.compressible else l.reason
        if l.folded:
            note += f" (parametrization folded: {l.folded}; its effective weight is used)"
        costs = "".join(f" {prices[r].layers[l.name].dense:12,.0f}" for r in shown)
        lines.append(f"{l.name:{name_w}s} {l.kind:{kind_w}s} {shape(l):{shape_w}s}{costs}  {note}")
    outside = [max(0, prices[r].total - sum(prices[r].layers[l.name].dense for l in layers)) for r in shown]
    if any(outside):
        lines.append(f"{'(outside layers, e.g. matmuls)':{name_w}s} {pad}" + "".join(f" {v:12,.0f}" for v in outside))
    lines.append(f"{'total':{name_w}s} {pad}" + "".join(f" {prices[r].total:12,.0f}" for r in shown))
    for r in shown:
        for what in prices[r].unknown:
            lines.append(f"not counted in {resources.get(r).label}: {what} (no formula for it)")
    return "\n".join(lines)


def why_infeasible(problem, layers: Iterable[Layer], prices: Mapping[str, Prices]) -> str:
    """Why ``problem``'s budgets cannot be met, in the user's terms: per resource over its budget,
    the least any plan keeps, how much of it is the compressible layers at rank 0 and how much
    no plan changes (the layers that stay dense, each with its reason, and work outside every
    layer), and the budget to ask for instead. Empty when every budget can be met."""
    lowest = problem.min_cost()
    layers = list(layers)
    parts = []
    for i, name in enumerate(problem.resources):
        limit, least, total = problem.budgets[i], lowest[i], problem.reference_cost[i]
        if least <= limit:
            continue
        res, price = resources.get(name), prices[name]
        share = lambda v: f"{v / total:.1%}"  # noqa: E731
        fixed = problem.base_cost[i]
        dense = sorted(((price.layers[l.name].dense, l) for l in layers if not l.compressible and l.name in price.layers),
                       key=lambda c: -c[0])
        dense = [(c, l) for c, l in dense if c > 0]
        outside = fixed - sum(c for c, _ in dense)
        words = [f"{l.name!r} {share(c)} ({l.reason})" for c, l in dense[:3]]
        if len(dense) > 3:
            words.append(f"{len(dense) - 3} more layers {share(sum(c for c, _ in dense[3:]))}")
        if outside > 0:
            words.append(f"outside the layers {share(outside)}")
        parts.append(
            f"{res.label} at most {share(limit)} of the original ({res.amount(limit)}) is below the smallest achievable "
            f"{share(least)} ({res.amount(least)}): the compressible layers at rank 0 keep {share(least - fixed)}, and what no "
            f"plan changes keeps {share(fixed)}" + (": " + "; ".join(words) if words else "")
            + f". Ask for at least {share(least)}")
    return "infeasible budget: " + ". ".join(parts) + "." if parts else ""
