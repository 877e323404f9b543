"""The layer table: which layers a model has, their shapes, and what each costs.

One forward pass of an example input with hooks records every layer's input and output
shapes. Linear layers and Conv2d layers with ``groups == 1`` are compressible; every other
layer that owns weights is listed as kept dense, with the reason. Costs:

- MACs are multiply-accumulates of conv, linear and matmul ops (bias adds excluded), for
  one pass of the example input: they agree with ``FlopCounterMode`` FLOPs / 2.
  Matmuls outside any layer (e.g. attention scores) are measured once by
  ``FlopCounterMode`` and kept as a fixed cost (``other_macs``).
- Parameters are every parameter of the model, counted once.

A factorised layer at rank r costs ``r * per_rank`` MACs and parameters plus its bias:
linear in r, which is what makes budgets linear constraints on singular-value masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import networkx as nx
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from solvers import Group, Problem

from . import decompose
from .budget import RESOURCES, Budget
from .graph import build_graph


@dataclass(frozen=True)
class SchemeCost:
    """What one kept singular value costs in a layer under one scheme."""

    scheme: str
    matrix_shape: tuple[int, int]
    full_rank: int
    macs_per_rank: int
    params_per_rank: int
    bias_params: int


@dataclass
class LayerInfo:
    name: str
    kind: str  # "linear", "conv2d", or the module's class name
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    calls: int
    macs: int  # dense, summed over calls
    params: int  # the module's own parameters
    compressible: bool
    reason: str = ""  # why it stays dense
    costs: dict[str, SchemeCost] = field(default_factory=dict)

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(self.costs)

    def factorised_cost(self, scheme: str, rank: int) -> tuple[int, int]:
        """(MACs, params) of the two-layer form at ``rank``, without the dense fallback."""
        c = self.costs[scheme]
        return rank * c.macs_per_rank, rank * c.params_per_rank + c.bias_params


def call_model(model: nn.Module, inputs):
    """Call ``model`` with a tensor, a tuple of positional inputs, or a dict of keyword inputs."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _shape(x) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return None


def _dense_reason(module: nn.Module, calls: int) -> str:
    if calls == 0:
        return "never called as a module in the forward pass (its weight is used functionally, e.g. inside nn.MultiheadAttention)"
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"{kind} conv (groups={module.groups}): no low-rank form here"
    if isinstance(module, nn.Embedding):
        return "embedding table: lookups are not factorised"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "normalisation layer: per-channel scale, nothing to factorise"
    return f"{type(module).__name__} layers are not factorised"


