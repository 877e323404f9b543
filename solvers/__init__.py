"""The optimisation side of lowrank: rank-allocation problems and their solvers (no torch)."""
from .problem import MACS, PARAMS, Allocation, Group, InfeasibleBudgetError, PlanOverBudgetError, Problem
from .objectives import Differentiable, Separable
from .registry import Method, Need, method, methods, register
from .solve import solve


def _import_methods() -> None:
    """Import every module here: each registers its methods, so a new method is one file."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_methods()

__all__ = ["MACS", "PARAMS", "Allocation", "Differentiable", "Method", "Need", "Separable", "Group", "InfeasibleBudgetError", "PlanOverBudgetError", "Problem",
           "method", "methods", "register", "solve"]
