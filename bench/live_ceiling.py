"""How fast a rebuilt model can get without cutting a layer, and why: the cheapest plan with a
rank in every layer, rebuilt and timed against the original, and the time of one factor conv
against the width of its output.

    python bench/live_ceiling.py [--models resnet20-fmnist vgg-fmnist] [--schemes spatial auto channel]

Part 1, per zoo model and scheme: every factorised layer at rank 1 in its cheapest scheme (what
``compress`` measures as ``latency_floor_alive_measured``), BatchNorm folded in both models,
timed in turn with the original (eager, 1 thread, batch 64, channels-last): no plan that keeps
every path runs faster than the original over this. Part 2: a 3x3 conv (channel scheme's first
factor), a 3x1 conv (spatial scheme's) and a 1x1 conv (input scheme's) from 16 channels at
28x28 to r channels, and a 3x3 conv from r to 16 (input scheme's second factor), r = 1..16,
beside the dense 16->16 3x3 conv (resnet20-fmnist's first stage), timed in turn as layer
timings are (``lowrank.timing``: the median of the target's rounds).
Writes reports/speed/live_ceiling.md and .csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowrank import Budget, LatencyTarget, LayerTable, timing  # noqa: E402
from lowrank.planning.ceiling import cheapest_alive, measured_ceilings  # noqa: E402
from lowrank.resources import settings_by_resource  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

LATENCY, = settings_by_resource(LatencyTarget())  # the resource's name, spelled only where it is defined


def live_floor(name: str, scheme: str) -> dict:
    """The cheapest plan with a rank in every layer, predicted by the layer timings and measured."""
    entry = get(name)
    model = entry.load()
    table = LayerTable(model, entry.example_input())
    problem = table.problem(Budget(latency=0.01), scheme)  # a budget below it: the plan is measured
    ceiling = measured_ceilings(model, table, problem, {}, keep_alive=True)[LATENCY]
    assert cheapest_alive(problem, problem.resources.index(LATENCY)) is not None
    return {"part": "live floor", "model": name, "scheme": scheme, "predicted": round(ceiling.alive_predicted, 3),
            "measured": round(ceiling.alive_measured, 3), "most_speedup": round(1 / ceiling.alive_measured, 2)}


def narrow_convs(target: LatencyTarget) -> list[dict]:
    """The dense 16->16 3x3 conv and each first-factor conv 16->r, timed in turn on one clock
    (lowrank.timing, as layer timings are) at the target's batch, channels-last."""
    cl = torch.channels_last
    x = torch.randn(target.batch, 16, 28, 28).contiguous(memory_format=cl)
    widths = (1, 2, 4, 8, 16)
    convs = [("3x3", 16, 16, "dense 16->16", nn.Conv2d(16, 16, 3, padding=1))]
    convs += [(f"{k[0]}x{k[1]}", 16, r, what, nn.Conv2d(16, r, k, padding=pad, bias=False))
              for k, pad, what in (((3, 3), (1, 1), "channel scheme's first factor"), ((3, 1), (1, 0), "spatial scheme's first factor"),
                                   ((1, 1), (0, 0), "input scheme's first factor"))
              for r in widths]
    convs += [("3x3", r, 16, "input scheme's second factor", nn.Conv2d(r, 16, 3, padding=1)) for r in widths]
    runs = [lambda conv=conv.to(memory_format=cl), c_in=c_in: conv(x[:, :c_in].contiguous(memory_format=cl))
            for _, c_in, _, _, conv in convs]
    micros = timing.time_in_turn(runs, torch.device("cpu"), target)
    return [{"part": "conv", "kernel": k, "in_channels": c_in, "out_channels": c_out, "ms": round(us / 1000, 3), "what": what}
            for (k, c_in, c_out, what, _), us in zip(convs, micros)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet20-fmnist", "vgg-fmnist"])
    ap.add_argument("--schemes", nargs="*", default=["spatial", "auto", "channel", "input"])
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args(argv)
    target = LatencyTarget()
    floors = [live_floor(m, s) for m in args.models for s in args.schemes]
    convs = narrow_convs(target)
    lines = [
        "# The speed a plan can reach without cutting a layer, and why",
        "",
        f"Made by `{command(__file__)}` on torch {torch.__version__}. Timing: {target}.",
        "",
        "## The cheapest plan with a rank in every layer (rank 1 everywhere, cheapest scheme per layer)",
        "",
        "| model | scheme | predicted by the layer timings | measured, of the original | most speedup with no layer cut |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['model']} | {r['scheme']} | {r['predicted']:.3f} | {r['measured']:.3f} | {r['most_speedup']:.2f}x |" for r in floors],
        "",
        f"## One conv at 28x28 (batch {target.batch}, channels-last, {target.threads} thread(s)), 16 channels to r or r to 16",
        "",
        "| conv | in channels | out channels | ms | what |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['kernel']} | {r['in_channels']} | {r['out_channels']} | {r['ms']:.2f} | {r['what']} |" for r in convs],
        "",
        "A conv's time barely falls with its output width below 16, but it falls with its input "
        "width: the channel and spatial schemes put the narrow side at the first factor's output, "
        "the input scheme at the second factor's input (each input scheme factor pair: its 1x1 "
        "row plus its 3x3 row at the same r).",
    ]
    rows = [{**{k: None for k in ("part", "model", "scheme", "predicted", "measured", "most_speedup", "kernel",
                                   "in_channels", "out_channels", "ms", "what")}, **r} for r in floors + convs]
    write_report(args.out, "live_ceiling", rows, lines)


if __name__ == "__main__":
    main()
