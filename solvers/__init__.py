"""The optimisation side of lowrank: rank-allocation problems and their solvers (no torch)."""
from .problem import Allocation, Group, InfeasibleBudgetError, Problem
from .registry import Method, Need, method, methods, register, solve
from . import baselines, cobla, exact, milp  # noqa: F401  (register their methods)
from .objectives import Differentiable, Separable

__all__ = ["Allocation", "Differentiable", "Method", "Need", "Separable", "Group", "InfeasibleBudgetError", "Problem",
           "method", "methods", "register", "solve"]
