import itertools

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from lowrank.util.inputs import call_model


def counted_macs(model, x) -> int:
    """Independent MAC count: FlopCounterMode FLOPs / 2."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_model(model, x)
    return counter.get_total_flops() // 2


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
