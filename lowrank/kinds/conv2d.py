"""``nn.Conv2d`` with ``groups == 1`` under two schemes (how the kernel becomes a matrix, and
the geometry of the two convs it is rebuilt as):

- ``channel``: (C_out, C_in, kh, kw) -> C_out x (C_in*kh*kw). Rebuilt as a kh x kw conv
  C_in -> r (the original stride, padding, dilation), then a 1x1 conv r -> C_out.
- ``spatial``: (C_out, C_in, kh, kw) -> (C_in*kh) x (C_out*kw). Rebuilt as a kh x 1 conv
  C_in -> r (stride, padding, dilation along H), then a 1 x kw conv r -> C_out (along W).
- ``input``: (C_out, C_in, kh, kw) -> C_in x (C_out*kh*kw), the input side first. Rebuilt as
  a 1x1 conv C_in -> r, then a kh x kw conv r -> C_out (the original stride, padding,
  dilation). On the CPU a conv's time falls with its input width but hardly with its output
  width, so this order is the one whose time falls with the rank on narrow layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LayerScheme, absorb_channel_affine, pad_mode, register, schemes_for, split_factors


class FactorizedConv2d(nn.Module):
    """A conv C_in -> r then a conv r -> C_out, shaped by a scheme: the scheme hands over
    both convs' geometry and how the factors fill their weights (see ``factor_convs`` and
    ``factor_weights`` of :class:`Conv2dChannel` and :class:`Conv2dSpatial`). At rank 0 the
    layer outputs its bias at the original output size.
    """

    pointwise = False  # (the class default: layers saved before schemes handed over their geometry)

    def __init__(self, dense: nn.Conv2d, rank: int, scheme: "str | _Conv2dScheme"):
        super().__init__()
        if dense.groups != 1:
            raise ValueError("only convolutions with groups=1 can be factorised")
        scheme = _scheme(dense, scheme)
        self.rank, self.scheme = rank, scheme.name
        self.pointwise = scheme.pointwise_second  # the second factor is a 1x1 conv
        self.out_channels = dense.out_channels
        self._geometry = (dense.kernel_size, dense.stride, dense.padding, dense.dilation, dense.padding_mode)
        first, second = scheme.factor_convs(dense)
        mode = dict(padding_mode=dense.padding_mode)
        if rank > 0:
            self.first = nn.Conv2d(dense.in_channels, rank, **first, **mode, bias=False)
            self.second = nn.Conv2d(rank, dense.out_channels, **second, **mode, bias=dense.bias is not None)
        else:
            self.first = self.second = None
            self.bias = nn.Parameter(torch.empty(dense.out_channels)) if dense.bias is not None else None

    @classmethod
    def from_dense(cls, dense: nn.Conv2d, rank: int, scheme: "str | _Conv2dScheme", factors) -> "FactorizedConv2d":
        """``factors`` = (U, s, Vh) of the scheme's matrix of the dense kernel."""
        scheme = _scheme(dense, scheme)
        w = dense.weight
        layer = cls(dense, rank, scheme).to(w.device, w.dtype)
        with torch.no_grad():
            if rank > 0:
                a, b = split_factors(*factors, rank)  # a: r x cols, b: rows x r
                first, second = scheme.factor_weights(a, b, tuple(w.shape))
                layer.first.weight.copy_(first)
                layer.second.weight.copy_(second)
                if dense.bias is not None:
                    layer.second.bias.copy_(dense.bias)
            elif dense.bias is not None:
                layer.bias.copy_(dense.bias)
        return layer

    def _pointwise(self, h: torch.Tensor) -> torch.Tensor:
        """A 1x1 second factor (the channel scheme's) as one batched matrix product over the positions.

        The same sum as ``self.second(h)`` (the weights stay in that conv), but faster on the
        CPU for the narrow channel counts a low rank makes: rebuilt zoo CNNs ran 0.99-1.15x
        the speed of the all-conv form (reports/speed/pointwise.md). Channels-last inputs keep the
        conv, which suits that layout, but for rank 1 (see :meth:`_pointwise_channels_last`).
        """
        n, r, height, width = h.shape
        weight = self.second.weight.reshape(self.out_channels, r).expand(n, -1, -1)
        flat = h.reshape(n, r, height * width)
        bias = self.second.bias
        out = torch.bmm(weight, flat) if bias is None else torch.baddbmm(bias[None, :, None], weight, flat)
        return out.reshape(n, self.out_channels, height, width)

    def _pointwise_channels_last(self, h: torch.Tensor) -> torch.Tensor:
        """A 1x1 second factor on one channels-last channel, as one matrix product whose output is
        channels-last. A one-channel tensor reads as contiguous too, so the conv (and the batched
        product) returned NCHW, and every layer after it ran NCHW: vgg-fmnist's plan with a rank
        of 1 in every layer measured 0.73 of the original where its layers predicted 0.53; the
        conv itself ran 9x slower there than at rank 2 (10.9 ms against 0.73 ms, 64 channels at
        28x28, batch 64)."""
        n, r, height, width = h.shape
        flat = h.permute(0, 2, 3, 1).reshape(n * height * width, r)  # a view: channels-last is (N, H, W, C) in memory
        weight = self.second.weight.reshape(self.out_channels, r).t()
        bias = self.second.bias
        out = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
        return out.view(n, height, width, self.out_channels).permute(0, 3, 1, 2)

    def _output_size(self, x: torch.Tensor) -> tuple[int, int]:
        (kh, kw), (sh, sw), pad, (dh, dw), _ = self._geometry
        if pad == "same":
            return x.shape[-2], x.shape[-1]
        ph, pw = (0, 0) if pad == "valid" else pad
        return (
            (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1,
        )

    @staticmethod
    def _is_channels_last(x: torch.Tensor) -> bool:
        """Whether a 4-d tensor is laid out channels-last, by its strides: with one channel it is
        contiguous in both layouts, and only the channel stride tells them apart."""
        return x.dim() == 4 and x.stride(1) == 1 and x.shape[-2] * x.shape[-1] > 1

    def _in_layout_of(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` channels-last where ``x`` was, or where this layer was laid out so. A tensor
        of one channel reads as contiguous in both layouts, and so does a rank-1 factor's
        weight: a conv between them returns NCHW, and every layer after it runs NCHW. The
        zoo's Fashion-MNIST models take one channel, so a rebuilt network of rank-1 input-scheme
        layers ran NCHW throughout while its layers were timed channels-last (resnet20-fmnist:
        predicted at 0.48 of the original, measured 0.68). One copy of the output keeps the
        layout the layer was put in."""
        if out.dim() == 4 and not self._is_channels_last(out) and (self._is_channels_last(x) or self._laid_out_channels_last()):
            return out.contiguous(memory_format=torch.channels_last)
        return out

    def _laid_out_channels_last(self) -> bool:
        """Whether ``.to(memory_format=torch.channels_last)`` put the factors' weights so: a
        kernel of more than one tap has a channel stride of 1 in that layout only (even with one
        channel, for which ``Module.to`` restrides the weight all the same)."""
        return any(w.dim() == 4 and w.shape[-2] * w.shape[-1] > 1 and w.stride(1) == 1
                   for w in (self.first.weight, self.second.weight))

    def absorb_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a following per-channel affine map (a BatchNorm in eval mode) into this layer."""
        absorb_channel_affine(self, scale, shift)

    def forward(self, x):
        if self.rank > 0:
            h = self.first(x)
            if self.pointwise and h.dim() == 4:
                if self._is_channels_last(h):
                    if h.shape[1] == 1:
                        return self._pointwise_channels_last(h)
                elif h.is_contiguous():
                    return self._pointwise(h)
            return self._in_layout_of(x, self.second(h))
        h, w = self._output_size(x)
        size = (*x.shape[:-3], self.out_channels, h, w)
        layout = torch.channels_last if self._is_channels_last(x) else torch.contiguous_format  # the input's, as a conv keeps it
        if self.bias is None:
            return torch.zeros(size, dtype=x.dtype, device=x.device).contiguous(memory_format=layout)
        # one pass (zeros plus the bias took three), in the input's layout
        return self.bias[:, None, None].to(x.dtype).expand(size).contiguous(memory_format=layout)


WINDOW_BATCH = 16  # samples whose windows are unfolded at once while collecting input moments


def _scheme(dense: nn.Conv2d, scheme) -> "_Conv2dScheme":
    """A scheme object from itself or its name."""
    if isinstance(scheme, str):
        found = schemes_for(dense)
        if scheme not in found:
            raise ValueError(f"unknown scheme {scheme!r} for nn.Conv2d; choose one of {', '.join(found)}")
        return found[scheme]
    return scheme


class _Conv2dScheme(LayerScheme):
    module_type, kind, condition = nn.Conv2d, "conv2d", "groups=1"
    pointwise_second = False  # whether the second factor is a 1x1 conv

    def factor_convs(self, dense: nn.Conv2d) -> tuple[dict, dict]:
        """Keyword arguments of the first (C_in -> r) and second (r -> C_out) conv."""
        raise NotImplementedError

    def factor_weights(self, a: torch.Tensor, b: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """The two convs' weights from ``a`` (r x cols) and ``b`` (rows x r) of the matrix."""
        raise NotImplementedError

    def accepts(self, module):
        return isinstance(module, nn.Conv2d) and module.groups == 1

    def factorized(self, dense, rank, factors):
        return FactorizedConv2d.from_dense(dense, rank, self, factors)

    def input_moment(self, module, x, project=None):
        """Summed over slices of the batch: a conv's unfolded windows are up to kh*kw times its
        input, so unfolding a whole calibration batch at once would multiply the peak memory."""
        if x.dim() != 4:  # unbatched: one sample
            return super().input_moment(module, x, project)
        total, n, trace = 0, 0, 0.0
        for part in x.split(WINDOW_BATCH):
            moment, count, squares = super().input_moment(module, part, project)
            total, n, trace = total + moment, n + count, trace + squares
        return total, n, trace

    @staticmethod
    def _windows(module, x, kernel, stride, dilation, along_h_only=False) -> torch.Tensor:
        """Every window the first factor sees, after the conv's own padding (any mode; only the
        H padding when the first factor is a kh x 1 conv): (positions, C_in * window size)."""
        pad = list(module._reversed_padding_repeated_twice)  # (left, right, top, bottom)
        if along_h_only:
            pad[0] = pad[1] = 0
        x = F.pad(x, pad, mode=pad_mode(module))
        cols = F.unfold(x, kernel, dilation=dilation, stride=stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    @staticmethod
    def _output_positions(out_shape) -> tuple[int, int, int]:
        n, _, h_out, w_out = out_shape if len(out_shape) == 4 else (1, *out_shape)
        return n, h_out, w_out


class Conv2dChannel(_Conv2dScheme):
    name = "channel"
    pointwise_second = True

    def factor_convs(self, dense):
        # a kh x kw conv with the original stride, padding and dilation, then a 1x1 conv
        first = dict(kernel_size=dense.kernel_size, stride=dense.stride, padding=dense.padding, dilation=dense.dilation)
        return first, dict(kernel_size=1)

    def factor_weights(self, a, b, shape):
        c_out, c_in, kh, kw = shape
        rank = a.shape[0]
        return a.reshape(rank, c_in, kh, kw), b.reshape(c_out, rank, 1, 1)

    def matrix(self, weight):
        return weight.reshape(weight.shape[0], -1)

    def weight(self, matrix, shape):
        return matrix.reshape(*shape)

    def matrix_shape(self, weight_shape):
        c_out, c_in, kh, kw = weight_shape
        return (c_out, c_in * kh * kw)

    def input_vectors(self, module, x):
        return self._windows(module, x, module.kernel_size, module.stride, module.dilation)

    def macs_per_rank(self, module, calls):
        # a kh x kw conv C_in -> r at the output size, then a 1x1 conv r -> C_out
        c_out, c_in, kh, kw = module.weight.shape
        total = 0
        for _, out_shape, _ in calls:
            n, h_out, w_out = self._output_positions(out_shape)
            total += n * h_out * w_out * (c_in * kh * kw + c_out)
        return total


class Conv2dSpatial(_Conv2dScheme):
    name = "spatial"
    input_side = "rows"  # rows are (C_in, kh): the kh x 1 first factor

    def factor_convs(self, dense):
        # a kh x 1 conv (stride, padding, dilation along H), then a 1 x kw conv (along W)
        (kh, kw), (sh, sw), (dh, dw), pad = dense.kernel_size, dense.stride, dense.dilation, dense.padding
        ph, pw = (pad, pad) if isinstance(pad, str) else pad
        first = dict(kernel_size=(kh, 1), stride=(sh, 1), padding=ph if isinstance(ph, str) else (ph, 0), dilation=(dh, 1))
        second = dict(kernel_size=(1, kw), stride=(1, sw), padding=pw if isinstance(pw, str) else (0, pw), dilation=(1, dw))
        return first, second

    def factor_weights(self, a, b, shape):
        # rows are (c_in, kh), cols are (c_out, kw)
        c_out, c_in, kh, kw = shape
        rank = a.shape[0]
        return b.T.reshape(rank, c_in, kh, 1), a.reshape(rank, c_out, kw).permute(1, 0, 2).reshape(c_out, rank, 1, kw)

    def input_vectors(self, module, x):
        # the first factor is a kh x 1 conv: windows along H only, at every input column
        (kh, _), (sh, _), (dh, _) = module.kernel_size, module.stride, module.dilation
        return self._windows(module, x, (kh, 1), (sh, 1), (dh, 1), along_h_only=True)

    def matrix(self, weight):
        c_out, c_in, kh, kw = weight.shape
        return weight.permute(1, 2, 0, 3).reshape(c_in * kh, c_out * kw)

    def weight(self, matrix, shape):
        c_out, c_in, kh, kw = shape
        return matrix.reshape(c_in, kh, c_out, kw).permute(2, 0, 1, 3)

    def matrix_shape(self, weight_shape):
        c_out, c_in, kh, kw = weight_shape
        return (c_in * kh, c_out * kw)

    def macs_per_rank(self, module, calls):
        # a kh x 1 conv C_in -> r (output H_out x W_in: it pads, strides and dilates only
        # along H), then a 1 x kw conv r -> C_out
        c_out, c_in, kh, kw = module.weight.shape
        total = 0
        for in_shape, out_shape, _ in calls:
            n, h_out, w_out = self._output_positions(out_shape)
            total += n * h_out * in_shape[-1] * c_in * kh + n * h_out * w_out * c_out * kw
        return total


class Conv2dInput(_Conv2dScheme):
    name = "input"
    input_side = "rows"  # rows are C_in: the 1x1 first factor sees each input pixel

    def factor_convs(self, dense):
        # a 1x1 conv at the input's resolution, then a kh x kw conv with the original geometry. Padding the 1x1
        # conv's output (any mode) equals the 1x1 conv of the padded input: it is pointwise and has no bias.
        second = dict(kernel_size=dense.kernel_size, stride=dense.stride, padding=dense.padding, dilation=dense.dilation)
        return dict(kernel_size=1), second

    def factor_weights(self, a, b, shape):
        # rows are c_in, cols are (c_out, kh, kw)
        c_out, c_in, kh, kw = shape
        rank = a.shape[0]
        return b.T.reshape(rank, c_in, 1, 1), a.reshape(rank, c_out, kh, kw).transpose(0, 1)

    def input_vectors(self, module, x):
        return (x if x.dim() == 4 else x[None]).transpose(1, -1).reshape(-1, x.shape[-3])  # (pixels, C_in)

    def matrix(self, weight):
        c_out, c_in, kh, kw = weight.shape
        return weight.transpose(0, 1).reshape(c_in, c_out * kh * kw)

    def weight(self, matrix, shape):
        c_out, c_in, kh, kw = shape
        return matrix.reshape(c_in, c_out, kh, kw).transpose(0, 1)

    def matrix_shape(self, weight_shape):
        c_out, c_in, kh, kw = weight_shape
        return (c_in, c_out * kh * kw)

    def macs_per_rank(self, module, calls):
        # a 1x1 conv C_in -> r at every input position, then a kh x kw conv r -> C_out at the output size
        c_out, c_in, kh, kw = module.weight.shape
        total = 0
        for in_shape, out_shape, _ in calls:
            n, h_out, w_out = self._output_positions(out_shape)
            total += n * in_shape[-2] * in_shape[-1] * c_in + n * h_out * w_out * c_out * kh * kw
        return total


register(Conv2dChannel())
register(Conv2dSpatial())
register(Conv2dInput())
