"""``nn.Linear``: the weight (out, in) is the matrix; rebuilt as Linear(in, r) then Linear(r, out)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .base import LayerScheme, absorb_channel_affine, register, split_factors


class FactorizedLinear(nn.Module):
    """y = second(first(x)): Linear(in, r, no bias) then Linear(r, out, bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.rank = rank
        self.scheme = "channel"
        with warnings.catch_warnings():  # rank 0: torch warns that initialising empty weights is a no-op
            warnings.simplefilter("ignore", UserWarning)
            self.first = nn.Linear(in_features, rank, bias=False)
            self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_dense(cls, dense: nn.Linear, rank: int, factors) -> "FactorizedLinear":
        """``factors`` = (U, s, Vh) of the dense weight."""
        return cls.from_factors(factors, rank, dense.bias, like=dense.weight)

    @classmethod
    def from_factors(cls, factors, rank: int, bias, like: torch.Tensor) -> "FactorizedLinear":
        """From (U, s, Vh) of an out x in matrix and a bias (or None), on ``like``'s device and dtype."""
        u, _, vh = factors
        layer = cls(vh.shape[1], u.shape[0], rank, bias=bias is not None).to(like.device, like.dtype)
        a, b = split_factors(*factors, rank)
        with torch.no_grad():
            layer.first.weight.copy_(a)
            layer.second.weight.copy_(b)
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer

    def absorb_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a following per-channel affine map (a BatchNorm in eval mode) into this layer."""
        absorb_channel_affine(self, scale, shift)

    def forward(self, x):
        return self.second(self.first(x))


class LinearChannel(LayerScheme):
    module_type, kind, name = nn.Linear, "linear", "channel"

    def matrix(self, weight):
        return weight

    def weight(self, matrix, shape):
        return matrix

    def matrix_shape(self, weight_shape):
        return tuple(weight_shape)

    def input_vectors(self, module, x):
        return x.reshape(-1, x.shape[-1])

    def macs_per_rank(self, module, calls):
        out_f, in_f = module.weight.shape
        rows = sum(numel // out_f for _, _, numel in calls)  # batch elements over all calls
        return rows * (in_f + out_f)

    def factorized(self, dense, rank, factors):
        return FactorizedLinear.from_dense(dense, rank, factors)


register(LinearChannel())
