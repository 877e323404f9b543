"""``lowrank frontier``: one model under a row of measured budgets (latency), every rebuilt
model timed in turn with the original and evaluated, written as the speed-versus-accuracy
frontier (lowrank.report.frontier) with the fastest plan within a given drop."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import resources
from ..experiment.runner import RunSpec
from ..experiment.store import ResultStore
from ..kinds import scheme_names
from ..experiment.sweep import DEFAULT_CACHE, DEFAULT_DB, SweepConfig, run_sweep
from ..report import make_report
from ..report.frontier import frontier, measured_resources
from . import options


def add(sub) -> None:
    measured = measured_resources()
    cmd = sub.add_parser(
        "frontier", help="speed versus accuracy of one model under a row of measured budgets, and the fastest plan within a drop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress one zoo model under each budget of a measured resource (default "
                    f"{measured[0] if measured else 'none'}) with each method and scheme, time every rebuilt model in turn "
                    "with the original (one run at a time, so runs do not slow each other), evaluate it (and fine-tune "
                    "it, with the original fine-tuned by the same recipe as the control), and write the frontier: a "
                    "plot, a table, the fastest plan within --within points. Runs are kept in the results database, so "
                    "an interrupted frontier resumes, and a later call (another method, more budgets) adds to the "
                    "frontier: it shows every stored run of the model under that resource alone with the same "
                    "evaluation and fine-tuning recipe.",
        epilog="examples:\n"
               "  lowrank frontier --model vgg-fmnist --within 1\n"
               "  lowrank frontier --model resnet20-fmnist --budgets 0.9,0.8,0.7 --schemes spatial,auto "
               "--finetune-epochs 1 --finetune-samples 15000 --kd 0.5",
    )
    cmd.add_argument("--model", required=True, help="a zoo entry (`lowrank zoo list`)")
    cmd.add_argument("--resource", default=measured[0] if measured else None, choices=measured,
                     help="the measured resource the budgets are on")
    cmd.add_argument("--budgets", type=options.floats, default=[0.9, 0.8, 0.7, 0.6, 0.5],
                     help="fractions of the original, comma-separated (default 0.9,0.8,0.7,0.6,0.5)")
    cmd.add_argument("--methods", type=options.names, default=["exact"], help="comma-separated (default exact)")
    cmd.add_argument("--schemes", type=options.names, default=[*scheme_names(), "auto"],
                     help=f"comma-separated (default {','.join(scheme_names())},auto)")
    cmd.add_argument("--within", type=float, default=1.0, help="the drop allowed, in points (default 1)")
    cmd.add_argument("--eval-samples", default="2000", help="test samples per evaluation, or all (default 2000)")
    cmd.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune every rebuilt model (default 0)")
    cmd.add_argument("--finetune-samples", type=int, default=None, help="cap on samples per fine-tuning epoch")
    cmd.add_argument("--kd", type=float, default=0.0, help="distillation weight from the original (default 0)")
    cmd.add_argument("--recalibrate", type=int, default=0, help="re-estimate each rebuilt model's BatchNorm statistics on "
                     "this many calibration samples before evaluating and fine-tuning it (default 0: none)")
    cmd.add_argument("--no-refit", dest="refit", action="store_false",
                     help="keep the truncated factors as they are (default: refit each layer by least squares)")
    cmd.add_argument("--db", default=str(DEFAULT_DB), help=f"the results database (default {DEFAULT_DB})")
    cmd.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"cache of per-model shared work (default {DEFAULT_CACHE})")
    cmd.add_argument("--out", help="output folder (default reports/speed/frontier-MODEL)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(run=_frontier)


def same_recipe(rows: list[dict], config: SweepConfig, resource: str) -> list[dict]:
    """Every stored run of the config's model under a budget on ``resource`` alone, evaluated
    and fine-tuned as this config says: a frontier grows with each call (another method, more
    budgets) instead of forgetting the runs made before. A run timed on another target (its
    key, which names the target, is not the one its spec has now: e.g. BatchNorm not
    folded) is left out. Each stored spec is read as :meth:`RunSpec.from_dict` reads it (a
    setting it predates takes the value runs had before it)."""
    (model,) = config.models
    others = [r for r in resources.names() if r != resource]
    spec = config.runs()[0]
    return [r for r in rows if r.get("model") == model and r.get(f"budget_{resource}") is not None
            and all(r.get(f"budget_{o}") is None for o in others)
            and bool(r.get("spec")) and _same(RunSpec.from_dict(r["spec"]), spec, r.get("key"))]


def _same(stored: RunSpec, spec: RunSpec, key: str | None) -> bool:
    """Whether a stored run was evaluated and fine-tuned as ``spec`` says, under the key its spec has now."""
    return all(getattr(stored, k) == getattr(spec, k)
               for k in ("eval_samples", "finetune_epochs", "finetune_samples", "kd", "recalibrate", "refit", "seed")) \
        and stored.key == key


def _frontier(args) -> int:
    if args.resource is None:
        raise ValueError("no measured resource is registered: a frontier needs one (e.g. latency)")
    name = f"frontier-{args.model}"
    config = SweepConfig.from_dict({
        "name": name, "models": [args.model], "budgets": [{args.resource: b} for b in args.budgets],
        "methods": args.methods, "schemes": args.schemes, "eval_samples": options.samples(args.eval_samples),
        "finetune_epochs": args.finetune_epochs, "finetune_samples": args.finetune_samples, "kd": args.kd,
        "recalibrate": args.recalibrate, "refit": args.refit,
    }, source="command line")
    config.check_models()
    print(f"frontier {name!r}: {len(config.runs())} runs, one at a time (timed runs must not share the CPU)", file=sys.stderr)
    summary = run_sweep(config, db=args.db, cache_dir=args.cache, workers=1, threads=1, progress=not args.quiet)
    print(summary, file=sys.stderr)
    with ResultStore(args.db) as store:
        rows = same_recipe(store.rows(), config, args.resource)
    out = Path(args.out) if args.out else Path("reports") / "speed" / name
    result = frontier(rows, args.resource, args.within)
    make_report(rows, out, title=f"lowrank frontier {args.model}: {resources.get(args.resource).label} versus {rows[0]['metric_name']}")
    result.plot(out / "frontier.png")
    text = result.to_markdown()
    text += f"\nMeasured on: {resources.get(args.resource).default_settings()}.\n"
    (out / "frontier.md").write_text(text + "\n![speed versus metric](frontier.png)\n")
    print(text)
    print(f"frontier: {out / 'frontier.md'} (plot frontier.png; every run: index.md)", file=sys.stderr)
    return 1 if summary.failed else 0
