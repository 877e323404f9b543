"""Pruning for real: a conv that keeps k of its input channels (a :class:`PrunedConv2d`, the
selection then the conv) becomes the plain conv, and the layer that made those channels, and
the BatchNorms between, lose the channels nobody reads. The outputs do not change; the model
gets smaller and faster."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..kinds.prune import PrunedConv2d


def fold_selections(model: nn.Module, chains: Mapping[str, object]) -> nn.Module:
    """Remove each named :class:`PrunedConv2d`'s selection by dropping the unread channels from
    its chain (a :class:`lowrank.layers.channels.PruneChain`: the producer and the norms), in
    place; returns ``model``. The producer may itself be factorised or pruned."""
    for name, chain in chains.items():
        pruned = model.get_submodule(name)
        if not isinstance(pruned, PrunedConv2d):
            continue  # rank 0: the layer reads nothing, and its producer is left whole
        keep = pruned.index
        _drop_out_channels(model.get_submodule(chain.producer), keep)
        for norm in chain.norms:
            _drop_norm_channels(model.get_submodule(norm), keep)
        model.set_submodule(name, pruned.conv)
    return model


def _drop_out_channels(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` (in that order) of a conv, or of the layer that makes a
    factorised or pruned module's output (a rank-0 layer: its bias alone)."""
    inner = module.conv if isinstance(module, PrunedConv2d) else getattr(module, "second", None)
    if inner is not None:
        _drop_out_channels(inner, keep)
    else:
        _slice(module, ("weight", "bias"), keep)
    if hasattr(module, "out_channels"):
        module.out_channels = len(keep)


def _drop_norm_channels(norm: nn.Module, keep: torch.Tensor) -> None:
    _slice(norm, ("weight", "bias", "running_mean", "running_var"), keep)
    norm.num_features = len(keep)


def _slice(module: nn.Module, names, keep: torch.Tensor) -> None:
    """Keep entries ``keep`` along the first dimension of each named parameter or buffer the module has."""
    for name in names:
        old = getattr(module, name, None)
        if old is None:
            continue
        new = old.detach()[keep.to(old.device)].clone()
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new)
