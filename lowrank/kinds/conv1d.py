"""``nn.Conv1d`` with ``groups == 1``, ``channel`` scheme: (C_out, C_in, k) -> C_out x (C_in*k).
Rebuilt as a k-wide conv C_in -> r (the original stride, padding, dilation), then a 1-wide
conv r -> C_out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LayerScheme, absorb_channel_affine, pad_mode, register, split_factors


class FactorizedConv1d(nn.Module):
    """Conv1d C_in -> r (kernel k) then Conv1d r -> C_out (kernel 1). At rank 0 the layer
    outputs its bias at the original output length."""

    def __init__(self, dense: nn.Conv1d, rank: int):
        super().__init__()
        if dense.groups != 1:
            raise ValueError("only convolutions with groups=1 can be factorised")
        self.rank, self.scheme = rank, "channel"
        self.out_channels = dense.out_channels
        self._geometry = (dense.kernel_size[0], dense.stride[0], dense.padding, dense.dilation[0])
        if rank > 0:
            self.first = nn.Conv1d(dense.in_channels, rank, dense.kernel_size, dense.stride, dense.padding, dense.dilation,
                                   bias=False, padding_mode=dense.padding_mode)
            self.second = nn.Conv1d(rank, dense.out_channels, 1, bias=dense.bias is not None)
        else:
            self.first = self.second = None
            self.bias = nn.Parameter(torch.empty(dense.out_channels)) if dense.bias is not None else None

    @classmethod
    def from_dense(cls, dense: nn.Conv1d, rank: int, factors) -> "FactorizedConv1d":
        """``factors`` = (U, s, Vh) of the C_out x (C_in*k) matrix."""
        w = dense.weight
        layer = cls(dense, rank).to(w.device, w.dtype)
        with torch.no_grad():
            if rank > 0:
                a, b = split_factors(*factors, rank)  # a: r x (C_in*k), b: C_out x r
                layer.first.weight.copy_(a.reshape(rank, dense.in_channels, -1))
                layer.second.weight.copy_(b[:, :, None])
                if dense.bias is not None:
                    layer.second.bias.copy_(dense.bias)
            elif dense.bias is not None:
                layer.bias.copy_(dense.bias)
        return layer

    def _output_length(self, x: torch.Tensor) -> int:
        k, stride, pad, dilation = self._geometry
        if pad == "same":
            return x.shape[-1]
        p = 0 if pad == "valid" else pad[0]
        return (x.shape[-1] + 2 * p - dilation * (k - 1) - 1) // stride + 1

    def absorb_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a following per-channel affine map (a BatchNorm in eval mode) into this layer."""
        absorb_channel_affine(self, scale, shift)

    def forward(self, x):
        if self.rank > 0:
            return self.second(self.first(x))
        size = (*x.shape[:-2], self.out_channels, self._output_length(x))
        if self.bias is None:
            return x.new_zeros(size)
        return self.bias[:, None].to(x.dtype).expand(size).contiguous()  # one pass: zeros plus the bias took three


class Conv1dChannel(LayerScheme):
    module_type, kind, name, condition = nn.Conv1d, "conv1d", "channel", "groups=1"

    def accepts(self, module):
        return isinstance(module, nn.Conv1d) and module.groups == 1

    def matrix(self, weight):
        return weight.reshape(weight.shape[0], -1)

    def weight(self, matrix, shape):
        return matrix.reshape(*shape)

    def matrix_shape(self, weight_shape):
        c_out, c_in, k = weight_shape
        return (c_out, c_in * k)

    def input_vectors(self, module, x):
        # the conv's own padding (any mode), then every k-wide window: (batch * length, C_in * k)
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=pad_mode(module))
        k, stride, dilation = module.kernel_size[0], module.stride[0], module.dilation[0]
        cols = F.unfold(x[:, :, None, :], (1, k), dilation=(1, dilation), stride=(1, stride))
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def macs_per_rank(self, module, calls):
        # the k-wide conv C_in -> r and the 1-wide conv r -> C_out, both at the output length
        c_out, c_in, k = module.weight.shape
        positions = sum(numel // c_out for _, _, numel in calls)  # batch x output length, over all calls
        return positions * (c_in * k + c_out)

    def factorized(self, dense, rank, factors):
        return FactorizedConv1d.from_dense(dense, rank, factors)


register(Conv1dChannel())
