"""Pricing: what each recorded layer costs in every resource, dense and per kept rank under
each scheme that can factorise it, or why it stays dense."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .. import kinds, resources
from .record import LayerRecord


@dataclass(frozen=True)
class SchemeCost:
    """What one kept singular value costs in a layer under one scheme, per resource."""

    scheme: str
    matrix_shape: tuple[int, int]
    full_rank: int
    per_rank: dict[str, float]
    fixed: dict[str, float]  # paid at any rank (the bias)
    tables: dict[str, Any] = field(default_factory=dict)  # resource -> measured cost per rank 0..full (latency)

    @property
    def macs_per_rank(self) -> int:
        return self.per_rank["macs"]

    @property
    def params_per_rank(self) -> int:
        return self.per_rank["params"]

    @property
    def bias_params(self) -> int:
        return self.fixed["params"]


@dataclass
class LayerInfo:
    """A layer with weights: shapes, dense cost per resource, and its costs per scheme."""

    name: str
    kind: str  # "linear", "conv2d", or the module's class name
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    calls: int
    compressible: bool
    reason: str = ""  # why it stays dense
    dense: dict[str, float] = field(default_factory=dict)  # resource -> cost of the dense layer
    costs: dict[str, SchemeCost] = field(default_factory=dict)
    record: LayerRecord | None = field(default=None, repr=False)
    scheme_objects: dict[str, kinds.LayerScheme] = field(default_factory=dict, repr=False)

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(self.costs)

    @property
    def macs(self) -> int:
        return self.dense["macs"]

    @property
    def params(self) -> int:
        return self.dense["params"]

    def factorised_cost(self, scheme: str, rank: int) -> dict[str, float]:
        """Cost per resource of the two-layer form at ``rank``, without the dense fallback."""
        c = self.costs[scheme]
        return {r: float(c.tables[r][rank]) if r in c.tables else c.fixed[r] + rank * c.per_rank[r] for r in c.per_rank}

    def price(self, names: Sequence[str]) -> None:
        """Add the costs of resources ``names`` (those not priced yet)."""
        for name in names:
            res = resources.get(name)
            if name in self.dense or not (res.cheap or self.compressible):
                continue  # a measured resource is only timed where a plan can change it
            self.dense[name] = res.dense_cost(self.record)
            for scheme, cost in self.costs.items():
                table = res.rank_table(self.record, self.scheme_objects[scheme])
                if table is None:
                    cost.per_rank[name], cost.fixed[name] = res.rank_cost(self.record, self.scheme_objects[scheme])
                else:  # measured: the table is the truth, its straight line the model relaxations use
                    cost.tables[name] = table
                    cost.per_rank[name], cost.fixed[name] = resources.linear_fit(table)


def dense_reason(module: nn.Module, calls: int) -> str:
    """Why a module with weights is not factorised, in words a user can act on."""
    if calls == 0:
        return "never called as a module in the forward pass (its weight is used functionally, e.g. inside nn.MultiheadAttention)"
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"{kind} conv (groups={module.groups}): no low-rank form here"
    if isinstance(module, nn.Embedding):
        return "embedding table: lookups are not factorised"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "normalisation layer: per-channel scale, nothing to factorise"
    return f"{type(module).__name__} layers are not factorised (lowrank factorises {kinds.supported()})"


def layer_info(record: LayerRecord, include: Callable[[str], bool] | None, priced: Sequence[str]) -> LayerInfo:
    """Price one recorded layer in the resources ``priced``."""
    module = record.module
    schemes = kinds.schemes_for(module) if record.calls else {}
    tied = bool(schemes) and bool(record.tied_to)
    schemes = {} if tied else schemes
    kind = next(iter(schemes.values())).kind if schemes else type(module).__name__
    excluded = bool(schemes) and include is not None and not include(record.name)
    calls = record.calls
    info = LayerInfo(record.name, kind, record.weight_shape, calls[0][0] if calls else None, calls[0][1] if calls else None,
                     len(calls), bool(schemes) and not excluded, record=record)
    if excluded:
        info.reason = "excluded by the layer selection (include=)"
    elif tied:
        info.reason = (f"weight tied to {', '.join(repr(t) for t in record.tied_to)}: factorising one user of a shared "
                       "weight would free none of its parameters")
    elif not schemes:
        info.reason = dense_reason(module, len(calls))
    else:
        info.scheme_objects = schemes
        for name, scheme in schemes.items():
            shape = scheme.matrix_shape(record.weight_shape)
            info.costs[name] = SchemeCost(name, shape, min(shape), {}, {})
    info.price(priced)
    return info
