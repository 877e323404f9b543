"""Latency: microseconds per batch on the current :class:`~lowrank.latency.LatencyTarget`,
measured, not modelled.

A layer's dense latency is timed as it is; its factorised latency is timed at a grid of
ranks (every small rank, then multiples of 8, 16 or 32) and a rank between grid points
costs what the next grid rank above it measured (latency steps with the vector width, so
this is the safe side). The table is made non-decreasing in the rank. Timings are kept on
disk keyed by the layer's geometry, scheme, call shapes, the target and the library
versions, so a layer is timed once per machine.

The whole model's latency (the budget's reference) is timed end to end, taking turns with
every priced layer's dense form, round by round; what the layers do not explain
(activations, pooling, normalisation, ...) is the fixed base cost. A shared machine runs a
third faster or slower from one minute to the next, so timings from the disk (another hour,
another day) are moved onto this clock: each factorised table was timed with its dense
layer, and is scaled by that layer's dense time now over then. Without this the base, a
difference of two clocks, swung from 10 to 35 ms on vgg-fmnist and plans threw away ranks
the budget allowed. Expensive, so priced only when a budget names it (``Budget(latency=0.5)``).
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from ..experiment.cache import DiskCache, digest
from ..latency import batch_of, current_target, model_latency, prepared, time_call, time_in_turn
from ..model.inputs import call_model
from ..model.modes import evaluating
from . import Resource, linear_fit, register

_memo: dict[str, object] = {}


def rank_grid(full_rank: int) -> list[int]:
    """Ranks timed for a layer of ``full_rank``: 0..8, then multiples of a step, and full."""
    step = 8 if full_rank <= 128 else 16 if full_rank <= 512 else 32
    small = [r for r in (0, 1, 2, 3, 4, 6, 8) if r <= full_rank]
    return sorted(set(small) | set(range(step, full_rank, step)) | {full_rank})


def table_from_grid(grid: list[int], times: list[float]) -> np.ndarray:
    """Cost at every rank 0..full: the time of the next grid rank at or above it, made
    non-decreasing (noise must not make a higher rank look cheaper)."""
    full = grid[-1]
    idx = np.searchsorted(np.asarray(grid), np.arange(full + 1))
    return np.maximum.accumulate(np.asarray(times, dtype=np.float64)[idx])


def _cached(key: dict, compute):
    """A timing from memory, then disk (when the target has a cache directory), then measured."""
    k = digest(key)
    if k not in _memo:
        root = current_target().cache_root
        _memo[k] = DiskCache(root).get("latency", key, compute) if root else compute()
    return _memo[k]


def _call_inputs(layer, target, device) -> list[torch.Tensor]:
    """One random input per recorded call, with the batch dimension scaled to the target's batch."""
    out = []
    for in_shape, _, _ in layer.calls:
        shape = (in_shape[0] * target.batch, *in_shape[1:])
        out.append(torch.randn(shape, device=device, dtype=target.torch_dtype))
    return out


def _time_layer(module, inputs, device, target) -> float:
    return time_call(_layer_call(module, inputs), device, target)


def _key(layer, what: str, target, device, **extra) -> dict:
    return {"what": what, "module": repr(layer.module), "type": type(layer.module).__qualname__,
            "calls": [c[0] for c in layer.calls], "target": target.key(device), **extra}


def _implementation(scheme, dense, rows: int, cols: int) -> str:
    """A digest of the factorised module's source: a faster forward must not reuse old timings."""
    module = scheme.factorized(dense, 0, (torch.zeros(rows, 0), torch.zeros(0), torch.zeros(0, cols)))
    return digest(inspect.getsource(type(module)))


class Latency(Resource):
    name, label, unit, axis = "latency", "latency", "us", "latency budget"
    order = 2
    integer = False
    cheap = False
    checked_by = "latency timed alternately with the original, held within the measured noise"

    def amount(self, value):
        return f"{value / 1e3:,.1f} ms per batch (measured)"

    def count(self, model, example_input):
        return model_latency(model, example_input)

    def dense_cost(self, layer):
        target = current_target()
        device = target.resolve(layer.module)

        def measure():
            module = prepared(layer.module, device, target)
            return _time_layer(module, _call_inputs(layer, target, device), device, target)

        return float(_cached(_key(layer, "dense", target, device), measure))

    def rank_table(self, layer, scheme) -> np.ndarray:
        """Measured latency of the factorised layer at every rank 0..full (see module doc), on
        the clock of :meth:`dense_cost`: each table is timed with its dense layer and scaled by
        the dense time the table is used with over the one it was timed with."""
        target = current_target()
        device = target.resolve(layer.module)
        rows, cols = scheme.matrix_shape(layer.weight_shape)
        grid = rank_grid(min(rows, cols))

        def measure():
            dense = prepared(layer.module, device, target)
            inputs = _call_inputs(layer, target, device)
            times = []
            for r in grid:
                kw = dict(device=device, dtype=target.torch_dtype)
                factors = (torch.randn(rows, r, **kw), torch.ones(r, **kw), torch.randn(r, cols, **kw))
                times.append(_time_layer(scheme.factorized(dense, r, factors), inputs, device, target))
            return {"dense": _time_layer(dense, inputs, device, target), "times": times}

        key = _key(layer, "factorised", target, device, scheme=scheme.name, grid=grid, with_dense=True,
                   implementation=_implementation(scheme, layer.module, rows, cols))
        timed = _cached(key, measure)
        return table_from_grid(grid, list(timed["times"])) * (self.dense_cost(layer) / timed["dense"])

    def measure_total(self, table) -> float:
        """The original model timed in turn with every priced layer's dense form, round by
        round; each layer's costs are then moved onto this clock (see module doc)."""
        layers = [l for l in table.compressible if self.name in l.dense]
        total, dense_now = _time_together(table.model, table.example_input, [l.record for l in layers])
        for layer, now in zip(layers, dense_now):
            scale = now / layer.dense[self.name]
            layer.dense[self.name] = now
            for cost in layer.costs.values():
                if self.name in cost.tables:
                    cost.tables[self.name] = cost.tables[self.name] * scale
                    cost.per_rank[self.name], cost.fixed[self.name] = linear_fit(cost.tables[self.name])
        return total


def _time_together(model, example, records) -> tuple[float, list[float]]:
    """Microseconds per batch of the whole model and of each recorded layer (dense), timed in
    turn in every round (medians): one clock for the total and its parts."""
    target = current_target()
    device = target.resolve(model)
    whole = prepared(model, device, target)
    x = batch_of(example, target, device)
    calls = [lambda: call_model(whole, x)]
    for record in records:
        calls.append(_layer_call(prepared(record.module, device, target), _call_inputs(record, target, device)))
    with evaluating(whole):
        total, *dense = time_in_turn(calls, device, target)
    return total, dense


def _layer_call(module, inputs):
    def run():
        for x in inputs:
            module(x)
    return run


register(Latency())
