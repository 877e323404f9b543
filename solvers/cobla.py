"""COBLA: relax the 0/1 masks to [0, 1], solve by SQP, round back so every budget holds.

Each SQP iteration solves

    min_d  g.d + 1/2 d' H d   s.t.  0 <= x + d <= 1,   C'(x + d) <= capacity

with H a damped diagonal quasi-Newton Hessian and C the cost of one kept value per group and
resource. For a fixed vector mu of budget multipliers the minimiser is a clip,
x + d = clip(x - (g + C mu) / H, 0, 1), so the QP is solved through its dual over the few
multipliers by projected Newton steps: O(number of masks) per step, no matrix factorisation.
A backtracking line search on the real objective decides the step length.
"""
from __future__ import annotations

import time

import numpy as np

from .objectives import Differentiable
from .problem import Allocation, InfeasibleBudgetError, Problem
from .registry import Need, register
from .rounding import candidates, fit_measured
from .selection import Score, choose
from .solve import solve


class RelaxedBudgets:
    """The budgets as linear rows over the flat relaxed masks (dense fallback ignored: safe side).

    Each row starts at the layers' rank-0 cost: on a measured table its reading, not the
    intercept of the line fitted through it. A thin layer's table jumps from rank 0 to rank 1
    and is flat after, so that intercept lies far above the rank-0 reading; on resnet20-fmnist
    under latency 0.541 the intercepts alone overran the budget, the starting masks were
    scaled by a negative factor and rounded to negative ranks."""

    def __init__(self, problem: Problem):
        groups = problem.groups
        self.sizes = np.array([g.full_rank for g in groups])
        self.splits = np.cumsum(self.sizes)[:-1]
        self.limited = np.flatnonzero(np.isfinite(problem.budgets))
        fixed = np.sum([g.factorised_cost(0) for g in groups], axis=0)
        cap = problem.budgets - problem.base_cost - fixed
        self.scale = np.where(cap[self.limited] > 0, cap[self.limited], 1.0)
        per_group = np.array([g.rank_cost for g in groups])[:, self.limited] / self.scale
        self.C = np.repeat(per_group, self.sizes, axis=0)  # (n, k), costs normalised by capacity
        self.columns = [np.ascontiguousarray(self.C[:, j]) for j in range(self.C.shape[1])]
        self.cap = cap[self.limited] / self.scale

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        return np.split(x, self.splits)

    def violation(self, x: np.ndarray) -> np.ndarray:
        return x @ self.C - self.cap


class _QPDual:
    """One SQP step's QP seen through its dual over the few budget multipliers ``mu``: the
    primal minimiser for given ``mu`` is a clip, and the dual value is concave in ``mu``.
    Every call is a handful of vector operations over the masks; no matrix beyond k x k."""

    def __init__(self, x, g, h, budgets: RelaxedBudgets):
        self.x, self.g, self.h = x, g, h
        self.cols, self.cap = budgets.columns, budgets.cap
        self.inv_h = 1.0 / h
        self.base = x - g * self.inv_h

    def primal(self, mu):
        z = self.base.copy()
        for j, c in enumerate(self.cols):
            if mu[j]:
                z -= (mu[j] * c) * self.inv_h
        return np.clip(z, 0.0, 1.0, out=z)

    def spend(self, y):
        return np.array([c @ y for c in self.cols])

    def value(self, mu, y, used):
        """The Lagrangian at its minimiser ``y``."""
        d = y - self.x
        return self.g @ d + 0.5 * (self.h * d) @ d + mu @ (used - self.cap)

    def at(self, mu):
        """(minimiser, budgets it spends, dual value) at ``mu``."""
        y = self.primal(mu)
        used = self.spend(y)
        return y, used, self.value(mu, y, used)


