"""``lowrank compress``: one zoo entry or saved module under a budget, checked, saved, exported."""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path

import torch

from .. import resources, solvers
from ..compress import DEFAULT_METHOD, SeveredModelWarning, compress
from ..finetuning import finetune
from ..kinds import DEFAULT_SCHEME
from ..saved import save
from ..util.batches import as_batches
from ..util.inputs import take
from ..zoo import ZOO, get
from . import files, options

def add(sub) -> None:
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
    options.add_budget_flags(comp)
    comp.add_argument("--method", default=DEFAULT_METHOD, choices=solvers.methods(), help=f"allocation method (default {DEFAULT_METHOD})")
    comp.add_argument("--scheme", default=DEFAULT_SCHEME, choices=options.SCHEME_CHOICES)
    comp.add_argument("--rank-multiple", type=options.rank_multiple, default="auto", metavar="K",
                      help="every factorised rank a multiple of K, chosen inside the optimisation "
                      "(default auto: 1 on the CPU, 8 on CUDA)")
    comp.add_argument("--min-rank", type=options.min_rank, default="auto", metavar="N",
                      help="the least rank every factorised layer keeps: N, or LAYER=N pairs, comma-separated (default "
                      "auto: 0, but 1 wherever the budget allows it when a plan would cut a layer to rank 0)")
    comp.add_argument("--basis", default="activation", choices=["weight", "activation"],
                      help="activation (default): the SVD whitened by each layer's input on the calibration data; weight: the plain weight SVD")
    comp.add_argument("--no-refit", dest="refit", action="store_false",
                      help="keep the truncated factors as they are (default: refit each layer by least squares on the "
                           "calibration data, which changes no count)")
    options.add_settings_flags(comp)
    comp.add_argument("--calib", metavar="FILE", help="calibration data (required for a model file; zoo entries use their own split)")
    comp.add_argument("--out", metavar="FILE", help="save the compressed module here (plan beside it as .plan.json)")
    comp.add_argument("--save", metavar="DIR", help="save the compressed model with lowrank.save: its weights (safetensors) "
                      "and what was factorised at which rank; lowrank.load(DIR) rebuilds it without the original weights")
    comp.add_argument("--plan", metavar="FILE", help="write the plan as JSON here")
    comp.add_argument("--export", nargs="+", choices=["onnx", "torch"], metavar="FORMAT",
                      help="also save the compressed model as onnx (FILE.onnx; extra `export`) and/or torch (torch.export, "
                      "FILE.pt2) beside --out, each checked against the model on the calibration batch")
    comp.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune a zoo entry after compressing")
    comp.add_argument("--finetune-samples", type=int, default=None, help="cap on samples per fine-tuning epoch")
    comp.add_argument("--kd", type=float, default=0.0, help="distillation weight from the original (default 0)")
    comp.add_argument("--eval-samples", default="all", help="test samples for the metric, or all (default all)")
    comp.add_argument("--keep-severed", action="store_true",
                      help="save the model even when the plan cuts every path from its input to its output (it then "
                      "predicts a constant; without this flag such a run saves nothing and exits with status 3)")
    comp.add_argument("--accept-uncounted", action="store_true",
                      help="allow a MAC budget on a model that runs operations whose MACs lowrank cannot count (the "
                      "budget is then a share of what is counted)")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    comp.add_argument("--quiet", action="store_true", help="no progress output")
    comp.set_defaults(run=_compress)


