"""Older module paths, kept working for now: ``lowrank.model.table``, ``lowrank.latency``, ...

Each old module is an alias of the module that holds its code today (names are looked up
there when first used; :data:`EXTRA` names those that went elsewhere). An old path that is a
real package today (``lowrank.layers``) only gains its old names. New code imports from the
new places (README, Layout).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

MOVED = {
    "lowrank.model": "lowrank.planning",
    "lowrank.model.table": "lowrank.planning.table",
    "lowrank.model.bridge": "lowrank.planning.problem",
    "lowrank.model.plan": "lowrank.planning.plan",
    "lowrank.model.surgery": "lowrank.planning.rebuild",
    "lowrank.model.pricing": "lowrank.layers.inventory",
    "lowrank.model.record": "lowrank.layers.record",
    "lowrank.model.graph": "lowrank.layers.graph",
    "lowrank.model.basis": "lowrank.factorise.basis",
    "lowrank.model.masked": "lowrank.factorise.masked",
    "lowrank.model.inputs": "lowrank.util.inputs",
    "lowrank.model.modes": "lowrank.util.modes",
    "lowrank.model.network_loss": "lowrank.needs.network_loss",
    "lowrank.model.needs": "lowrank.needs",
    "lowrank.model.finetune": "lowrank.finetuning",
    "lowrank.latency": "lowrank.timing",
    "lowrank.experiment.cache": "lowrank.util.cache",
    "lowrank.layers": "lowrank.planning.table",
    "lowrank.decompose": "lowrank.factorise.masked",
    "lowrank.factorized": "lowrank.kinds",
    "lowrank.surgery": "lowrank.planning.rebuild",
    "lowrank.plan": "lowrank.planning.plan",
    "lowrank.graph": "lowrank.layers.graph",
    "lowrank.objective": "lowrank.needs.network_loss",
    "lowrank.finetune": "lowrank.finetuning",
    "lowrank.runner": "lowrank.experiment.runner",
    "lowrank.sweep": "lowrank.experiment.sweep",
    "lowrank.store": "lowrank.experiment.store",
    "lowrank.cache": "lowrank.util.cache",
    "lowrank.executors": "lowrank.experiment.executors",
    "solvers.sqp": "solvers.cobla",
    "solvers.knapsack": "solvers.exact",
    "solvers.exact": "solvers.exact",  # a real module: gains the Lagrangian's names, now in solvers.lagrangian
}
# names that went to a module other than their file's new home
_BATCHES = {n: "lowrank.util.batches" for n in ("as_batches", "split_calibration", "in_chunks", "Batch")}
EXTRA = {
    "lowrank.layers": {"call_model": "lowrank.util.inputs"},
    "lowrank.decompose": {"SCHEMES": "lowrank.kinds", "check_scheme": "lowrank.kinds"},
    "lowrank.objective": _BATCHES,
    "lowrank.model.network_loss": _BATCHES,
    "lowrank.model.table": {"LayerInfo": "lowrank.layers.inventory"},
    "lowrank.model": {"LayerTable": "lowrank.planning.table", "Plan": "lowrank.planning.plan"},
    "solvers.knapsack": {n: "solvers.lagrangian" for n in ("lower_hull", "Lagrangian", "greedy_fill", "maximise_dual")},
    "solvers.exact": {n: "solvers.lagrangian" for n in ("lower_hull", "Lagrangian", "greedy_fill", "maximise_dual")},
}


def _lookup(old: str, new: str):
    extra = EXTRA.get(old, {})

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(extra.get(name, new)), name)

    return __getattr__


def _alias(old: str, new: str) -> types.ModuleType:
    module = types.ModuleType(old, f"Moved to {new}; this alias keeps old imports working.")
    module.__getattr__ = _lookup(old, new)
    module.__path__ = []  # a package, so that older submodule paths under it resolve too
    return module


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_OURS = sys.modules["lowrank.solvers"]  # the solvers package lowrank uses (see lowrank.solvers)

for _old, _new in MOVED.items():
    if _old.split(".")[0] == "solvers" and sys.modules.get("solvers") is not _OURS:
        continue  # that name is someone else's here: leave it alone
    if _old in sys.modules or _is_module(_old):  # a real module today: it gains the old names it lacks
        _module = importlib.import_module(_old)
        if not hasattr(_module, "__getattr__"):
            _module.__getattr__ = _lookup(_old, _new)
        continue
    sys.modules[_old] = _alias(_old, _new)
    _parent, _, _child = _old.rpartition(".")
    if _parent in sys.modules and not hasattr(sys.modules[_parent], _child):  # `lowrank.model.table` as an attribute too
        setattr(sys.modules[_parent], _child, sys.modules[_old])
