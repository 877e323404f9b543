"""Weight reshaping per scheme, SVD, and the masked view of a model.

Schemes (how a weight becomes a matrix before its SVD):
- ``channel``: conv weight (C_out, C_in, kh, kw) -> C_out x (C_in*kh*kw); a Linear weight
  (out, in) is used as is. Rebuilt as a kh x kw conv C_in -> r, then a 1x1 conv r -> C_out.
- ``spatial``: (C_out, C_in, kh, kw) -> (C_in*kh) x (C_out*kw). Rebuilt as a kh x 1 conv
  C_in -> r, then a 1 x kw conv r -> C_out.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call

SCHEMES = ("channel", "spatial")

# Weights up to this many elements are decomposed in float64 (cheap, and exact to 1e-12).
FLOAT64_MAX_ELEMENTS = 1 << 24


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return scheme


def weight_matrix(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """The matrix whose SVD factorises ``weight`` under ``scheme``."""
    check_scheme(scheme)
    if weight.dim() == 2:
        return weight
    c_out, c_in, kh, kw = weight.shape
    if scheme == "channel":
        return weight.reshape(c_out, c_in * kh * kw)
    return weight.permute(1, 2, 0, 3).reshape(c_in * kh, c_out * kw)


def weight_from_matrix(matrix: torch.Tensor, shape: torch.Size | tuple, scheme: str) -> torch.Tensor:
    """Inverse of :func:`weight_matrix`."""
    if len(shape) == 2:
        return matrix
    c_out, c_in, kh, kw = shape
    if scheme == "channel":
        return matrix.reshape(c_out, c_in, kh, kw)
    return matrix.reshape(c_in, kh, c_out, kw).permute(2, 0, 1, 3)


def matrix_shape(weight_shape: tuple, scheme: str) -> tuple[int, int]:
    if len(weight_shape) == 2:
        return tuple(weight_shape)
    c_out, c_in, kh, kw = weight_shape
    return (c_out, c_in * kh * kw) if scheme == "channel" else (c_in * kh, c_out * kw)


def svd(weight: torch.Tensor, scheme: str):
    """Thin SVD (U, s, Vh) of the scheme's matrix; float64 where the weight is small enough."""
    m = weight.detach()
    dtype = torch.float64 if m.numel() <= FLOAT64_MAX_ELEMENTS else torch.float32
    u, s, vh = torch.linalg.svd(weight_matrix(m, scheme).to(dtype), full_matrices=False)
    return u, s, vh


class MaskedModel(nn.Module):
    """The model computing each chosen layer with U diag(s * m) Vh, differentiable in m.

    The original model is not modified: weights are substituted per call with
    ``torch.func.functional_call``. ``factors`` maps layer name -> (scheme, U, s, Vh).
    """

    def __init__(self, model: nn.Module, factors: Mapping[str, tuple]):
        super().__init__()
        self.model = model
        self.factors = dict(factors)
        self.shapes = {name: model.get_submodule(name).weight.shape for name in self.factors}
        self.dtypes = {name: model.get_submodule(name).weight.dtype for name in self.factors}

    def full_masks(self, requires_grad: bool = True) -> dict[str, torch.Tensor]:
        """All-ones masks (the original model), ready for autograd."""
        return {
            name: torch.ones(s.numel(), dtype=s.dtype, device=s.device, requires_grad=requires_grad)
            for name, (_, _, s, _) in self.factors.items()
        }

    def weights(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, (scheme, u, s, vh) in self.factors.items():
            m = masks[name].to(s.dtype)
            if m.shape != s.shape:
                raise ValueError(f"mask for {name!r} has shape {tuple(m.shape)}, expected {tuple(s.shape)}")
            matrix = (u * (s * m)) @ vh
            out[f"{name}.weight"] = weight_from_matrix(matrix, self.shapes[name], scheme).to(self.dtypes[name])
        return out

    def forward(self, inputs, masks: Mapping[str, torch.Tensor]):
        params = self.weights(masks)
        if isinstance(inputs, Mapping):
            return functional_call(self.model, params, args=(), kwargs=dict(inputs))
        if isinstance(inputs, (tuple, list)):
            return functional_call(self.model, params, tuple(inputs))
        return functional_call(self.model, params, (inputs,))
