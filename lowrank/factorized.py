"""Two thin layers in place of one dense layer. A layer does not know how its rank was chosen."""
from __future__ import annotations

import warnings

import torch
from torch import nn



def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int):
    """First factor sqrt(S) Vh, second U sqrt(S): balanced scales help later fine-tuning."""
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :]


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
        w = dense.weight
        layer = cls(dense.in_features, dense.out_features, rank, bias=dense.bias is not None).to(w.device, w.dtype)
        a, b = _split(*factors, rank)
        with torch.no_grad():
            layer.first.weight.copy_(a)
            layer.second.weight.copy_(b)
            if dense.bias is not None:
                layer.second.bias.copy_(dense.bias)
        return layer

    def forward(self, x):
        return self.second(self.first(x))


class FactorizedConv2d(nn.Module):
    """A conv C_in -> r then a conv r -> C_out, split by ``scheme`` (see lowrank.decompose).

    ``channel``: kh x kw conv (original stride, padding, dilation) then a 1x1 conv.
    ``spatial``: kh x 1 conv (stride, padding, dilation along H) then 1 x kw conv (along W).
    At rank 0 the layer outputs its bias at the original output size.
    """

    def __init__(self, dense: nn.Conv2d, rank: int, scheme: str):
        super().__init__()
        if dense.groups != 1:
            raise ValueError("only convolutions with groups=1 can be factorised")
        self.rank, self.scheme = rank, scheme
        self.out_channels = dense.out_channels
        self._geometry = (dense.kernel_size, dense.stride, dense.padding, dense.dilation, dense.padding_mode)
        kh, kw = dense.kernel_size
        sh, sw = dense.stride
        dh, dw = dense.dilation
        pad = dense.padding
        mode = dict(padding_mode=dense.padding_mode)
        if scheme == "channel":
            first = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=pad, dilation=(dh, dw))
            second = dict(kernel_size=1)
        elif scheme == "spatial":
            ph, pw = (pad, pad) if isinstance(pad, str) else pad
            first = dict(kernel_size=(kh, 1), stride=(sh, 1), padding=ph if isinstance(ph, str) else (ph, 0), dilation=(dh, 1))
            second = dict(kernel_size=(1, kw), stride=(1, sw), padding=pw if isinstance(pw, str) else (0, pw), dilation=(1, dw))
        else:
            raise ValueError(f"unknown scheme {scheme!r}")
        if rank > 0:
            self.first = nn.Conv2d(dense.in_channels, rank, **first, **mode, bias=False)
            self.second = nn.Conv2d(rank, dense.out_channels, **second, **mode, bias=dense.bias is not None)
        else:
            self.first = self.second = None
            self.bias = nn.Parameter(torch.empty(dense.out_channels)) if dense.bias is not None else None

    @classmethod
    def from_dense(cls, dense: nn.Conv2d, rank: int, scheme: str, factors) -> "FactorizedConv2d":
        w = dense.weight
        layer = cls(dense, rank, scheme).to(w.device, w.dtype)
        with torch.no_grad():
            if rank > 0:
                a, b = _split(*factors, rank)  # a: r x cols, b: rows x r
                c_out, c_in, kh, kw = w.shape
                if scheme == "channel":
                    layer.first.weight.copy_(a.reshape(rank, c_in, kh, kw))
                    layer.second.weight.copy_(b.reshape(c_out, rank, 1, 1))
                else:  # rows are (c_in, kh), cols are (c_out, kw)
                    layer.first.weight.copy_(b.T.reshape(rank, c_in, kh, 1))
                    layer.second.weight.copy_(a.reshape(rank, c_out, kw).permute(1, 0, 2).reshape(c_out, rank, 1, kw))
                if dense.bias is not None:
                    layer.second.bias.copy_(dense.bias)
            elif dense.bias is not None:
                layer.bias.copy_(dense.bias)
        return layer

    def _output_size(self, x: torch.Tensor) -> tuple[int, int]:
        (kh, kw), (sh, sw), pad, (dh, dw), _ = self._geometry
        if pad == "same":
            return x.shape[-2], x.shape[-1]
        ph, pw = (0, 0) if pad == "valid" else pad
        return (
            (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1,
        )

    def forward(self, x):
        if self.rank > 0:
            return self.second(self.first(x))
        h, w = self._output_size(x)
        out = x.new_zeros(*x.shape[:-3], self.out_channels, h, w)
        return out + self.bias[:, None, None] if self.bias is not None else out
