"""The reference: the separable allocation problem as a cvxpy MILP (one-hot rank per layer)."""
from __future__ import annotations

import numpy as np

from .exact import from_options, option_matrix
from .objectives import separable_objective
from .problem import Allocation, Problem
from .quiet import native_output_silenced
from .registry import Need, register


def _mip_solver() -> str:
    import cvxpy as cp

    installed = cp.installed_solvers()
    for name in ("HIGHS", "SCIP", "CBC", "GLPK_MI", "SCIPY"):
        if name in installed:
            return name
    raise RuntimeError(f"no mixed-integer solver installed for cvxpy (have {installed}); pip install highspy")


@register("milp", needs=Need.SEPARABLE)
def milp(problem: Problem, objective=None, solver: str | None = None, time_limit: float = 600.0, verbose: bool = False) -> Allocation:
    """Minimise the separable loss over one-hot rank choices under every budget, with cvxpy."""
    import cvxpy as cp  # imported here: the rest of solvers works without it

    obj = separable_objective(problem, objective)
    loss, cost, one_hot, owner, _ = option_matrix(problem, obj)
    x = cp.Variable(loss.size, boolean=True)
    limited = np.flatnonzero(np.isfinite(problem.budgets))
    constraints = [one_hot @ x == 1]
    if limited.size:
        cap = problem.budgets[limited] - problem.base_cost[limited]
        constraints.append(cost[:, limited].T @ x <= cap - 1e-7 * np.maximum(cap, 1))
    offset = float(loss.min())  # minimise the loss above its floor: small numbers, honest gaps
    prob = cp.Problem(cp.Minimize((loss - offset) @ x), constraints)
    solver = solver or _mip_solver()
    opts = {"time_limit": time_limit} if solver == "HIGHS" else {}
    if verbose:
        prob.solve(solver=solver, verbose=True, **opts)
    else:
        with native_output_silenced():
            prob.solve(solver=solver, verbose=False, **opts)
    if x.value is None or prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, "user_limit"):
        raise RuntimeError(f"MILP solver {solver} returned status {prob.status!r} without a solution")
    ranks, active = from_options(problem, x.value, owner)
    value = obj.total(problem, ranks, active)
    info = {"solver": solver, "status": prob.status, "objective_name": obj.name,
            "solver_seconds": float(prob.solver_stats.solve_time or 0.0)}
    return Allocation(problem, ranks, "milp", active=active, objective=value, info=info)
