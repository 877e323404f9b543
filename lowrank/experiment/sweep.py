"""Sweeps: models x budgets x methods x seeds, run once each, stored as they finish.

``SweepConfig`` says what to run (built-in defaults, a TOML/YAML file, or CLI flags);
``run_sweep`` expands it into :class:`~lowrank.experiment.runner.RunSpec` s, skips those the store
already holds, runs the rest on an executor and writes each row the moment it arrives, so
a sweep killed at any point resumes where it stopped.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import needs, resources, solvers
from ..budget import Budget
from ..data import check_available
from ..kinds import DEFAULT_SCHEME
from ..zoo import get
from .runner import RunSpec, execute_run
from .store import ResultStore

DEFAULT_DB = Path(".lowrank") / "runs.sqlite"
DEFAULT_CACHE = Path(".lowrank") / "cache"
DEFAULT_MODELS = ("lenet5-fmnist", "resnet20-fmnist", "vgg-fmnist")
DEFAULT_BUDGETS = tuple(resources.default_sweep_budgets())  # each resource's own (lowrank.resources)
# The data-aware basis only: it beat the weight basis in all 96 (model, budget, method) cells of
# the default grid (reports/quality/bases/); --bases weight,activation runs both.
DEFAULT_BASES = ("activation",)
# The default grid's methods: every method but SVD-LLM's two rules (svdllm, svdllm2), which
# come from language models and are compared there (reports/llm/); --methods all runs them too.
# Kept fixed so that the README's main command and its committed report stay the same grid.
DEFAULT_METHODS = ("alds", "cobla", "energy", "exact", "milp", "sensitivity", "uniform", "zhang")


@dataclass
class SweepConfig:
    """What a sweep runs. Every field but ``name`` is part of each run's identity."""

    name: str = "default"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    budgets: list[dict] = field(default_factory=lambda: [dict(b) for b in DEFAULT_BUDGETS])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    schemes: list[str] = field(default_factory=lambda: [DEFAULT_SCHEME])
    bases: list[str] = field(default_factory=lambda: list(DEFAULT_BASES))
    rank_multiples: list[int] = field(default_factory=lambda: [1])
    # "auto": each model's own (ZooEntry.calib_samples / select_samples): 128 calibration
    # images and the whole selection split for the CNNs, a few token windows for the language
    # model, whose every pass costs seconds. Whole selection splits by default: cobla's choice
    # among its candidates and the reported metric are only as sharp as these samples (at 90%
    # accuracy, 2,000 test samples leave a standard error of 0.7 points, wider than the gaps
    # between the best methods).
    calib_samples: int | None | str = "auto"
    select_samples: int | None | str = "auto"
    eval_samples: int | None = None
    finetune_epochs: int = 0
    finetune_samples: int | None = None
    kd: float = 0.0
    recalibrate: int = 0  # calibration samples each rebuilt model's BatchNorm statistics are re-estimated on (0: none)
    refit: bool = True  # refit each rebuilt layer by least squares on the calibration samples (compress's refit)

    def __post_init__(self):
        if not (self.models and self.budgets and self.methods and self.seeds and self.schemes and self.bases and self.rank_multiples):
            raise ValueError("a sweep needs at least one model, budget, method, seed, scheme, basis and rank multiple")
        if self.methods == ["all"]:
            self.methods = list(solvers.methods())
        unknown = [m for m in self.methods if m not in solvers.methods()]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(solvers.methods())} or 'all'")
        known = resources.names()
        keys = set(known) | {f"{r}_abs" for r in known}
        for b in self.budgets:
            if not isinstance(b, dict) or not b or set(b) - keys:
                raise ValueError(f"a budget is a table with any of {', '.join(known)} (fractions) or their _abs forms "
                                 f"(absolute amounts), e.g. {{macs = 0.5}}; got {b!r}")
            Budget(b)  # validates: a fraction above 1 is refused, not read as a count

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "SweepConfig":
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) sweep file."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"sweep file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            try:
                raw = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path}: not valid TOML ({err})") from err
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as err:
                raise ValueError("YAML sweep files need PyYAML: pip install pyyaml (or write the sweep as TOML)") from err
            raw = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"sweep file {path}: use a .toml or .yaml file")
        return cls.from_dict({**raw, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "sweep config") -> "SweepConfig":
        raw = dict(raw)
        # shortcuts: macs = [0.3, 0.5] and params = [0.4] (any resource) each add one-resource budgets
        shortcut = [{r: float(v)} for r in resources.names() for v in _as_list(raw.pop(r, []))]
        if shortcut:
            raw["budgets"] = list(raw.get("budgets", [])) + shortcut
        for key in ("eval_samples", "calib_samples", "select_samples", "finetune_samples"):
            if raw.get(key) == "all":  # TOML has no null: "all" means every sample of the split
                raw[key] = None
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known | set(resources.names())))}")
        for key in ("models", "methods", "seeds", "schemes", "bases", "rank_multiples"):
            if key in raw:
                raw[key] = _as_list(raw[key])
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)

    def runs(self) -> list[RunSpec]:
        """Every run of the sweep, model-major, without duplicates."""
        specs: dict[str, RunSpec] = {}
        for model, budget, method, scheme, basis, multiple, seed in itertools.product(
            self.models, self.budgets, self.methods, self.schemes, self.bases, self.rank_multiples, self.seeds
        ):
            # calibration samples only where they are used: by the method, or by the basis
            needs_data = solvers.method(method).uses_data
            calib, select = self.samples(model)
            spec = RunSpec(
                model=model, method=method, limits=tuple(Budget(budget).stored().items()), scheme=scheme, basis=basis,
                rank_multiple=int(multiple), seed=int(seed),
                calib_samples=calib if needs_data or basis != "weight" or self.refit else None,
                select_samples=select if needs_data else None,
                eval_samples=self.eval_samples, finetune_epochs=self.finetune_epochs,
                finetune_samples=self.finetune_samples, kd=self.kd, recalibrate=int(self.recalibrate),
                refit=bool(self.refit),
            )
            specs.setdefault(spec.key, spec)
        return list(specs.values())

    def samples(self, model: str) -> tuple[int | None, int | None]:
        """(calibration, selection) samples a run of ``model`` draws ("auto": the model's own)."""
        entry = get(model)
        return (entry.calib_samples if self.calib_samples == "auto" else self.calib_samples,
                entry.select_samples if self.select_samples == "auto" else self.select_samples)

    def check_models(self) -> None:
        """Fail before any work if a model is unknown, has no weights or lacks its dataset."""
        for name in self.models:
            entry = get(name)
            if not entry.has_weights:
                raise ValueError(f"zoo entry {name!r} has no weights; make them with `lowrank zoo train {name}`")
            if entry.splits_fn is None:
                check_available(entry.dataset)
            sizes = entry.splits.sizes()
            calib, select = self.samples(name)
            wanted = {}  # eval_samples is a cap: small test sets are evaluated whole
            if any(solvers.method(m).uses_data for m in self.methods):
                wanted.update(calib=calib, select=select)
            elif any(b != "weight" for b in self.bases):
                wanted.update(calib=calib)
            for part, n in wanted.items():
                if n is not None and n > sizes[part]:
                    setting = {"calib": "calib_samples", "select": "select_samples"}[part]
                    raise ValueError(f"{setting}={n}, but {name}'s {part} split has {sizes[part]} samples; ask for at most that")


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


