"""``compress(model, calib, budget=...)``: the one entry point from a model to a smaller model."""
from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn

from . import kinds, needs, resources, solvers
from .budget import Budget
from .layers.graph import severing
from .layers.record import layers_called
from .planning.ceiling import Ceiling, measured_ceilings, on_the_network_clock, with_alive_floors
from .planning.plan import Plan
from .planning.rebuild import rebuild
from .planning.summary import why_infeasible
from .planning.table import LayerTable
from .resources import Check, Limit
from .solvers.floors import Floors
from .solvers.multiples import Multiples
from .util.batches import as_batches, split_calibration
from .util.checks import check_finite_inputs, check_finite_model, check_materialised, check_module
from .util.parametrized import folded
from .util.inputs import ModelCallError, first_sample, model_device

@dataclass
class CompressionResult:
    model: nn.Module  # the rebuilt model
    plan: Plan
    allocation: solvers.Allocation
    table: LayerTable
    checks: dict[str, Check] = field(default_factory=dict)  # per priced resource: the rebuilt model held against its limit
    ceilings: dict[str, Ceiling] = field(default_factory=dict)  # per measured resource: the least any plan reaches, measured

    def __getattr__(self, name: str):
        """``result.latency`` (any resource's name): its check, or None where it was not priced."""
        if name in resources.names():
            return self.__dict__.get("checks", {}).get(name)
        raise AttributeError(name)

    @property
    def held(self) -> bool:
        """Whether every check held: the promise compress keeps."""
        return all(c.held for c in self.checks.values())

    @property
    def not_priced(self) -> list[str]:
        """Layers the example input did not run (a path it did not take): their MACs and time are
        in no total, so those budgets cover only the paths it took (:class:`UnseenPathWarning`)."""
        return self.plan.info.get("not_priced", "").split(", ") if self.plan.info.get("not_priced") else []

    @property
    def severed_by(self) -> list[str]:
        """Layers at rank 0 that leave the output independent of the input (a constant model)."""
        return self.plan.info.get("severed_by", [])

    def flag_severed(self) -> "CompressionResult":
        """Note the layers at rank 0 that every input-to-output path passes through (the budget
        held, but the model now predicts a constant)."""
        zeroed = [r.name for r in self.plan.rows if r.rank == 0 and not r.dense]
        cut = severing(self.table.graph, zeroed)
        if cut:
            self.plan.info["severed_by"] = cut
        return self


# The best method measured (README: best, or within 0.1 points of it, in 23 of 24 cells of the
# default sweep; on lenet5-digits at 30% of the MACs 93.3% where uniform keeps 65.0%). The CLI
# and the demo use it too.
DEFAULT_METHOD = "cobla"


class SeveredModelWarning(UserWarning):
    """A plan held its budget by cutting the network's input off from its output."""


class UnseenPathWarning(UserWarning):
    """Layers with weights did not run on the example input costs are counted on: the plan,
    and the check that it held, cover only the paths that input took."""


def warn_unseen_paths(table: LayerTable, batches: list) -> list[str]:
    """The layers whose weights the example pass did not use (a branch it did not take),
    named in a :class:`UnseenPathWarning` that says whether the calibration data runs them;
    they stay dense, and their MACs and time are in no total."""
    names = [layer.name for layer in table.layers.values() if layer.not_run]
    if not names:
        return []
    taken = layers_called(table.model, names, batches)
    said = []
    if taken:
        said.append(f"{_listed(sorted(taken))} ran on the calibration data but not on its first sample, on which costs are "
                    "counted: the model takes other paths on other inputs")
    never = [n for n in names if n not in taken]
    if never:
        said.append(f"{_listed(never)} never ran on the calibration data")
    warnings.warn("; ".join(said) + ". Those layers stay dense and their MACs and time are in no total, so those budgets "
                  "and their checks cover only the paths the first sample took; an input that takes another path runs it at "
                  "full cost. Give calibration data whose first sample takes every path, or make the paths independent of "
                  "the input.", UnseenPathWarning, stacklevel=4)  # the caller of compress
    return names


