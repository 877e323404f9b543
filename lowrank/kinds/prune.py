"""``prune``: keep k of a conv's input channels, a rank-k choice whose factor is a selection.

The conv's kernel is read as the ``input`` scheme reads it, C_in x (C_out*kh*kw), but its basis
is not the SVD: keeping the first k values keeps k input channels. In the weight basis the
values are the channels' rows, largest norm first (U's columns are unit vectors). In the
data-aware basis (:meth:`Conv2dPrune.from_moment`) the channels are ordered greedily by the
output error their loss would cost, and the kept ones are refit by least squares to stand in
for the dropped ones, the dropped channels' mean going to the bias. Either way a prune plan is
a 0/1 mask like any other, priced linearly and chosen by the same solvers (COBLA's network
loss included). A kept channel costs C_out*kh*kw weights and MACs at every output position;
its time is read on the plain conv k -> C_out.

The layer rebuilds as a :class:`PrunedConv2d` (the selection, then the conv k -> C_out: equal
to the masked model), and :mod:`lowrank.factorise.pruning` then removes the selection by
dropping the same channels from the layer that makes them (and the BatchNorm between): the
pruned network is physically smaller. A layer gets this scheme only where that is possible
(:mod:`lowrank.layers.channels` finds which, with torch-pruning's DependencyGraph); the
savings in the producing layer are not priced (the safe side of every budget) but counted on
the plan (:mod:`lowrank.planning.pruned`).
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

    def fixed_params(self, module) -> int:
        return module.weight.shape[0]  # the pruned conv always has a bias: it takes the dropped channels' means

    def input_moment(self, module, x, project=None):
        """The sums over input pixels of [v, 1][v, 1]^T: each channel's mean (last column) and
        mean square (diagonal), which is all a selection needs."""
        v = self.input_vectors(module, x).double()
        augmented = torch.cat([v, torch.ones(v.shape[0], 1, dtype=v.dtype, device=v.device)], dim=1)
        return augmented.T @ augmented, v.shape[0], float((v * v).sum())

    def from_moment(self, weight: torch.Tensor, moment: torch.Tensor, count: int, ridge: float):
        """(U, s, Vh, shift) from :meth:`input_moment`'s sums, such that keeping the first k
        values keeps k channels and refits the conv to them by least squares on the data.

        With x the input pixel's channels and a constant 1 beside them, the channels are
        ordered greedily, each next one the channel that most reduces the error of the conv's
        output when the dropped channels are predicted (linearly, with an intercept) from the
        kept ones. Cholesky whitening in that order, z = L^-1 P^T [x, 1], makes z_i depend on the
        first i channels only, so U = P L^-T is triangular in that order: the first k values
        touch k channels, and dropping the rest is the least-squares refit (the intercept
        alone, at k = 0, is mean compensation). ``shift`` (values x C_out): what dropping a
        value adds to the conv's bias (its intercept part)."""
        m = self.matrix(weight.detach()).to(torch.float64)  # C_in x (C_out*kh*kw)
        c_in = m.shape[0]
        sigma = moment.to(torch.float64) / max(count, 1)
        spread = float(torch.diagonal(sigma)[:c_in].mean())
        sigma = sigma + torch.diag(torch.cat([torch.full((c_in,), ridge * max(spread, 1e-30)), sigma.new_zeros(1)]))
        order = [c_in] + _greedy_order(sigma, m)  # the constant first: it is always there
        p_sigma = sigma[order][:, order]
        lower = torch.linalg.cholesky(p_sigma)
        u_all = torch.eye(c_in + 1, dtype=m.dtype)[:, order] @ torch.linalg.solve_triangular(lower.T, torch.eye(c_in + 1, dtype=m.dtype), upper=True)
        u_all = torch.where(u_all.abs() > 0, u_all, torch.zeros_like(u_all))
        vh_all = lower.T @ torch.cat([m, m.new_zeros(1, m.shape[1])])[order]
        u, vh = u_all[:c_in, 1:], vh_all[1:]  # value 0 is the constant, kept at every rank
        for j in range(c_in):  # exactly zero off the triangle (channel order[i] enters at value i)
            u[order[j + 1], :j] = 0.0
        c_out = weight.shape[0]
        shift = -(u_all[c_in, 1:, None] * vh.reshape(c_in, c_out, -1).sum(-1))  # dropping value i: its intercept part goes
        s = vh.norm(dim=1)
        s = torch.cummin(s, dim=0).values  # descending (the greedy gains nearly are): any positive scale keeps U s Vh
        vh = vh * torch.where(s > 0, 1.0 / s, torch.zeros_like(s))[:, None]
        return u, s, vh, shift

    def selection(self, weight: torch.Tensor):
        """(U, s, Vh) with U diag(s) Vh = the matrix, U's columns unit vectors e_c in order of
        s_c = |row c|: the weight basis, which has no data to refit with."""
        m = self.matrix(weight.detach()).to(torch.float64)
        s, order = m.norm(dim=1).sort(descending=True, stable=True)
        u = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)[:, order]
        scale = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
        return u, s, m[order] * scale[:, None]  # a zero value is a zero row: nothing lost

    def factorized(self, dense, rank, factors):
        if rank == 0:  # its bias at the output size: the dense bias and every value's intercept part
            layer = FactorizedConv2d.from_dense(dense, 0, "input", None)
            bias = torch.zeros(dense.out_channels, dtype=dense.weight.dtype, device=dense.weight.device)
            if dense.bias is not None:
                bias += dense.bias.detach()
            if factors is not None and len(factors) > 3:  # the shift (activation basis)
                bias += factors[3].sum(dim=0).to(bias.dtype)
            layer.bias = nn.Parameter(bias)
            return layer
        u, s, vh, *shift = factors  # shift: what the dropped values leave in the bias (activation basis)
        # the channels the first values touch: exactly ``rank`` of them in a selection basis (any factors, e.g. a
        # meter's random ones, get the ``rank`` channels they weigh most)
        index = u[:, :rank].abs().sum(dim=1).topk(rank).indices.sort().values
        rows = ((u[index, :rank] * s[:rank]) @ vh[:rank]).to(dense.weight.dtype)  # their rows of the masked matrix
        c_out, _, kh, kw = dense.weight.shape
        conv = self._conv(dense, rank)
        with torch.no_grad():
            conv.weight.copy_(self.weight(rows, (c_out, rank, kh, kw)))
            conv.bias.zero_()
            if dense.bias is not None:
                conv.bias.add_(dense.bias)
            if shift:
                conv.bias.add_(shift[0][rank:].sum(dim=0).to(conv.bias.dtype))
        return PrunedConv2d(conv, index.to(dense.weight.device))

    def timed(self, dense, rank, inputs):
        """What a kept-channel count costs once pruned: the plain conv rank -> C_out on inputs of
        ``rank`` channels (the selection is folded into the producing layer)."""
        if rank == 0:
            return self.factorized(dense, 0, None), inputs
        narrow = [x[:, :rank].contiguous(memory_format=torch.channels_last if FactorizedConv2d._is_channels_last(x)
                                         else torch.contiguous_format) for x in inputs]
        return self._conv(dense, rank), narrow

    @staticmethod
    def _conv(dense: nn.Conv2d, in_channels: int) -> nn.Conv2d:
        w = dense.weight
        return nn.Conv2d(in_channels, dense.out_channels, dense.kernel_size, dense.stride, dense.padding, dense.dilation,
                         bias=True, padding_mode=dense.padding_mode).to(w.device, w.dtype)


