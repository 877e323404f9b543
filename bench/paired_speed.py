"""How steady is the speed check? One rebuilt model timed against its original several times
over, each check read two ways: the ratio of the two columns' medians (the check before) and
the median of the per-round ratios (``lowrank.timing.paired_estimate``, the check now).

    python bench/paired_speed.py [--model vgg-fmnist] [--latency 0.625] [--checks 6] [--rounds 11]

The rebuilt model is ``exact`` at a latency budget, spatial scheme, weight basis; every check
times the same pair in turn (``lowrank.timing.alternating_rounds``, what ``compare_speed`` times; one
torch thread, batch 64).
Writes reports/speed/paired_speed.md and .csv.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.timing import LatencyTarget, alternating_rounds, paired_estimate  # noqa: E402
from lowrank.util.batches import sample_batches  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg-fmnist")
    ap.add_argument("--latency", type=float, default=0.625)
    ap.add_argument("--checks", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = LatencyTarget(device="cpu", threads=1, batch=64)
    entry = get(args.model)
    original = entry.load().eval()
    example = entry.example_input()
    rows = []
    rebuilt = lowrank.compress(original, sample_batches(entry.splits.calib, 128, 0), Budget(latency=args.latency),
                               method="exact", scheme="spatial", basis="weight", measure_on=target).model.eval()
    for check in range(1, args.checks + 1):
        ta, tb = alternating_rounds(original, rebuilt, example, target, args.rounds)  # what compare_speed times
        original_us, rebuilt_us, noise_us = paired_estimate(ta, tb)
        ratios = [a / b for a, b in zip(ta, tb)]
        rows.append({"check": check, "original_ms_min": round(1e3 * min(ta), 2), "original_ms_max": round(1e3 * max(ta), 2),
                     "speedup_unpaired": round(statistics.median(ta) / statistics.median(tb), 3),
                     "speedup_paired": round(original_us / rebuilt_us, 3), "noise_ms": round(noise_us / 1e3, 2),
                     "round_speedup_min": round(min(ratios), 3), "round_speedup_max": round(max(ratios), 3)})
        print(rows[-1], flush=True)
    spread = {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in ("speedup_unpaired", "speedup_paired")}
    lines = [
        f"# How steady is the speed check? ({args.model}, cpu)", "",
        f"Made by `{command(__file__)}` on {platform.node()} ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}: one rebuilt model (`exact`, latency budget {args.latency:.1%}, spatial scheme) timed "
        f"against the original {args.checks} times, {args.rounds} rounds each, in turn within every round (1 torch "
        "thread, batch 64). *unpaired*: median of the original's times over the median of the rebuilt's (the check "
        "before); *paired*: the median of the per-round ratios (`lowrank.timing.paired_estimate`, the check now).", "",
        f"Across checks of the same pair: unpaired {spread['speedup_unpaired'][0]:.2f}-{spread['speedup_unpaired'][1]:.2f}x, "
        f"paired {spread['speedup_paired'][0]:.2f}-{spread['speedup_paired'][1]:.2f}x.", "",
        "| check | original ms (min-max) | speedup unpaired | speedup paired | noise ms | per-round speedups |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['check']} | {r['original_ms_min']:.1f}-{r['original_ms_max']:.1f} | {r['speedup_unpaired']:.2f}x | "
                     f"{r['speedup_paired']:.2f}x | {r['noise_ms']:.1f} | {r['round_speedup_min']:.2f}-{r['round_speedup_max']:.2f}x |")
    write_report(args.out, "paired_speed", rows, lines)


if __name__ == "__main__":
    main()
