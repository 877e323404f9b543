"""Older module paths, kept working for now: ``lowrank.layers``, ``lowrank.decompose``, ...

Each old module is an alias of the module that holds its code today (names are looked up
there when first used). New code imports from the new places (see README, Layout).
"""
from __future__ import annotations

import importlib
import sys
import types

MOVED = {
    "lowrank.layers": "lowrank.model.table",
    "lowrank.decompose": "lowrank.model.masked",
    "lowrank.factorized": "lowrank.kinds",
    "lowrank.surgery": "lowrank.model.surgery",
    "lowrank.plan": "lowrank.model.plan",
    "lowrank.graph": "lowrank.model.graph",
    "lowrank.objective": "lowrank.model.network_loss",
    "lowrank.finetune": "lowrank.model.finetune",
    "lowrank.runner": "lowrank.experiment.runner",
    "lowrank.sweep": "lowrank.experiment.sweep",
    "lowrank.store": "lowrank.experiment.store",
    "lowrank.cache": "lowrank.experiment.cache",
    "lowrank.executors": "lowrank.experiment.executors",
    "solvers.sqp": "solvers.cobla",
    "solvers.knapsack": "solvers.exact",
}
# names that moved to a module other than their file's new home
EXTRA = {
    "lowrank.layers": {"call_model": "lowrank.model.inputs"},
    "lowrank.decompose": {"SCHEMES": "lowrank.kinds", "check_scheme": "lowrank.kinds"},
}


def _alias(old: str, new: str) -> types.ModuleType:
    module = types.ModuleType(old, f"Moved to {new}; this alias keeps old imports working.")
    extra = EXTRA.get(old, {})

    def __getattr__(name):
        return getattr(importlib.import_module(extra.get(name, new)), name)

    module.__getattr__ = __getattr__
    return module


for _old, _new in MOVED.items():
    if _old not in sys.modules:
        sys.modules[_old] = _alias(_old, _new)
        _parent, _, _child = _old.rpartition(".")
        if _parent in sys.modules and not hasattr(sys.modules[_parent], _child):  # `lowrank.layers.X` works too
            setattr(sys.modules[_parent], _child, sys.modules[_old])
