"""Parametrized weights (``weight_norm``, ``spectral_norm``, any ``torch.nn.utils.parametrize``
parametrization, and the older hook-based ``weight_norm`` / ``spectral_norm``) folded into
plain weights, on a copy.

Why: reading a parametrized ``.weight`` runs the parametrization. ``spectral_norm`` in train
mode runs a power-iteration step and writes its ``_u`` buffer, so merely reading the weight
changed the user's model; every read also makes a new tensor, so the layer's weight has no
identity to compare (independent layers were reported as tied) and a functional override of
``name.weight`` is not what the module computes with. lowrank factorises the *effective*
weight, as eval mode computes it: the user's model keeps its parametrizations untouched, and
the rebuilt model holds plain weights (the form a deployed model runs anyway).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .modes import copy_modes

_FOLDED = "lowrank_folded_parametrizations"  # attribute on the folded copy: layer -> what was folded


def _hook_parametrizations(module: nn.Module) -> list:
    """The older hook-based weight_norm / spectral_norm objects on ``module``."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return [h for h in module._forward_pre_hooks.values() if isinstance(h, (WeightNorm, SpectralNorm))]


def parametrizations(model: nn.Module) -> dict[str, list[str]]:
    """Layer name -> what parametrizes its tensors, e.g. ``{"fc": ["weight: _WeightNorm"]}``."""
    out: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        found = []
        if parametrize.is_parametrized(module):
            for tensor_name, plist in module.parametrizations.items():
                found += [f"{tensor_name}: {type(p).__name__}" for p in plist]
        found += [f"{h.name}: {type(h).__name__} (hook)" for h in _hook_parametrizations(module)]
        if found:
            out[name] = found
    return out


def folded(model: nn.Module) -> nn.Module:
    """``model`` itself where nothing is parametrized; else a copy whose parametrized tensors
    are plain tensors holding their effective values in eval mode (no power-iteration step
    runs, the user's model is not read in train mode). :func:`folded_from` says what was folded."""
    found = parametrizations(model)
    if not found:
        return model
    # Hook-based weight_norm keeps its weight as a non-leaf tensor, which deepcopy refuses: copy it as a plain tensor.
    memo = {id(m.__dict__[h.name]): m.__dict__[h.name].detach().clone()
            for m in model.modules() for h in _hook_parametrizations(m) if isinstance(m.__dict__.get(h.name), torch.Tensor)}
    new = copy.deepcopy(model, memo)
    new.eval()
    for name in found:
        module = new.get_submodule(name) if name else new
        for hook in _hook_parametrizations(module):
            _remove_hook(module, hook)
        if parametrize.is_parametrized(module):
            # torch removes a parametrization by deleting a property of the module's class, which the copy shares
            # with the user's module: give the copy a class of its own first, or the user's layer loses its weight.
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, {k: v for k, v in vars(cls).items()
                                                                   if k not in ("__dict__", "__weakref__")})
            for tensor_name in list(module.parametrizations):
                _remove_parametrization(module, tensor_name)
    copy_modes(model, new)
    setattr(new, _FOLDED, found)
    return new


def _remove_parametrization(module: nn.Module, tensor_name: str) -> None:
    """Replace a parametrized tensor by its value; a tensor made of parameters stays a
    parameter (torch leaves a multi-tensor one, like weight_norm's, a buffer where no
    original requires grad: a frozen model's weight would drop out of its parameters)."""
    originals = list(module.parametrizations[tensor_name].parameters(recurse=False))
    requires = any(p.requires_grad for p in originals)
    with torch.no_grad():
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    value = module._buffers.pop(tensor_name, None) if originals else None
    if value is not None:
        module.register_parameter(tensor_name, nn.Parameter(value.detach(), requires_grad=requires))


def _remove_hook(module: nn.Module, hook) -> None:
    from torch.nn.utils import remove_spectral_norm, remove_weight_norm
    from torch.nn.utils.spectral_norm import SpectralNorm

    (remove_spectral_norm if isinstance(hook, SpectralNorm) else remove_weight_norm)(module, hook.name)


def folded_from(model: nn.Module) -> dict[str, list[str]]:
    """What :func:`folded` folded in this copy (layer -> parametrizations); empty for a model
    that was not parametrized."""
    return dict(getattr(model, _FOLDED, {}))
