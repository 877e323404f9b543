"""lowrank: compress trained PyTorch networks by low-rank factorisation under hard budgets.

Every name here loads on first use (PEP 562), and so do the solvers (``lowrank.solvers``, found
by location: :mod:`lowrank.solvers_by_location`): ``import lowrank`` costs little, and a model
that :func:`lowrank.load` rebuilds from disk runs and exports with neither the solvers nor
cvxpy imported (what a deployment needs of us is the factorised layers, nothing more).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:  # what the names are, for type checkers, editors and the API docs; loaded on first use at run time
    from . import kinds, resources
    from .budget import Budget
    from .compress import CompressionResult, SeveredModelWarning, UnseenPathWarning, compress
    from .factorise.masked import MaskedModel
    from .finetuning import evaluate, finetune
    from .kinds import DEFAULT_SCHEME, SCHEMES, FactorizedConv2d, FactorizedLinear
    from .planning.plan import Plan
    from .planning.rebuild import rebuild
    from .planning.table import LayerTable
    from .recalibrate import recalibrate_batchnorm
    from .saved import SavedModel, load, save
    from .solvers import InfeasibleBudgetError
    from .timing import LatencyTarget, compare_speed

# public name -> the module that defines it
_WHERE = {
    "Budget": ".budget",
    "CompressionResult": ".compress", "SeveredModelWarning": ".compress", "UnseenPathWarning": ".compress", "compress": ".compress",
    "MaskedModel": ".factorise.masked",
    "evaluate": ".finetuning", "finetune": ".finetuning",
    "DEFAULT_SCHEME": ".kinds", "SCHEMES": ".kinds", "FactorizedConv2d": ".kinds", "FactorizedLinear": ".kinds",
    "InfeasibleBudgetError": ".solvers",
    "Plan": ".planning.plan", "rebuild": ".planning.rebuild", "LayerTable": ".planning.table",
    "recalibrate_batchnorm": ".recalibrate",
    "LatencyTarget": ".timing", "compare_speed": ".timing",
    "load": ".saved", "save": ".saved", "SavedModel": ".saved",
}

__all__ = sorted([*_WHERE, "kinds", "resources"])


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    else:
        try:  # a subpackage or module: ``lowrank.zoo`` after a bare ``import lowrank``
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'lowrank' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The import system sets each submodule on its package as it loads it: the module
    ``lowrank.compress`` would then take the name of the function ``lowrank.compress``. A name
    defined here keeps meaning what it defines."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == f".{name}":
            return  # ``lowrank.compress`` stays the function (found by __getattr__)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _SolversOnFirstImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers the first ``import lowrank.solvers`` by installing our solvers then
    (:mod:`lowrank.solvers_by_location` puts them in ``sys.modules``)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "lowrank.solvers" else None

    def create_module(self, spec):
        from . import solvers_by_location  # noqa: F401  (installs the package and its submodules)

        module = sys.modules[spec.name]
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec  # the import system stamped this finder's spec on it


if not any(isinstance(finder, _SolversOnFirstImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SolversOnFirstImport())