@dataclass
class SweepSummary:
    name: str
    expected: int
    skipped: int  # already in the store
    ran: int
    failed: int  # rows with status error
    infeasible: int
    seconds: float
    db: Path

    def __str__(self) -> str:
        return (f"sweep {self.name!r}: {self.expected} runs; {self.skipped} already stored, {self.ran} run now "
                f"({self.failed} failed, {self.infeasible} infeasible) in {self.seconds:.0f} s; results in {self.db}")


def run_sweep(
    config: SweepConfig, db: str | Path = DEFAULT_DB, cache_dir: str | Path = DEFAULT_CACHE, executor: str = "local",
    workers: int | None = None, threads: int = 1, address: str | None = None, retry_errors: bool = False,
    progress: bool = True,
) -> SweepSummary:
    """Run every run of ``config`` that ``db`` does not hold yet; rows are stored as they finish."""
    from tqdm import tqdm

    from .executors import make_executor

    t0 = time.perf_counter()
    config.check_models()
    specs = config.runs()
    workers = workers or default_workers()
    with ResultStore(db) as store:
        store.register_sweep(config.name, config.to_dict(), [s.key for s in specs])
        done = store.done_keys(retry_errors=retry_errors)
        # long runs first, so that no worker is left with a slow straggler at the end
        todo = sorted((s for s in specs if s.key not in done), key=lambda s: needs.run_order(s.method))
        counts = {"error": 0, "infeasible": 0}
        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"sweep {config.name}", unit="run", disable=not progress, file=sys.stderr)
        if todo:
            ex = make_executor(executor, workers=min(workers, len(todo)), threads=threads, address=address)
            try:
                for (spec, _), row in ex.map_unordered(execute_run, [(s.to_dict(), str(cache_dir)) for s in todo]):
                    store.add(row)
                    bar.update(1)
                    label = RunSpec.from_dict(spec).label()
                    if row["status"] == "ok":
                        bar.set_postfix_str(f"{label}: {row['metric_before']:.3f}", refresh=False)
                    else:
                        counts[row["status"]] += 1
                        bar.write(f"{row['status']}: {label}: {row['error'].splitlines()[0]}")
            finally:
                ex.close()
        bar.close()
    return SweepSummary(config.name, len(specs), len(specs) - len(todo), len(todo), counts["error"], counts["infeasible"],
                        time.perf_counter() - t0, Path(db))


def default_workers() -> int:
    """One worker per CPU core this process may use (each with one torch thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