def solve_qp(x, g, h, budgets: RelaxedBudgets, tol: float = 1e-10, max_iter: int = 100):
    """Minimise g.d + 1/2 d'diag(h)d over the box and budget rows; returns (x + d, mu, iterations):
    unconstrained if that fits, else one binding budget if that fits, else projected Newton
    on every multiplier."""
    qp = _QPDual(x, g, h, budgets)
    mu = np.zeros(len(qp.cols))
    y, used, val = qp.at(mu)
    if not qp.cols or np.all(used <= qp.cap + tol):
        return y, mu, 0
    alone = _one_binding_budget(qp, used, tol, max_iter)
    if alone is not None:
        return alone
    return _projected_newton(qp, mu, y, used, val, tol, max_iter)


def _one_binding_budget(qp: _QPDual, used, tol, max_iter):
    """Usually one budget binds: each violated one alone (safeguarded Newton on its multiplier,
    whose residual is monotone), most violated first; the first that satisfies every budget
    is optimal. None where none does."""
    k = len(qp.cols)
    for j in np.argsort(qp.cap - used):
        if used[j] <= qp.cap[j] + tol:
            break
        y1, mu_j, it = _one_multiplier(qp.primal, qp.cols[j], qp.cap[j], qp.inv_h, k, j, tol, max_iter)
        used1 = qp.spend(y1)
        if np.all(used1 <= qp.cap + tol):
            mu = np.zeros(k)
            mu[j] = mu_j
            return _onto_budgets(y1, used1, qp.cap), mu, it
    return None


def _projected_newton(qp: _QPDual, mu, y, used, val, tol, max_iter):
    """Projected Newton ascent on the dual over every multiplier: a direction, a line search,
    until the budgets hold and every positive multiplier's budget is tight."""
    it = 0
    for it in range(1, max_iter + 1):
        grad = used - qp.cap
        step = _newton_direction(qp, mu, y, grad)
        mu, y, used, val = _dual_line_search(qp, mu, step, val, grad)
        viol = used - qp.cap
        if np.all(viol <= tol) and np.all(np.abs(viol[mu > 0]) <= tol):
            break
    return _onto_budgets(y, used, qp.cap), mu, it


def _newton_direction(qp: _QPDual, mu, y, grad):
    """The Newton step on the free multipliers; one at 0 that the gradient pushes down stays 0."""
    k = len(qp.cols)
    w = ((y > 0) & (y < 1)) * qp.inv_h
    hess = np.array([[ci @ (w * cj) for cj in qp.cols] for ci in qp.cols]) + 1e-12 * np.eye(k)
    fixed = (mu <= 0) & (grad < 0)
    step = np.zeros(k)
    if np.any(~fixed):
        sub = np.ix_(~fixed, ~fixed)
        step[~fixed] = np.linalg.solve(hess[sub], grad[~fixed])
    return step


def _dual_line_search(qp: _QPDual, mu, step, val, grad):
    """Halve the step until it ascends the concave dual or shrinks the budget residual."""
    t = 1.0
    while True:
        new_mu = np.maximum(mu + t * step, 0.0)
        new_y, new_used, new_val = qp.at(new_mu)
        if new_val >= val - 1e-15 * abs(val) or np.abs(new_used - qp.cap).max() < 0.5 * np.abs(grad).max() or t < 1e-10:
            return new_mu, new_y, new_used, new_val
        t *= 0.5


def _onto_budgets(y, used, cap):
    """Guard the small leftover of a Newton iteration: shrink onto the budgets exactly."""
    over = np.max(used / np.maximum(cap, 1e-300))
    return y / over if over > 1 else y


def _one_multiplier(primal, col, cap_j, inv_h, k, j, tol, max_iter):
    """Root of spend_j(mu) = cap_j over mu >= 0; spend_j is non-increasing and piecewise linear."""
    mu = np.zeros(k)

    def residual(m):
        mu[j] = m
        y = primal(mu)
        return y, float(col @ y) - cap_j

    lo, hi = 0.0, None
    m = 0.0
    y, r = residual(m)
    for it in range(1, max_iter + 1):
        if r <= tol and (r >= -tol or m == 0.0):
            break
        if r > 0:
            lo = m
        else:
            hi = m
        slope = -float(col @ (((y > 0) & (y < 1)) * inv_h * col))  # d residual / d mu
        nxt = m - r / slope if slope < 0 else np.inf
        if hi is None:
            nxt = nxt if np.isfinite(nxt) else max(2 * m, 1.0)
        elif not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        m = nxt
        y, r = residual(m)
    if r > tol and hi is not None:  # finish on the feasible side of the bracket
        m = hi
        y, r = residual(m)
    return y, m, it