class LayerTable:
    """Every layer with weights, their costs per scheme, the model graph, and cached SVDs.

    Built from one forward pass of ``example_input`` (a tensor, tuple or dict of inputs).
    The model is not modified.
    """

    def __init__(self, model: nn.Module, example_input: Any, include: Callable[[str], bool] | Sequence[str] | None = None):
        """``include``: which layers may be factorised, as a predicate on the layer name or a
        list of name prefixes (default: every Linear and groups=1 Conv2d)."""
        self.model = model
        self.example_input = example_input
        if include is not None and not callable(include):
            prefixes = tuple(include)
            include = lambda name: name.startswith(prefixes)  # noqa: E731
        self.include = include
        self.layers: dict[str, LayerInfo] = {}
        self._svd_cache: dict[tuple[str, str], tuple] = {}
        self._record(model, example_input)
        self.graph: nx.DiGraph = build_graph(model, [n for n in self.layers if self.layers[n].calls])

    # --- construction ------------------------------------------------------------------
    def _record(self, model: nn.Module, example_input: Any) -> None:
        owners = [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
        seen: dict[str, list] = {n: [] for n, _ in owners}
        order: list[str] = []

        def hook(name):
            def fn(mod, args, out):
                if not seen[name]:
                    order.append(name)
                seen[name].append((_shape(args), _shape(out), out.numel() if isinstance(out, torch.Tensor) else 0))

            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in owners]
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                call_model(model, example_input)
        finally:
            for h in handles:
                h.remove()
        measured_macs = counter.get_total_flops() // 2

        modules = dict(owners)
        for name in order + [n for n, _ in owners if not seen[n]]:
            self.layers[name] = self._layer_info(name, modules[name], seen[name])

        self.total_params = sum(p.numel() for p in model.parameters())
        counted = sum(l.macs for l in self.layers.values())
        # Matmuls outside any layer (attention scores, functional linears) are a fixed cost.
        self.other_macs = max(0, measured_macs - counted)
        self.total_macs = counted + self.other_macs

    def _layer_info(self, name: str, module: nn.Module, calls: list) -> LayerInfo:
        weight = getattr(module, "weight", None)
        wshape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        in_shape = calls[0][0] if calls else None
        out_shape = calls[0][1] if calls else None
        is_matmul_layer = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        macs = sum(numel for _, _, numel in calls) * math.prod(wshape[1:]) if is_matmul_layer else 0

        compressible = bool(calls) and (
            isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        )
        kind = "linear" if isinstance(module, nn.Linear) else "conv2d" if isinstance(module, nn.Conv2d) else type(module).__name__
        excluded = compressible and self.include is not None and not self.include(name)
        info = LayerInfo(name, kind, wshape, in_shape, out_shape, len(calls), macs, params, compressible and not excluded)
        if excluded:
            info.reason = "excluded by the layer selection (include=)"
            return info
        if not compressible:
            info.reason = _dense_reason(module, len(calls))
            return info
        bias = module.bias.numel() if module.bias is not None else 0
        if isinstance(module, nn.Linear):
            out_f, in_f = wshape
            rows = sum(numel // out_f for _, _, numel in calls)  # batch elements over all calls
            info.costs["channel"] = SchemeCost("channel", (out_f, in_f), min(out_f, in_f), rows * (in_f + out_f), in_f + out_f, bias)
            return info
        c_out, c_in, kh, kw = wshape
        for scheme in decompose.SCHEMES:
            shape = decompose.matrix_shape(wshape, scheme)
            per_rank_macs = sum(self._conv_macs_per_rank(module, scheme, i, o) for i, o, _ in calls)
            per_rank_params = c_in * kh * kw + c_out if scheme == "channel" else c_in * kh + c_out * kw
            info.costs[scheme] = SchemeCost(scheme, shape, min(shape), per_rank_macs, per_rank_params, bias)
        return info

    @staticmethod
    def _conv_macs_per_rank(conv: nn.Conv2d, scheme: str, in_shape, out_shape) -> int:
        n, c_out, h_out, w_out = out_shape if len(out_shape) == 4 else (1, *out_shape)
        c_in, kh, kw = conv.in_channels, *conv.kernel_size
        if scheme == "channel":  # kh x kw conv C_in -> r at the output size, then 1x1 r -> C_out
            return n * h_out * w_out * (c_in * kh * kw + c_out)
        # spatial: kh x 1 conv C_in -> r (output H_out x W_in), then 1 x kw conv r -> C_out
        w_in = in_shape[-1]  # the first conv pads, strides and dilates only along H
        return n * h_out * w_in * c_in * kh + n * h_out * w_out * c_out * kw

    # --- queries -----------------------------------------------------------------------
    @property
    def compressible(self) -> list[LayerInfo]:
        return [l for l in self.layers.values() if l.compressible]

    @property
    def kept_dense(self) -> list[LayerInfo]:
        return [l for l in self.layers.values() if not l.compressible]

    @property
    def totals(self) -> dict[str, int]:
        return {"macs": int(self.total_macs), "params": int(self.total_params)}

    def scheme_for(self, name: str, scheme: str) -> str:
        """The scheme a layer uses when ``scheme`` is asked for (Linear layers have only ``channel``)."""
        decompose.check_scheme(scheme)
        return scheme if scheme in self.layers[name].costs else "channel"

    def svd(self, name: str, scheme: str):
        """(U, s, Vh) of the layer's matrix under ``scheme``; computed once and cached."""
        scheme = self.scheme_for(name, scheme)
        key = (name, scheme)
        if key not in self._svd_cache:
            weight = self.model.get_submodule(name).weight
            self._svd_cache[key] = decompose.svd(weight, scheme)
        return self._svd_cache[key]

    def svds(self, scheme: str) -> dict[str, tuple]:
        """Every compressible layer's (U, s, Vh) under ``scheme``: what a disk cache stores."""
        return {l.name: self.svd(l.name, scheme) for l in self.compressible}

    def load_svds(self, scheme: str, svds: Mapping[str, tuple]) -> None:
        """Reuse SVDs computed earlier (``svds(scheme)`` of the same weights) instead of recomputing."""
        for name, factors in svds.items():
            if name not in self.layers or not self.layers[name].compressible:
                raise ValueError(f"cached SVD for {name!r}, which is not a compressible layer of this model")
            self._svd_cache[(name, self.scheme_for(name, scheme))] = tuple(factors)

    def masked_model(self, schemes: str | Mapping[str, str] = "channel", names=None) -> decompose.MaskedModel:
        """The model computing each compressible layer (or ``names``) as U diag(s * m) Vh."""
        names = [l.name for l in self.compressible] if names is None else list(names)
        factors = {}
        for n in names:
            scheme = self.scheme_for(n, schemes if isinstance(schemes, str) else schemes[n])
            factors[n] = (scheme, *self.svd(n, scheme))
        return decompose.MaskedModel(self.model, factors)

    def group(self, name: str, scheme: str) -> Group:
        """The layer as a solver group: singular values, cost per kept value, dense fallback."""
        layer = self.layers[name]
        scheme = self.scheme_for(name, scheme)
        c = layer.costs[scheme]
        _, s, _ = self.svd(name, scheme)
        return Group(
            name=f"{name}/{scheme}" if len(layer.costs) > 1 else name,
            values=s.detach().cpu().double().numpy(),
            rank_cost=[c.macs_per_rank, c.params_per_rank],
            fixed_cost=[0, c.bias_params],
            dense_cost=[layer.macs, layer.params],
            layer=name,
            option=scheme,
        )

    def dense_base_cost(self) -> list[int]:
        """MACs and parameters of everything that is never factorised."""
        comp = self.compressible
        return [
            self.total_macs - sum(l.macs for l in comp),
            self.total_params - sum(l.params for l in comp),
        ]

    def problem(self, budget: Budget, schemes: str | Mapping[str, str] = "channel", objective=None) -> Problem:
        """The rank-allocation problem for ``budget``; ``schemes`` may be ``"auto"`` (both per conv)."""
        if not self.compressible:
            raise ValueError("the model has no compressible layer (nn.Linear or nn.Conv2d with groups=1)")
        groups = []
        for layer in self.compressible:
            if schemes == "auto":
                options = layer.schemes
            else:
                options = (self.scheme_for(layer.name, schemes if isinstance(schemes, str) else schemes[layer.name]),)
            groups += [self.group(layer.name, s) for s in options]
        limits = budget.limits(self.totals)
        return Problem(
            groups=groups,
            budgets=[limits[r] for r in RESOURCES],
            resources=RESOURCES,
            base_cost=self.dense_base_cost(),
            reference_cost=[self.totals[r] for r in RESOURCES],
            objective=objective,
        )

    def summary(self) -> str:
        """A readable table of every layer, its costs and, for dense ones, why."""
        lines = [f"{'layer':32s} {'kind':10s} {'weight':18s} {'MACs':>12s} {'params':>10s}  note"]
        for l in self.layers.values():
            note = "compressible: " + ", ".join(f"{s} rank {c.full_rank}" for s, c in l.costs.items()) if l.compressible else l.reason
            lines.append(f"{l.name:32s} {l.kind:10s} {str(l.weight_shape):18s} {l.macs:12,d} {l.params:10,d}  {note}")
        if self.other_macs:
            lines.append(f"{'(matmuls outside layers)':32s} {'':10s} {'':18s} {self.other_macs:12,d} {0:10,d}")
        lines.append(f"{'total':32s} {'':10s} {'':18s} {self.total_macs:12,d} {self.total_params:10,d}")
        return "\n".join(lines)
