"""The masked view of a model: chosen layers computed as U diag(s * m) Vh, differentiable in
the masks m. This is what the network-loss objective (COBLA) optimises over."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call

from .. import kinds
from .basis import FLOAT64_MAX_ELEMENTS
from ..util.inputs import call_args, model_device, to_device
from ..util.modes import evaluating


class MaskedModel(nn.Module):
    """The model computing each chosen layer with U diag(s * m) Vh, differentiable in m.

    The original model is not modified: weights are substituted per call with
    ``torch.func.functional_call``. ``factors`` maps layer name -> (scheme, U, s, Vh), the
    scheme a :class:`lowrank.kinds.LayerScheme` (or its name).
    """

    def __init__(self, model: nn.Module, factors: Mapping[str, tuple]):
        super().__init__()
        self.model = model
        self.shapes = {name: model.get_submodule(name).weight.shape for name in factors}
        self.dtypes = {name: model.get_submodule(name).weight.dtype for name in factors}
        # The weights are rebuilt from their factors at every pass (and back through them):
        # in float64 while that is cheap, in the weights' own dtype for big models (a language
        # model's 210 layers would spend most of each pass on float64 products).
        big = sum(torch.Size(shape).numel() for shape in self.shapes.values()) > FLOAT64_MAX_ELEMENTS
        self.factors, self.shifts = {}, {}
        for name, (scheme, u, s, vh, *shift) in factors.items():
            if isinstance(scheme, str):
                scheme = kinds.schemes_for(model.get_submodule(name))[scheme]
            dtype = self.dtypes[name] if big and self.dtypes[name].is_floating_point else u.dtype
            self.factors[name] = (scheme, u.to(dtype), s.to(dtype), vh.to(dtype))
            if shift:  # a pruned conv's bias takes over what its dropped channels' means added (kinds.prune)
                bias = getattr(model.get_submodule(name), "bias", None)
                base = bias.detach().to(dtype) if bias is not None else torch.zeros(shift[0].shape[1], dtype=dtype)
                self.shifts[name] = (base, shift[0].to(dtype))

    def full_masks(self, requires_grad: bool = True) -> dict[str, torch.Tensor]:
        """All-ones masks (the original model), ready for autograd."""
        return {
            name: torch.ones(s.numel(), dtype=s.dtype, device=s.device, requires_grad=requires_grad)
            for name, (_, _, s, _) in self.factors.items()
        }

    def weights(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, (scheme, u, s, vh) in self.factors.items():
            m = masks[name].to(s.device, s.dtype)
            if m.shape != s.shape:
                raise ValueError(f"mask for {name!r} has shape {tuple(m.shape)}, expected {tuple(s.shape)}")
            matrix = (u * (s * m)) @ vh
            out[f"{name}.weight"] = scheme.weight(matrix, self.shapes[name]).to(self.dtypes[name])
            if name in self.shifts:
                base, shift = self.shifts[name]
                out[f"{name}.bias"] = (base + (1 - m) @ shift).to(self.dtypes[name])
        return out

    def forward(self, inputs, masks: Mapping[str, torch.Tensor]):
        """The model's output with masked weights. Every other parameter enters detached, so
        gradients reach the masks only (never the user's parameters' ``.grad``), and the
        pass runs in eval mode (no BatchNorm statistics updated)."""
        args, kwargs = call_args(to_device(inputs, model_device(self.model)))
        params = {name: p.detach() for name, p in self.model.named_parameters()}
        params.update(self.weights(masks))
        with evaluating(self.model):
            return functional_call(self.model, params, args=args, kwargs=kwargs)
