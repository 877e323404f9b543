"""The optimisation side of lowrank: rank-allocation problems and their solvers (no torch)."""
from .problem import Allocation, Group, InfeasibleBudgetError, Problem
from .registry import methods, register, solve
from . import baselines  # noqa: F401  (registers its methods)

__all__ = ["Allocation", "Group", "InfeasibleBudgetError", "Problem", "methods", "register", "solve"]
