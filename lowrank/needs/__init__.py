"""What lowrank supplies for each kind of method need (``solvers.Need``), one file each.

The solvers declare what a method needs; a provider here knows how to make it from a model
and calibration data. A provider has an optional expensive ``measure`` step that depends only
on the model, the data and the scheme (not the budget), which a sweep caches on disk under
``cache_kind``, and an ``options`` step that turns it into the solver's keyword options. A
new need is one file in this package that calls :func:`register` (every module here is
imported); a new method with an existing need touches nothing here.
"""
from ..util.plugins import import_submodules
from .base import Provider, provider, register, run_order, show_count, show_iteration

import_submodules(__name__, __path__)  # each module registers its provider

__all__ = ["Provider", "provider", "register", "run_order", "show_count", "show_iteration"]
