"""Command-line interface: ``lowrank sweep | report | compress | zoo | demo``.

User mistakes (a bad budget, an unknown model, a missing dataset or file) end in one line on
stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import sys

from . import kinds, resources
from .budget import Budget


def _demo(args) -> int:
    import torch

    from .compress import compress
    from .experiment.runner import count
    from .model.table import LayerTable
    from .zoo import ARCHITECTURES

    torch.manual_seed(args.seed)
    model = ARCHITECTURES[args.model]().eval()
    x = torch.randn(1, 1, 28, 28)
    calib = torch.randn(32, 1, 28, 28)  # no data yet: methods that run the network distil the original's outputs
    budget = _budget_of(args)
    table = LayerTable(model, x)
    print(f"model: {args.model} (built-in, randomly initialised from seed {args.seed}; trained weights come with the zoo)")
    print(table.summary(), end="\n\n")
    result = compress(model, calib, budget, method=args.method, scheme=args.scheme, table=table, progress=True)
    print(f"{budget}, method {args.method}, scheme {args.scheme}")
    print(result.plan.table(), end="\n\n")
    print(f"independent count of the rebuilt model: {_counted(count(result.model, x, result.plan.totals_after))}")
    inputs = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        ref, out = model(inputs), result.model(inputs)
    err = ((out - ref).norm() / ref.norm()).item()
    print(f"relative output error against the original on 64 random inputs: {err:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.plan.to_json())
        print(f"plan written to {args.json}")
    return 0


def _zoo_list(args) -> int:
    from .zoo import ZOO

    for entry in ZOO.values():
        if entry.loader is not None:
            weights = "pretrained weights from a pip package (optional extra)"
        else:
            weights = "weights committed" if entry.weights_path.exists() else "no weights yet: lowrank zoo train " + entry.name
        recorded = f"{entry.recorded_metric:.2%} {entry.metric}" if entry.recorded_metric is not None else "not recorded"
        print(f"{entry.name:18s} {entry.dataset:14s} {recorded:24s} {weights}\n{'':18s} {entry.description}")
    return 0


def _zoo_train(args) -> int:
    import torch

    from .zoo import get

    if args.threads:
        torch.set_num_threads(args.threads)
    entry = get(args.name)
    model, history, sha = entry.train(device=args.device, progress=True)
    print(f"{entry.name}: test accuracy per epoch {', '.join(f'{a:.4f}' for a in history)}")
    print(f"weights written to {entry.weights_path} (sha256 {sha})")
    if entry.recorded_metric is not None:
        print(f"recorded: {entry.recorded_metric:.4f}; difference {100 * (history[-1] - entry.recorded_metric):+.2f} pt")
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _joint_budget(text: str) -> dict:
    """``macs=0.5,params=0.4`` -> {"macs": 0.5, "params": 0.4} (any registered resources)."""
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in resources.names() or not value:
            raise argparse.ArgumentTypeError(
                f"a budget is RESOURCE=F pairs ({', '.join(resources.names())}), e.g. macs=0.5,params=0.4; got {text!r}")
        out[key.strip()] = float(value)
    return out


def _budget_of(args) -> Budget:
    """The budget of a command's --macs/--params/... flags (one flag per registered resource)."""
    return Budget({r: getattr(args, r) for r in resources.names()})


def _counted(counts: dict) -> str:
    """``123 MACs (FlopCounterMode), 45 params``: an independent count in words."""
    note = {"macs": " (FlopCounterMode)"}
    return ", ".join(f"{v:,} {resources.get(r).heading}{note.get(r, '')}" for r, v in counts.items())


def _rank_multiple(text: str):
    """``auto`` or a positive integer."""
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}")
    return k


def _samples(text: str) -> int | None:
    return None if text == "all" else int(text)


