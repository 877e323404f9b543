"""The data-aware basis on wide layers: VGG-16's classifier (25,088 -> 4,096 -> 4,096 -> 1,000).

    python bench/wide_basis.py [--samples 128] [--threads 2]

Each run is its own process, so its peak memory is its own: one collects the calibration
moments and takes every layer's whitened SVD (the activation basis), one the plain weight SVD
for comparison. Random weights and ReLU'd random inputs stand in for the real ones: time and
memory depend on the shapes, not the values. Writes reports/quality/wide_basis.md and .csv.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tables import command, write_report  # noqa: E402

LAYERS = [("1", 25088, 4096), ("3", 4096, 4096), ("5", 4096, 1000)]


def one(basis: str, samples: int, threads: int) -> dict:
    """The basis for every classifier layer, in this process: seconds and peak memory."""
    import torch
    from torch import nn

    import lowrank

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25088, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                          nn.Linear(4096, 1000)).eval()
    x = torch.relu(torch.randn(samples, 512, 7, 7))
    t0 = time.perf_counter()
    table = lowrank.LayerTable(model, x[:1])
    table.use_basis(basis, [(x, None)])
    seconds = {}
    for name, _, _ in LAYERS:
        t = time.perf_counter()
        u, s, vh = table.svd(name, "channel")
        seconds[name] = round(time.perf_counter() - t, 2)
        probe = torch.randn(vh.shape[1], 4, dtype=vh.dtype)  # U diag(s) Vh is the weight: checked on a few vectors
        weight = model.get_submodule(name).weight.detach().to(vh.dtype)
        assert torch.allclose(u @ (s[:, None] * (vh @ probe)), weight @ probe, rtol=1e-3, atol=1e-3)
    moments = sum(g.numel() * g.element_size() for g, _, _ in getattr(table.basis, "moments", {}).values())
    return {"basis": basis, "samples": samples, "threads": threads, "seconds": round(time.perf_counter() - t0, 1),
            "per_layer_seconds": seconds, "moments_mib": round(moments / 2**20, 1),
            "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "reports" / "quality"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.samples, args.threads)))
        return
    rows = []
    for basis in ("activation", "weight"):
        done = subprocess.run([sys.executable, __file__, "--one", basis, "--samples", str(args.samples), "--threads",
                               str(args.threads)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        "# The data-aware basis on VGG-16's classifier", "",
        f"Made by `{command(__file__)}` on {platform.node()} ({platform.processor() or platform.machine()}), "
        f"{args.threads} torch threads: the three Linear layers of VGG-16's classifier (25,088 x 4,096, 4,096 x 4,096, "
        f"4,096 x 1,000; random weights, ReLU'd random inputs: cost depends on shapes only), {args.samples} calibration "
        "samples, every layer's SVD taken and checked to rebuild its weight (on a few vectors). Each basis in its own process: *peak* is "
        "that process's peak resident memory (Python, torch and the model's 471 MiB of weights included). Every layer "
        "here has fewer outputs than inputs, so the activation basis sums and decomposes the Gram of the outputs "
        "(at most 4,096 square), never the 25,088-square input moment.", "",
        "| basis | seconds | fc1 s | fc2 s | fc3 s | moments MiB | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["per_layer_seconds"]
        lines.append(f"| {r['basis']} | {r['seconds']} | {s['1']} | {s['3']} | {s['5']} | {r['moments_mib']} | {r['peak_gib']} |")
    write_report(args.out, "wide_basis", [{**r, "per_layer_seconds": json.dumps(r["per_layer_seconds"])} for r in rows], lines)


if __name__ == "__main__":
    main()
