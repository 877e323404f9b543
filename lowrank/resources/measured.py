"""Measured resources: read off a meter (a clock, a power meter), not counted.

:class:`MeasuredResource` holds what every such resource shares, so a new one (a second
runtime's latency, energy) is one file that says how to read its meter:

- **Pricing.** A layer is read dense and factorised at a grid of ranks (every small rank,
  then multiples of 8, 16 or 32); a rank between grid points costs what the next grid rank
  above it read (readings step with vector widths: the safe side), and the table never
  falls as the rank grows. Readings are kept in memory and, where the resource names a
  folder, on disk, keyed by the layer's geometry, scheme, call shapes, the settings and
  the factorised module's source, so a layer is read once per machine.
- **One meter for the total and its parts.** A meter drifts (a shared machine runs a
  third faster or slower from one minute to the next), and the base cost (the total less
  the layers) is a difference of readings. So the whole model is read in turn with every
  factorised layer's dense form, and each cached table is scaled by its layer's dense
  reading now over the one it was read with.
- **Checking and planning again.** The rebuilt model is read against the original; the
  limit holds within the measured noise. Where it missed (layers read alone can run faster
  than inside the network), compress plans again for less.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from ..util.cache import DiskCache, digest
from .base import Check, LayerPrice, Limit, Prices, Resource, SchemePrice, linear_fit


def rank_grid(full_rank: int) -> list[int]:
    """Ranks read for a layer of ``full_rank``: 0..8, then multiples of a step, and full."""
    step = 8 if full_rank <= 128 else 16 if full_rank <= 512 else 32
    small = [r for r in (0, 1, 2, 3, 4, 6, 8) if r <= full_rank]
    return sorted(set(small) | set(range(step, full_rank, step)) | {full_rank})


def table_from_grid(grid: list[int], costs: list[float]) -> np.ndarray:
    """Cost at every rank 0..full: the reading of the next grid rank at or above it, made
    non-decreasing (noise must not make a higher rank look cheaper)."""
    full = grid[-1]
    idx = np.searchsorted(np.asarray(grid), np.arange(full + 1))
    return np.maximum.accumulate(np.asarray(costs, dtype=np.float64)[idx])


def implementation(scheme, dense: torch.nn.Module, rows: int, cols: int) -> str:
    """A digest of the factorised module's source: a faster forward must not reuse old readings."""
    module = scheme.factorized(dense, 0, (torch.zeros(rows, 0), torch.zeros(0), torch.zeros(0, cols)))
    return digest(inspect.getsource(type(module)) + inspect.getsource(type(scheme).timed))


class MeasuredResource(Resource):
    """A resource read off a meter; subclasses say how (see the module doc)."""

    cheap = False
    integer = False
    attempts = 3
    checked_by = "measured alternately with the original, held within the measured noise"

    def __init__(self):
        self._readings: dict[str, Any] = {}

    # --- what a subclass says ------------------------------------------------------------
    def measure_together(self, model, example_input, layers, settings) -> tuple[float, list[float]]:
        """The whole model's cost and each of ``layers``' dense cost, read in turn on one meter."""
        raise NotImplementedError

    def measure_factorised(self, layer, scheme, ranks: list[int], settings) -> tuple[float, list[float]]:
        """The layer's dense cost and its cost factorised under ``scheme`` at each of
        ``ranks`` (any factors will do: readings must not depend on weight values), read together."""
        raise NotImplementedError

    def compare(self, original, rebuilt, example_input, settings) -> Check:
        """The two models read against each other: a :class:`Check` whose limit is still to be set."""
        raise NotImplementedError

    def reading_key(self, layer, settings) -> dict:
        """What a layer's readings depend on besides its geometry (settings, machine, versions)."""
        return {"settings": repr(settings)}

    def cache_root(self, settings) -> str | None:
        """The folder readings are kept in across processes (None: this process only)."""
        return None

    def default_settings(self):
        return self.settings_type() if self.settings_type is not None else None

    # --- what every measured resource does -----------------------------------------------
    def forget(self) -> None:
        """Drop the readings kept in memory (the disk keeps its own)."""
        self._readings.clear()

    def count(self, model, example_input, settings=None):
        return self.measure_together(model, example_input, [], settings or self.default_settings())[0]

    def price(self, layers, model, example_input, settings=None) -> Prices:
        """Only layers a plan can change are read; their tables are moved onto the clock of
        the total (see the module doc)."""
        settings = settings or self.default_settings()
        read = [l for l in layers if l.compressible]
        tables = {(l.name, s): self._factorised(l, obj, settings) for l in read for s, obj in l.schemes.items()}
        total, dense_now = self.measure_together(model, example_input, read, settings)
        out = {}
        for layer, now in zip(read, dense_now):
            schemes = {}
            for s in layer.schemes:
                then = tables[(layer.name, s)]
                table = table_from_grid(then["grid"], then["costs"]) * (now / then["dense"])
                schemes[s] = SchemePrice(*linear_fit(table), table)
            out[layer.name] = LayerPrice(now, schemes)
        return Prices(self.name, total, out)

    def check(self, original, rebuilt, example_input, limit: Limit, reference, planned=None, settings=None) -> Check:
        """The rebuilt model read against the original now; a fraction is of the original as
        read now, beside it (``reference``, from another minute, is not used)."""
        check = self.compare(original, rebuilt, example_input, settings or self.default_settings())
        check.limit, check.planned = limit.at(check.original), planned
        return check

    def replan(self, check: Check, fraction: float) -> float:
        """Aim below the limit by as much as the rebuilt model missed it, and 1% more."""
        return fraction * 0.99 * check.limit / check.rebuilt

    def _factorised(self, layer, scheme, settings) -> dict:
        rows, cols = scheme.matrix_shape(layer.weight_shape)
        grid = rank_grid(scheme.full_rank(layer.weight_shape))
        key = {"resource": self.name, "module": repr(layer.module), "type": type(layer.module).__qualname__,
               "calls": [c[0] for c in layer.calls], "scheme": scheme.name, "grid": grid,
               "implementation": implementation(scheme, layer.module, rows, cols), **self.reading_key(layer, settings)}

        def read():
            dense, costs = self.measure_factorised(layer, scheme, grid, settings)
            return {"dense": float(dense), "costs": [float(c) for c in costs], "grid": grid}

        return self._kept(key, read, settings)

    def _kept(self, key: dict, read, settings):
        """A reading from memory, then disk (where the resource keeps one), else read now."""
        k = digest(key)
        if k not in self._readings:
            root = self.cache_root(settings)
            self._readings[k] = DiskCache(root).get(self.name, key, read) if root else read()
        return self._readings[k]
