"""``prune``: keep k of a conv's input channels, a rank-k choice whose factor is a selection.

The conv's kernel is read as the ``input`` scheme reads it, C_in x (C_out*kh*kw), but its basis
is the identity, not the SVD: channel c is the c-th "singular value", with U = e_c, and its
value says what the channel carries (the norm of its row, times the channel's root mean square
on calibration data in the data-aware basis). Keeping the top k values keeps k channels, so a
prune plan is a 0/1 mask like any other, priced linearly and chosen by the same solvers
(COBLA's network loss included). A kept channel costs C_out*kh*kw weights and MACs at every
output position; its time is read on the plain conv k -> C_out.

The layer rebuilds as a :class:`PrunedConv2d` (the selection, then the conv k -> C_out: equal
to the masked model), and :mod:`lowrank.factorise.pruning` then removes the selection by
dropping the same channels from the layer that makes them (and the BatchNorm between): the
pruned network is physically smaller. A layer gets this scheme only where that is possible
(:mod:`lowrank.layers.channels` finds which, with torch-pruning's DependencyGraph); the
savings in the producing layer are real but not priced (the safe side of every budget).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import register
from .conv2d import Conv2dInput, FactorizedConv2d


class PrunedConv2d(nn.Module):
    """The conv on ``index`` (the kept input channels, in order) of its input. After the
    producing layer is pruned too (:func:`lowrank.factorise.pruning.fold_selections`), the
    plain ``conv`` replaces this module."""

    def __init__(self, conv: nn.Conv2d, index: torch.Tensor):
        super().__init__()
        self.conv = conv
        self.register_buffer("index", index.to(torch.long))

    def forward(self, x):
        return self.conv(x.index_select(-3, self.index))


class Conv2dPrune(Conv2dInput):
    name = "prune"
    selects = True  # the basis is a selection of input channels (see the module doc), not an SVD

    def full_rank(self, weight_shape) -> int:
        return weight_shape[1]  # one value per input channel

    def macs_per_rank(self, module, calls):
        # a kept input channel: kh*kw MACs for each output channel at every output position
        c_out, _, kh, kw = module.weight.shape
        return sum(n * h * w * c_out * kh * kw for n, h, w in (self._output_positions(out) for _, out, _ in calls))

    def params_per_rank(self, weight_shape):
        c_out, _, kh, kw = weight_shape
        return c_out * kh * kw

    def selection(self, weight: torch.Tensor, channel_power: torch.Tensor | None = None, ridge: float = 1e-2):
        """(U, s, Vh) with U diag(s) Vh = the matrix, U's columns unit vectors e_c in order of
        s_c = |row c| (times the root of ``channel_power``, the mean square of input channel c,
        plus ``ridge`` x its mean, as the whitened SVDs add: a channel dead on the calibration
        data ranks last but keeps a value, so the full rank is still the layer)."""
        m = self.matrix(weight.detach()).to(torch.float64)
        s = m.norm(dim=1)
        if channel_power is not None:
            power = channel_power.to(torch.float64).clamp_min(0.0)
            s = s * (power + ridge * max(float(power.mean()), 1e-30)).sqrt()
        s, order = s.sort(descending=True, stable=True)
        u = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)[:, order]
        scale = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
        return u, s, m[order] * scale[:, None]  # a zero value is a zero row: nothing lost

    def factorized(self, dense, rank, factors):
        if rank == 0:
            return FactorizedConv2d.from_dense(dense, 0, "input", None)  # its bias at the output size
        u, s, vh = factors
        index = u[:, :rank].argmax(dim=0)  # U's columns are unit vectors: the kept channels
        rows = (s[:rank, None] * vh[:rank]).to(dense.weight.dtype)  # = the matrix's rows of those channels
        c_out, _, kh, kw = dense.weight.shape
        conv = self._conv(dense, rank)
        with torch.no_grad():
            conv.weight.copy_(self.weight(rows, (c_out, rank, kh, kw)))
            if dense.bias is not None:
                conv.bias.copy_(dense.bias)
        return PrunedConv2d(conv, index.to(dense.weight.device))

    def timed(self, dense, rank, inputs):
        """What a kept-channel count costs once pruned: the plain conv rank -> C_out on inputs of
        ``rank`` channels (the selection is folded into the producing layer)."""
        if rank == 0:
            return self.factorized(dense, 0, None), inputs
        narrow = [x[:, :rank].contiguous(memory_format=torch.channels_last if x.stride(1) == 1 and x.shape[1] > 1
                                         else torch.contiguous_format) for x in inputs]
        return self._conv(dense, rank), narrow

    @staticmethod
    def _conv(dense: nn.Conv2d, in_channels: int) -> nn.Conv2d:
        w = dense.weight
        return nn.Conv2d(in_channels, dense.out_channels, dense.kernel_size, dense.stride, dense.padding, dense.dilation,
                         bias=dense.bias is not None, padding_mode=dense.padding_mode).to(w.device, w.dtype)


register(Conv2dPrune())
