"""Is the channel scheme's 1x1 conv faster as a batched matrix product? Rebuilt zoo CNNs at
MAC budgets, timed with the 1x1 factor as ``nn.Conv2d`` (the layer before) and as ``baddbmm``
(``FactorizedConv2d._pointwise``, the layer now), and against the original.

    python bench/pointwise.py [--models ...] [--macs 0.3 0.5 0.7] [--rounds 15]

Each pair is timed alternately in this process (``lowrank.timing.compare_speed``, one torch
thread, batch 64, ``torch.inference_mode``; medians). Writes reports/speed/pointwise.md and .csv.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget, FactorizedConv2d  # noqa: E402
from lowrank.timing import LatencyTarget, batch_of, compare_speed  # noqa: E402
from lowrank.util.batches import sample_batches  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


class ConvPointwise(FactorizedConv2d):
    """The factorised conv as it was: both factors as ``nn.Conv2d``."""

    def forward(self, x):
        return self.second(self.first(x)) if self.rank > 0 else super().forward(x)


def with_conv_pointwise(model: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) is FactorizedConv2d:
            m.__class__ = ConvPointwise
    return twin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["lenet5-fmnist", "vgg-fmnist", "resnet20-fmnist"])
    ap.add_argument("--macs", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--method", default="exact")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = LatencyTarget(device="cpu", threads=1, batch=64)
    rows = []
    for name in args.models:
        entry = get(name)
        original = entry.load()
        calib, example = sample_batches(entry.splits.calib, 128, 0), entry.example_input()
        table = lowrank.LayerTable(original, example)
        for macs in args.macs:
            rebuilt = lowrank.compress(original, calib, Budget(macs=macs), method=args.method, scheme="channel",
                                       table=table).model
            old = with_conv_pointwise(rebuilt)
            with torch.inference_mode():
                x = batch_of(example, target, torch.device("cpu"))  # what compare_speed times
                diff = (old(x) - rebuilt(x)).abs().max().item()
            vs_old = compare_speed(old, rebuilt, example, target, args.rounds)
            vs_original = compare_speed(original, rebuilt, example, target, args.rounds)
            row = {"model": name, "macs": macs, "original_ms": round(vs_original.original_us / 1e3, 3),
                   "conv_1x1_ms": round(vs_old.original_us / 1e3, 3), "bmm_1x1_ms": round(vs_old.rebuilt_us / 1e3, 3),
                   "bmm_vs_conv": round(vs_old.speedup, 3), "speedup_before": round(vs_original.original_us / vs_old.original_us, 3),
                   "speedup_now": round(vs_original.speedup, 3), "max_abs_diff": diff}
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# The channel scheme's 1x1 factor: conv or batched matrix product (cpu)", "",
        f"Made by `{command(__file__)}` on {platform.node()} ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}: 1 torch thread, batch 64, `torch.inference_mode`; `{args.method}` at each MAC budget, channel "
        f"scheme; each pair timed alternately in {args.rounds} rounds (`lowrank.timing.compare_speed`), medians. *speedup "
        "before/now*: the original's time over the rebuilt model's with the 1x1 factor as a conv / as `baddbmm` (the "
        "conv time is from the conv-vs-bmm pair, so the two are not from the same rounds). *max diff*: largest absolute "
        "difference of the two rebuilt models' outputs.", "",
        "| model | MACs | original ms | 1x1 as conv ms | 1x1 as bmm ms | bmm vs conv | speedup before | speedup now | max diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['macs']:.0%} | {r['original_ms']:.2f} | {r['conv_1x1_ms']:.2f} | {r['bmm_1x1_ms']:.2f} | "
                     f"{r['bmm_vs_conv']:.2f}x | {r['speedup_before']:.2f}x | {r['speedup_now']:.2f}x | {r['max_abs_diff']:.1e} |")
    write_report(args.out, "pointwise", rows, lines)


if __name__ == "__main__":
    main()
