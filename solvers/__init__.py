"""The optimisation side of lowrank: rank-allocation problems and their solvers (no torch)."""
from .problem import Allocation, Group, InfeasibleBudgetError, Problem
from .registry import methods, register, solve
from . import baselines, knapsack, milp, sqp  # noqa: F401  (register their methods)
from .objectives import Differentiable, Separable

__all__ = ["Allocation", "Differentiable", "Separable", "Group", "InfeasibleBudgetError", "Problem", "methods", "register", "solve"]
