"""BatchNorm folded into the conv or Linear before it, as deployed models run.

In eval mode a BatchNorm is an affine map per channel, so the layer before it can absorb it
exactly (weight times ``g / sqrt(v + eps)``, bias ``(b - m) g / sqrt(v + eps) + beta``).
Runtimes and exporters do this; a model timed with its BatchNorms unfolded spends time the
deployed one does not, so a speedup measured that way is not the one a user gets. A rebuilt
layer (any module with an ``absorb_affine(scale, shift)`` method, see lowrank.kinds) folds
it into its second factor.
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

_NORMS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d, nn.Linear: nn.BatchNorm1d}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm whose only input is a conv, a
    Linear or a rebuilt layer folded into it (``model`` is left as it was). Traced by torch.fx
    with rebuilt layers as leaves; where fx cannot trace the model, the pairs that sit next to
    each other in an ``nn.Sequential`` are folded. :func:`batchnorms` counts what is left."""
    model = copy.deepcopy(model).eval()
    try:
        graph = _Tracer().trace(model)
    except Exception:  # control flow fx cannot follow: the pairs a Sequential makes explicit
        return _fold_sequentials(model)
    modules = dict(model.named_modules())
    folded_any = False
    for node in list(graph.nodes):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        producer = node.args[0]
        if producer.op != "call_module" or len(producer.users) != 1:
            continue  # something else reads the layer's output before the norm: folding would change it
        folded = _folded(modules[producer.target], modules[node.target])
        if folded is not None:
            _replace(model, producer.target, folded)
            modules[producer.target] = folded
            node.replace_all_uses_with(producer)
            graph.erase_node(node)
            folded_any = True
    return fx.GraphModule(model, graph, class_name=type(model).__name__) if folded_any else model


def batchnorms(model: nn.Module) -> int:
    """How many BatchNorm modules ``model`` still runs."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return hasattr(m, "absorb_affine") or super().is_leaf_module(m, qualname)


def _folded(layer: nn.Module, norm: nn.Module) -> nn.Module | None:
    """``layer`` with ``norm`` after it folded in, or None where they do not fold."""
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.track_running_stats or norm.running_mean is None:
        return None
    if type(layer) in _NORMS and type(norm) is _NORMS[type(layer)]:
        if isinstance(layer, nn.Linear):
            return fuse_linear_bn_eval(layer, norm)
        return fuse_conv_bn_eval(layer, norm)
    if hasattr(layer, "absorb_affine"):
        with torch.no_grad():
            scale = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / torch.sqrt(norm.running_var + norm.eps)
            shift = (norm.bias if norm.affine else torch.zeros_like(norm.running_mean)) - norm.running_mean * scale
        layer.absorb_affine(scale, shift)
        return layer
    return None


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _fold_sequentials(model: nn.Module) -> nn.Module:
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            folded = _folded(seq._modules[first], seq._modules[second])
            if folded is not None:
                seq._modules[first], seq._modules[second] = folded, nn.Identity()
    return model
