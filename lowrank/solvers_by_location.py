"""Installs ``lowrank.solvers``: lowrank's rank-allocation solvers, the top-level ``solvers``
package, found by where it is installed rather than by name (``lowrank/__init__`` imports
this first; every other module then imports ``lowrank.solvers``).

A user's own ``solvers.py`` in the working directory comes first on ``sys.path``: imported by
name, it would stand in for ours and ``import lowrank`` would fail. So ``lowrank.solvers`` is
the top-level package itself where that name finds ours (one copy, shared with ``import
solvers``), else ours loaded from its folder under that name, leaving the name ``solvers`` to
its owner.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

HOME = Path(__file__).resolve().parents[1] / "solvers"
NAME = "lowrank.solvers"  # what lowrank imports it as


def _is_ours(origin) -> bool:
    return origin is not None and Path(origin).resolve().parent == HOME


def _load():
    named = sys.modules.get("solvers")
    if named is not None and _is_ours(getattr(named, "__file__", None)):
        return named
    if named is None:
        spec = importlib.util.find_spec("solvers")
        if spec is not None and _is_ours(spec.origin):
            return importlib.import_module("solvers")
    spec = importlib.util.spec_from_file_location(NAME, HOME / "__init__.py", submodule_search_locations=[str(HOME)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module


solvers = _load()
if solvers.__name__ != NAME:  # the top-level package: its submodules answer to lowrank's name too
    for _name, _module in list(sys.modules.items()):
        if _name.startswith(solvers.__name__ + "."):
            sys.modules[NAME + _name[len(solvers.__name__):]] = _module
sys.modules[NAME] = solvers
sys.modules[NAME.rpartition(".")[0]].solvers = solvers
