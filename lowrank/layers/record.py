"""Recording: one hooked forward pass of an example input tells, for every module that owns
weights, how often it was called and with which input and output shapes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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
    used: bool = True  # its weight took part in the pass (called, or used functionally, e.g. by nn.MultiheadAttention)

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
    operands = _Operands()
    try:
        with torch.no_grad(), evaluating(model), operands:
            call_checked(model, example_input, "example input (the first sample of the calibration data)")
    finally:
        for h in handles:
            h.remove()
    modules = dict(owners)
    owners_of_weight: dict[tuple, list[str]] = {}
    for n, m in owners:
        key = _storage_key(getattr(m, "weight", None))
        if key is not None:
            owners_of_weight.setdefault(key, []).append(n)

    def tied(n):
        key = _storage_key(getattr(modules[n], "weight", None))
        return tuple(o for o in owners_of_weight.get(key, []) if o != n) if key is not None else ()

    def used(n):
        return bool(seen[n]) or any(_storage_base(p) in operands.seen for p in modules[n].parameters(recurse=False))

    return [LayerRecord(n, modules[n], seen[n], tied(n), hand.get(n), used(n))
            for n in order + [n for n, _ in owners if not seen[n]]]


class _Operands(TorchDispatchMode):
    """Where every tensor an operation read lives: a layer never called as a module whose
    weight shows up here is used functionally (its work is counted outside the layers); one
    that does not was not used at all by this input (a branch it did not take)."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs or {}))[0]:
            key = _storage_base(t)  # a view (a transpose) of a weight lives where the weight does
            if key is not None:
                self.seen.add(key)
        return func(*args, **(kwargs or {}))


def layers_called(model: nn.Module, names: list[str], batches: list[tuple]) -> set[str]:
    """Which of the layers ``names`` any of the calibration ``batches`` calls (a pass without
    gradients, in eval mode): the paths a model takes can depend on its input."""
    called: set[str] = set()
    handles = [model.get_submodule(n).register_forward_hook(lambda *_, n=n: called.add(n)) for n in names]
    try:
        with torch.no_grad(), evaluating(model):
            for x, _ in batches:
                call_checked(model, x)
                if len(called) == len(names):
                    break
    finally:
        for h in handles:
            h.remove()
    return called


def _storage_key(w) -> tuple | None:
    """Where a weight's values live (storage, offset, shape, strides): two modules tie only
    where these agree. ``id()`` of a weight computed on each read (a parametrization) is a
    temporary's, which Python reuses: independent layers read as tied from run to run."""
    base = _storage_base(w)
    return None if base is None else (*base, w.storage_offset(), tuple(w.shape), w.stride())


def _storage_base(w) -> tuple | None:
    """Where a tensor's storage lives, for any view of it."""
    if not isinstance(w, torch.Tensor) or w.numel() == 0 or w.device.type == "meta":
        return None
    return (w.device, w.untyped_storage().data_ptr())
