import torch
from torch.utils.flop_counter import FlopCounterMode

from lowrank.model.inputs import call_model


def counted_macs(model, x) -> int:
    """Independent MAC count: FlopCounterMode FLOPs / 2."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_model(model, x)
    return counter.get_total_flops() // 2


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def rel_err(a, b) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))
