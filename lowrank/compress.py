"""``compress(model, calib, budget=...)``: the one entry point from a model to a smaller model."""
from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from . import kinds, needs, resources, solvers
from .budget import Budget
from .layers.channels import PRUNE
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


# The best method measured (reports/default/: best, or within 0.1 points of it, in 23 of 24 cells of the
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


def compress(model: nn.Module, calib: Any, budget: Budget, method: str = DEFAULT_METHOD, scheme: str = kinds.DEFAULT_SCHEME,
             table: LayerTable | None = None, loss: Callable | None = None, selection: Any = None, progress: bool = False,
             include: Callable | Sequence[str] | None = None, measured: Any = None, basis: str = "activation", rank_multiple: int | str = "auto",
             measure_on: Any = None, accept_uncounted: bool = False, min_rank: int | dict | str = "auto",
             refit: bool = True, statistics: Any = None, **solver_options) -> CompressionResult:
    """Factorise ``model``'s layers so that the result fits ``budget``; ``model`` itself is never changed.

    Args:
        calib: an input tensor, an ``(inputs, targets)`` pair, an iterable of those (a
            DataLoader), or a zoo entry (its calibration and selection splits).
        budget: e.g. ``Budget(macs=0.5, params=0.4, latency=0.6)``; MACs count one sample.
        method: any of ``solvers.methods()``; ``cobla`` (default, measured best) needs at least
            two calibration samples: gradients on ``calib``, its choice on ``selection``
            (default: the last quarter of ``calib``, held out).
        scheme: ``channel``, ``spatial`` or ``auto`` (the solver picks one per conv layer).
        loss: ``loss(outputs, targets)`` for the methods that run the network (``cobla``,
            ``sensitivity``); default cross-entropy with targets, else distance to the
            original outputs.
        basis: ``activation`` (default) whitens each layer by its input before its SVD; ``weight``
            truncates the plain weight SVD (worse in all 96 cells of the default sweep).
        rank_multiple: every factorised rank a multiple of it, chosen inside the optimisation;
            ``"auto"``: 1 on the CPU, 8 on CUDA (:func:`device_rank_multiple`).
        min_rank: the least rank of every factorised layer (an int, or layer name -> int),
            honoured inside the optimisation. ``"auto"``: none, but a plan that cuts layers to
            rank 0 is made again with a floor of 1 wherever the budget allows it.
        measure_on: where a measured resource is measured, e.g.
            ``lowrank.LatencyTarget(threads=4)``; default: the model's device, one thread,
            batch 64, BatchNorm folded, channels-last. The plan predicts the total from timed
            layers; the rebuilt model is timed against the original, planned again for less
            if it missed, and returned in the layout it was timed in.
        accept_uncounted: allow a MAC budget on a model running work nobody can count (then a
            share of what is counted); otherwise it is refused, naming it.
        refit: refit each layer's output factor by least squares, in run order, to give the
            original layer's output on the inputs it now sees (:mod:`lowrank.factorise.refit`; no
            count changes). ``False``: the rebuilt model equals the masked model the solver scored.
        statistics: data (as ``calib``) the activation basis and the refit stream over instead
            of ``calib``: they keep sums, not samples, so they can take many more than a method
            that runs the network at every step (``cobla``). Default: ``calib``, or the zoo entry's.
        table: a prebuilt :class:`LayerTable` (reuses its SVDs).
        measured: a method's cached measurement (a sensitivity table).
        include: name prefixes or a predicate: the layers that may be factorised.

    Every priced resource checks the rebuilt model (``result.checks``, ``result.held``).
    Refused before any work, each named: a TorchScript or ``meta`` model, NaN or infinite
    parameters, buffers or inputs, empty calibration data. Parametrized layers are factorised
    from their effective weight; layers the first sample does not run are named in an
    :class:`UnseenPathWarning`; a plan that cuts every path raises a :class:`SeveredModelWarning`.
    """
    rank_multiple = _checked_arguments(model, budget, rank_multiple, min_rank)
    model = folded(model)  # parametrized weights as plain ones, on a copy: the user's model is never read in train mode
    settings = resources.settings_by_resource(measure_on)
    result = _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis,
                       rank_multiple, min_rank, settings, accept_uncounted, refit, statistics, solver_options)
    if result.severed_by:
        warnings.warn(
            f"the plan keeps {', '.join(repr(n) for n in result.severed_by)} at rank 0, which cuts every path from the "
            "input to the output, so the rebuilt model's output no longer depends on its input. The budget is too tight "
            "for a working model with this method and scheme: loosen it, or try another scheme (e.g. scheme='spatial' or "
            "'auto').", SeveredModelWarning, stacklevel=2)
    return result


