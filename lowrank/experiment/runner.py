"""One sweep run, from its parameters to its result row: the unit an executor ships to a worker.

``execute_run(spec, cache_dir)`` is a plain function of plain data, so a process pool or a
Ray cluster can run it, and the same spec gives the same values wherever it runs. Work that
every budget of a model shares (its SVDs, sensitivity tables, the original's metric) goes
through a :class:`~lowrank.cache.DiskCache`; the loaded model stays in the worker's memory
for the worker's next run.
"""
from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .. import needs, resources, solvers
from ..budget import Budget
from ..compress import compress
from ..factorise.basis import BASES
from ..finetuning import finetune
from ..kinds import DEFAULT_SCHEME, check_scheme, scheme_names
from ..planning.table import LayerTable
from ..recalibrate import recalibrate_batchnorm
from ..util.batches import as_batches, sample_batches
from ..util.cache import DiskCache, digest
from ..version import __version__
from ..zoo import get

# Runs stored before resources were registered had exactly these budget fields in their key;
# the key of a new resource's budget field is left out when it is unset, so stored keys hold.
_KEY_BUDGET_FIELDS = ("budget_macs", "budget_params")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result; its hash is the run's key in the store.

    ``limits``: (resource name, limit) pairs in ``Budget``'s stored form (a fraction, or an
    absolute amount above 1); flat, in rows, files and keys, they read ``budget_<resource>``.
    """

    model: str
    method: str
    limits: tuple = ()  # ((resource, limit), ...), stored in registration order
    scheme: str = DEFAULT_SCHEME
    basis: str = "weight"  # "activation": whitened by calibration data (see lowrank.factorise.basis)
    rank_multiple: int = 1  # every factorised rank a multiple of this (see solvers.multiples)
    seed: int = 0
    calib_samples: int | None = 128  # drawn (by seed) from the calibration split; None: all (or unused)
    select_samples: int | None = 128  # drawn (by seed) from the selection split
    eval_samples: int | None = 2000  # at most the first N of the test split; None = all of it
    finetune_epochs: int = 0
    finetune_samples: int | None = None  # cap on samples per fine-tuning epoch
    kd: float = 0.0  # distillation weight from the original model while fine-tuning
    recalibrate: int = 0  # calibration samples the rebuilt model's BatchNorm statistics are re-estimated on (0: none)
    refit: bool = True  # each layer's output factor refit by least squares on the calibration samples (compress's refit)

    def __post_init__(self):
        limits = {r: v for r, v in dict(self.limits).items() if v is not None}
        if not limits:
            raise ValueError("a run needs a budget on at least one of " + ", ".join(resources.names()))
        object.__setattr__(self, "limits", tuple(Budget.from_stored(limits).stored().items()))  # validates
        solvers.method(self.method)  # validates
        if int(self.rank_multiple) != self.rank_multiple or self.rank_multiple < 1:
            raise ValueError(f"rank_multiple must be a positive integer, got {self.rank_multiple!r}")
        if self.basis not in BASES:
            raise ValueError(f"unknown basis {self.basis!r}; choose {', '.join(BASES)}")
        if self.scheme != "auto":
            try:
                check_scheme(self.scheme)
            except ValueError:
                raise ValueError(f"unknown scheme {self.scheme!r}; choose {', '.join(scheme_names())} or auto") from None

    def to_dict(self) -> dict:
        """The flat form: ``budget_<resource>`` for every registered resource (None: no limit)."""
        limits = dict(self.limits)
        out = {}
        for f in fields(self):
            if f.name == "limits":
                out.update({f"budget_{r}": limits.get(r) for r in resources.names()})
            else:
                out[f.name] = getattr(self, f.name)
        return out

    @property
    def uses_data(self) -> bool:
        """Whether the run draws calibration samples: its method needs data, or its basis does."""
        return solvers.method(self.method).uses_data or self.basis != "weight" or self.refit

    @property
    def key(self) -> str:
        flat = self.to_dict()
        if flat["basis"] == "weight":  # runs stored before bases existed keep their keys
            del flat["basis"]
        if flat["rank_multiple"] == 1:  # likewise before rank multiples
            del flat["rank_multiple"]
        if not flat["recalibrate"]:  # likewise before recalibration
            del flat["recalibrate"]
        if not flat["refit"]:  # likewise before the refit
            del flat["refit"]
        streamed = get(self.model).statistics_samples if self.uses_data else None
        if streamed is not None:  # an entry whose basis and refit stream over more samples than calib (none before)
            flat["statistics_samples"] = streamed
        key = {k: v for k, v in flat.items() if not (k.startswith("budget_") and v is None and k not in _KEY_BUDGET_FIELDS)}
        measured = {r: repr(resources.get(r).default_settings()) for r, _ in self.limits if not resources.get(r).cheap}
        if measured:  # where a measured budget is read (a latency target, folded or not) is part of the run
            key["measured_on"] = measured
        return digest(key)

    @property
    def budget(self) -> Budget:
        return Budget.from_stored(dict(self.limits))

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """From the flat form (``budget_<resource>`` keys and the other fields), as stored."""
        limits = {k[len("budget_"):]: v for k, v in d.items() if k.startswith("budget_") and v is not None}
        d = {"refit": False, **d}  # a spec stored before the refit existed was made without it
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "limits"}, limits=tuple(limits.items()))

    def label(self) -> str:
        parts = [f"{r} {v:g}" for r, v in self.limits]
        basis = "" if self.basis == "weight" else f" {self.basis} basis"
        multiple = "" if self.rank_multiple == 1 else f" ranks x{self.rank_multiple}"
        refit = "" if self.refit else " no refit"
        return f"{self.model} {self.method}{basis}{multiple}{refit} {' '.join(parts)} seed {self.seed}"


# --- provenance ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import cvxpy
    import numpy
    import scipy


    return {"lowrank": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "cvxpy": cvxpy.__version__}


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The source tree's commit (with ``-dirty`` if its code has uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        # reports/ holds what sweeps write: re-made reports do not make the code dirty
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- per-model state, loaded once per worker ------------------------------------------------
@dataclass
class LoadedModel:
    entry: Any
    model: torch.nn.Module
    table: LayerTable
    fingerprint: str  # of the weights: cache entries are only reused for the same weights
    svds_loaded: set
    samples: dict = field(default_factory=dict)  # (split part, n, seed) -> batches, shared by the worker's runs


_LOADED: dict[str, LoadedModel] = {}


def weights_fingerprint(entry, model: torch.nn.Module) -> str:
    if getattr(entry, "sha256", None):
        return entry.sha256
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_model(name: str) -> LoadedModel:
    if name not in _LOADED:
        entry = get(name)
        model = entry.load()
        table = LayerTable(model, entry.example_input(), include=entry.include)
        _LOADED[name] = LoadedModel(entry, model, table, weights_fingerprint(entry, model), set())
    return _LOADED[name]


def _samples(loaded: LoadedModel, part: str, n: int | None, seed: int):
    """The same calibration or selection batches (the same tensors) for every run of a model
    and seed in this worker: a data-aware basis made from them is then made once."""
    key = (part, n, seed)
    if key not in loaded.samples:
        loaded.samples[key] = sample_batches(getattr(loaded.entry.splits, part), n, seed)
    return loaded.samples[key]


def _ensure_svds(loaded: LoadedModel, scheme: str, cache: DiskCache) -> None:
    for s in (scheme_names() if scheme == "auto" else (scheme,)):
        if s not in loaded.svds_loaded:
            svds = cache.get("svd", {"weights": loaded.fingerprint, "scheme": s}, lambda: loaded.table.svds(s))
            loaded.table.load_svds(s, svds)
            loaded.svds_loaded.add(s)


# --- the run ------------------------------------------------------------------------------
def execute_run(spec: dict, cache_dir: str) -> dict:
    """Run one spec and return its store row; failures become rows with status and message."""
    t0 = time.perf_counter()
    run = RunSpec.from_dict(spec)
    row = {**run.to_dict(), "key": run.key, "spec": run.to_dict(),
           "versions": versions(), "git_revision": git_revision(), "host": socket.gethostname()}
    try:
        row.update(_compress_and_measure(run, DiskCache(cache_dir)))
        row["status"] = "ok"
    except solvers.InfeasibleBudgetError as err:
        row.update(status="infeasible", error=str(err))
    except Exception as err:  # a bug or a broken model: keep the sweep going, record what happened
        row.update(status="error", error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}")
    row["total_seconds"] = time.perf_counter() - t0
    return row


def _compress_and_measure(run: RunSpec, cache: DiskCache) -> dict:
    loaded = load_model(run.model)
    entry, model, table = loaded.entry, loaded.model, loaded.table
    _ensure_svds(loaded, run.scheme, cache)
    out = {"dataset": entry.dataset, "metric_name": entry.metric}
    out["metric_original"] = cache.get(
        "metric", {"weights": loaded.fingerprint, "dataset": entry.dataset, "eval_samples": run.eval_samples},
        lambda: float(entry.evaluate(model, limit=run.eval_samples)),
    )
    out["metric_chance"] = entry.chance(run.eval_samples)
    n_test = len(entry.splits.test[1])
    out["eval_samples"] = n_test if run.eval_samples is None else min(run.eval_samples, n_test)
    method = solvers.method(run.method)
    selection = measured = statistics = None
    if run.uses_data:
        calib = _samples(loaded, "calib", run.calib_samples, run.seed)
        selection = _samples(loaded, "select", run.select_samples, run.seed) if method.uses_data else None
        statistics = entry.statistics()  # what the basis and the refit stream over, where the entry has them
    else:
        calib = [(entry.example_input(), None)]  # data-free methods only need the input shape
    table.use_basis(run.basis, statistics or calib)  # compress sees the same batches and keeps this basis
    provider = needs.provider(method.needs)
    problem = table.problem(run.budget, run.scheme) if provider is not None else None
    if provider is not None and provider.cache_kind is not None and provider.measures(problem):  # budget-independent: measured once per model
        key = {"weights": loaded.fingerprint, "scheme": run.scheme, "seed": run.seed, "calib_samples": run.calib_samples}
        if run.basis != "weight":
            key["basis"] = run.basis
            if entry.statistics_samples is not None:  # the basis is made on those
                key["statistics_samples"] = entry.statistics_samples
        measured = cache.get(provider.cache_kind, key, lambda: provider.measure(table, problem, as_batches(calib), None, None))
    torch.manual_seed(run.seed)
    result = compress(model, calib, run.budget, method=run.method, scheme=run.scheme, table=table, selection=selection,
                      measured=measured, basis=run.basis, rank_multiple=run.rank_multiple, refit=run.refit, statistics=statistics)
    out["solver_seconds"] = float(result.allocation.info.get("solve_seconds", 0.0))
    out["plan_facts"] = plan_facts(result.plan.info)
    out.update(_costs(result))
    if run.recalibrate:  # after the checks: folded for timing, the statistics change no count or time
        recalibrate_batchnorm(result.model, _samples(loaded, "calib", run.recalibrate, run.seed))
    # runs that reach the same plan in the same basis have the same model: it is evaluated once
    plan = {"weights": loaded.fingerprint, "dataset": entry.dataset, "eval_samples": run.eval_samples, "basis": run.basis,
            "calib": [run.seed, run.calib_samples] if run.basis != "weight" else None,
            "ranks": out["ranks"], "schemes": out["schemes"]}
    if run.recalibrate:
        plan["recalibrate"] = [run.seed, run.recalibrate]
    if run.refit:
        plan["refit"] = [run.seed, run.calib_samples]
    out["metric_before"] = cache.get("plan_metric", plan, lambda: float(entry.evaluate(result.model, limit=run.eval_samples)))
    if entry.sampler is not None:  # a language model: what it writes, beside the original's
        out["sample_text"] = entry.sampler(result.model)
        out["original_sample_text"] = cache.get("sample_text", {"weights": loaded.fingerprint}, lambda: entry.sampler(model))
    if run.finetune_epochs > 0:
        out.update(_finetuned(run, result, model, loaded, cache))
    return out


def _finetuned(run: RunSpec, result, model, loaded, cache: DiskCache) -> dict:
    """The fine-tuned model's metric after each epoch, and its control's (cached per recipe)."""
    entry = loaded.entry
    recipe = dict(epochs=run.finetune_epochs, kd=run.kd, samples_per_epoch=run.finetune_samples, seed=run.seed,
                  progress=False, eval_limit=run.eval_samples)
    history = finetune(result, entry, teacher=model if run.kd > 0 else None, **recipe)
    key = {"weights": loaded.fingerprint, "dataset": entry.dataset, **recipe}
    if entry.finetune_recipe:  # (absent for the entries whose controls were stored before recipes)
        key["recipe"] = entry.finetune_recipe
    return {"finetune_history": [float(a) for a in history], "metric_after": float(history[-1]),
            "metric_original_finetuned": cache.get("finetuned_original", key, lambda: _finetuned_original(model, entry, recipe))}


PLAN_FACTS = ("attempts", "min_rank", "plan_fractions", "severed_by")


def plan_facts(info: dict) -> dict:
    """The part of a plan's info that says why it is as it is, as plain JSON: how many plans a
    measured miss took, the floors ``min_rank="auto"`` set, each measured resource's ceiling
    (``*_in_layers``, ``*_floor_*``: the least any plan, and any plan with a rank in every
    layer, costs) and the layers that cut the network. A row that cut the network then shows
    whether a plan keeping every layer fitted."""
    def plain(v):
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (str, bool, int)) else float(v)

    keep = [k for k in info if k in PLAN_FACTS or k.endswith("_in_layers") or "_floor_" in k]
    return {k: plain(info[k]) for k in keep}


def _finetuned_original(model, entry, recipe: dict) -> float:
    """The control for fine-tuned numbers: the uncompressed original trained by the same recipe
    (same data, epochs, seed and distillation weight, with itself as the teacher), so a reader
    can tell compression loss from the gain of extra training. It trains all its weights: it has
    no factors (where the compressed models train theirs alone, the control may gain more)."""
    from copy import deepcopy

    history = finetune(deepcopy(model), entry, teacher=model if recipe["kd"] > 0 else None, train="all", **recipe)
    return float(history[-1])


def _costs(result) -> dict:
    """Per priced resource, from the rebuilt model's checks (an independent count, or a
    measurement alongside the original): the rebuilt model's total, the original's, the
    fraction and the planned cost, and for a measured resource its noise; whether every
    check held; the ranks chosen per layer."""
    out = {}
    for r, check in result.checks.items():
        res = resources.get(r)
        cast = int if res.integer else float
        out.update({r: cast(check.rebuilt), f"original_{r}": check.original, f"{r}_fraction": check.rebuilt / check.original,
                    f"planned_{r}": result.plan.totals_after[r]})
        if not res.cheap:
            out[f"{r}_noise"] = check.noise  # "held" means measured <= limit + this
    out["fits"] = int(result.held)
    rows = result.plan.rows
    out.update(ranks={x.name: x.rank for x in rows}, schemes={x.name: x.scheme for x in rows},  # full rank where dense
               full_ranks={x.name: x.full_rank for x in rows})
    return out
