"""How much the memory layout changes a rebuilt model's speedup: contiguous (NCHW) against
channels-last (NHWC), which is what ``LatencyTarget(memory_format=...)`` chooses.

    python bench/memory_format.py [--models vgg-fmnist resnet20-fmnist] [--macs 0.7 0.5 0.3]

For each zoo model and MAC budget, compress with ``exact`` (the zoo entry's calibration draw,
the schemes given), fold BatchNorm in both models, then time four models in turn within every
round (eager, 1 thread, batch 64): the original and the rebuilt model, each contiguous and
channels-last. Each speedup is against the original in the same layout, so a layout that
speeds up the original as well is no free gain. Accuracy on 2,000 test images (the layout does
not change it). Writes reports/speed/memory_format.md and .csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget, LatencyTarget, timing  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

LAYOUTS = ("contiguous", "channels_last")


def time_layouts(original, rebuilt, example, rounds: int) -> dict[tuple[str, str], float]:
    """Milliseconds per batch of both models in both layouts, all four timed in turn each round."""
    cpu = torch.device("cpu")
    jobs = {}
    for layout in LAYOUTS:
        target = LatencyTarget(device="cpu", memory_format=layout)
        x = timing.batch_of(example, target, cpu)
        for name, model in (("original", original), ("rebuilt", rebuilt)):
            m = timing.deployed(model, cpu, target).eval()
            jobs[(name, layout)] = (lambda m=m, x=x: m(x))
    with timing.timing(LatencyTarget(), cpu):
        times = timing.interleaved_times(list(jobs.values()), cpu, LatencyTarget(), rounds)
    return {k: 1e3 * statistics.median(t) for k, t in zip(jobs, times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["vgg-fmnist", "resnet20-fmnist"])
    ap.add_argument("--macs", nargs="*", type=float, default=[0.7, 0.5, 0.3])
    ap.add_argument("--schemes", nargs="*", default=["spatial", "auto"])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        entry = get(name)
        model, calib = entry.load(), entry.calibration()
        example = calib[0][0][:1]
        base = entry.evaluate(model, limit=args.eval_samples)
        for macs in args.macs:
            for scheme in args.schemes:
                r = lowrank.compress(model, entry, Budget(macs=macs), method="exact", scheme=scheme)
                t = time_layouts(model, r.model, example, args.rounds)
                rows.append({"model": name, "macs_budget": macs, "scheme": scheme, "original_accuracy": base,
                             "accuracy": entry.evaluate(r.model, limit=args.eval_samples),
                             **{f"{m}_{l}_ms": round(t[(m, l)], 2) for l in LAYOUTS for m in ("original", "rebuilt")},
                             "speedup_contiguous": round(t[("original", "contiguous")] / t[("rebuilt", "contiguous")], 2),
                             "speedup_channels_last": round(t[("original", "channels_last")] / t[("rebuilt", "channels_last")], 2),
                             "original_channels_last_over_contiguous": round(
                                 t[("original", "contiguous")] / t[("original", "channels_last")], 2)})
                print(rows[-1], file=sys.stderr)
    lines = ["# Rebuilt models' speedup, contiguous against channels-last", "",
             f"Made by `{command(__file__)}`. `exact` under a MAC budget, BatchNorm folded in both models, eager "
             f"PyTorch, 1 thread, batch 64; the four models timed in turn in each of {args.rounds} rounds (medians). "
             "Each speedup is against the original in the same layout. Accuracy on "
             f"{args.eval_samples:,} test images, before any fine-tuning.", "",
             "| model | MACs | scheme | accuracy (original) | original: contiguous, channels-last (ms) | "
             "rebuilt: contiguous, channels-last (ms) | speedup contiguous | speedup channels-last |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['macs_budget']:.0%} | {r['scheme']} | {r['accuracy']:.2%} ({r['original_accuracy']:.2%}) | "
              f"{r['original_contiguous_ms']}, {r['original_channels_last_ms']} | {r['rebuilt_contiguous_ms']}, "
              f"{r['rebuilt_channels_last_ms']} | {r['speedup_contiguous']:.2f}x | {r['speedup_channels_last']:.2f}x |"
              for r in rows]
    write_report(args.out, "memory_format", rows, lines)


if __name__ == "__main__":
    main()
