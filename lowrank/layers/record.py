"""Recording: one hooked forward pass of an example input tells, for every module that owns
weights, how often it was called and with which input and output shapes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import kinds
from ..util.inputs import call_checked
from ..util.modes import evaluating
from .unseen import hand_macs


@dataclass
class LayerRecord:
    """One module with weights as the example pass saw it."""

    name: str
    module: nn.Module = field(repr=False)
    calls: list[tuple] = field(repr=False)  # per call: (input shape, output shape, output numel)
    tied_to: tuple[str, ...] = ()  # other modules owning the same weight tensor (tied weights)
    hand_macs: int | None = None  # over all calls, for a module the counter cannot see (lowrank.layers.unseen)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        w = getattr(self.module, "weight", None)
        return tuple(w.shape) if isinstance(w, torch.Tensor) else ()

    @property
    def params(self) -> int:
        """The module's own parameters."""
        return sum(p.numel() for p in self.module.parameters(recurse=False))

    @property
    def macs(self) -> int:
        """Dense MACs over all calls, for layers that multiply by their weight (others: 0)."""
        if self.hand_macs is not None:
            return self.hand_macs
        for scheme in kinds.schemes_for(self.module).values():  # a factorisable kind knows its own
            return scheme.dense_macs(self.module, self.calls)
        if not isinstance(self.module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return 0
        return sum(numel for _, _, numel in self.calls) * math.prod(self.weight_shape[1:])


def _shape(x) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return None


def record_layers(model: nn.Module, example_input: Any) -> list[LayerRecord]:
    """Every module owning parameters: those called in call order, then those never called."""
    owners = [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    seen: dict[str, list] = {n: [] for n, _ in owners}
    hand: dict[str, int] = {}
    order: list[str] = []

    def hook(name):
        def fn(mod, args, kwargs, out):
            if not seen[name]:
                order.append(name)
            seen[name].append((_shape(args or tuple(kwargs.values())), _shape(out), out.numel() if isinstance(out, torch.Tensor) else 0))
            macs = hand_macs(mod, args, kwargs)
            if macs is not None:
                hand[name] = hand.get(name, 0) + macs

        return fn

    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in owners]
    try:
        with torch.no_grad(), evaluating(model):
            call_checked(model, example_input, "example input (the first sample of the calibration data)")
    finally:
        for h in handles:
            h.remove()
    modules = dict(owners)
    owners_of_weight: dict[int, list[str]] = {}
    for n, m in owners:
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor):
            owners_of_weight.setdefault(id(w), []).append(n)

    def tied(n):
        w = getattr(modules[n], "weight", None)
        return tuple(o for o in owners_of_weight.get(id(w), []) if o != n) if isinstance(w, torch.Tensor) else ()

    return [LayerRecord(n, modules[n], seen[n], tied(n), hand.get(n)) for n in order + [n for n, _ in owners if not seen[n]]]
