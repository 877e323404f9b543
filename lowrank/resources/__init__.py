"""Resources a budget can limit, as registered objects.

A :class:`Resource` owns its whole life: it prices every layer (pure: costs in a
:class:`Prices`, nothing written anywhere else), counts or measures a whole model, checks a
rebuilt model against its limit (:class:`Check`), and says how much less to plan for when a
measured model missed its limit. ``Budget``, plans, sweep rows, the store's columns, CLI
flags and report axes are all generated from this registry, so a new resource is one file
in this package that calls :func:`register` (every module here is imported, in name order);
a measured one subclasses :class:`~lowrank.resources.measured.MeasuredResource`.
"""
from ..util.plugins import import_submodules
from ..solvers import MACS, PARAMS
from .base import (Check, LayerPrice, Limit, Prices, Resource, SchemePrice, count, default_sweep_budgets, get, linear_fit, names,
                   priced, register, registered, settings_by_resource)

import_submodules(__name__, __path__)  # each module registers its resource

__all__ = ["MACS", "PARAMS", "Check", "LayerPrice", "Limit", "Prices", "Resource", "SchemePrice", "count", "default_sweep_budgets", "get", "linear_fit", "names", "priced",
           "register", "registered", "settings_by_resource"]