def damped_diagonal_update(h, s, y, lo=1e-6, hi=1e6):
    """Diagonal of the BFGS update with Powell damping (keeps the Hessian positive)."""
    hs = h * s
    shs = s @ hs
    sy = s @ y
    if shs <= 0:
        return h
    if sy < 0.2 * shs:  # Powell: blend y with Hs so that s'y stays safely positive
        theta = 0.8 * shs / (shs - sy)
        y = theta * y + (1 - theta) * hs
        sy = s @ y
    h_new = h - hs**2 / shs + y**2 / sy
    return np.clip(h_new, lo, hi)


# Fast methods whose allocations COBLA starts from and keeps as candidates, beside ``exact``.
START_METHODS = ("uniform", "energy", "alds", "zhang", "svdllm", "svdllm2")


def _fast_starts(problem: Problem) -> dict[str, Allocation]:
    """Each of ``START_METHODS``' allocations, leaving out a method that finds none. A plan
    for less after a measured miss can aim at exactly the cheapest plan with a rank in every
    layer, with a floor of 1 everywhere: ``exact`` fits it, but ``zhang`` raised there on
    LeNet-5 (its greedy steps down its own scheme choice, and the cost it sums a step at a time
    need not land on that least cost). A start that does not fit is no start."""
    out = {}
    for m in START_METHODS:
        try:
            out[m] = solve(problem, method=m)
        except InfeasibleBudgetError:
            pass
    return out


@register("cobla", needs=Need.NETWORK_LOSS)
def cobla(
    problem: Problem,
    objective: Differentiable | None = None,
    select=None,
    warm_start: str = "energy",
    starts: dict | None = None,
    max_iter: int = 30,
    step_tol: float = 1e-4,
    h0: float | None = None,
    progress=None,
) -> Allocation:
    """SQP on relaxed masks from the best of several starting allocations, then rounding.

    Starts: the exact optimum of a separable objective (``warm_start``, discarded energy by
    default), every method of ``START_METHODS``, and ``starts`` ({name: Allocation}, e.g. the
    sensitivity method's, which needs data). All starts are scored; the SQP runs from the
    best; its roundings and every start are the candidates, and ``solvers.selection.choose``
    keeps one: the lowest loss unless the top-1 error clearly disagrees. So no start beats
    COBLA's choice on both loss and error: it cannot lose to those methods on the data that
    scores them.

    ``max_iter`` 30: on resnet20- and vgg-fmnist at 30% of the MACs (128 calibration
    samples), 10 to 60 iterations moved test accuracy by under a point either way while the
    calibration loss kept falling; more iterations over-fit the calibration samples.

    ``objective``: a Differentiable (network loss and gradients w.r.t. the masks).
    ``select(list of (ranks, active) over all groups) -> list of scores`` scores starts and
    candidates on a selection split (a loss, or a solvers.selection.Score with the top-1
    error too; solvers.selection.choose decides); without it the calibration objective does.
    """
    objective = objective if objective is not None else problem.objective
    if objective is None or isinstance(objective, str):
        raise ValueError("cobla needs the network's loss as a Differentiable objective; lowrank.compress builds it from calibration data")
    if not isinstance(objective, Differentiable):
        raise ValueError("cobla needs a Differentiable objective (loss and gradient w.r.t. the masks)")
    t_start = time.perf_counter()
    start_allocs = _starts(problem, warm_start, starts)
    score = _scorer(problem, objective, select)
    start_scores = dict(zip(start_allocs, score([(a.ranks, a.active) for a in start_allocs.values()])))
    best_start = list(start_scores)[choose(list(start_scores.values()))]
    cands = {f"start:{n}": (a.ranks, a.active) for n, a in start_allocs.items()}
    info = {"starts": {n: sc.to_dict() for n, sc in start_scores.items()}, "sqp_start": best_start}
    rounded, sqp_info = _sqp_from(problem, objective, start_allocs[best_start], max_iter, step_tol, h0, progress)
    cands.update(rounded)
    info.update(sqp_info)
    scores = list(start_scores.values()) + score(list(rounded.values()))
    best = choose(scores)
    names = list(cands)
    info.update({
        "candidates": {n: {"ranks": np.asarray(c[0]).tolist(), "score": sc.to_dict()} for (n, c), sc in zip(cands.items(), scores)},
        "chosen": names[best], "scored_by": "selection split" if select is not None else "calibration objective",
        "total_seconds": time.perf_counter() - t_start,
    })
    ranks, active = cands[names[best]]
    return Allocation(problem, ranks, "cobla", active=active, objective=scores[best].loss, info=info)


