"""Does a MAC budget buy speed? Measured CPU latency of rebuilt zoo CNNs, with and without rank multiples.

    python bench/speed.py [--models ...] [--macs 0.3 0.5 0.7] [--multiples 1 8 16] [--repeats 21]

For every model, scheme, MAC budget and rank multiple: compress with ``exact`` (activation
basis, 128 calibration images), then time the original and the rebuilt model alternately in
this process (one torch thread, batch 64, ``torch.inference_mode``), ``--repeats`` times each
after a warm-up. Speedup = median original time / median rebuilt time; noise = the larger
relative half-spread (interquartile range / 2 / median) of the two. The MAC limit would allow
1 / (MACs kept); the ratio column says how much of that the hardware delivers. Writes
reports/speed.md and reports/speed.csv.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.experiment.runner import _subset, count  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from _report import command, write_report  # noqa: E402


def alternating_times(a, b, x, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per forward pass of ``a`` and ``b`` on ``x``, timed in turn (drift hits both)."""
    ta, tb = [], []
    with torch.inference_mode():
        for model in (a, b, a, b):  # warm-up
            model(x)
        for _ in range(repeats):
            for model, out in ((a, ta), (b, tb)):
                t0 = time.perf_counter()
                model(x)
                out.append(time.perf_counter() - t0)
    return ta, tb


def spread(times: list[float]) -> float:
    q = statistics.quantiles(times, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["lenet5-fmnist", "vgg-fmnist", "resnet20-fmnist"])
    ap.add_argument("--schemes", nargs="*", default=["channel", "spatial"])
    ap.add_argument("--macs", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--multiples", nargs="*", type=int, default=[1, 8, 16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--out", default=str(ROOT / "reports"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        entry = get(name)
        original = entry.load()
        calib = _subset(entry.splits.calib, 128, 0)
        x = entry.splits.test[0][: args.batch]
        example = entry.example_input()
        dense = count(original, example, ["macs"])["macs"]
        table = lowrank.LayerTable(original, example)
        for scheme in args.schemes:
            for macs in args.macs:
                for k in args.multiples:
                    result = lowrank.compress(original, calib, Budget(macs=macs), method="exact", scheme=scheme, table=table, rank_multiple=k)
                    kept = count(result.model, example, ["macs"])["macs"] / dense
                    t_orig, t_comp = alternating_times(original, result.model.eval(), x, args.repeats)
                    speedup = statistics.median(t_orig) / statistics.median(t_comp)
                    row = {"model": name, "scheme": scheme, "budget_macs": macs, "rank_multiple": k, "macs_kept": round(kept, 4),
                           "original_ms": round(1e3 * statistics.median(t_orig), 2), "rebuilt_ms": round(1e3 * statistics.median(t_comp), 2),
                           "speedup": round(speedup, 3), "of_mac_limit": round(speedup * kept, 3),
                           "noise": round(max(spread(t_orig), spread(t_comp)), 3), "accuracy": entry.evaluate(result.model, limit=2000)}
                    rows.append(row)
                    print(row, flush=True)
    write(rows, args)


def write(rows, args):
    cmd = command(__file__)
    lines = [
        "# Speed bought by a MAC budget (CPU)", "",
        f"Made by `{cmd}` on {platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}: "
        f"one torch thread, batch {args.batch}, `torch.inference_mode`, original and rebuilt model timed alternately "
        f"{args.repeats} times each after a warm-up; medians. `exact` allocation, activation basis. *of MAC limit*: "
        "speedup x MACs kept (1.0 = all the speed the MAC count promises). *noise*: the larger relative half "
        "interquartile range of the two timings. Accuracy: first 2,000 test images, no fine-tuning.", "",
        "| model | scheme | MAC budget | rank multiple | MACs kept | original ms | rebuilt ms | speedup | of MAC limit | noise | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['scheme']} | {r['budget_macs']:.0%} | {r['rank_multiple']} | {r['macs_kept']:.1%} | {r['original_ms']} | "
              f"{r['rebuilt_ms']} | {r['speedup']:.2f}x | {r['of_mac_limit']:.2f} | {r['noise']:.1%} | {r['accuracy']:.2%} |" for r in rows]
    write_report(args.out, "speed", rows, lines)


if __name__ == "__main__":
    main()
