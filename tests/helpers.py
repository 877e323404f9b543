import itertools

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lowrank.util.inputs import call_model


def hand_macs(module, args) -> int:
    """MACs of one call of a recurrent or attention module, written out here (not lowrank's
    code): the matrix products of every gate at every step, or of the projections and the
    attention itself."""
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        gates = 4 if isinstance(module, nn.LSTM) else 3 if isinstance(module, nn.GRU) else 1
        rows = args[0].numel() // module.input_size  # steps x batch
        directions = 2 if module.bidirectional else 1
        width, total = module.input_size, 0
        for _ in range(module.num_layers):
            total += directions * rows * gates * module.hidden_size * (width + module.hidden_size)
            width = directions * module.hidden_size
        return total
    query, key = args[0], args[1]
    e = module.embed_dim
    lq, lk = (query.shape[-2], key.shape[-2]) if module.batch_first or query.dim() == 2 else (query.shape[0], key.shape[0])
    batch = query.numel() // (lq * e)
    return batch * (2 * lq * e * e + 2 * lk * e * e + 2 * lq * lk * e)


def _cpu_attention_flops(query, key, value, *args, **kwargs) -> int:
    """scaled_dot_product_attention's CPU kernel: scores (Lq x Lk per head, over the head
    width) and the weighted values, as FLOPs (2 per MAC)."""
    *heads, lq, d = query
    lk, dv = key[-2], value[-1]
    return 2 * int(np.prod(heads)) * lq * lk * (d + dv)


def counted_macs(model, x) -> int:
    """Independent MAC count: FlopCounterMode FLOPs / 2, where recurrent and attention modules
    and the CPU attention kernel (which the counter cannot see) count by hand instead."""
    blind = (nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention)
    extra, starts, hooks = [0], [], []
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        for m in model.modules():
            if isinstance(m, blind):
                hooks.append(m.register_forward_pre_hook(lambda m, a: starts.append(counter.get_total_flops())))
                hooks.append(m.register_forward_hook(
                    lambda m, a, o: extra.append(hand_macs(m, a) - (counter.get_total_flops() - starts.pop()) // 2)))
        try:
            call_model(model, x)
        finally:
            for h in hooks:
                h.remove()
    return counter.get_total_flops() // 2 + sum(extra)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def rel_err(a, b) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def brute_force(problem, objective) -> float:
    """The best objective over every rank combination that fits (tiny problems only)."""
    best = np.inf
    for ranks in itertools.product(*[range(g.full_rank + 1) for g in problem.groups]):
        if problem.fits(problem.cost(ranks)):
            best = min(best, objective.total(problem, ranks, problem.default_active()))
    return best


def additive_cost(module, inputs, per_call) -> float:
    """A deterministic meter for measured resources in tests: MACs (FlopCounterMode) plus
    ``per_call(leaf)`` for every call of a leaf module, over ``inputs`` (one call each)."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, a, o: calls.append(m)) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            for x in inputs:
                module(x)
    finally:
        for h in hooks:
            h.remove()
    return flops.get_total_flops() / 2 + sum(per_call(m) for m in calls)
