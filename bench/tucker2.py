"""Does Tucker-2 (1x1 -> k x k core -> 1x1) beat the input-side scheme (1x1 -> k x k) on the
small-channel convs where a rank choice barely moves a conv's time? Issue 35 asks to add it "if
it measures better"; this measures it on resnet20-fmnist's trained 3x3 convs.

    python bench/tucker2.py [--model resnet20-fmnist] [--rounds 9]

For every stride-1 3x3 conv with as many outputs as inputs, grouped by width and resolution:
- the input scheme at rank r: the conv's C_in x (C_out*k*k) unfolding truncated to r (a 1x1
  conv C_in -> r, then the k x k conv r -> C_out);
- Tucker-2 at ranks (r_in, r_out): the kernel's input and output modes projected on their
  leading r_in and r_out singular vectors (HOSVD, then 5 rounds of HOOI), built as a 1x1 conv
  C_in -> r_in, the k x k core r_in -> r_out and a 1x1 conv r_out -> C_out.
*Kept* is the share of the kernel's squared norm the approximation keeps (1 - error^2/|W|^2),
averaged over the group's convs. Every option of a group and the dense conv are timed in
turn (`lowrank.timing.time_in_turn`: eager PyTorch, one thread, batch 64, channels-last,
medians of ``--rounds`` rounds). Writes reports/speed/tucker2.md and .csv.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowrank.report.plots import pareto  # noqa: E402
from lowrank.timing import LatencyTarget, time_in_turn  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def square_convs(model: nn.Module, example: torch.Tensor) -> dict[tuple[int, int], list[torch.Tensor]]:
    """Kernels of the stride-1 3x3 convs with C_out == C_in, keyed by (width, input resolution)."""
    sizes = {}

    def record(m, i, o):
        sizes.setdefault(m, i[0].shape[-1])

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(example)
    for h in hooks:
        h.remove()
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m, size in sizes.items():
        if m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1 and m.in_channels == m.out_channels:
            groups.setdefault((m.in_channels, size), []).append(m.weight.detach().double())
    return groups


def input_kept(w: torch.Tensor) -> list[float]:
    """Share of |W|^2 the rank-r truncation of the C_in x (C_out*k*k) unfolding keeps, for r = 0..C_in."""
    s = torch.linalg.svdvals(w.transpose(0, 1).reshape(w.shape[1], -1)) ** 2
    return [0.0] + (s.cumsum(0) / s.sum()).tolist()


def tucker2_kept(w: torch.Tensor, r_in: int, r_out: int, rounds: int = 5) -> float:
    """Share of |W|^2 kept by Tucker-2 at (r_in, r_out): HOSVD, then HOOI rounds."""
    c_out, c_in = w.shape[:2]
    u_out = torch.linalg.svd(w.reshape(c_out, -1), full_matrices=False)[0][:, :r_out]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(c_in, -1), full_matrices=False)[0][:, :r_in]
    for _ in range(rounds):
        t = torch.einsum("oihw,ip->ophw", w, u_in)  # input mode projected
        u_out = torch.linalg.svd(t.reshape(c_out, -1), full_matrices=False)[0][:, :r_out]
        t = torch.einsum("oihw,oq->qihw", w, u_out)  # output mode projected
        u_in = torch.linalg.svd(t.transpose(0, 1).reshape(c_in, -1), full_matrices=False)[0][:, :r_in]
    core = torch.einsum("oihw,oq,ip->qphw", w, u_out, u_in)
    return float(core.pow(2).sum() / w.pow(2).sum())  # orthonormal factors: the core's norm is what is kept


def input_layer(c: int, r: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, r, 1, bias=False), nn.Conv2d(r, c, 3, padding=1))


def tucker2_layer(c: int, r_in: int, r_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, r_in, 1, bias=False), nn.Conv2d(r_in, r_out, 3, padding=1, bias=False),
                         nn.Conv2d(r_out, c, 1))


def ranks(c: int) -> list[int]:
    return sorted({1, 2, *range(c // 8, c, max(c // 8, 1))} - {0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20-fmnist")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    torch.manual_seed(0)
    entry = get(args.model)
    target = LatencyTarget(device="cpu", threads=1, batch=64, repeats=args.rounds)
    rows = []
    for (c, size), kernels in sorted(square_convs(entry.load(), entry.example_input()).items()):
        options = [("dense", c, c, lambda: nn.Conv2d(c, c, 3, padding=1), 1.0)]
        kept = [input_kept(w) for w in kernels]
        for r in range(1, c):  # every rank: the frontier Tucker-2 is held against has no gaps
            options.append(("input", r, c, lambda r=r: input_layer(c, r), sum(k[r] for k in kept) / len(kernels)))
        grid = ranks(c)
        for r in grid:
            for r_out in grid[2:]:
                options.append(("tucker2", r, r_out, lambda r=r, r_out=r_out: tucker2_layer(c, r, r_out),
                                sum(tucker2_kept(w, r, r_out) for w in kernels) / len(kernels)))
        x = torch.randn(target.batch, c, size, size).to(memory_format=torch.channels_last)
        layers = [make().eval().to(memory_format=torch.channels_last) for _, _, _, make, _ in options]
        times = time_in_turn([lambda m=m: m(x) for m in layers], torch.device("cpu"), target)
        points = [(t, share) for t, (*_, share) in zip(times, options)]
        front = set(pareto(points, higher=True))  # no other option at least as fast keeps at least as much
        dense_us = times[0]
        for i, ((scheme, r_in, r_out, _, share), us) in enumerate(zip(options, times)):
            rows.append({"width": c, "resolution": size, "convs": len(kernels), "scheme": scheme, "r_in": r_in,
                         "r_out": r_out, "kept": round(share, 4), "ms": round(us / 1e3, 3),
                         "speedup": round(dense_us / us, 3), "pareto": points[i] in front})
        print(f"{c}@{size}: {sum(r['pareto'] for r in rows[-len(options):])} options on the frontier", flush=True)
    lines = ["# Tucker-2 against the input-side scheme on small-channel 3x3 convs", "",
             f"Made by `{command(__file__)}` on {platform.node()} ({platform.processor() or platform.machine()}), torch "
             f"{torch.__version__}, {args.model}'s trained stride-1 3x3 convs with as many outputs as inputs. *Kept*: the "
             "share of the kernel's squared norm the approximation keeps, averaged over the group's convs (input scheme: "
             "the C_in x (C_out*k*k) unfolding at rank r; Tucker-2: HOSVD then 5 HOOI rounds at (r_in, r_out)). Each "
             f"group's options and its dense conv timed in turn: eager PyTorch, one thread, batch 64, channels-last, medians "
             f"of {args.rounds} rounds. *Speedup*: the dense conv's time over the option's. *Pareto*: no other option of "
             "the group is at least as fast and keeps at least as much.", ""]
    for (c, size) in sorted({(r["width"], r["resolution"]) for r in rows}):
        group = [r for r in rows if (r["width"], r["resolution"]) == (c, size)]
        front = sorted((r for r in group if r["pareto"]), key=lambda r: r["ms"])
        tucker_front = [r for r in front if r["scheme"] == "tucker2"]
        lines += [f"## {c} -> {c} channels at {size}x{size} ({group[0]['convs']} convs; dense {group[0]['ms']:.2f} ms)", "",
                  f"{len(tucker_front)} of the {sum(r['scheme'] == 'tucker2' for r in group)} Tucker-2 options are on the "
                  "frontier; the frontier, fastest first:", "",
                  "| scheme | r_in | r_out | kept | ms | speedup |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['scheme']} | {r['r_in']} | {r['r_out']} | {r['kept']:.3f} | {r['ms']:.3f} | {r['speedup']:.2f}x |"
                  for r in front]
        gains = [(r["kept"] - max(i["kept"] for i in group if i["scheme"] != "tucker2" and i["ms"] <= r["ms"]), r)
                 for r in group if r["scheme"] == "tucker2" and any(i["scheme"] != "tucker2" and i["ms"] <= r["ms"] for i in group)]
        gain, best = max(gains, key=lambda g: g[0])
        lines += ["", f"Largest gain of Tucker-2 in kept share over the best input-scheme option at most as slow: "
                  f"{gain:+.3f} (Tucker-2 ({best['r_in']}, {best['r_out']}) at {best['ms']:.3f} ms).", ""]
    write_report(args.out, "tucker2", rows, lines)


if __name__ == "__main__":
    main()
