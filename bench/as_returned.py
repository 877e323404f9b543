"""Does a latency budget hold for a user who does nothing special? A model compressed under
``Budget(latency=...)`` (timed channels-last by default) used as ``compress`` returns it, with a
plain contiguous input, against the original as the user handed it over (contiguous), timed
in turn; beside it the same rebuilt model with contiguous weights (how compress returned it
before it returned the timed layout), and the original laid out channels-last too.

    python bench/as_returned.py [--model vgg-fmnist] [--latency 0.6] [--scheme spatial] [--repeats 2]

Writes reports/speed/as_returned.md and .csv.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget, LatencyTarget, compare_speed  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg-fmnist")
    parser.add_argument("--latency", type=float, default=0.6)
    parser.add_argument("--scheme", default="spatial")
    parser.add_argument("--method", default="exact")
    parser.add_argument("--repeats", type=int, default=2, help="paired timings of each form")
    parser.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    entry = get(args.model)
    model = entry.load().eval()
    result = lowrank.compress(model, entry, Budget(latency=args.latency), method=args.method, scheme=args.scheme)
    x = entry.example_input()
    plain = LatencyTarget(memory_format="contiguous")  # no relayout: each model and its input as they are
    laid_out = copy.deepcopy(model).to(memory_format=torch.channels_last)
    forms = {"as returned (weights channels-last)": (model, result.model),
             "weights contiguous (as returned before)": (model, copy.deepcopy(result.model).to(memory_format=torch.contiguous_format)),
             "as returned, against the original laid out channels-last too": (laid_out, result.model)}
    rows = [{"form": "compress's own check (both channels-last)", "run": 0, "original_ms": result.latency.original_us / 1e3,
             "rebuilt_ms": result.latency.rebuilt_us / 1e3, "speedup": result.latency.speedup,
             "fraction": result.latency.rebuilt_us / result.latency.original_us}]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in result.model.parameters() if w.dim() == 4)
    for form, (original, rebuilt) in forms.items():
        for run in range(1, args.repeats + 1):
            check = compare_speed(original, rebuilt, x, plain)
            rows.append({"form": form, "run": run, "original_ms": check.original_us / 1e3, "rebuilt_ms": check.rebuilt_us / 1e3,
                         "speedup": check.speedup, "fraction": check.rebuilt_us / check.original_us})
    lines = [f"# A latency budget, used as returned ({args.model}, latency {args.latency}, {args.method}, {args.scheme})", "",
             f"`{command(__file__)}`", "",
             "Eager PyTorch, 1 thread, batch 64, BatchNorm folded in both models, a contiguous input, timed in turn (11 "
             "rounds each); the original as handed over (contiguous) unless the row says otherwise. The first row is "
             "compress's own check (both models and the input channels-last).", "",
             "| form | run | original ms | rebuilt ms | speedup | share of the original's time |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['form']} | {r['run']} | {r['original_ms']:.1f} | {r['rebuilt_ms']:.1f} | {r['speedup']:.2f}x | "
              f"{r['fraction']:.2f} |" for r in rows]
    write_report(args.out, "as_returned", [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                 lines)


if __name__ == "__main__":
    main()