def _checked_arguments(model, budget, rank_multiple, min_rank) -> int:
    """Refuse bad arguments and models before any work; the rank multiple ``"auto"`` means."""
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a lowrank.Budget, e.g. Budget(macs=0.5), not {type(budget).__name__}")
    check_module(model)
    if rank_multiple == "auto":
        rank_multiple = device_rank_multiple(model)
    elif isinstance(rank_multiple, bool) or not isinstance(rank_multiple, numbers.Integral) or rank_multiple < 1:
        raise ValueError(f"rank_multiple must be a positive integer or 'auto', got {rank_multiple!r}")
    _check_min_rank(min_rank)
    check_materialised(model)
    check_finite_model(model)
    return rank_multiple


DEVICE_RANK_MULTIPLE = {"cpu": 1, "cuda": 8}


def device_rank_multiple(model: nn.Module) -> int:
    """The rank multiple ``"auto"`` means on the model's device. CPU: 1, measured
    (reports/speed/speed.md: multiples of 8 or 16 bought no speed at equal MACs on one thread).
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


def _say_if_pruning_is_unavailable(table: LayerTable, scheme) -> None:
    """One line where the model cannot be pruned at all (torch-pruning cannot trace it, or is
    not installed): ``scheme="prune"`` stops there; ``"auto"`` warns and factorises only."""
    if not table.pruning_note:
        return
    if scheme == "prune":
        raise ValueError(f"{table.pruning_note}; scheme='auto' or a factorisation scheme works without it")
    if scheme == "auto":
        warnings.warn(f"{table.pruning_note}; scheme='auto' chooses among the factorisations only", stacklevel=4)


def _compress(model, calib, budget, method, scheme, table, loss, selection, progress, include, measured, basis, rank_multiple,
              min_rank, settings, accept_uncounted, refit, statistics, solver_options) -> CompressionResult:
    """Prepare (calibration batches, the layer table, its basis, what the method needs), then
    plan, rebuild and check, planning again for less while a measured resource missed."""
    started = time.perf_counter()
    batches, selection, include, statistics = _calibration(calib, selection, include, statistics)
    streamed = _checked_batches(statistics) if statistics is not None else None
    refit_on = list(streamed or batches) if refit else None  # all of it (a data-using method holds a part of calib out)
    table = table if table is not None else _table(model, batches, include, calib)
    _refuse_uncounted(table, budget, settings, accept_uncounted)
    _say_if_pruning_is_unavailable(table, scheme)
    not_priced = warn_unseen_paths(table, batches)
    provider = needs.provider(solvers.method(method).needs)
    uses_provider = provider is not None and "objective" not in solver_options  # (a caller's own objective wins)
    select_batches = None
    if uses_provider:
        batches, select_batches = split_calibration(batches) if selection is None else (batches, as_batches(selection))
    table.use_basis(basis, streamed or batches, progress=progress)
    _check_layer_names(min_rank, table)
    need = _Need(provider, batches, select_batches, loss, method if progress else None, measured) if uses_provider else None
    attempts = _Attempts(model, table, budget, scheme, method, rank_multiple, min_rank, settings, solver_options, need,
                         progress, refit_on)
    attempts.seconds["preparing"] = time.perf_counter() - started
    result = attempts.run()
    if not_priced:
        result.plan.info["not_priced"] = ", ".join(not_priced)
    return result.flag_severed()


def _calibration(calib, selection, include, statistics):
    """(calibration batches, selection data, include, statistics data): a zoo entry brings its
    own splits, layer selection and statistics windows."""
    if hasattr(calib, "calibration") and hasattr(calib, "selection"):
        include = calib.include if include is None else include
        statistics = calib.statistics() if statistics is None and hasattr(calib, "statistics") else statistics
        calib, selection = calib.calibration(), (calib.selection() if selection is None else selection)
    return _checked_batches(calib), selection, include, statistics


def _checked_batches(data) -> list:
    batches = as_batches(data)
    check_finite_inputs(batches)
    return batches


def _table(model, batches, include, calib) -> LayerTable:
    """The layer table from the first calibration sample; a model that cannot run on it is told
    how a pair of inputs is read."""
    try:
        return LayerTable(model, first_sample(batches[0][0]), include=include)
    except ModelCallError as err:
        if isinstance(calib, tuple) and len(calib) == 2:
            raise ModelCallError(f"{err} Note: a pair (a, b) is read as (inputs, targets); for a model that takes two "
                                 "inputs, pass ((a, b), None), or a list of ((a, b), targets) batches.") from err
        raise


@dataclass
class _Need:
    """What a data-using method's provider needs (lowrank.needs): the batches, the loss, and
    its budget-independent measurement, made once and kept across attempts."""

    provider: Any
    batches: list
    select_batches: list
    loss: Callable | None
    label: str | None
    measured: Any = None

    def options(self, table: LayerTable, problem) -> dict:
        if self.measured is None and self.provider.measure is not None and self.provider.measures(problem):
            self.measured = self.provider.measure(table, problem, self.batches, self.loss, self.label)
        return self.provider.options(table, problem, self.measured, self.batches, self.select_batches, self.loss, self.label)


RAISES = {"cobla": 2}  # plans aiming higher after a pruning plan held with room (default 4): COBLA's solves are slow


class _Raising:
    """Plans aiming higher after a pruning plan held with room to spare. The solvers price a
    pruned conv by its own channels only (linear, an upper bound: the producing layer loses the
    same channels, see :mod:`lowrank.planning.pruned`; its time too), so such a plan comes in
    under its limits. The next plans aim every limit higher by a factor f: halfway to where
    the first plan's room points while none has missed, then by false position between the
    highest aim that held and the lowest that missed (the use u(f) = the largest share of a
    limit a plan spends is far from linear: plans turn layers dense). The last plan that held
    is kept. At most ``tries`` plans more (each a solve and a check: seconds with ``exact``;
    with ``cobla`` each solve is its own SQP of about 11 s on resnet20-fmnist, so COBLA gets
    two, see :data:`RAISES`). On resnet20-fmnist at 60% of the MACs, pruning only: the first
    plan counts 24.6%; bisection from the room it left ended at 45.2%. A timed plan whose room
    under a limit is within that timing's noise stops the raising: a higher aim could not be
    told from a miss (on resnet20-fmnist at latency 0.6, the two raises past such a plan both
    measured over and 25 s were lost)."""

    def __init__(self, tries: int = 4):
        self.tries, self.best, self.factor, self.base = tries, None, 1.0, {}
        self.low: tuple[float, float] | None = None  # (factor, use) of the highest aim that held
        self.high: tuple[float, float] | None = None  # ... and of the lowest that missed

    @property
    def active(self) -> bool:
        return self.best is not None

    def start(self, result, checks, budget, aimed: dict[str, float]) -> bool:
        """After a plan (aimed at the shares ``aimed`` of its limits): whether to aim higher (it
        pruned and held every limit with at least 2% room, and more room than a timing's noise)."""
        use = self._use(checks, budget)
        if (not result[1].info.get("pruned_outputs") or not all(c.held for c in checks.values()) or use is None
                or use > 0.98 or self._within_noise(checks, budget)):
            return False
        self.best, self.low = result, (1.0, use)
        self.base = {r: aimed.get(r, 1.0) for r in budget}
        self.factor = 1.0 + (1.0 / use - 1.0) / 2
        return True

    def tried(self, result, checks, budget) -> bool:
        """Record the plan aimed at :attr:`factor`; whether to try another."""
        use = self._use(checks, budget)
        if all(c.held for c in checks.values()):
            self.best, self.low = result, (self.factor, use)
        else:
            self.high = (self.factor, use)
        self.tries -= 1
        (f0, u0), hi = self.low, self.high
        if self.tries <= 0 or u0 > 0.98 or (hi is not None and hi[0] - f0 < 0.01):
            return False
        if self.best is result and self._within_noise(checks, budget):
            return False
        if hi is None:
            self.factor = f0 + (f0 / u0 - f0) / 2
        else:
            guess = f0 + (1.0 - u0) * (hi[0] - f0) / max(hi[1] - u0, 1e-9)
            self.factor = min(max(guess, f0 + 0.1 * (hi[0] - f0)), hi[0] - 0.1 * (hi[0] - f0))
        return True

    @staticmethod
    def _within_noise(checks, budget) -> bool:
        """Whether a measured limit has no more room than its measurement's noise."""
        return any(c.noise > 0 and c.limit - c.rebuilt <= c.noise for r, c in checks.items() if r in budget)

    @staticmethod
    def _use(checks, budget) -> float | None:
        """The largest share of a limit the plan spent (over 1: it missed)."""
        use = [c.rebuilt / c.limit for r, c in checks.items() if r in budget and c.limit > 0]
        return max(use) if use else None

    def fractions(self) -> dict[str, float]:
        """Each limit's share to aim at: the one the first plan held at, times the factor."""
        return {r: f * self.factor for r, f in self.base.items()}


class _Attempts:
    """Plan, rebuild, check; while a measured resource missed its limit, plan again aiming
    lower (a few attempts at most). Holds what the attempts share: the measured ceilings, the
    share of each limit aimed at, the floors ``min_rank="auto"`` found."""

    def __init__(self, model, table, budget, scheme, method, rank_multiple, min_rank, settings, solver_options,
                 need: _Need | None, progress, refit_on: list | None = None):
        self.refit_on = refit_on
        self.model, self.table, self.budget, self.scheme, self.method = model, table, budget, scheme, method
        self.rank_multiple, self.min_rank, self.settings = rank_multiple, min_rank, settings
        self.solver_options, self.need, self.progress = solver_options, need, progress
        self.attempts = max(resources.get(r).attempts for r in budget)
        self.fractions: dict[str, float] = {}  # per resource, the share of its limit aimed at (< 1 once a model missed it)
        self.ceilings: dict[str, Ceiling] | None = None
        self.floors: dict[str, int] = {}  # min_rank="auto": the layers an attempt's plan keeps at rank >= 1
        self.keep_alive = min_rank == "auto"  # aim no lower than a plan with a rank in every layer, until one measured over
        self.raising = _Raising(RAISES.get(method, 4))  # a pruning plan under its limits: plans aiming higher
        # where the call's time went (plan.info["seconds"]): preparing (calibration, layer table, basis, layer
        # prices), the measured ceilings, planning (every solve), rebuilding (with the refit) and checking
        self.seconds = {"preparing": 0.0, "ceilings": 0.0, "planning": 0.0, "rebuilding": 0.0, "checking": 0.0}

    def run(self) -> CompressionResult:
        attempt = 0
        while True:
            attempt += 1
            problem = self.problem()
            result = self.attempt(problem, attempt)
            checks = result[3]
            if self.raising.active:  # this plan aimed higher: keep it if it held, and bisect
                if not self.raising.tried(result, checks, self.budget):
                    break
            elif not self.raising.start(result, checks, self.budget, self.fractions):
                if attempt >= self.attempts or not self.aim_lower(problem, checks):
                    break
                continue
            self.fractions = {**self.fractions, **self.raising.fractions()}
        rebuilt, plan, alloc, checks = self.raising.best or result
        plan.info["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        plan.info["plans_made"] = attempt
        return CompressionResult(rebuilt, plan, alloc, self.table, checks, self.ceilings)

    def problem(self):
        """This attempt's problem: on the network's clock, refused where infeasible, aimed
        lower after a measured miss."""
        problem = self.table.problem(self.budget, self.scheme, settings=self.settings)
        if self.ceilings is None:  # measured once: the least a plan reaches in each measured resource
            started = time.perf_counter()
            self.ceilings = measured_ceilings(self.model, self.table, problem, self.settings, keep_alive=self.keep_alive)
            self.seconds["ceilings"] += time.perf_counter() - started
        problem = on_the_network_clock(problem, self.ceilings)
        with_alive_floors(problem, self.ceilings)
        reason = why_infeasible(problem, self.table.layers.values(), self.table.prices_of(problem.resources, self.settings))
        if reason:
            if any(g.option == PRUNE for g in problem.groups):
                reason += (" (The least is the plan with every pruned conv at rank 0, which leaves the layer making its "
                           "channels whole; a plan keeping one channel there would narrow that layer, but lowrank does "
                           "not plan below the prices.)")
            raise solvers.InfeasibleBudgetError(reason + "".join(f" {c}." for c in self.ceilings.values()))
        if self.fractions:  # the last rebuilt model measured over its limit: plan for less
            problem = problem.with_budgets(_aimed_at(problem, self.fractions, self.least(problem)))
        return problem

    def least(self, problem):
        return _least_cost(problem, self.rank_multiple, self.min_rank, self.keep_alive)

    def attempt(self, problem, attempt: int):
        """Plan, rebuild (handed over as measured), check: (rebuilt, plan, allocation, checks)."""
        started = time.perf_counter()
        options = {**self.need.options(self.table, problem), **self.solver_options} if self.need else dict(self.solver_options)
        alloc, self.floors = _plan(problem, self.method, self.rank_multiple, self.min_rank, options, self.floors, self.table.graph)
        self.seconds["planning"] += time.perf_counter() - started
        if self.progress and "progress" in options:
            print(file=sys.stderr)  # end the progress line
        prices = self.table.prices_of(problem.resources, self.settings)
        plan = Plan.from_allocation(alloc, self.table.layers, prices, self.budget.limits({r: p.total for r, p in prices.items()}))
        started = time.perf_counter()
        rebuilt = rebuild(self.model, plan, table=self.table, refit_on=self.refit_on, progress=self.progress)
        if self.refit_on:
            plan.info["refit"] = "least squares on the calibration data"
        for name in problem.resources:  # as measured: e.g. channels-last where latency was timed so
            rebuilt = resources.get(name).delivered(rebuilt, self.settings.get(name))
        rebuilt_at = time.perf_counter()
        self.seconds["rebuilding"] += rebuilt_at - started
        checks = check_rebuilt(self.model, rebuilt, self.table, self.budget, alloc, self.settings)
        self.seconds["checking"] += time.perf_counter() - rebuilt_at
        plan.info["attempts"] = attempt
        for ceiling in self.ceilings.values():
            plan.info.update(ceiling.to_info())
        if self.fractions:
            plan.info["plan_fractions"] = dict(self.fractions)
        if self.progress and self.attempts > 1:
            print(f"attempt {attempt}: " + "; ".join(str(c) for r, c in checks.items() if not resources.get(r).cheap),
                  file=sys.stderr)
        return rebuilt, plan, alloc, checks

    def aim_lower(self, problem, checks) -> bool:
        """After a miss, the shares of the missed limits to aim at next; False where no new plan
        helps (nothing missed, already planned for the least there is, or a count missed)."""
        missed = [r for r, c in checks.items() if not c.held]
        if not missed:
            return False
        least = self.least(problem)
        if all(problem.budgets[problem.resources.index(r)] <= least[problem.resources.index(r)] for r in missed):
            if not self.keep_alive or np.array_equal(least, problem.min_cost()):
                return False  # already planned for the least there is
            self.keep_alive = False  # the cheapest plan with a rank in every layer measured over: none that keeps them fits
        aims = {r: resources.get(r).replan(checks[r], self.fractions.get(r, 1.0)) for r in missed}
        if any(a is None for a in aims.values()):
            return False  # a count missed: no new plan helps (it is reported as not held)
        self.fractions.update(aims)
        return True


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
