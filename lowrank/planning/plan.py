"""A plan: the allocation bound back to layer names, with costs before and after in every
priced resource."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from typing import Mapping

from .. import resources
from ..layers.inventory import Layer
from ..resources import Prices
from ..solvers import Allocation
from .pruned import narrowed_outputs, pruned_costs

@dataclass
class PlanRow:
    name: str
    kind: str
    shape: tuple[int, ...]
    scheme: str
    full_rank: int
    rank: int  # full_rank when the layer stays dense
    dense: bool
    before: dict[str, int]  # resource -> cost of the original layer
    after: dict[str, int]  # resource -> cost at the chosen rank
    outputs: str = ""  # "kept/all" output channels where the next layer's pruning narrows them

    def __getattr__(self, attr: str):
        """``row.macs_before`` / ``row.params_after``: the older spelling of before/after."""
        res, _, when = attr.rpartition("_")
        if when in ("before", "after") and res in self.__dict__.get(when, {}):
            return self.__dict__[when][res]
        raise AttributeError(attr)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("before", "after")}
        for res in self.before:
            out[f"{res}_before"], out[f"{res}_after"] = self.before[res], self.after[res]
        return out


@dataclass
class Plan:
    rows: list[PlanRow]
    totals_before: dict[str, int]
    totals_after: dict[str, int]
    limits: dict[str, float]
    method: str
    info: dict = field(default_factory=dict)

    @classmethod
    def from_allocation(cls, alloc: Allocation, layers: Mapping[str, Layer], prices: Mapping[str, Prices],
                        limits: dict[str, float]) -> "Plan":
        """The allocation bound back to ``layers``, with the original's costs from ``prices``
        (per resource of the allocation's problem) and the absolute ``limits``."""
        res = alloc.problem.resources
        rows = []
        for layer_name, (group, rank) in alloc.by_layer().items():
            layer = layers[layer_name]
            after = dict(zip(res, (int(round(x)) for x in group.cost(rank))))
            rows.append(PlanRow(
                layer.name, layer.kind, layer.weight_shape, group.option, group.full_rank, int(rank),
                group.is_dense(rank), {r: int(round(prices[r].layers[layer.name].dense)) for r in res}, after,
            ))
        after = {r: int(round(c)) for r, c in zip(res, alloc.cost)}
        before = {r: int(round(prices[r].total)) for r in res}
        info = {k: v for k, v in alloc.info.items() if isinstance(v, (int, float, str, bool))}
        plan = cls(rows, before, after, {r: limits[r] for r in res}, alloc.method, info)
        plan.count_pruned_producers(layers, prices)
        return plan

    def count_pruned_producers(self, layers: Mapping[str, Layer], prices: Mapping[str, Prices]) -> None:
        """Count what pruning removes upstream (see :mod:`.pruned`): each producer's row at the
        output channels its consumer keeps (a row is added for one the plan leaves dense), and
        the totals. The solver's prices were an upper bound; these are the counts."""
        narrowed = narrowed_outputs(self.rows, layers)
        if not narrowed:
            return
        dense = {r: {n: prices[r].layers[n].dense for n in narrowed if n in prices[r].layers} for r in self.totals_before}
        for name in narrowed:  # a producer outside the problem (scheme="prune"): dense, with fewer outputs
            if name not in {row.name for row in self.rows}:
                layer = layers[name]
                cost = {r: int(round(dense[r].get(name, getattr(layer, r, 0)))) for r in self.totals_before}
                for r in self.totals_before:
                    dense[r].setdefault(name, cost[r])
                self.rows.append(PlanRow(name, layer.kind, layer.weight_shape, "dense", layer.weight_shape[0],
                                         layer.weight_shape[0], True, cost, dict(cost)))
        order = {name: i for i, name in enumerate(layers)}
        self.rows.sort(key=lambda row: order.get(row.name, len(order)))
        costs, norms = pruned_costs(self.rows, layers, dense)
        for row in self.rows:
            for r, cost in costs.get(row.name, {}).items():
                self.totals_after[r] += cost - row.after[r]
                row.after[r] = cost
            if row.name in narrowed:
                row.outputs = f"{narrowed[row.name]}/{row.shape[0]}"
        for r, lost in norms.items():
            if r in self.totals_after:
                self.totals_after[r] -= lost
        self.info["pruned_outputs"] = ", ".join(f"{n} {k}/{layers[n].weight_shape[0]}" for n, k in narrowed.items())

    @property
    def ranks(self) -> dict[str, int]:
        return {r.name: r.rank for r in self.rows}

    @property
    def schemes(self) -> dict[str, str]:
        return {r.name: r.scheme for r in self.rows}

    def fraction(self, resource: str) -> float:
        return self.totals_after[resource] / self.totals_before[resource]

    def layers_fraction(self, resource: str) -> float:
        """What the plan keeps of its own layers' cost (the layers it could compress), leaving out
        what stays outside them (embeddings, a tied head, norms): the share papers on language
        models quote. :meth:`fraction` is of the whole model."""
        before = self.layers_total(resource)
        return self.layers_total(resource, after=True) / before if before else 1.0

    def layers_total(self, resource: str, after: bool = False) -> int:
        """The cost of the plan's own layers, before or after."""
        return sum((r.after if after else r.before)[resource] for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "totals_before": self.totals_before,
            "totals_after": self.totals_after,
            "fractions": {r: self.fraction(r) for r in self.totals_before},
            "fractions_of_layers": {r: self.layers_fraction(r) for r in self.totals_before},
            "limits": {k: (None if v == float("inf") else v) for k, v in self.limits.items()},
            "info": self.info,
            "layers": [r.to_dict() for r in self.rows],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 2), **kw)

    def table(self) -> str:
        res = list(self.totals_before)
        labels = [resources.get(r).heading for r in res]
        head = f"{'layer':28s} {'kind':7s} {'scheme':8s} {'rank':>11s}" + "".join(
            f" {label + ' before':>14s} {label + ' after':>14s}" for label in labels)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            rank = "dense" if r.dense else f"{r.rank}/{r.full_rank}"
            lines.append(f"{r.name:28s} {r.kind:7s} {r.scheme:8s} {rank:>11s}"
                         + "".join(f" {r.before[x]:14,d} {r.after[x]:14,d}" for x in res))
        lines.append("-" * len(head))
        b, a = self.totals_before, self.totals_after
        lines.append(f"{'whole model':28s} {'':7s} {'':8s} {'':>11s}" + "".join(f" {b[x]:14,d} {a[x]:14,d}" for x in res))
        fr = ", ".join(
            f"{x} {self.fraction(x):.1%}" + ("" if self.limits[x] == float("inf") else f" (limit {self.limits[x] / b[x]:.1%})")
            for x in res
        )
        lines.append(f"method {self.method}: keeps {fr}")
        outside = [x for x in res if self.layers_total(x) < b[x]]
        if outside:
            lines.append(f"removed, of the whole model (of the {len(self.rows)} layers above): "
                         + ", ".join(f"{x} {1 - self.fraction(x):.1%} ({1 - self.layers_fraction(x):.1%})" for x in outside))
        if self.info.get("pruned_outputs"):
            lines.append(f"output channels the next layer's pruning keeps (counted above): {self.info['pruned_outputs']}")
        if self.info.get("not_priced"):
            lines.append(f"covers only the paths the example input took: {self.info['not_priced']} did not run on it (dense, "
                         "its MACs and time in no total)")
        return "\n".join(lines)

    __str__ = table