register(Conv2dPrune())


def _greedy_order(sigma: torch.Tensor, m: torch.Tensor) -> list[int]:
    """Channels in the order a greedy least-squares selection keeps them. ``sigma``: the second
    moment of [x, 1] (the constant last); ``m``: C_in x N. After conditioning on the kept set
    (the constant at first), R is the residual covariance, and keeping channel c next reduces
    the output error by |M^T R[:, c]|^2 / R[c, c]; R and q = diag(R G R) (G = M M^T) are kept
    up to date by rank-1 steps, O(C_in^3) in all."""
    c_in = m.shape[0]
    const = sigma[:, c_in:]
    r = (sigma - const @ const.T / const[c_in, 0])[:c_in, :c_in]  # the channels' covariance
    g = m @ m.T
    q = torch.einsum("ij,jk,ki->i", r, g, r)
    left, order = torch.ones(c_in, dtype=torch.bool), []
    for _ in range(c_in):
        gain = torch.where(left & (torch.diagonal(r) > 0), q / torch.diagonal(r).clamp_min(1e-300), torch.full_like(q, -1.0))
        c = int(gain.argmax())
        order.append(c)
        left[c] = False
        col, d = r[:, c].clone(), float(r[c, c])
        if d <= 0:
            continue
        gcol = r @ (g @ col)
        q = q - 2 * gcol * col / d + float(col @ g @ col) * col ** 2 / d ** 2
        r = r - torch.outer(col, col) / d
    return order
