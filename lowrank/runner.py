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
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import solvers

from .budget import Budget
from .cache import DiskCache, digest


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result; its hash is the run's key in the store."""

    model: str
    method: str
    budget_macs: float | None = None
    budget_params: float | None = None
    scheme: str = "channel"
    seed: int = 0
    calib_samples: int | None = 128  # drawn (by seed) from the calibration split; None: all (or unused)
    select_samples: int | None = 128  # drawn (by seed) from the selection split
    eval_samples: int | None = 2000  # at most the first N of the test split; None = all of it
    finetune_epochs: int = 0
    finetune_samples: int | None = None  # cap on samples per fine-tuning epoch
    kd: float = 0.0  # distillation weight from the original model while fine-tuning

    def __post_init__(self):
        if self.budget_macs is None and self.budget_params is None:
            raise ValueError("a run needs a MAC or a parameter budget")
        Budget(macs=self.budget_macs, params=self.budget_params)  # validates
        if self.method not in solvers.methods():
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(solvers.methods())}")
        if self.scheme not in ("channel", "spatial", "auto"):
            raise ValueError(f"unknown scheme {self.scheme!r}; choose channel, spatial or auto")

    @property
    def key(self) -> str:
        return digest(asdict(self))

    @property
    def budget(self) -> Budget:
        return Budget(macs=self.budget_macs, params=self.budget_params)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def label(self) -> str:
        parts = [f"macs {self.budget_macs:g}" if self.budget_macs is not None else "", f"params {self.budget_params:g}" if self.budget_params is not None else ""]
        return f"{self.model} {self.method} {' '.join(p for p in parts if p)} seed {self.seed}"


# --- provenance ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import cvxpy
    import numpy
    import scipy

    from . import __version__

    return {"lowrank": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "cvxpy": cvxpy.__version__}


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The source tree's commit (with ``-dirty`` if it has uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- per-model state, loaded once per worker ------------------------------------------------
@dataclass
class LoadedModel:
    entry: Any
    model: torch.nn.Module
    table: Any  # LayerTable
    fingerprint: str  # of the weights: cache entries are only reused for the same weights
    svds_loaded: set


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
    from .layers import LayerTable
    from .zoo import get

    if name not in _LOADED:
        entry = get(name)
        model = entry.load()
        table = LayerTable(model, entry.example_input(), include=entry.include)
        _LOADED[name] = LoadedModel(entry, model, table, weights_fingerprint(entry, model), set())
    return _LOADED[name]


def _ensure_svds(loaded: LoadedModel, scheme: str, cache: DiskCache) -> None:
    for s in (("channel", "spatial") if scheme == "auto" else (scheme,)):
        if s not in loaded.svds_loaded:
            svds = cache.get("svd", {"weights": loaded.fingerprint, "scheme": s}, lambda: loaded.table.svds(s))
            loaded.table.load_svds(s, svds)
            loaded.svds_loaded.add(s)


def _subset(part, n: int | None, seed: int, batch_size: int = 128):
    """``n`` samples of a split part, chosen by ``seed``, as (inputs, labels) batches."""
    from .data import take

    x, y = part
    if n is not None and n > len(y):
        raise ValueError(f"asked for {n} samples, but the split has only {len(y)}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: len(y) if n is None else n]
    idx = idx.sort().values
    return [(take(x, idx[i : i + batch_size]), y[idx[i : i + batch_size]]) for i in range(0, len(idx), batch_size)]


def count(model: torch.nn.Module, example) -> tuple[int, int]:
    """(MACs, parameters) counted independently of our cost model: FlopCounterMode / 2."""
    from .layers import call_model

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_model(model, example)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


# --- the run ------------------------------------------------------------------------------
def execute_run(spec: dict, cache_dir: str) -> dict:
    """Run one spec and return its store row; failures become rows with status and message."""
    t0 = time.perf_counter()
    run = RunSpec.from_dict(spec)
    row = {**{k: v for k, v in asdict(run).items()}, "key": run.key, "spec": asdict(run),
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
    from .compress import DATA_METHODS, compress
    from .finetune import finetune
    from .objective import as_batches, sensitivity_samples
    from solvers.objectives import from_samples

    loaded = load_model(run.model)
    entry, model, table = loaded.entry, loaded.model, loaded.table
    _ensure_svds(loaded, run.scheme, cache)
    out = {"dataset": entry.dataset, "metric_name": entry.metric}
    out["metric_original"] = cache.get(
        "metric", {"weights": loaded.fingerprint, "dataset": entry.dataset, "eval_samples": run.eval_samples},
        lambda: float(entry.evaluate(model, limit=run.eval_samples)),
    )
    n_test = len(entry.splits.test[1])
    out["eval_samples"] = n_test if run.eval_samples is None else min(run.eval_samples, n_test)
    options = {}
    calib = selection = None
    if run.method in DATA_METHODS:
        calib = _subset(entry.splits.calib, run.calib_samples, run.seed)
        selection = _subset(entry.splits.select, run.select_samples, run.seed)
    else:
        calib = [(entry.example_input(), None)]  # data-free methods only need the input shape
    if run.method == "sensitivity":
        problem = table.problem(run.budget, run.scheme)
        samples = cache.get(
            "sensitivity",
            {"weights": loaded.fingerprint, "scheme": run.scheme, "seed": run.seed, "calib_samples": run.calib_samples},
            lambda: sensitivity_samples(table, problem, as_batches(calib)),
        )
        options["objective"] = from_samples(problem, samples, "measured loss")
    torch.manual_seed(run.seed)
    result = compress(model, calib, run.budget, method=run.method, scheme=run.scheme, table=table, selection=selection, **options)
    alloc = result.allocation
    out["solver_seconds"] = float(alloc.info.get("solve_seconds", 0.0))
    limits = run.budget.limits(table.totals)
    macs, params = count(result.model, entry.example_input())
    out.update(
        macs=int(macs), params=int(params), original_macs=table.totals["macs"], original_params=table.totals["params"],
        macs_fraction=macs / table.totals["macs"], params_fraction=params / table.totals["params"],
        planned_macs=result.plan.totals_after["macs"], planned_params=result.plan.totals_after["params"],
        fits=int(macs <= limits["macs"] and params <= limits["params"]),
        ranks={r.name: r.rank for r in result.plan.rows},  # full rank where a layer stays dense
        schemes={r.name: r.scheme for r in result.plan.rows},
        full_ranks={r.name: r.full_rank for r in result.plan.rows},
    )
    out["metric_before"] = float(entry.evaluate(result.model, limit=run.eval_samples))
    if run.finetune_epochs > 0:
        history = finetune(
            result, entry, epochs=run.finetune_epochs, teacher=model if run.kd > 0 else None, kd=run.kd,
            samples_per_epoch=run.finetune_samples, seed=run.seed, progress=False, eval_limit=run.eval_samples,
        )
        out["finetune_history"] = [float(a) for a in history]
        out["metric_after"] = float(history[-1])
    return out
