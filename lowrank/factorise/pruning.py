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
    factorised or pruned module's output."""
    inner = getattr(module, "conv", None) if isinstance(module, PrunedConv2d) else getattr(module, "second", None)
    if inner is not None:
        _drop_out_channels(inner, keep)
    elif isinstance(module, nn.Conv2d):
        _slice_parameter(module, "weight", keep)
        module.out_channels = len(keep)
    if getattr(module, "bias", None) is not None and inner is None:
        _slice_parameter(module, "bias", keep)
    if hasattr(module, "out_channels"):
        module.out_channels = len(keep)


def _drop_norm_channels(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            _slice_parameter(norm, name, keep)
    for name in ("running_mean", "running_var"):
        if getattr(norm, name, None) is not None:
            setattr(norm, name, getattr(norm, name)[keep].clone())
    norm.num_features = len(keep)


def _slice_parameter(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(old.detach()[keep.to(old.device)].clone(), requires_grad=old.requires_grad))
