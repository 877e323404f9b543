"""A plan: the allocation bound back to layer names, with costs before and after."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from solvers import Allocation

from .layers import LayerTable


@dataclass
class PlanRow:
    name: str
    kind: str
    shape: tuple[int, ...]
    scheme: str
    full_rank: int
    rank: int  # full_rank when the layer stays dense
    dense: bool
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int


@dataclass
class Plan:
    rows: list[PlanRow]
    totals_before: dict[str, int]
    totals_after: dict[str, int]
    limits: dict[str, float]
    method: str
    info: dict = field(default_factory=dict)

    @classmethod
    def from_allocation(cls, table: LayerTable, alloc: Allocation, limits: dict[str, float]) -> "Plan":
        rows = []
        for layer_name, (group, rank) in alloc.by_layer().items():
            layer = table.layers[layer_name]
            macs, params = (int(round(x)) for x in group.cost(rank))
            rows.append(PlanRow(
                layer.name, layer.kind, layer.weight_shape, group.option, group.full_rank, int(rank),
                group.is_dense(rank), layer.macs, macs, layer.params, params,
            ))
        after = {res: int(round(c)) for res, c in zip(alloc.problem.resources, alloc.cost)}
        info = {k: v for k, v in alloc.info.items() if isinstance(v, (int, float, str, bool))}
        return cls(rows, dict(table.totals), after, dict(limits), alloc.method, info)

    @property
    def ranks(self) -> dict[str, int]:
        return {r.name: r.rank for r in self.rows}

    @property
    def schemes(self) -> dict[str, str]:
        return {r.name: r.scheme for r in self.rows}

    def fraction(self, resource: str) -> float:
        return self.totals_after[resource] / self.totals_before[resource]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "totals_before": self.totals_before,
            "totals_after": self.totals_after,
            "fractions": {r: self.fraction(r) for r in self.totals_before},
            "limits": {k: (None if v == float("inf") else v) for k, v in self.limits.items()},
            "info": self.info,
            "layers": [asdict(r) for r in self.rows],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 2), **kw)

    def table(self) -> str:
        head = f"{'layer':28s} {'kind':7s} {'scheme':8s} {'rank':>11s} {'MACs before':>13s} {'MACs after':>13s} {'params before':>13s} {'params after':>13s}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            rank = "dense" if r.dense else f"{r.rank}/{r.full_rank}"
            lines.append(f"{r.name:28s} {r.kind:7s} {r.scheme:8s} {rank:>11s} {r.macs_before:13,d} {r.macs_after:13,d} {r.params_before:13,d} {r.params_after:13,d}")
        lines.append("-" * len(head))
        b, a = self.totals_before, self.totals_after
        lines.append(f"{'whole model':28s} {'':7s} {'':8s} {'':>11s} {b['macs']:13,d} {a['macs']:13,d} {b['params']:13,d} {a['params']:13,d}")
        fr = ", ".join(
            f"{res} {self.fraction(res):.1%}" + ("" if self.limits[res] == float("inf") else f" (limit {self.limits[res] / b[res]:.1%})")
            for res in b
        )
        lines.append(f"method {self.method}: keeps {fr}")
        return "\n".join(lines)

    __str__ = table
