"""What the refit after truncation recovers before fine-tuning: the same plan rebuilt with the
truncated factors as they are and with every layer refit by least squares on the calibration
data (``compress(..., refit=True)``, :mod:`lowrank.factorise.refit`), top-1 on the first 2,000
test images. The plan is made once per row (``refit=False``) and rebuilt both ways, so the
speed and every count are the same for the pair.

    python bench/refit.py [--model resnet20-fmnist] [--latency 0.7 0.75] [--plans cobla:auto cobla:prune exact:auto exact:prune]

Writes reports/quality/refit.md and .csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget, LatencyTarget  # noqa: E402
from lowrank.resources import settings_by_resource  # noqa: E402
from lowrank.util.batches import as_batches  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

LATENCY, = settings_by_resource(LatencyTarget())  # the resource's name, spelled only where it is defined


def one(model, entry, latency: float, method: str, scheme: str) -> dict:
    torch.manual_seed(0)
    result = lowrank.compress(model, entry, Budget(**{LATENCY: latency}), method=method, scheme=scheme, refit=False)
    start = time.perf_counter()
    refit = lowrank.rebuild(model, result.plan, table=result.table, refit_on=as_batches(entry.calibration()))
    seconds = time.perf_counter() - start
    return {"method": method, "scheme": scheme, "latency_budget": latency,
            "speedup": round(result.checks[LATENCY].speedup, 3),
            "top1_truncated": lowrank.evaluate(result.model, entry, 2000), "top1_refit": lowrank.evaluate(refit, entry, 2000),
            "refit_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20-fmnist")
    ap.add_argument("--latency", type=float, nargs="+", default=[0.7, 0.75])
    ap.add_argument("--plans", nargs="+", default=["cobla:auto", "cobla:prune", "exact:auto", "exact:prune"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    entry = get(args.model)
    model = entry.load()
    original = lowrank.evaluate(model, entry, 2000)
    rows = [one(model, entry, lat, *plan.split(":")) for lat in args.latency for plan in args.plans]
    lines = [f"# Refit after truncation: {args.model}, before fine-tuning", "",
             f"Made by `{command(__file__)}`. Each plan is made once (`refit=False`) and rebuilt both ways: the "
             "truncated factors as they are, and every layer refit in run order by least squares on the entry's 128 "
             "calibration images. The speedup (the rebuilt model against the original, timed in turn, eager, 1 thread, "
             "batch 64, BatchNorm folded, channels-last) and every count are the same for both. "
             f"Top-1 on the first 2,000 test images; the original: {original:.2%}.", "",
             "| plan | latency budget | speedup | truncated | refit | gain (points) | refit time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} ({r['scheme']}) | {r['latency_budget']:g} | {r['speedup']:.2f}x | "
                     f"{r['top1_truncated']:.2%} | {r['top1_refit']:.2%} | {100 * (r['top1_refit'] - r['top1_truncated']):+.2f} | "
                     f"{r['refit_seconds']:.1f} s |")
    within = [r for r in rows if r["top1_refit"] >= original - 0.01]
    if within:
        best = max(within, key=lambda r: r["speedup"])
        lines += ["", f"Fastest within 1 point of the original with the refit: {best['speedup']:.2f}x "
                      f"({best['method']} {best['scheme']} at {best['latency_budget']:g}, {best['top1_refit']:.2%})."]
    write_report(ROOT / "reports" / "quality", "refit", rows, lines)


if __name__ == "__main__":
    main()