def _starts(problem: Problem, warm_start, starts: dict | None) -> dict[str, Allocation]:
    """Every allocation COBLA starts from: ``exact`` on ``warm_start``, the fast methods, and
    the caller's ``starts``, each fitting the budget."""
    # through solve: on measured tables exact's linear-cost answer can overshoot, and an SQP
    # started there has schemes whose least cost is over the budget (nothing rounds it back in)
    out = {"exact": solve(problem, method="exact", objective=warm_start) if isinstance(warm_start, str) else warm_start}
    out.update(_fast_starts(problem))
    # a caller's start made for another problem (restated to minimum ranks, say) can overshoot
    # this one's budget: repaired to fit first, as the SQP and its rounding start inside it
    out.update({name: a if a.feasible else fit_measured(a) for name, a in (starts or {}).items()})
    return out


def _sqp_from(problem: Problem, objective, start: Allocation, max_iter, step_tol, h0, progress):
    """The SQP from ``start`` and its roundings as whole allocations, with its trace and times.
    Layers the start leaves dense stay dense: the relaxation has no dense fallback."""
    frozen = start.active & np.array([g.is_dense(r) for g, r in zip(problem.groups, start.ranks)])
    free = start.active & ~frozen
    if not free.any():
        return {}, {"note": "every layer of the best start is dense: nothing to relax"}
    relaxed = _RelaxedNetwork(problem, objective, frozen, free, start.ranks[free])
    x, fx, gx, trace, iterations, solver_time = _sqp(relaxed, max_iter, step_tol, h0, progress)
    return _roundings(relaxed, x, gx, start, free), {
        "iterations": iterations, "relaxed_objective": fx, "trace": trace,
        "relaxed_masks": {g.name: m for g, m in zip(relaxed.sub.groups, relaxed.budgets.split(x))},
        "sqp_solver_seconds": solver_time, "seconds_per_iteration_solver": solver_time / max(iterations, 1),
        "objective_seconds": relaxed.objective_seconds, "objective_passes": relaxed.passes,
        "objective_gradients": relaxed.gradients,
    }


def _scorer(problem: Problem, objective, select):
    """Scores (solvers.selection.Score) of whole (ranks, active) allocations: by ``select`` on
    the selection split when given (a Score or a plain loss each), else the calibration
    objective's loss with prefix masks."""
    if select is not None:
        return lambda allocs: [sc if isinstance(sc, Score) else Score(float(sc)) for sc in select(allocs)]

    def by_objective(allocs):
        out = []
        for ranks, active in allocs:
            out.append(Score(objective.trial(problem.prefix_masks(ranks, active))[0]))  # (no gradient wanted)
        return out

    return by_objective


