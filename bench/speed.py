"""Does a budget buy speed? Measured latency of rebuilt zoo models under MAC budgets (with and
without rank multiples), latency budgets, and both at once.

    python bench/speed.py [--models ...] [--macs 0.3 0.5 0.7] [--multiples 1 8 16]
                          [--latency 0.5 0.625 0.8] [--methods exact] [--device cpu]

For every model and scheme: compress with each method (activation basis, 128 calibration
samples) under
  * each MAC budget and rank multiple,
  * each latency budget (layers timed dense and at a grid of ranks on the target, see
    lowrank.resources.latency; the plan predicts the total),
  * ``macs=0.5, latency=1.0`` (half the MACs, never slower),
then time the original and the rebuilt model alternately in this process with
``lowrank.timing.compare_speed`` (one torch thread, batch 64, ``torch.inference_mode``,
``--rounds`` rounds; medians). *of MAC limit* = speedup x MACs kept (1.0: all the speed the
MAC count promises). *noise*: robust SD of the rebuilt model's rounds. For latency budgets,
*held* says whether measured <= limit + noise, the limit re-based on the original as
measured alongside. Writes reports/speed/speed.md and reports/speed/speed.csv (or speed-<device>.*).
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.resources import count  # noqa: E402
from lowrank.timing import LatencyTarget, compare_speed  # noqa: E402
from lowrank.util.batches import sample_batches  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

SCHEMES = {"minilm-tweets": ["channel"]}  # Linear layers only: one scheme


def runs(args) -> list[tuple[str, Budget, int]]:
    """(method, budget, rank multiple) per row: MAC budgets with every multiple, then latency
    budgets and half the MACs at no more latency, with every latency method."""
    out = [(m, Budget(macs=f), k) for m in args.methods for f in args.macs for k in args.multiples]
    for m in args.latency_methods:
        out += [(m, Budget(latency=t), 1) for t in args.latency]
        out += [(m, Budget(macs=0.5, latency=1.0), 1)] if args.latency else []
    return out


def describe(budget: Budget) -> str:
    return ", ".join(f"{r} {budget[r]:.1%}" for r in budget)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["lenet5-fmnist", "vgg-fmnist", "resnet20-fmnist", "minilm-tweets"])
    ap.add_argument("--schemes", nargs="*", default=["channel", "spatial"])
    ap.add_argument("--methods", nargs="*", default=["exact"], help="methods for the MAC budget rows")
    ap.add_argument("--latency-methods", nargs="*", default=["exact", "cobla"], help="methods for the latency budget rows")
    ap.add_argument("--macs", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--multiples", nargs="*", type=int, default=[1, 8, 16])
    ap.add_argument("--latency", nargs="*", type=float, default=[0.5, 0.625, 0.8])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = LatencyTarget(device=args.device, threads=1, batch=args.batch)
    rows = []
    for name in args.models:
        entry = get(name)
        original = entry.load().to(args.device)
        calib = sample_batches(entry.splits.calib, 128, 0)
        example = entry.example_input()
        dense_macs = count(original, example, ["macs"])["macs"]
        table = lowrank.LayerTable(original, example)
        accuracy = entry.evaluate(original, limit=args.eval_samples)
        for scheme in SCHEMES.get(name, args.schemes):
            for method, budget, k in runs(args):
                try:
                    result = lowrank.compress(original, calib, budget, method=method, scheme=scheme, table=table,
                                              rank_multiple=k, measure_on=target)
                except lowrank.InfeasibleBudgetError as e:
                    print(f"{name} {scheme} {describe(budget)}: {e}", flush=True)
                    rows.append(row_of(name, scheme, method, budget, k, None, None, None, str(e).split(";")[0]))
                    continue
                check = result.latency or compare_speed(original, result.model, example, target, args.rounds)
                kept = count(result.model, example, ["macs"])["macs"] / dense_macs
                acc = entry.evaluate(result.model, limit=args.eval_samples)
                rows.append(row_of(name, scheme, method, budget, k, kept, check, acc, "", accuracy,
                                   result.plan.info.get("attempts")))
                print(rows[-1], flush=True)
    write(rows, args, target)


def row_of(name, scheme, method, budget, k, kept, check, acc, note, original_accuracy=None, plans=None) -> dict:
    held = None if check is None or check.held is None else bool(check.held)
    return {
        "model": name, "scheme": scheme, "method": method, "budget": describe(budget), "rank_multiple": k,
        "macs_kept": None if kept is None else round(kept, 4),
        "original_ms": None if check is None else round(check.original_us / 1e3, 3),
        "rebuilt_ms": None if check is None else round(check.rebuilt_us / 1e3, 3),
        "noise_ms": None if check is None else round(check.noise_us / 1e3, 3),
        "speedup": None if check is None else round(check.speedup, 3),
        "of_mac_limit": None if check is None else round(check.speedup * kept, 3),
        "predicted_ms": None if check is None or check.predicted_us is None else round(check.predicted_us / 1e3, 3),
        "limit_ms": None if check is None or check.limit_us is None else round(check.limit_us / 1e3, 3),
        "held": held, "plans": plans, "accuracy": acc, "original_accuracy": original_accuracy, "note": note,
    }


def _fmt(v, spec="", none="-"):
    return none if v is None or v == "" else format(v, spec)


def write(rows, args, target):
    cmd = command(__file__)
    where = f"{platform.node()} ({platform.processor() or platform.machine()})" if args.device == "cpu" else \
        torch.cuda.get_device_name(args.device)
    lines = [
        f"# Speed bought by a budget ({args.device})", "",
        f"Made by `{cmd}` on {where}, torch {torch.__version__}: {target.threads} torch thread(s), batch {args.batch}, "
        f"`torch.inference_mode`; original and rebuilt model timed alternately in {args.rounds} rounds "
        "(`lowrank.timing.compare_speed`), medians; activation basis, 128 calibration samples. *of MAC limit*: speedup x "
        "MACs kept (1.0 = all the speed the MAC count promises). *predicted*: the plan's latency from its layer timings; "
        "*held*: measured <= limit + noise (noise: robust SD of the rebuilt model's rounds); *(plans)*: how many plans "
        "compress made (a rebuilt model slower than its plan is planned again for less, at most 3). Accuracy: first "
        f"{args.eval_samples:,} test samples, no fine-tuning.", "",
        "| model | scheme | method | budget | rank multiple | MACs kept | original ms | rebuilt ms | speedup | of MAC limit "
        "| predicted ms | limit ms | held (plans) | accuracy (original) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["note"]:
            lines.append(f"| {r['model']} | {r['scheme']} | {r['method']} | {r['budget']} | {r['rank_multiple']} | {r['note']} "
                         "| | | | | | | | |")
            continue
        held = {True: "yes", False: "**no**", None: "-"}[r["held"]] + (f" ({r['plans']})" if r["plans"] else "")
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['method']} | {r['budget']} | {r['rank_multiple']} | {r['macs_kept']:.1%} | "
            f"{r['original_ms']:.2f} | {r['rebuilt_ms']:.2f} ± {r['noise_ms']:.2f} | {r['speedup']:.2f}x | {r['of_mac_limit']:.2f} | "
            f"{_fmt(r['predicted_ms'], '.2f')} | {_fmt(r['limit_ms'], '.2f')} | {held} | {r['accuracy']:.2%} ({r['original_accuracy']:.2%}) |")
    write_report(args.out, "speed" if args.device == "cpu" else f"speed-{args.device.split(':')[0]}", rows, lines)


if __name__ == "__main__":
    main()