def _sweep_config(args):
    from .experiment.sweep import SweepConfig

    overrides = {}
    for key in ("models", "methods", "seeds", "schemes", "bases", "rank_multiples", "calib_samples", "finetune_epochs", "finetune_samples", "kd", "name"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    for key in ("select_samples", "eval_samples"):  # a number, or "all"
        if getattr(args, key) is not None:
            overrides[key] = _samples(getattr(args, key))
    budgets = [{r: v} for r in resources.names() for v in getattr(args, r) or []] + list(args.budget or [])
    if budgets:
        overrides["budgets"] = budgets
    if args.config:
        return SweepConfig.from_file(args.config, **overrides)
    return SweepConfig.from_dict(overrides, source="command line")


def _sweep(args) -> int:
    import shlex

    from .experiment.sweep import run_sweep

    config = _sweep_config(args)
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
    from pathlib import Path

    from .experiment.store import ResultStore
    from .report import make_report

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


def _load_calibration(path):
    import torch

    from pathlib import Path

    if not Path(path).exists():
        raise ValueError(f"calibration file {path} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "inputs" in data:
        return (data["inputs"], data.get("targets"))
    return data


def _model_and_data(args):
    """(zoo entry or None, model, calibration data, one example input) for lowrank compress."""
    from pathlib import Path

    import torch

    from .zoo import ZOO, get

    entry = None
    if args.model in ZOO:
        entry = get(args.model)
        model = entry.load()
        calib = entry if args.calib is None else _load_calibration(args.calib)
        example = entry.example_input()
    else:
        path = Path(args.model)
        if not path.exists():
            raise ValueError(f"{args.model!r} is neither a zoo entry ({', '.join(ZOO)}) nor a file")
        if args.calib is None:
            raise ValueError("a model file needs --calib FILE: a tensor of inputs, an (inputs, targets) pair or a list of batches saved with torch.save")
        # A whole pickled module: only load files you trust (pickle runs code).
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module saved with torch.save(model, path)")
        model.eval()
        calib = _load_calibration(args.calib)
        from .model.inputs import first_sample
        from .model.network_loss import as_batches

        example = first_sample(as_batches(calib)[0][0])
    return entry, model, calib, example


def _compress(args) -> int:
    from pathlib import Path

    import torch

    from .compress import compress
    from .experiment.runner import count
    from .model.finetune import finetune

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export and not args.out:
        raise ValueError("--export needs --out FILE: the exported files are written beside it (FILE with .onnx / .pt2)")
    budget = _budget_of(args)
    entry, model, calib, example = _model_and_data(args)
    from .latency import LatencyTarget

    target = LatencyTarget(device=args.latency_device, threads=args.latency_threads, batch=args.latency_batch)
    result = compress(model, calib, budget, method=args.method, scheme=args.scheme, basis=args.basis,
                      rank_multiple=args.rank_multiple, progress=not args.quiet, latency_target=target)
    print(result.plan.table())
    counted = [r for r in result.plan.totals_after if r != "latency"]  # latency: timed against the original below
    counts = count(result.model, example, counted)
    limits = result.plan.limits
    fits = all(counts[r] <= limits[r] for r in counts)
    print(f"independent count of the rebuilt model: {_counted(counts)}: " + ("within the budget" if fits else "OVER THE BUDGET"))
    if result.latency is not None:
        print(result.latency)
        fits = fits and bool(result.latency.held)
    if entry is not None:
        limit = _samples(args.eval_samples)
        before = entry.evaluate(model, limit=limit)
        after = entry.evaluate(result.model, limit=limit)
        print(f"{entry.metric}: original {before:.4f}, compressed {after:.4f}")
        if args.finetune_epochs:
            history = finetune(result, entry, epochs=args.finetune_epochs, teacher=model if args.kd else None, kd=args.kd,
                               samples_per_epoch=args.finetune_samples, seed=args.seed, progress=not args.quiet, eval_limit=limit)
            print(f"{entry.metric} after each fine-tuning epoch: {', '.join(f'{a:.4f}' for a in history)}")
    elif args.finetune_epochs:
        raise ValueError("fine-tuning needs a zoo entry's training split; for your own model use lowrank.finetune from Python")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.model, out)
        plan_path = Path(args.plan) if args.plan else out.with_suffix(".plan.json")
        plan_path.write_text(result.plan.to_json())
        print(f"compressed model written to {out} (load with torch.load(path, weights_only=False), lowrank installed); plan: {plan_path}")
        for fmt in args.export or []:
            print(_export(result.model, calib, out, fmt))
    elif args.plan:
        Path(args.plan).write_text(result.plan.to_json())
        print(f"plan written to {args.plan}")
    return 0 if fits else 1


def _export(model, calib, out, fmt: str):
    """Export beside ``out`` and check the file on (at most 64 samples of) the first calibration batch."""
    from .export import FORMATS, export
    from .model.inputs import take
    from .model.network_loss import as_batches

    data = calib.calibration() if hasattr(calib, "calibration") else calib
    x = as_batches(data)[0][0]
    x = take(x, slice(0, 64))
    return export(model, x, out.with_suffix(FORMATS[fmt]), fmt)


SCHEME_CHOICES = [*kinds.scheme_names(), "auto"]


def _add_budget_flags(parser, defaults: dict | None = None, many: bool = False) -> None:
    """One flag per registered resource: --macs, --params, ..."""
    for name in resources.names():
        res = resources.get(name)
        if many:
            parser.add_argument(f"--{name}", type=_floats, help=f"{res.axis}s, comma-separated fractions, e.g. 0.3,0.5,0.7")
        else:
            default = (defaults or {}).get(name)
            parser.add_argument(f"--{name}", type=float, default=default, help=f"{res.axis}: fraction (0, 1] or absolute count"
                                + (f" (default {default})" if default is not None else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank", description="Compress PyTorch networks by low-rank factorisation under "
                                     "budgets on " + ", ".join(resources.get(r).label for r in resources.names()) + ".")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_sweep, _add_report, _add_compress, _add_zoo):
        add(sub)
    return parser


def _add_demo(sub) -> None:
    """lowrank demo: a built-in model, randomly initialised."""
    import solvers

    from .zoo import ARCHITECTURES

    demo = sub.add_parser(
        "demo",
        help="compress a small built-in model under a budget and print the plan",
        description="Compress a small built-in model under a budget and print its layer table and plan.",
        epilog="example: lowrank demo --model vgg --macs 0.5 --params 0.4 --scheme spatial",
    )
    demo.add_argument("--model", default="lenet5", choices=sorted(ARCHITECTURES))
    _add_budget_flags(demo, defaults={"macs": 0.5, "params": 0.4})
    demo.add_argument("--method", default="uniform", choices=solvers.methods(), help="allocation method (default uniform)")
    demo.add_argument("--scheme", default="channel", choices=SCHEME_CHOICES)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    demo.set_defaults(run=_demo)


def _add_sweep(sub) -> None:
    """lowrank sweep: what to run (flags = sweep-file keys) and how."""
    import solvers

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
    what = sweep.add_argument_group("what to run (each also a key of a --config file)")
    what.add_argument("--config", metavar="FILE", help="a .toml or .yaml sweep file")
    what.add_argument("--name", help="the sweep's name: its report goes to reports/NAME (default: default)")
    what.add_argument("--models", type=_names, help="zoo entries, comma-separated (`lowrank zoo list`)")
    _add_budget_flags(what, many=True)
    what.add_argument("--budget", type=_joint_budget, action="append", metavar="macs=F,params=F", help="a joint budget (repeatable)")
    what.add_argument("--methods", type=_names, help=f"comma-separated, or all ({', '.join(solvers.methods())})")
    what.add_argument("--seeds", type=_ints, help="comma-separated; a seed picks the calibration samples and fine-tuning order")
    what.add_argument("--rank-multiples", type=_ints, help="comma-separated, e.g. 1,8: ranks in multiples of each (default 1)")
    what.add_argument("--bases", type=_names, help="weight and/or activation (default both): the basis layers are truncated in")
    what.add_argument("--schemes", type=_names, help=f"{', '.join(SCHEME_CHOICES)} (default channel)")
    what.add_argument("--calib-samples", type=int, help="samples for gradients / sensitivity (default 128)")
    what.add_argument("--select-samples", help="samples for choosing cobla's candidate, or all (default all)")
    what.add_argument("--eval-samples", help="evaluate on at most this many test samples, or all (default all)")
    what.add_argument("--finetune-epochs", type=int, help="fine-tune each compressed model (default 0)")
    what.add_argument("--finetune-samples", type=int, help="cap on samples per fine-tuning epoch")
    what.add_argument("--kd", type=float, help="distillation weight from the original while fine-tuning (default 0)")
    _add_sweep_how(sweep)
    sweep.set_defaults(run=_sweep)


def _add_sweep_how(sweep) -> None:
    """How a sweep runs: workers, executor, where results and the report go."""
    from .experiment.sweep import DEFAULT_CACHE, DEFAULT_DB

    how = sweep.add_argument_group("how to run it")
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
    """lowrank report: a sweep's stored runs to reports/NAME/."""
    from .experiment.sweep import DEFAULT_DB

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


def _add_compress(sub) -> None:
    """lowrank compress: one zoo entry or saved module."""
    import solvers

    comp = sub.add_parser(
        "compress", help="compress one model (a zoo entry or a saved module) under a budget and save it",
        description="Compress a zoo entry, or a whole module saved with torch.save(model, path), under MAC and/or "
                    "parameter budgets; print the plan, check it by an independent count, and save the result.",
        epilog="examples:\n"
               "  lowrank compress --model vgg-fmnist --macs 0.5 --params 0.6 --method cobla --out vgg-small.pt\n"
               "  lowrank compress --model lenet5-fmnist --macs 0.3 --method exact --finetune-epochs 1 --kd 0.5\n"
               "  lowrank compress --model resnet20-fmnist --latency 0.6 --scheme spatial   (measured CPU latency, batch 64)\n"
               "  lowrank compress --model mine.pt --calib calib.pt --macs 0.5 --method cobla --out mine-small.pt\n"
               "    (calib.pt: torch.save of an input tensor, an (inputs, targets) pair or a list of such batches)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("--model", required=True, help="a zoo entry name or the path of a saved module")
    _add_budget_flags(comp)
    comp.add_argument("--method", default="cobla", choices=solvers.methods(), help="allocation method (default cobla)")
    comp.add_argument("--scheme", default="channel", choices=SCHEME_CHOICES)
    comp.add_argument("--rank-multiple", type=_rank_multiple, default="auto", metavar="K",
                      help="every factorised rank a multiple of K, chosen inside the optimisation "
                      "(default auto: 1 on the CPU, 8 on CUDA)")
    comp.add_argument("--basis", default="activation", choices=["weight", "activation"],
                      help="activation (default): the SVD whitened by each layer's input on the calibration data; weight: the plain weight SVD")
    lat = comp.add_argument_group("where --latency is measured (layers are timed once and cached on disk)")
    lat.add_argument("--latency-device", default=None, help="cpu or cuda (default: where the model is)")
    lat.add_argument("--latency-threads", type=int, default=1, help="CPU threads while timing (default 1)")
    lat.add_argument("--latency-batch", type=int, default=64, help="samples per timed call (default 64)")
    comp.add_argument("--calib", metavar="FILE", help="calibration data (required for a model file; zoo entries use their own split)")
    comp.add_argument("--out", metavar="FILE", help="save the compressed module here (plan beside it as .plan.json)")
    comp.add_argument("--plan", metavar="FILE", help="write the plan as JSON here")
    comp.add_argument("--export", nargs="+", choices=["onnx", "torch"], metavar="FORMAT",
                      help="also save the compressed model as onnx (FILE.onnx; extra `export`) and/or torch (torch.export, "
                      "FILE.pt2) beside --out, each checked against the model on the calibration batch")
    comp.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune a zoo entry after compressing")
    comp.add_argument("--finetune-samples", type=int, default=None, help="cap on samples per fine-tuning epoch")
    comp.add_argument("--kd", type=float, default=0.0, help="distillation weight from the original (default 0)")
    comp.add_argument("--eval-samples", default="all", help="test samples for the metric, or all (default all)")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    comp.add_argument("--quiet", action="store_true", help="no progress output")
    comp.set_defaults(run=_compress)


def _add_zoo(sub) -> None:
    """lowrank zoo list|train."""
    zoo = sub.add_parser("zoo", help="list or train the built-in trained models", description="The zoo of trained models.")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_sub.add_parser("list", help="show every entry, its dataset, recorded metric and weights").set_defaults(run=_zoo_list)
    train = zoo_sub.add_parser(
        "train", help="train an entry from its recorded seed and overwrite its weights",
        epilog="example: lowrank zoo train lenet5-fmnist --threads 2",
    )
    train.add_argument("name")
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.set_defaults(run=_zoo_train)


def main(argv: list[str] | None = None) -> int:
    from .data import DatasetMissingError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, DatasetMissingError, FileNotFoundError) as err:  # user mistakes: one clear line
        print(f"lowrank: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowrank: interrupted (a sweep resumes where it stopped when run again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
