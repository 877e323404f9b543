"""Which convs can have input channels pruned, found with torch-pruning's ``DependencyGraph``.

Channels tied by a residual add, a concat, a grouped or depthwise conv or a flatten into a
Linear must be kept or dropped together, and the graph finds these groups on any model a
forward pass traces. Here a conv takes the ``prune`` scheme where the group of its input
channels holds only itself, the one layer that makes those channels (a conv with groups=1)
and BatchNorms between them, with channel-wise ops (ReLU, pooling) in the path: dropping a
channel then removes it from the producer, the norms and the conv, and nothing else reads it.
A larger group (the convs that read a residual stream) is not pruned yet; each layer left out
says why (:attr:`Layer.unprunable`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..util.inputs import call_model
from ..util.modes import evaluating

PRUNE = "prune"


@dataclass(frozen=True)
class PruneChain:
    """The layers a pruned conv's dropped input channels are removed from."""

    producer: str  # the conv whose output channels the pruned conv reads
    norms: tuple[str, ...] = ()  # BatchNorms between them


def mark_prunable(model: nn.Module, example_input: Any, layers: Mapping[str, Any]) -> str:
    """Keep the ``prune`` scheme on the layers whose input channels form a group of their own
    (setting ``layer.pruning``) and take it from every other (setting ``layer.unprunable``).
    Returns "" or, where no layer can be pruned at all, why in one line."""
    candidates = [l for l in layers.values() if PRUNE in l.schemes]
    if not candidates:
        return ""
    try:
        import torch_pruning as tp
    except ImportError:
        return _unavailable(candidates, "torch-pruning is not installed (pip install torch-pruning==1.6.1)")
    try:
        with evaluating(model), torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input,
                                                          forward_fn=lambda m, x: call_model(m, x))
    except Exception as error:  # any failure to trace is one message, not a traceback
        return _unavailable(candidates, f"torch-pruning could not trace the model ({type(error).__name__}: {error})")
    names = {id(m): n for n, m in model.named_modules()}
    for layer in candidates:
        group = graph.get_pruning_group(layer.module, tp.prune_conv_in_channels, idxs=list(range(layer.module.in_channels)))
        chain, why = _chain(layer.name, [(names.get(id(dep.target.module)), dep.target.module, dep.handler) for dep, _ in group],
                            tp)
        if chain is None:
            del layer.schemes[PRUNE]
            layer.unprunable = why
        else:
            layer.pruning = chain
    return ""


def _chain(name: str, items: list, tp) -> tuple[PruneChain | None, str]:
    """The chain of one conv's input-channel group, or None and why not."""
    producers, norms, tied, ops = [], [], [], set()
    for module_name, module, handler in items:
        if module_name == name:
            continue
        if module_name is None:  # an op, not a module
            if not isinstance(module, tp.ops._ElementWiseOp):
                ops.add(type(module).__name__.strip("_").removesuffix("Op").lower())
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms.append(module_name)
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and _out(handler):
            producers.append(module_name)
        else:
            tied.append(module_name)
    if tied or len(producers) > 1:
        others = sorted(tied + producers)
        named = ", ".join(repr(t) for t in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return None, (f"its input channels are tied to {named} (a residual add, concat or grouped conv): they would "
                      "have to be pruned together, which lowrank does not do yet")
    if ops:
        return None, f"its input channels pass a {', '.join(sorted(ops))} op on the way: only a plain chain is pruned"
    if not producers:
        return None, "its input channels are the model's input"
    return PruneChain(producers[0], tuple(norms)), ""


def _out(handler) -> bool:
    return "out" in getattr(handler, "__name__", str(handler))


def _unavailable(candidates, why: str) -> str:
    for layer in candidates:
        del layer.schemes[PRUNE]
        layer.unprunable = why
    return f"pruning is unavailable for this model: {why}"
