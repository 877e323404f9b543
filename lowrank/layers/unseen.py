"""MACs that torch's ``FlopCounterMode`` does not see, by formula, and the operations whose cost
nobody here can know.

The counter prices an op by a formula registered for it. Recurrent layers run as fused
kernels (``aten.lstm``, ``aten.gru``, ...), and ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` take a fused fast path in eval mode: none has a formula, so
their work is invisible and a MAC budget would be a share of a fraction of the model. These
modules are priced here from their call's shapes (matrix products only, as everywhere in
lowrank: gate nonlinearities, softmax and elementwise products are not MACs), and
:class:`UnseenCounter` puts that in place of whatever the counter saw inside them.

An op outside these modules that looks like real arithmetic (a convolution, a matrix
product, a recurrent or attention kernel) and has no formula is *unknown*: it is reported by
name and module, so a budget never silently leaves it out.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# Op names that do multiply-accumulate work worth counting (lookups and elementwise ops do not).
HEAVY_OPS = re.compile(r"lstm|gru|rnn|attention|transformer|conv|mm|matmul|linear|einsum|fbgemm|mkldnn")

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


def _tokens(x: Any, features: int) -> int:
    """Rows of ``features`` numbers in ``x`` (a tensor, or a PackedSequence's data)."""
    data = getattr(x, "data", x) if not isinstance(x, torch.Tensor) else x
    return data.numel() // features if isinstance(data, torch.Tensor) and features else 0


def _recurrent(module: nn.RNNBase, x) -> int:
    gates = _GATES[module.mode]
    directions = 2 if module.bidirectional else 1
    hidden, proj = module.hidden_size, module.proj_size
    state = proj or hidden  # what the recurrence multiplies
    tokens = _tokens(x, module.input_size)
    total, width = 0, module.input_size
    for _ in range(module.num_layers):
        per_token = gates * hidden * (width + state) + (hidden * proj if proj else 0)
        total += directions * tokens * per_token
        width = directions * state
    return total


def _attention_macs(embed: int, kdim: int, vdim: int, batch: int, lq: int, lk: int) -> int:
    """Projections of queries, keys and values, the scores, the weighted values, the output."""
    return batch * (lq * embed * embed + lk * kdim * embed + lk * vdim * embed + 2 * lq * lk * embed + lq * embed * embed)


def _seq(x: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    """(batch, length) of a (L, N, E) / (N, L, E) / unbatched (L, E) input."""
    if x.dim() == 2:
        return 1, x.shape[0]
    return (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])


def _multihead(module: nn.MultiheadAttention, args, kwargs) -> int:
    names = ("query", "key", "value")
    q, k, v = (args[i] if i < len(args) else kwargs.get(n) for i, n in enumerate(names))
    batch, lq = _seq(q, module.batch_first)
    _, lk = _seq(k, module.batch_first)
    lk += int(module.bias_k is not None) + int(module.add_zero_attn)
    return _attention_macs(module.embed_dim, module.kdim, module.vdim, batch, lq, lk)


def _encoder_layer(module: nn.TransformerEncoderLayer, args, kwargs) -> int:
    src = args[0] if args else kwargs["src"]
    attention = module.self_attn
    batch, length = _seq(src, attention.batch_first)
    tokens = batch * length
    feedforward = 2 * tokens * module.linear1.in_features * module.linear1.out_features
    return _attention_macs(attention.embed_dim, attention.kdim, attention.vdim, batch, length, length) + feedforward


def hand_macs(module: nn.Module, args: tuple, kwargs: dict) -> int | None:
    """MACs of one call of a module whose work the counter does not see (see the module doc),
    from the call's inputs; None for any other module."""
    if isinstance(module, nn.RNNBase) and module.mode in _GATES:
        return _recurrent(module, args[0] if args else kwargs["input"])
    for cell, gates in _CELL_GATES.items():
        if isinstance(module, cell):
            x = args[0] if args else kwargs["input"]
            rows = x.shape[0] if x.dim() == 2 else 1
            return rows * gates * module.hidden_size * (module.input_size + module.hidden_size)
    if isinstance(module, nn.TransformerEncoderLayer):
        return _encoder_layer(module, args, kwargs)
    if isinstance(module, nn.MultiheadAttention):
        return _multihead(module, args, kwargs)
    return None


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Ops the counter has no formula for though the work is known (torch prices the CUDA flash
# kernel, not the CPU one that scaled_dot_product_attention runs here, e.g. in GPT-2).
FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def priced_by_hand(module: nn.Module) -> bool:
    return isinstance(module, (nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention, nn.TransformerEncoderLayer))


class _Ops(TorchDispatchMode):
    """Records every heavy op without a FLOP formula, with the module it ran in."""

    def __init__(self, formulas, where):
        super().__init__()
        self.formulas, self.where, self.seen = formulas, where, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet not in self.formulas and HEAVY_OPS.search(packet.__name__) and not self.where.priced_depth:
            self.seen.append((self.where.current or "", packet.__name__))
        return func(*args, **(kwargs or {}))


class UnseenCounter:
    """MACs of one pass of a model: ``FlopCounterMode`` with the modules it cannot see priced by
    :func:`hand_macs` (outermost one wins: a fused encoder layer holds its attention), and the
    heavy ops nobody prices (``unknown``: (module name, op) pairs; "" is the model's own forward)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.hand, self.unknown = 0, []
        self.priced_depth, self.current = 0, None

    def __enter__(self):
        self._flops = FlopCounterMode(display=False, custom_mapping=FORMULAS)
        self._flops.__enter__()
        self._ops = _Ops(self._flops.flop_registry, self)
        self._ops.__enter__()
        self._hooks = []
        for name, module in self.model.named_modules():
            self._hooks.append(module.register_forward_pre_hook(self._entering(name, module), with_kwargs=True))
            self._hooks.append(module.register_forward_hook(self._leaving(name, module), with_kwargs=True))
        self._stack = []
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._ops.__exit__(*exc)
        self._flops.__exit__(*exc)
        self.unknown = sorted(set(self._ops.seen))
        return False

    def _entering(self, name, module):
        def hook(mod, args, kwargs):
            self._stack.append((name, self.current, self._flops.get_total_flops()))
            self.current = name or self.current
            if priced_by_hand(module):
                self.priced_depth += 1
        return hook

    def _leaving(self, name, module):
        def hook(mod, args, kwargs, out):
            _, self.current, before = self._stack.pop()
            if priced_by_hand(module):
                self.priced_depth -= 1
                if self.priced_depth == 0:  # the outermost: its formula replaces what the counter saw inside
                    seen = (self._flops.get_total_flops() - before) // 2
                    self.hand += hand_macs(module, args, kwargs) - seen
        return hook

    @property
    def macs(self) -> int:
        return self._flops.get_total_flops() // 2 + self.hand
