"""``lowrank sweep`` and ``lowrank report``: run models x budgets x methods, store every run,
and turn a sweep's stored runs into its report."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .. import resources, solvers
from ..experiment.store import ResultStore
from ..experiment.sweep import DEFAULT_CACHE, DEFAULT_DB, SweepConfig, run_sweep
from ..report import make_report
from . import options

def add(sub) -> None:
    """lowrank sweep: what to run (flags = sweep-file keys) and how; lowrank report."""
    _add_sweep(sub)
    _add_report(sub)


def _add_sweep(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="run models x budgets x methods x seeds, store every run, write the report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a sweep and write its report. With no arguments: the built-in Fashion-MNIST models, a default budget "
            "grid, every method, one seed (minutes on 2 cores). Runs already in the database are skipped, so an "
            "interrupted sweep resumes where it stopped. Flags override a --config file's settings."
        ),
        epilog=(
            "examples:\n"
            "  lowrank sweep                                     # the default sweep -> reports/default/\n"
            "  lowrank sweep --name quick --models lenet5-digits --macs 0.3,0.5 --methods exact,cobla\n"
            "  lowrank sweep --config sweeps/mine.toml --workers 4\n"
            "  lowrank sweep --name joint --budget macs=0.5,params=0.4 --seeds 0,1,2 --finetune-epochs 1 --kd 0.5\n"
            "  lowrank sweep --executor ray --ray-address auto   # on a running Ray cluster\n"
            "\n"
            "a sweep file (TOML; YAML takes the same keys):\n"
            "  name = \"mine\"\n"
            "  models = [\"lenet5-fmnist\", \"vgg-fmnist\"]\n"
            "  budgets = [{macs = 0.5}, {params = 0.4}, {macs = 0.5, params = 0.4}]   # or macs = [...], params = [...]\n"
            "  methods = [\"cobla\", \"exact\", \"uniform\"]   # or [\"all\"]\n"
            "  seeds = [0, 1]\n"
            "  finetune_epochs = 1"
        ),
    )
    _add_what(sweep.add_argument_group("what to run (each also a key of a --config file)"))
    _add_how(sweep.add_argument_group("how to run it"))
    sweep.set_defaults(run=_sweep)


def _add_what(what) -> None:
    what.add_argument("--config", metavar="FILE", help="a .toml or .yaml sweep file")
    what.add_argument("--name", help="the sweep's name: its report goes to reports/NAME (default: default)")
    what.add_argument("--models", type=options.names, help="zoo entries, comma-separated (`lowrank zoo list`)")
    options.add_budget_flags(what, many=True)
    what.add_argument("--budget", type=options.joint_budget, action="append", metavar="macs=F,params=F", help="a joint budget (repeatable)")
    what.add_argument("--methods", type=options.names, help=f"comma-separated, or all ({', '.join(solvers.methods())})")
    what.add_argument("--seeds", type=options.ints, help="comma-separated; a seed picks the calibration samples and fine-tuning order")
    what.add_argument("--rank-multiples", type=options.ints, help="comma-separated, e.g. 1,8: ranks in multiples of each (default 1)")
    what.add_argument("--bases", type=options.names, help="weight and/or activation (default activation): the basis layers are truncated in")
    what.add_argument("--schemes", type=options.names, help=f"{', '.join(options.SCHEME_CHOICES)} (default channel)")
    what.add_argument("--calib-samples", type=int, help="samples for gradients / sensitivity (default 128)")
    what.add_argument("--select-samples", help="samples for choosing cobla's candidate, or all (default all)")
    what.add_argument("--eval-samples", help="evaluate on at most this many test samples, or all (default all)")
    what.add_argument("--finetune-epochs", type=int, help="fine-tune each compressed model (default 0)")
    what.add_argument("--finetune-samples", type=int, help="cap on samples per fine-tuning epoch")
    what.add_argument("--kd", type=float, help="distillation weight from the original while fine-tuning (default 0)")
    what.add_argument("--recalibrate", type=int, help="re-estimate each rebuilt model's BatchNorm statistics on this many "
                      "calibration samples before evaluating it (default 0: none)")
    what.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                      help="keep the truncated factors as they are (default: refit each layer by least squares on the "
                           "calibration samples)")


def _add_how(how) -> None:
    how.add_argument("--workers", type=int, default=None, help="parallel runs (default: one per CPU core)")
    how.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    how.add_argument("--executor", default="local", choices=["local", "ray"], help="local process pool or Ray (extra lowrank[ray])")
    how.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a local one")
    how.add_argument("--db", default=str(DEFAULT_DB), help=f"the results database (default {DEFAULT_DB})")
    how.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"cache of per-model shared work (default {DEFAULT_CACHE})")
    how.add_argument("--retry-errors", action="store_true", help="run again the runs stored with status error")
    how.add_argument("--report-dir", help="where the report goes (default reports/NAME)")
    how.add_argument("--no-report", action="store_true", help="only run; make the report later with lowrank report")
    how.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    how.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_report(sub) -> None:
    report = sub.add_parser(
        "report", help="turn a sweep's stored runs into reports/NAME/ (index.md, index.html, plots, runs.csv/json)",
        description="Write a sweep's report from the results database: budget-versus-metric curves per model (one line per "
                    "method), rank-per-layer plots, a table of every run, runs.csv and runs.json.",
        epilog="examples:\n  lowrank report                   # the default sweep -> reports/default/\n"
               "  lowrank report --name quick --out /tmp/quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--name", default="default", help="the sweep (default: default)")
    report.add_argument("--db", default=str(DEFAULT_DB), help=f"the results database (default {DEFAULT_DB})")
    report.add_argument("--out", help="output folder (default reports/NAME)")
    report.set_defaults(run=_report)


def _config(args) -> SweepConfig:
    overrides = {}
    for key in ("models", "methods", "seeds", "schemes", "bases", "rank_multiples", "calib_samples", "finetune_epochs", "finetune_samples", "kd", "recalibrate", "refit", "name"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    for key in ("select_samples", "eval_samples"):  # a number, or "all"
        if getattr(args, key) is not None:
            overrides[key] = options.samples(getattr(args, key))
    options.check_fractions({r: getattr(args, r) or [] for r in resources.names()})
    budgets = [{r: v} for r in resources.names() for v in getattr(args, r) or []] + list(args.budget or [])
    if budgets:
        overrides["budgets"] = budgets
    if args.config:
        return SweepConfig.from_file(args.config, **overrides)
    return SweepConfig.from_dict(overrides, source="command line")


def _sweep(args) -> int:
    config = _config(args)
    config.check_models()
    runs = config.runs()
    print(f"sweep {config.name!r}: {len(config.models)} models x {len(config.budgets)} budgets x {len(config.methods)} methods "
          f"x {len(config.schemes)} schemes x {len(config.bases)} bases x {len(config.rank_multiples)} rank multiples x {len(config.seeds)} seeds = {len(runs)} runs", file=sys.stderr)
    if args.dry_run:
        for r in runs:
            print(r.label())
        return 0
    summary = run_sweep(
        config, db=args.db, cache_dir=args.cache, executor=args.executor, workers=args.workers, threads=args.threads,
        address=args.ray_address, retry_errors=args.retry_errors, progress=not args.quiet,
    )
    print(summary, file=sys.stderr)
    if not args.no_report:
        command = "lowrank " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("lowrank") else None
        index = _write_report(args.db, config.name, args.report_dir, command=command)
        print(f"report: {index} (and index.md, runs.csv, runs.json, plots/)", file=sys.stderr)
    return 1 if summary.failed else 0


def _write_report(db, name, out, command=None):
    if not Path(db).exists():
        raise ValueError(f"no results database at {db}; run `lowrank sweep` first (or pass --db)")
    with ResultStore(db) as store:
        rows = store.rows(sweep=name)
        sweeps = store.sweeps()
        expected = store.expected(name)
    config = sweeps.get(name)
    if not rows:
        known = ", ".join(sorted(sweeps)) or "none"
        raise ValueError(f"no runs of sweep {name!r} in {db} (sweeps there: {known}); run `lowrank sweep --name {name}` first")
    if len(rows) < expected:
        print(f"note: {len(rows)} of the sweep's {expected} runs are stored; `lowrank sweep` again finishes the rest", file=sys.stderr)
    out = Path(out) if out else Path("reports") / name
    return make_report(rows, out, title=f"lowrank sweep {name!r}: budget versus {rows[0]['metric_name']}", config=config, command=command)


def _report(args) -> int:
    index = _write_report(args.db, args.name, args.out)
    print(f"report: {index} (and index.md, runs.csv, runs.json, plots/)")
    return 0