def _listed(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def compress(
    model: nn.Module,
    calib: Any,
    budget: Budget,
    method: str = DEFAULT_METHOD,
    scheme: str = kinds.DEFAULT_SCHEME,
    table: LayerTable | None = None,
    loss: Callable | None = None,
    selection: Any = None,
    progress: bool = False,
    include=None,
    measured: Any = None,
    basis: str = "activation",
    rank_multiple: int | str = "auto",
    measure_on: Any = None,
    accept_uncounted: bool = False,
    min_rank: int | dict | str = "auto",
    **solver_options,
) -> CompressionResult:
    """Factorise ``model``'s layers so that the result fits ``budget``.

    ``calib``: an input tensor, an ``(inputs, targets)`` pair, an iterable of those (a
    DataLoader), or a zoo entry (its calibration and selection splits). MACs are counted for
    one sample. ``scheme``: ``channel``, ``spatial`` or ``auto`` (the solver picks one per
    conv layer). ``method``: any of ``solvers.methods()``; the default, ``cobla``, measured best
    (it needs at least two calibration samples: one part for gradients, one to choose on).
    Methods whose need uses data (``cobla``, ``sensitivity``) run the network:
    ``loss(outputs, targets)`` defaults to cross-entropy with targets, else distance to the
    original outputs. ``cobla`` takes its gradients on ``calib`` and picks its rounding on
    ``selection`` (default: the last quarter of ``calib``, held out from the gradients).
    ``basis``: ``activation`` (default) whitens each layer by its input on the calibration
    data before its SVD, so truncation keeps the layer's output on that data; ``weight``
    truncates the plain weight SVD. Costs are the same; in the default sweep the activation
    basis was better in all 96 (model, budget, method) cells.
    ``rank_multiple``: every factorised layer's rank is a multiple of it (a dense layer keeps
    its full rank), chosen inside the optimisation by every method (see solvers.multiples);
    hardware runs such ranks faster, and every budget still holds. ``"auto"`` (default)
    follows the model's device: 1 on the CPU, 8 on CUDA (see :func:`device_rank_multiple`).
    ``min_rank``: the least rank every factorised layer keeps (an int, or layer name -> int),
    honoured by every method inside the optimisation (see solvers.floors); a budget it puts
    out of reach is refused, naming the smallest achievable with and without it. ``"auto"``
    (default): none, but a plan that cuts layers to rank 0 (a constant output: the network or
    a branch of it cut) is made again with a floor of 1 on those layers wherever the budget
    allows that, so no path is cut while a plan that keeps every path fits (compress warns if
    the plan then still cuts the whole network).
    A measured resource (``Budget(latency=0.5)``) is measured where ``measure_on`` says
    (e.g. ``lowrank.LatencyTarget(threads=4)``; default: the model's device, one CPU thread,
    batch 64, float32, BatchNorm folded, channels-last in eager PyTorch): every layer is timed
    dense and factorised at a grid of ranks (cached on disk) and the plan predicts the total.
    Every priced resource then checks the rebuilt model (``result.checks``; ``result.macs``,
    ``result.latency``, ...): counted independently of the plan, or measured alongside the
    original within the measured noise; a measured model that missed its limit is planned
    again for less, a few times at most.
    A MAC budget on a model that runs operations whose MACs nobody can count (a fused kernel
    outside the modules priced by formula, see lowrank.layers.unseen) is refused, naming them,
    unless ``accept_uncounted=True`` (the budget is then a share of what is counted).
    Everything is checked before any work: a model on the ``meta`` device, NaN or infinite
    values in any parameter, buffer or calibration input are refused, naming each.
    Pass a prebuilt ``table`` to reuse its SVDs, ``measured`` to reuse a method's
    budget-independent measurement (e.g. a cached sensitivity table); ``include`` (name
    prefixes or a predicate) limits which layers may be factorised.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a lowrank.Budget, e.g. Budget(macs=0.5), not {type(budget).__name__}")
    if rank_multiple == "auto":
        rank_multiple = device_rank_multiple(model)
    elif isinstance(rank_multiple, bool) or not isinstance(rank_multiple, numbers.Integral) or rank_multiple < 1:
        raise ValueError(f"rank_multiple must be a positive integer or 'auto', got {rank_multiple!r}")
    _check_min_rank(min_rank)
    check_module(model)
    check_materialised(model)
    check_finite_model(model)
    model = folded(model)  # parametrized weights as plain ones, on a copy: the user's model is never read in train mode
    settings = resources.settings_by_resource(measure_on)
    result = _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis,
                       rank_multiple, min_rank, settings, accept_uncounted, solver_options)
    if result.severed_by:
        warnings.warn(
            f"the plan keeps {', '.join(repr(n) for n in result.severed_by)} at rank 0, which cuts every path from the "
            "input to the output, so the rebuilt model's output no longer depends on its input. The budget is too tight "
            "for a working model with this method and scheme: loosen it, or try another scheme (e.g. scheme='spatial' or "
            "'auto').", SeveredModelWarning, stacklevel=2)
    return result


DEVICE_RANK_MULTIPLE = {"cpu": 1, "cuda": 8}


def device_rank_multiple(model: nn.Module) -> int:
    """The rank multiple ``"auto"`` means on the model's device. CPU: 1, measured
    (reports/speed.md: multiples of 8 or 16 bought no speed at equal MACs on one thread).
    CUDA: 8, NVIDIA's tensor-core alignment guidance for fp16/TF32 GEMMs, not measured here
    (no GPU was lent). Other devices: 1."""
    return DEVICE_RANK_MULTIPLE.get(model_device(model).type, 1)


def _check_min_rank(min_rank) -> None:
    if min_rank == "auto":
        return
    values = min_rank.values() if isinstance(min_rank, dict) else [min_rank]
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"min_rank must be 'auto', a non-negative integer or a dict layer name -> such an integer, got {min_rank!r}")


def _restatements(problem, rank_multiple, min_rank) -> list:
    """``problem`` restated as asked, each on the one before: over blocks of ``rank_multiple``
    values, then with every layer's first ``min_rank`` values kept (in whole blocks)."""
    restated = []
    if rank_multiple > 1:
        restated.append(Multiples(problem, rank_multiple))
    if min_rank:
        floors = ({name: -(-int(m) // rank_multiple) for name, m in min_rank.items()} if isinstance(min_rank, dict)
                  else -(-int(min_rank) // rank_multiple))  # in blocks: the least whole blocks that reach it
        restated.append(Floors(restated[-1].problem if restated else problem, floors))
    return restated


def _solve(problem, method, rank_multiple, min_rank, options) -> solvers.Allocation:
    """Solve ``problem`` restated as asked (see :func:`_restatements`); every method solves the
    restated problem, and a floor out of the budget's reach is refused first."""
    restated = _restatements(problem, rank_multiple, min_rank)
    if min_rank:
        restated[-1].check_feasible()
    for r in restated:
        problem, options = r.problem, r.options(options)
    alloc = solvers.solve(problem, method=method, **options)
    for r in reversed(restated):
        alloc = r.allocation(alloc)
    return alloc


def _cut(alloc: solvers.Allocation) -> list[str]:
    """The factorised layers kept at rank 0 (a constant output: their path is cut)."""
    return [layer for layer, (group, rank) in alloc.by_layer().items() if rank == 0 and not group.is_dense(rank)]


def _fits_floors(problem, rank_multiple: int, floors: dict) -> bool:
    """Whether the budget allows those layers a rank of at least their floor."""
    try:
        _restatements(problem, rank_multiple, floors)[-1].check_feasible()
    except (solvers.InfeasibleBudgetError, ValueError):
        return False
    return True


def wanted_floors(cut: list[str], floors: dict[str, int], fits: Callable[[dict], bool],
                  severs: Callable[[list[str]], list[str]], every: list[str] = ()) -> dict[str, int] | None:
    """The floors to plan with next, given the layers a plan ``cut``: a rank of 1 for
    ``every`` layer where the budget allows a plan with a rank in each (one plan more, and no
    layer is cut), else for all the cut ones where it allows that, else for those that sever
    the network (a cut residual branch leaves the skip path; a cut stem leaves nothing), else
    for one layer whose rank reconnects it (a downsampling block whose branch and shortcut are
    both cut: a rank in the shortcut), else None. Floors on the cut layers alone let the next
    plan cut others: on resnet20-fmnist at latency 0.625 (spatial) each of four rounds moved
    the cut to another block, and the plan kept two branches cut where a live plan fit. On
    resnet20-fmnist at latency 0.7 a rank for all six cut layers did not fit, and the plan kept
    its stem at rank 0: a constant model, where a rank for the stem alone fit."""
    for layers in _floor_candidates(cut, severs, every):
        wanted = {**floors, **{layer: 1 for layer in layers}}
        if layers and wanted != floors and fits(wanted):
            return wanted
    return None


def _floor_candidates(cut: list[str], severs: Callable[[list[str]], list[str]], every: list[str] = ()):
    """The layer sets :func:`wanted_floors` tries, in its order; the paths through the graph
    are searched only once the cheaper candidates have not fit."""
    if cut:
        yield every
    yield cut
    severing_ones = severs(cut)
    yield severing_ones
    if severing_ones:
        yield from ([layer] for layer in cut if not severs([c for c in cut if c != layer]))


def _keep_every_path(alloc, problem, method, rank_multiple, options, floors: dict[str, int], graph):
    """``min_rank="auto"``: while the plan cuts layers and the budget allows them a rank, plan
    again with a floor of 1 on every layer where a plan with a rank in each fits, else on the
    cut layers, or on those of them that sever the network (see :func:`wanted_floors`). A
    plan that keeps a path from input to output is never traded for one that does not (on a
    small ResNet at 4% of the MACs, floors on four cut branches made the next plan cut a
    downsampling block's branch and skip together). Returns the plan and the floors it keeps."""
    floors, every = dict(floors), list(alloc.by_layer())
    for _ in range(4):  # a few rounds: each plans again (COBLA: minutes on a language model)
        cut = _cut(alloc)
        wanted = wanted_floors(cut, floors, lambda f: _fits_floors(problem, rank_multiple, f), lambda c: severing(graph, c),
                               every)
        if wanted is None:
            break
        again = _solve(problem, method, rank_multiple, wanted, options)
        if severing(graph, _cut(again)) and not severing(graph, cut):
            break  # the floors made it cut the network elsewhere: the plan that kept a path stands
        alloc, floors = again, wanted
    if floors:
        alloc.info["min_rank"] = f"1 in {len(floors)} layer(s) a plan cut (auto)"
    return alloc, floors


def _plan(problem, method, rank_multiple, min_rank, options, floors: dict[str, int], graph):
    """One attempt's plan, and the floors ``min_rank="auto"`` set. An attempt after a measured
    miss plans for less, so it starts from the floors the last attempt found (where they still
    fit) instead of first planning the cut again: one solve fewer (COBLA on resnet20-fmnist
    under latency spent half its time re-planning with floors)."""
    if min_rank != "auto":
        return _solve(problem, method, rank_multiple, min_rank, options), {}
    start = floors if floors and _fits_floors(problem, rank_multiple, floors) else {}
    return _keep_every_path(_solve(problem, method, rank_multiple, start, options), problem, method, rank_multiple,
                            options, start, graph)


def check_rebuilt(original: nn.Module, rebuilt: nn.Module, table: LayerTable, budget: Budget, alloc: solvers.Allocation,
                  settings: dict | None = None) -> dict[str, Check]:
    """Every resource of the allocation's problem held against its limit on the rebuilt
    model: counted independently of our cost model, or measured alongside the original."""
    settings = settings or {}
    out = {}
    for name, planned in zip(alloc.problem.resources, alloc.cost):
        limit = budget.limit(name) if name in budget else Limit(math.inf, absolute=True)
        reference = table.prices(name, settings.get(name)).total
        out[name] = resources.get(name).check(original, rebuilt, table.example_input, limit, reference, float(planned),
                                              settings.get(name))
    return out


def _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis, rank_multiple,
              min_rank, settings, accept_uncounted, solver_options) -> CompressionResult:
    provider = needs.provider(solvers.method(method).needs)
    if hasattr(calib, "calibration") and hasattr(calib, "selection"):  # a zoo entry: its own splits
        include = calib.include if include is None else include
        calib, selection = calib.calibration(), (calib.selection() if selection is None else selection)
    batches = as_batches(calib)
    check_finite_inputs(batches)
    if table is None:
        try:
            table = LayerTable(model, first_sample(batches[0][0]), include=include)
        except ModelCallError as err:
            if isinstance(calib, tuple) and len(calib) == 2:
                raise ModelCallError(f"{err} Note: a pair (a, b) is read as (inputs, targets); for a model that takes two "
                                     "inputs, pass ((a, b), None), or a list of ((a, b), targets) batches.") from err
            raise
    _refuse_uncounted(table, budget, settings, accept_uncounted)
    not_priced = warn_unseen_paths(table, batches)
    uses_provider = provider is not None and "objective" not in solver_options  # (a caller's own objective wins)
    if uses_provider:
        batches, select_batches = split_calibration(batches) if selection is None else (batches, as_batches(selection))
    table.use_basis(basis, batches)
    label = method if progress and uses_provider else None
    attempts = max(resources.get(r).attempts for r in budget)
    fractions: dict[str, float] = {}  # per resource, the share of its limit a plan aims at (< 1 once a model missed it)
    ceilings: dict[str, Ceiling] | None = None
    floors: dict[str, int] = {}  # min_rank="auto": the layers an attempt's plan keeps at rank >= 1
    keep_alive = min_rank == "auto"  # aim no lower than a plan with a rank in every layer, until one measured over
    _check_layer_names(min_rank, table)
    for attempt in range(1, attempts + 1):
        problem = table.problem(budget, scheme, settings=settings)
        if ceilings is None:  # measured once: the least a plan reaches in each measured resource
            ceilings = measured_ceilings(model, table, problem, settings, keep_alive=keep_alive)
        problem = on_the_network_clock(problem, ceilings)
        with_alive_floors(problem, ceilings)
        reason = why_infeasible(problem, table.layers.values(), table.prices_of(problem.resources, settings))
        if reason:
            raise solvers.InfeasibleBudgetError(reason + "".join(f" {c}." for c in ceilings.values()))
        if fractions:  # the last rebuilt model measured over its limit: plan for less
            problem = problem.with_budgets(_aimed_at(problem, fractions, _least_cost(problem, rank_multiple, min_rank, keep_alive)))
        options = dict(solver_options)
        if uses_provider:
            if measured is None and provider.measure is not None:
                measured = provider.measure(table, problem, batches, loss, label)
            options = {**provider.options(table, problem, measured, batches, select_batches, loss, label), **solver_options}
        alloc, floors = _plan(problem, method, rank_multiple, min_rank, options, floors, table.graph)
        if progress and "progress" in options:
            print(file=sys.stderr)  # end the progress line
        prices = table.prices_of(problem.resources, settings)
        plan = Plan.from_allocation(alloc, table.layers, prices, budget.limits({r: p.total for r, p in prices.items()}))
        rebuilt = rebuild(model, plan, table=table)
        for name in problem.resources:  # as measured: e.g. channels-last where latency was timed so
            rebuilt = resources.get(name).delivered(rebuilt, settings.get(name))
        checks = check_rebuilt(model, rebuilt, table, budget, alloc, settings)
        plan.info["attempts"] = attempt
        if not_priced:
            plan.info["not_priced"] = ", ".join(not_priced)
        for ceiling in ceilings.values():
            plan.info.update(ceiling.to_info())
        if fractions:
            plan.info["plan_fractions"] = dict(fractions)
        missed = [r for r, c in checks.items() if not c.held]
        if progress and attempts > 1:
            print(f"attempt {attempt}: " + "; ".join(str(c) for r, c in checks.items() if not resources.get(r).cheap), file=sys.stderr)
        if not missed or attempt == attempts:
            break
        least = _least_cost(problem, rank_multiple, min_rank, keep_alive)
        if all(problem.budgets[problem.resources.index(r)] <= least[problem.resources.index(r)] for r in missed):
            if not keep_alive or np.array_equal(least, problem.min_cost()):
                break  # already planned for the least there is
            keep_alive = False  # the cheapest plan with a rank in every layer measured over: none that keeps them fits
        aims = {r: resources.get(r).replan(checks[r], fractions.get(r, 1.0)) for r in missed}
        if any(a is None for a in aims.values()):
            break  # a count missed: no new plan helps (it is reported as not held)
        fractions.update(aims)
    return CompressionResult(rebuilt, plan, alloc, table, checks, ceilings).flag_severed()


def _check_layer_names(floors, table: LayerTable) -> None:
    """A min_rank naming no compressible layer is a typo, not a wish to ignore."""
    if isinstance(floors, dict):
        names = [layer.name for layer in table.compressible]
        unknown = sorted(set(floors) - set(names))
        if unknown:
            raise ValueError(f"min_rank names no compressible layer: {', '.join(map(repr, unknown))}; the compressible "
                             f"layers: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}")


def _refuse_uncounted(table: LayerTable, budget: Budget, settings: dict, accept: bool) -> None:
    """A budget on a total that leaves work out is refused, naming that work, unless accepted."""
    for name in budget:
        unknown = table.prices(name, settings.get(name)).unknown
        if unknown and not accept:
            raise ValueError(
                f"the model does work whose {resources.get(name).label} lowrank cannot count ({'; '.join(unknown)}): a "
                f"{resources.get(name).axis} would be a share of a total that leaves it out. Pass accept_uncounted=True to "
                "budget only what is counted, or limit what is counted or measured whole (parameters, latency).")


def _aimed_at(problem: solvers.Problem, fractions: dict[str, float], least) -> list[float]:
    """The problem's budgets with each resource in ``fractions`` aimed at that share of its
    limit, never below ``least`` (see :func:`_least_cost`)."""
    out = list(problem.budgets)
    for r, f in fractions.items():
        i = problem.resources.index(r)
        out[i] = max(out[i] * f, min(least[i], out[i]))
    return out


def _least_cost(problem: solvers.Problem, rank_multiple: int, min_rank, keep_alive: bool) -> np.ndarray:
    """The least cost a plan for less may aim at, per resource: that of the cheapest plan
    with the user's minimum ranks; with ``min_rank="auto"`` and ``keep_alive``, that of the
    cheapest plan with a rank in every layer, where the budget allows one. Aiming below it
    after a measured miss severed plans where a live one fit (vgg-fmnist, channel, latency
    0.5: aimed at 0.485 below the live plans' 0.49, so the plan for less cut the network)."""
    floors = (1 if keep_alive else None) if min_rank == "auto" else min_rank
    if not floors:
        return problem.min_cost()
    try:
        least = _restatements(problem, rank_multiple, floors)[-1].problem.min_cost()
    except ValueError:  # every layer only dense at those ranks
        return problem.min_cost()
    if min_rank == "auto" and np.any(least > np.asarray(problem.budgets)):
        return problem.min_cost()  # no plan with a rank in every layer fits: the floors set none
    return least
