"""How long COBLA takes under a latency budget with ``scheme='auto'`` on resnet20-fmnist, end to end.

    python bench/auto_latency_time.py [--latency 0.8 0.7 0.6] [--threads 2]

Each row is one call of ``lowrank.compress(model, entry, Budget(latency=...), method="cobla",
scheme="auto")`` with its defaults (the latency target: eager CPU, one thread, batch 64,
BatchNorm folded), timed from the call to its return: the layer timings, the plan, the rebuild
with its refit and the timed check of the rebuilt model against the original included. Each
budget runs twice in a fresh process of its own: first with an empty latency cache (every layer
option timed anew, as on a fresh machine), then with the cache the first run left (as every
later run; the process also keeps the readings in memory). Writes
reports/speed/auto_latency_time.md and .csv.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

TARGET_SECONDS = 60  # issue 35: a COBLA run with a latency budget and scheme='auto' under 60 s
EVAL_SAMPLES = 2000


def one_run(model, entry, latency: float, cache: str) -> dict:
    os.environ["LOWRANK_LATENCY_CACHE"] = cache
    start = time.perf_counter()
    result = lowrank.compress(model, entry, Budget(latency=latency), method="cobla", scheme="auto")
    seconds = time.perf_counter() - start
    check = result.latency
    schemes = sorted({r.scheme for r in result.plan.rows if not r.dense})
    split = result.plan.info["seconds"]
    return {"latency_budget": latency, "compress_seconds": round(seconds, 1), "plans": result.plan.info["plans_made"],
            "preparing_seconds": round(split["preparing"] + split["ceilings"], 1),
            "planning_seconds": round(split["planning"], 1),
            "rebuild_check_seconds": round(split["rebuilding"] + split["checking"], 1),
            "cobla_seconds": round(result.allocation.info.get("total_seconds", float("nan")), 1),
            "measured": round(check.rebuilt / check.original, 3), "speedup": round(check.speedup, 2), "held": result.held,
            "schemes": "+".join(schemes), "top1": round(lowrank.evaluate(result.model, entry, limit=EVAL_SAMPLES), 4)}


def pair(latency: float, threads: int) -> None:
    """One budget's two runs, empty cache then filled, printed as JSON lines (run in a child process)."""
    torch.set_num_threads(threads)
    entry = get("resnet20-fmnist")
    model = entry.load()
    with tempfile.TemporaryDirectory() as cache:
        for cache_state in ("empty", "filled"):
            print(json.dumps({"cache": cache_state, **one_run(model, entry, latency, cache)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, nargs="+", default=[0.8, 0.7, 0.6], help="share of the original's time")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the planning work (timing uses the target's 1)")
    ap.add_argument("--pair", type=float, help=argparse.SUPPRESS)  # internal: one budget in this process
    args = ap.parse_args()
    if args.pair is not None:
        return pair(args.pair, args.threads)
    entry = get("resnet20-fmnist")
    original = lowrank.evaluate(entry.load(), entry, limit=EVAL_SAMPLES)
    rows = []
    for latency in args.latency:  # a fresh process per budget: nothing timed before is kept in memory
        out = subprocess.run([sys.executable, __file__, "--pair", str(latency), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        print(rows[-2:], flush=True)
    lines = ["# How long COBLA takes under a latency budget with `scheme='auto'` (resnet20-fmnist)", "",
             f"Made by `{command(__file__)}` (this project's 2-core CPU machine; {args.threads} torch threads for the "
             "planning, the target's one thread for every timing). Each row is one call of `lowrank.compress(model, entry, "
             "Budget(latency=...), method=\"cobla\", scheme=\"auto\")`, timed from the call to its return: the layer timings, "
             "COBLA (scoring its starts, its SQP and its roundings), the rebuild with its refit and the rebuilt model timed "
             "against the original in turn. The latency target is the default one: eager CPU, one thread, batch 64, "
             "BatchNorm folded. Each budget runs in a fresh process, first with an empty latency cache (every layer "
             "option timed anew, as on a fresh machine) and then with the cache that run left. A check holds within "
             "the timing noise it measured, so a rebuilt model may read a little over its budget and hold. A plan "
             "rests on timings, which vary between runs, so the same budget can give another plan. *Measured*: the rebuilt model's time over the "
             f"original's, from compress's own check. Top-1 on the first {EVAL_SAMPLES:,} test images (original "
             f"{original:.2%}), no fine-tuning. The aim is under {TARGET_SECONDS} s. Where the time went, from the plan's "
             "`info[\"seconds\"]`: *preparing* (the calibration draw, the layer table and its basis, every layer option "
             "timed or read from the cache, and the whole network's measured ceilings), *planning* (every COBLA solve of "
             "every plan made; *COBLA* is the kept plan's solve alone), *rebuild + check* (the rebuild with its refit, and "
             "each rebuilt model timed against the original). *Plans*: how many `compress` made: a plan that measured "
             "over its limit is made again for less, and a pruning plan with room under it again for more.", "",
             "| latency budget | cache | compress | plans | preparing | planning | rebuild + check | COBLA | measured | speedup | budget held | schemes used | top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mark = "**" if r["compress_seconds"] <= TARGET_SECONDS else ""
        lines.append(f"| {r['latency_budget']} | {r['cache']} | {mark}{r['compress_seconds']:.1f} s{mark} | {r['plans']} | "
                     f"{r['preparing_seconds']:.1f} s | {r['planning_seconds']:.1f} s | {r['rebuild_check_seconds']:.1f} s | "
                     f"{r['cobla_seconds']:.1f} s | {r['measured']:.3f} | {r['speedup']:.2f}x | "
                     f"{'yes' if r['held'] else 'no'} | {r['schemes']} | {r['top1']:.2%} |")
    worst = {c: max(r["compress_seconds"] for r in rows if r["cache"] == c) for c in ("empty", "filled")}
    lines += ["", f"- Slowest run: {worst['empty']:.1f} s with an empty latency cache, {worst['filled']:.1f} s with a "
              f"filled one (aim: under {TARGET_SECONDS} s)."]
    write_report(ROOT / "reports" / "speed", "auto_latency_time", rows, lines)


if __name__ == "__main__":
    main()