class _RelaxedNetwork:
    """The free layers' relaxed masks as one flat vector, the network loss as a function of
    it (layers frozen dense keep all-ones masks), and the starting point."""

    def __init__(self, problem: Problem, objective, frozen, free, start_ranks):
        self.objective = objective
        self.sub = problem.subset(frozen | free, frozen_dense=frozen)
        self.budgets = RelaxedBudgets(self.sub)
        self.start_ranks = start_ranks
        x = np.concatenate([(np.arange(g.full_rank) < r).astype(np.float64) for g, r in zip(self.sub.groups, start_ranks)])
        # The dense fallback is not in the relaxation: start inside the relaxed budgets.
        if np.any(self.budgets.violation(x) > 0):  # (a factor in [0, 1]: masks stay masks)
            x = x * np.clip(np.min(self.budgets.cap / np.maximum(x @ self.budgets.C, 1e-300)), 0.0, 1.0)
        self.x0 = x
        self.dense_masks = {problem.groups[i].name: np.ones(problem.groups[i].full_rank) for i in np.flatnonzero(frozen)}
        self.free_names = [g.name for g in self.sub.groups]
        self.objective_seconds = 0.0
        self.passes, self.gradients = 0, 0  # losses computed, and gradients among them

    def masks_of(self, parts) -> dict:
        return {**self.dense_masks, **dict(zip(self.free_names, parts))}

    def __call__(self, x):
        """(loss, flat gradient) at the flat relaxed masks ``x``."""
        value, gradient = self.trial(x)
        return value, gradient()

    def trial(self, x):
        """(loss, a function giving the flat gradient) at ``x``: a rejected step's gradient is
        never computed (see :class:`Differentiable`)."""
        t = time.perf_counter()
        value, gradient = self.objective.trial(self.masks_of(self.budgets.split(x)))
        self.objective_seconds += time.perf_counter() - t
        self.passes += 1

        def flat():
            t = time.perf_counter()
            grads = gradient()
            self.objective_seconds += time.perf_counter() - t
            self.gradients += 1
            return np.concatenate([grads[n] for n in self.free_names])

        return value, flat


def _sqp(f: _RelaxedNetwork, max_iter, step_tol, h0, progress):
    """SQP with a damped diagonal quasi-Newton Hessian and a backtracking line search.
    Returns (x, f(x), gradient, trace, iterations, the solver's own seconds)."""
    x, budgets = f.x0, f.budgets
    fx, gx = f(x)
    h = np.full(x.size, h0 if h0 is not None else max(np.abs(gx).max(), 1e-8))
    trace = [fx]
    iterations = 0
    t_loop, f_before = time.perf_counter(), f.objective_seconds
    for iterations in range(1, max_iter + 1):
        target, _, _ = solve_qp(x, gx, h, budgets)
        d = target - x
        if np.max(np.abs(d)) < step_tol:
            break
        slope = gx @ d
        step = 1.0
        while True:
            gradient = None  # (a rejected step's graph is freed before the next pass)
            fn, gradient = f.trial(x + step * d)
            if fn <= fx + 1e-4 * step * slope or step < 1e-3:
                break
            step *= 0.3
        if fn > fx:  # no decrease along this direction: stiffen the model and try again
            h = np.clip(h * 4, 1e-6, 1e6)
            continue
        gn = gradient()
        s, y_ = step * d, gn - gx
        x, fx, gx = x + s, fn, gn
        h = damped_diagonal_update(h, s, y_)
        trace.append(fx)
        if progress:
            progress(iterations, fx)
    # the solver's own time: the SQP loop less the objective's forward/backward passes
    solver_time = (time.perf_counter() - t_loop) - (f.objective_seconds - f_before)
    return x, fx, gx, trace, iterations, solver_time


def _roundings(f: _RelaxedNetwork, x, gx, start: Allocation, free) -> dict[str, tuple]:
    """The relaxed masks rounded several ways (see solvers.rounding), as whole allocations."""
    sub = f.sub
    out = {}
    for name, (sub_ranks, _) in candidates(sub, np.ones(len(sub.groups), dtype=bool), f.budgets.split(x), f.budgets.split(gx)).items():
        ranks = start.ranks.copy()
        ranks[free] = sub_ranks
        out[name] = (ranks, start.active)
    return out
