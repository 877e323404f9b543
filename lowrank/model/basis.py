"""The basis each layer is truncated in: today the SVD of its weight matrix under a scheme,
computed once per (layer, scheme) and cached (a sweep also stores them on disk)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .. import kinds

# Weights up to this many elements are decomposed in float64 (cheap, and exact to 1e-12).
FLOAT64_MAX_ELEMENTS = 1 << 24


def weight_svd(weight: torch.Tensor, scheme: kinds.LayerScheme):
    """Thin SVD (U, s, Vh) of the scheme's matrix; float64 where the weight is small enough."""
    m = weight.detach()
    dtype = torch.float64 if m.numel() <= FLOAT64_MAX_ELEMENTS else torch.float32
    return torch.linalg.svd(scheme.matrix(m).to(dtype), full_matrices=False)


def check_finite(model: nn.Module, names) -> None:
    """Refuse layers whose weights hold NaN or infinity, naming each (an SVD of them fails
    with a message that names none, or returns garbage)."""
    bad = []
    for name in names:
        w = model.get_submodule(name).weight.detach()
        nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
        if nan or inf:
            bad.append(f"{name!r} ({nan} NaN, {inf} infinite of {w.numel()})")
    if bad:
        raise ValueError("NaN or infinite weights in layer(s) " + ", ".join(bad) + ": lowrank cannot factorise them. "
                         "Check that the checkpoint loaded correctly or that training did not diverge.")


class WeightBasis:
    """SVDs of a model's layer weights, by (layer name, scheme name)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._cache: dict[tuple[str, str], tuple] = {}

    def svd(self, name: str, scheme: kinds.LayerScheme) -> tuple:
        key = (name, scheme.name)
        if key not in self._cache:
            check_finite(self.model, [name])
            self._cache[key] = tuple(weight_svd(self.model.get_submodule(name).weight, scheme))
        return self._cache[key]

    def load(self, name: str, scheme: str, factors: Mapping | tuple) -> None:
        """Reuse an SVD computed earlier for the same weights."""
        self._cache[(name, scheme)] = tuple(factors)
