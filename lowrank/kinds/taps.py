"""A factorised conv run as matrix products and shifted sums instead of two narrow convs.

Why: on the CPU a conv with few output channels costs about what a conv as wide as the
vector unit does (oneDNN pads the output channels), so a factor C_in -> r at rank 1 or 2 ran
about as slowly as the dense layer it replaced (reports/live_ceiling.md). Here the input is
multiplied once by every tap's weights (one matrix product, its output tap by tap in one
flat buffer), and each tap's slice is added at its offset in the flattened (N, H, W) grid;
positions a tap must not reach across a row or an image edge are zeroed first, in that tap's
own slice. The second factor is a second matrix product whose output is channels-last. The
sum is exact (same value as the convs up to rounding); it moves ``taps * r`` values per
position, so it is faster only at low ranks, which is why a layer times both forms and keeps
the faster (:class:`~lowrank.kinds.conv2d.FactorizedConv2d`).

Handles 'same' zero padding (an odd kernel, padding = dilation * (k - 1) / 2) at any stride
and dilation: the first factor any kh x kw, the second 1 x 1 or 1 x kw (the two schemes).
"""
from __future__ import annotations

import torch
from torch import nn


def _same(conv: nn.Conv2d) -> bool:
    if conv.padding_mode != "zeros" or conv.groups != 1 or isinstance(conv.padding, str):
        return False
    return all(k % 2 == 1 and p == d * (k - 1) // 2 for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))


def fits(first: nn.Conv2d, second: nn.Conv2d) -> bool:
    """Whether this pair of factor convs can run in the tap form."""
    return _same(first) and _same(second) and second.kernel_size[0] == 1 and second.stride[0] == 1


def _zero_unreachable(y: torch.Tensor, offsets_h, offsets_w) -> None:
    """In each tap's slice of ``y`` (kh, kw, r, n, h, w), zero the rows and columns no output of
    that tap reads: a flat shift would carry them across a row or an image edge."""
    h, w = y.shape[-2:]
    for i, oh in enumerate(offsets_h):
        if oh > 0:
            y[i, :, :, :, :oh].zero_()
        elif oh < 0:
            y[i, :, :, :, h + oh:].zero_()
    for j, ow in enumerate(offsets_w):
        if ow > 0:
            y[:, j, :, :, :, :ow].zero_()
        elif ow < 0:
            y[:, j, :, :, :, w + ow:].zero_()


def same_taps(x: torch.Tensor, weight: torch.Tensor, dilation=(1, 1)) -> torch.Tensor:
    """The 'same'-padded, stride-1 correlation of ``x`` (N, C, H, W) with ``weight``
    (r, C, kh, kw), as (r, N, H, W)."""
    n, c, h, w = x.shape
    r, _, kh, kw = weight.shape
    offsets_h = [i * dilation[0] - dilation[0] * (kh - 1) // 2 for i in range(kh)]
    offsets_w = [j * dilation[1] - dilation[1] * (kw - 1) // 2 for j in range(kw)]
    size = r * n * h * w  # one tap's slice
    margin = max(abs(oh * w + ow) for oh in offsets_h for ow in offsets_w)
    buf = x.new_empty(kh * kw * size + 2 * margin)
    buf[:margin].zero_()
    buf[buf.numel() - margin:].zero_()
    y = buf[margin:margin + kh * kw * size]
    positions = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when x is channels-last
    torch.mm(weight.permute(2, 3, 0, 1).reshape(kh * kw * r, c), positions.t(), out=y.view(kh * kw * r, n * h * w))
    _zero_unreachable(y.view(kh, kw, r, n, h, w), offsets_h, offsets_w)
    z = None
    for i, oh in enumerate(offsets_h):
        for j, ow in enumerate(offsets_w):
            start = margin + (i * kw + j) * size + oh * w + ow
            part = buf[start:start + size]
            z = part.clone() if z is None else z.add_(part)
    return z.view(r, n, h, w)


def _shifted_along_w(z: torch.Tensor, kw: int, dilation: int) -> torch.Tensor:
    """(kw, r, N, H, W): ``z`` (r, N, H, W) shifted along W by each tap's offset, zero outside."""
    r, n, h, w = z.shape
    offsets = [j * dilation - dilation * (kw - 1) // 2 for j in range(kw)]
    margin = max(abs(o) for o in offsets)
    buf = z.new_zeros(z.numel() + 2 * margin)
    buf[margin:margin + z.numel()].copy_(z.reshape(-1))
    out = torch.stack([buf[margin + o:margin + o + z.numel()] for o in offsets]).view(kw, r, n, h, w)
    for j, o in enumerate(offsets):  # what crossed a row edge
        if o > 0:
            out[j, ..., w - o:].zero_()
        elif o < 0:
            out[j, ..., :-o].zero_()
    return out


def forward(first: nn.Conv2d, second: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``second(first(x))`` for a channels-last ``x`` (N, C, H, W); the output is channels-last."""
    z = same_taps(x, first.weight, first.dilation)
    sh, sw = first.stride
    if sh != 1 or sw != 1:
        z = z[:, :, ::sh, ::sw]
    r = z.shape[0]
    c_out, _, _, kw = second.weight.shape
    if kw > 1:
        z = _shifted_along_w(z.contiguous(), kw, second.dilation[1])  # (kw, r, N, H, W)
        weight = second.weight.permute(3, 1, 0, 2).reshape(kw * r, c_out)
    else:
        weight = second.weight.reshape(c_out, r).t()
    if second.stride[1] != 1:
        z = z[..., ::second.stride[1]]
    n, h, w = z.shape[-3:]
    columns = z.reshape(-1, n * h * w).t()  # (positions, taps * r)
    out = columns @ weight if second.bias is None else torch.addmm(second.bias, columns, weight)
    return out.view(n, h, w, c_out).permute(0, 3, 1, 2)
