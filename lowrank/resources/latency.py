"""Latency: microseconds per batch on a :class:`~lowrank.timing.LatencyTarget`, measured, not
modelled (``Budget(latency=0.5)``; ``compress(..., measure_on=LatencyTarget(threads=4))``).

The meter is a clock (:mod:`lowrank.timing`): every layer a plan can change is timed dense
and factorised at a grid of ranks on the target's device, dtype and thread count, with one
random input per recorded call at the target's batch; the whole model is timed in turn with
every such layer's dense form (what the layers do not explain, activations, pooling,
normalisation, is the fixed base cost; BatchNorm is folded first, as deployed, where the
target says so); a rebuilt model is timed alternately with the
original, round by round, and holds its limit within the measured noise. Timings are kept
on disk (``$LOWRANK_LATENCY_CACHE`` or ``~/.cache/lowrank/latency``, or the target's
``cache_dir``) keyed by the layer, the target and the library versions. See
:mod:`lowrank.resources.measured` for why tables are moved onto the total's clock.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import timing
from ..util.modes import evaluating
from ..util.runtimes import runner
from .base import Check, register
from .measured import MeasuredResource


@dataclass
class LatencyCheck(Check):
    """A rebuilt model timed against the original (microseconds per batch), and its limit."""

    speed: timing.SpeedCheck | None = None

    original_us = property(lambda self: self.original)
    rebuilt_us = property(lambda self: self.rebuilt)
    noise_us = property(lambda self: self.noise)
    limit_us = property(lambda self: self.limit)
    predicted_us = property(lambda self: self.planned)
    speedup = property(lambda self: self.original / self.rebuilt)
    target = property(lambda self: self.speed.target)
    rounds = property(lambda self: self.speed.rounds)

    def __str__(self) -> str:
        s = str(self.speed)
        if self.planned is not None:
            s += f"; predicted {self.planned:,.0f} us"
        return s + f"; latency limit {self.limit:,.0f} us: " + ("held" if self.held else "NOT held")


def _default_cache_dir() -> str:
    return os.environ.get("LOWRANK_LATENCY_CACHE", str(Path.home() / ".cache" / "lowrank" / "latency"))


def _call_inputs(layer, target, device) -> list[torch.Tensor]:
    """One random input per recorded call, with the batch dimension scaled to the target's batch."""
    out = []
    for in_shape, _, _ in layer.calls:
        shape = (in_shape[0] * target.batch, *in_shape[1:])
        out.append(timing.laid_out(torch.randn(shape, device=device, dtype=target.torch_dtype), target))
    return out


def _as_deployed(module: nn.Module, target) -> nn.Module:
    """The layer as the target runs it: with BatchNorm folded, a bias-free layer takes the
    norm's shift as its bias, and so does its factorised form (a rank-0 layer then writes
    the bias where it wrote zeros). Timed without it, resnet20-fmnist's cheapest plan
    was predicted at 0.21 of the folded original and measured 0.37 (reports/speed/fold_prediction.md).
    A layer no norm follows is read with a bias it will not have: a little dear, the safe side."""
    if not target.fold_batchnorm or not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) or module.bias is not None:
        return module
    module = copy.deepcopy(module)
    w = module.weight
    module.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    return module


class Latency(MeasuredResource):
    name, label, unit, axis = "latency", "latency", "us", "latency budget"
    order = 2
    checked_by = "latency timed alternately with the original, held within the measured noise"
    settings_type = timing.LatencyTarget
    settings_flags = {"device": "cpu or cuda (default: where the model is)", "threads": "CPU threads while timing (default 1)",
                      "batch": "samples per timed call (default 64)", "runtime": "eager or onnxruntime (default eager)",
                      "fold_batchnorm": "time both models with BatchNorm folded, as deployed (default on)",
                      "memory_format": "channels_last or contiguous: the layout of 4-d tensors in eager PyTorch (default channels_last)"}

    def amount(self, value):
        return f"{value / 1e3:,.1f} ms per batch (measured)"

    def cache_root(self, target):
        root = _default_cache_dir() if target.cache_dir is None else target.cache_dir
        return root or None

    def reading_key(self, layer, target):
        return {"target": target.key(target.resolve(layer.module))}

    def time_in_turn(self, jobs, device, target) -> list[float]:
        """Microseconds per run of each job ``(module, inputs)`` (the module called on each of
        its inputs), timed in turn round by round on one clock (the meter's primitive: tests
        put a deterministic clock here)."""
        return timing.time_in_turn([runner(m, xs, target.runtime, target.threads) for m, xs in jobs], device, target)

    def measure_together(self, model, example_input, layers, target):
        """The whole model and each layer's dense form, timed in turn in every round (medians)."""
        device = target.resolve(model)
        whole = timing.deployed(model, device, target)
        jobs = [(whole, [timing.batch_of(example_input, target, device)])]
        jobs += [(timing.prepared(_as_deployed(l.module, target), device, target), _call_inputs(l, target, device)) for l in layers]
        with evaluating(whole):
            total, *dense = self.time_in_turn(jobs, device, target)
        return total, dense

    def measure_factorised(self, layer, scheme, ranks, target):
        """Each rank's factorised layer timed on its own (random factors), then the dense layer."""
        device = target.resolve(layer.module)
        dense = timing.prepared(_as_deployed(layer.module, target), device, target)
        inputs = _call_inputs(layer, target, device)
        times = []
        for r in ranks:
            module, xs = scheme.timed(dense, r, inputs)
            times += self.time_in_turn([(timing.prepared(module, device, target), xs)], device, target)
        return self.time_in_turn([(dense, inputs)], device, target)[0], times

    def delivered(self, model, target=None):
        """4-d weights channels-last where the target times so: the returned model then runs
        as it was timed, with a plain (contiguous) input too. vgg-fmnist planned at latency 0.6
        (exact, spatial) ran 0.63 of the original's time so; returned contiguous, 0.76-0.77
        (reports/speed/as_returned.md)."""
        target = target or self.default_settings()
        return model.to(memory_format=torch.channels_last) if target.channels_last else model

    def compare(self, original, rebuilt, example_input, target):
        speed = timing.compare_speed(original, rebuilt, example_input, target)
        return LatencyCheck(self.name, speed.original_us, speed.rebuilt_us, float("nan"), noise=speed.noise_us, speed=speed)


register(Latency())
