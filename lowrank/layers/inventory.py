"""Layer selection: which recorded layers can be factorised, under which schemes, and why
every other layer with weights stays dense (in words a user can act on)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .. import kinds
from .record import LayerRecord
from .unseen import priced_by_hand


@dataclass
class Layer:
    """A layer with weights as the example pass saw it, and the schemes that can factorise it
    (none: it stays dense, and ``reason`` says why)."""

    record: LayerRecord = field(repr=False)
    kind: str  # "linear", "conv2d", ...; the module's class name where no scheme takes it
    schemes: dict[str, kinds.LayerScheme] = field(default_factory=dict, repr=False)
    reason: str = ""
    folded: str = ""  # the parametrizations folded into its weight (lowrank.util.parametrized), if any
    pruning: Any = None  # where its pruned input channels are removed from (a lowrank.layers.channels.PruneChain)
    unprunable: str = ""  # why a conv cannot have input channels pruned, where it cannot

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def module(self) -> nn.Module:
        return self.record.module

    @property
    def calls(self) -> list[tuple]:
        """Per call: (input shape, output shape, output numel)."""
        return self.record.calls

    @property
    def compressible(self) -> bool:
        return bool(self.schemes)

    @property
    def not_run(self) -> bool:
        """Its weight took no part in the example pass: a path that input did not take."""
        return not self.record.used

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return self.record.weight_shape

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.calls[0][0] if self.calls else None

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return self.calls[0][1] if self.calls else None

    @property
    def macs(self) -> int:
        return self.record.macs

    @property
    def params(self) -> int:
        return self.record.params

    def matrix_shape(self, scheme: str) -> tuple[int, int]:
        return self.schemes[scheme].matrix_shape(self.weight_shape)

    @property
    def full_ranks(self) -> dict[str, int]:
        """Scheme -> the rank of the layer's matrix under it (its number of singular values)."""
        return {s: scheme.full_rank(self.weight_shape) for s, scheme in self.schemes.items()}

    def scheme_for(self, scheme: str) -> str:
        """The scheme the layer uses when ``scheme`` is asked for (a Linear has only the default)."""
        kinds.check_scheme(scheme)
        return scheme if scheme in self.schemes else next(iter(self.schemes))


NOT_RUN = ("not used on the example input (a branch or path this input did not take): its MACs and time are in no "
           "total (its parameters are), and compress warns of it")


def dense_reason(module: nn.Module, calls: int, used: bool = True) -> str:
    """Why a module with weights is not factorised, in words a user can act on."""
    if calls == 0 and not used:
        return NOT_RUN
    if calls == 0:
        return "never called as a module in the forward pass (its weight is used functionally, e.g. inside nn.MultiheadAttention)"
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"{kind} conv (groups={module.groups}): no low-rank form here"
    if isinstance(module, nn.Embedding):
        return "embedding table: lookups are not factorised"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "normalisation layer: per-channel scale, nothing to factorise"
    reason = f"{type(module).__name__} layers are not factorised (lowrank factorises {kinds.supported()})"
    if priced_by_hand(module):
        reason += "; its MACs are counted by formula (torch's counter cannot see its fused kernel)"
    return reason


def select_layers(records: Sequence[LayerRecord], include: Callable[[str], bool] | None = None) -> dict[str, Layer]:
    """Every recorded layer by name, with its schemes or the reason it stays dense.
    ``include``: a predicate on the layer name (None: every layer a scheme accepts)."""
    out = {}
    for record in records:
        schemes = kinds.schemes_for(record.module) if record.calls else {}
        tied = bool(schemes) and bool(record.tied_to)
        kind = next(iter(schemes.values())).kind if schemes and not tied else type(record.module).__name__
        if schemes and include is not None and not include(record.name):
            reason = "excluded by the layer selection (include=)"
        elif tied:
            reason = (f"weight tied to {', '.join(repr(t) for t in record.tied_to)}: factorising one user of a shared "
                      "weight would free none of its parameters")
        elif not schemes:
            reason = dense_reason(record.module, len(record.calls), record.used)
        else:
            reason = ""
        out[record.name] = Layer(record, kind, {} if reason else schemes, reason)
    return out


def as_predicate(include: Callable[[str], bool] | Sequence[str] | None) -> Callable[[str], bool] | None:
    """``include`` as a predicate on layer names: a callable as it is, a list of name prefixes
    as "starts with one of them", None as None (every layer)."""
    if include is None or callable(include):
        return include
    prefixes = tuple(include)
    return lambda name: name.startswith(prefixes)