def _read(path: Path, what: str, weights_only: bool):
    """A torch.save file, or one line saying what is wrong with it and what to do."""
    if not path.exists():
        raise ValueError(f"{what} file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} file {path} is empty: write it again with torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except ModuleNotFoundError as err:
        raise ValueError(f"{path} holds a model whose class lives in the module {err.name!r}, which cannot be imported from "
                         f"here ({os.getcwd()}): run lowrank in the folder that holds {err.name}.py, or put that folder "
                         "on PYTHONPATH") from None
    except AttributeError as err:
        if "__main__" not in str(err):
            raise
        found = re.search(r"attribute '(\w+)'", str(err))
        name = found.group(1) if found else "of"
        raise ValueError(f"{path} holds a model whose class {name} was defined in the script that saved it (its __main__), "
                         "so no other program can rebuild it: move the class into a module (e.g. mymodel.py beside the "
                         "script), import it from there, save the model again, and run lowrank in that folder") from None
    except Exception as err:  # truncated, not a torch file at all, written by something else
        reason = str(err).split(". ")[0].strip() or type(err).__name__
        raise ValueError(f"{what} file {path} is not a readable torch.save file ({type(err).__name__}: {reason}); it may be "
                         "truncated or in another format: write it again with torch.save") from None


def _load_calibration(path):
    data = _read(Path(path), "calibration", weights_only=True)
    if isinstance(data, dict) and "inputs" in data:
        return (data["inputs"], data.get("targets"))
    return data


def _model_and_data(args):
    """(zoo entry or None, model, calibration data) for lowrank compress."""
    entry = None
    if args.model in ZOO:
        entry = get(args.model)
        model = entry.load()
        calib = entry if args.calib is None else _load_calibration(args.calib)
    else:
        path = Path(args.model)
        if not path.exists():
            raise ValueError(f"{args.model!r} is neither a zoo entry ({', '.join(ZOO)}) nor a file")
        if args.calib is None:
            raise ValueError("a model file needs --calib FILE: a tensor of inputs, an (inputs, targets) pair or a list of batches saved with torch.save")
        if os.getcwd() not in sys.path:  # as `python -m` does: the model's classes may live in the user's modules here
            sys.path.insert(0, os.getcwd())
        # A whole pickled module: only load files you trust (pickle runs code).
        model = _read(path, "model", weights_only=False)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module saved with torch.save(model, path)")
        model.eval()
        calib = _load_calibration(args.calib)
    return entry, model, calib


def _compress(args) -> int:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export and not args.out:
        raise ValueError("--export needs --out FILE: the exported files are written beside it (FILE with .onnx / .pt2)")
    budget = options.budget_of(args)
    for flag in ("out", "plan"):  # before minutes of work, not after
        if getattr(args, flag):
            files.check_writable(Path(getattr(args, flag)), f"--{flag}")
    entry, model, calib = _model_and_data(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeveredModelWarning)  # said below, in this command's words
        result = compress(model, calib, budget, method=args.method, scheme=args.scheme, basis=args.basis,
                          rank_multiple=args.rank_multiple, progress=not args.quiet, measure_on=options.settings_of(args),
                          accept_uncounted=args.accept_uncounted, min_rank=args.min_rank, refit=args.refit)
    print(result.plan.table())
    counted = {r: c for r, c in result.checks.items() if resources.get(r).cheap}
    print(f"independent count of the rebuilt model: {options.in_words({r: int(c.rebuilt) for r, c in counted.items()})} "
          f"({'; '.join(resources.get(r).checked_by for r in counted)}): "
          + ("within the budget" if all(c.held for c in counted.values()) else "OVER THE BUDGET"))
    for r, check in result.checks.items():
        if r not in counted:  # measured against the original, beside it
            print(check)
    for ceiling in result.ceilings.values():
        print(ceiling)
    if entry is not None:
        limit = options.samples(args.eval_samples)
        before = entry.evaluate(model, limit=limit)
        after = entry.evaluate(result.model, limit=limit)
        print(f"{entry.metric}: original {before:.4f}, compressed {after:.4f}")
        if args.finetune_epochs:
            history = finetune(result, entry, epochs=args.finetune_epochs, teacher=model if args.kd else None, kd=args.kd,
                               samples_per_epoch=args.finetune_samples, seed=args.seed, progress=not args.quiet, eval_limit=limit)
            print(f"{entry.metric} after each fine-tuning epoch: {', '.join(f'{a:.4f}' for a in history)}")
    elif args.finetune_epochs:
        raise ValueError("fine-tuning needs a zoo entry's training split; for your own model use lowrank.finetune from Python")
    if result.severed_by and not args.keep_severed:
        print(f"lowrank: error: the plan keeps {', '.join(result.severed_by)} at rank 0, which cuts every path from the input "
              "to the output: the compressed model would predict a constant, so nothing was saved. Loosen the budget or try "
              f"--scheme {'auto' if args.scheme != 'auto' else 'spatial'} (--keep-severed saves it anyway)", file=sys.stderr)
        return 3
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        files.write_whole(out, lambda p: torch.save(result.model, p))
        plan_path = Path(args.plan) if args.plan else out.with_suffix(".plan.json")
        files.write_whole(plan_path, lambda p: p.write_text(result.plan.to_json()))
        print(f"compressed model written to {out} (load with torch.load(path, weights_only=False), lowrank installed); plan: {plan_path}")
        for fmt in args.export or []:
            print(_export(result.model, calib, out, fmt))
    elif args.plan:
        files.write_whole(Path(args.plan), lambda p: p.write_text(result.plan.to_json()))
        print(f"plan written to {args.plan}")
    if args.save:
        saved = save(result, args.save, original=model, zoo=entry.name if entry is not None else None)
        how = f"lowrank.load({str(saved.directory)!r})" if entry is not None else f"lowrank.load({str(saved.directory)!r}, base=<your architecture>)"
        print(f"{saved}; load with {how}")
    return 0 if result.held else 1


def _export(model, calib, out, fmt: str):
    """Export beside ``out`` and check the file on (at most 64 samples of) the first calibration batch."""
    from ..export import FORMATS, export

    data = calib.calibration() if hasattr(calib, "calibration") else calib
    x = take(as_batches(data)[0][0], slice(0, 64))
    return export(model, x, out.with_suffix(FORMATS[fmt]), fmt)
