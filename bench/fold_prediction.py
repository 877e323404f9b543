"""Does the latency model predict a rebuilt model's time, with BatchNorm folded and without?

    python bench/fold_prediction.py [--model resnet20-fmnist] [--latency 0.9 0.8] [--method exact]

For each latency budget and each setting of ``LatencyTarget(fold_batchnorm=...)``, compress
(scheme auto, min_rank 0, the zoo entry's calibration draw), then report what the plan
predicted, what the rebuilt model measured against the original (timed in turn), how many
attempts the plan took, the accuracy on 1,000 test images, the layers cut to rank 0, and the
ceiling (the cheapest plan, predicted and measured). Writes reports/speed/fold_prediction.md and .csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget, LatencyTarget  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20-fmnist")
    ap.add_argument("--latency", nargs="*", type=float, default=[0.9, 0.8])
    ap.add_argument("--method", default="exact")
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    entry = get(args.model)
    model, calib = entry.load(), entry.calibration()
    rows = []
    for fold in (False, True):
        for budget in args.latency:
            limit = Budget(latency=budget)
            (name,) = limit  # the measured resource's name, as the budget spells it
            r = lowrank.compress(model, calib, limit, method=args.method, scheme="auto", min_rank=0,
                                 measure_on=LatencyTarget(fold_batchnorm=fold))
            p = r.allocation.problem
            i = p.resources.index(name)
            ceiling = r.ceilings[name]
            rows.append({"fold_batchnorm": fold, "budget": budget, "attempts": r.plan.info["attempts"],
                         "predicted": round(float(r.allocation.cost[i] / p.reference_cost[i]), 3),
                         "measured": round(r.checks[name].rebuilt / r.checks[name].original, 3),
                         "accuracy": entry.evaluate(r.model, limit=1000),
                         "layers_at_rank_0": sum(row.rank == 0 and not row.dense for row in r.plan.rows),
                         "cheapest_predicted": round(ceiling.predicted_floor, 3), "cheapest_measured": round(ceiling.measured_floor, 3)})
            print(rows[-1], file=sys.stderr)
    lines = [f"# {args.model}: the latency model's prediction with BatchNorm folded and without", "",
             f"Made by `{command(__file__)}`. `{args.method}`, scheme auto, min_rank 0; predicted: the last plan's "
             "predicted latency as a fraction of the original (after any re-planning); measured: the rebuilt model timed "
             "in turn with the original, both folded or both not; accuracy on 1,000 test images (original "
             f"{entry.evaluate(model, limit=1000):.2%}).", "",
             "| BatchNorm folded | latency budget | attempts | predicted | measured | accuracy | layers at rank 0 | "
             "cheapest plan predicted | cheapest plan measured |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['fold_batchnorm']} | {r['budget']} | {r['attempts']} | {r['predicted']} | {r['measured']} | "
              f"{r['accuracy']:.2%} | {r['layers_at_rank_0']} | {r['cheapest_predicted']} | {r['cheapest_measured']} |" for r in rows]
    write_report(args.out, "fold_prediction", rows, lines)


if __name__ == "__main__":
    main()
