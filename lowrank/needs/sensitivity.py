"""The provider for ``Need.SENSITIVITY`` (AIMET-style ``sensitivity``): the loss with one layer
truncated at a few ranks, measured once per model and data (a sweep caches it), handed over
as per-layer loss curves."""
from __future__ import annotations

from ..solvers import Need
from ..solvers.objectives import from_samples
from .base import Provider, register
from .network_loss import measure_sensitivity

def _options(table, problem, measured, batches, select_batches, loss, progress):
    return {"objective": from_samples(problem, measured, "measured loss")}


register(Provider(Need.SENSITIVITY, "sensitivity", measure_sensitivity, _options, order=1))
