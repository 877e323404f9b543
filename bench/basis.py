"""What the data-aware (activation) basis costs and buys, per zoo CNN and scheme.

    python bench/basis.py [--models vgg-fmnist ...] [--calib 128]

For each model and scheme, in a fresh process (so the peak memory is its own): collect each
layer's Gram on ``--calib`` calibration images (the input second moment, or the Gram of the
projected inputs where the matrix's other side is the smaller) and whiten every layer's SVD;
report the seconds, the Grams' memory, the largest copy of input vectors made at once (convs
unfold 16 images at a time) beside what unfolding the whole batch would have taken, how many
Grams are rank-deficient (smallest eigenvalue under 1e-9 of the mean: dead ReLUs, fewer
vectors than dimensions; the ridge handles them), and test accuracy with ``exact`` at 50% of
the MACs in either basis. Writes reports/quality/basis.md and reports/quality/basis.csv.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tables import command, write_report  # noqa: E402  (bench/ is this script's own path entry)


def measure(model_name: str, scheme: str, calib: int) -> dict:
    """One (model, scheme) in this process: the numbers of one row."""
    import torch

    import lowrank
    from lowrank import Budget
    from lowrank.util.batches import sample_batches
    from lowrank.zoo import get

    torch.set_num_threads(1)
    entry = get(model_name)
    model = entry.load()
    batches = sample_batches(entry.splits.calib, calib, 0)
    table = lowrank.LayerTable(model, entry.example_input())
    largest = _watch_input_vectors()
    t0 = time.perf_counter()
    table.use_basis("activation", batches)
    for info in table.compressible:
        table.svd(info.name, table.scheme_for(info.name, scheme))
    seconds = time.perf_counter() - t0
    basis = table.basis
    deficient = 0
    for total, n, _ in basis.moments.values():
        lam = torch.linalg.eigvalsh(total / max(n, 1))
        deficient += int(lam.min() <= 1e-9 * lam.mean().clamp_min(1e-300))
    row = {"model": model_name, "scheme": scheme, "calib_images": calib, "layers": len(table.compressible),
           "moments": len(basis.moments), "rank_deficient": deficient, "seconds": round(seconds, 2),
           "moments_mib": round(basis.peak_bytes / 2**20, 1), "largest_slice_mib": round(largest[0] / 2**20, 1),
           "whole_batch_mib": round(largest[1] / 2**20, 1)}
    for kind in ("weight", "activation"):
        table.use_basis(kind, batches)
        result = lowrank.compress(model, batches, Budget(macs=0.5), method="exact", scheme=scheme, table=table, basis=kind)
        row[f"exact_50_{kind}"] = entry.evaluate(result.model)
    return row


def _watch_input_vectors() -> list:
    """Record the largest float64 copy of input vectors made while moments are collected
    ([bytes of one slice, bytes the whole batch's vectors would have taken at once])."""
    from lowrank import kinds

    largest = [0, 0]

    def wrap(cls):
        original = cls.input_vectors

        def input_vectors(self, module, x):
            v = original(self, module, x)
            largest[0] = max(largest[0], v.numel() * 8)
            return v

        cls.input_vectors = input_vectors

    def whole(cls):
        original = cls.input_moment

        def input_moment(self, module, x, project=None):
            one = self.input_vectors(module, x[:1])  # one sample: its vectors' count and width
            largest[1] = max(largest[1], one.numel() * len(x) * 8)
            return original(self, module, x, project)

        cls.input_moment = input_moment

    for scheme_cls in {type(s) for s in kinds.schemes()}:
        wrap(scheme_cls)
        whole(scheme_cls)
    return largest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["lenet5-fmnist", "vgg-fmnist", "resnet20-fmnist"])
    ap.add_argument("--schemes", nargs="*", default=["channel", "spatial"])
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: measure one (model, scheme) and print JSON
    ap.add_argument("--out", default=str(ROOT / "reports" / "quality"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.calib)))
        return
    rows = []
    for model_name in args.models:
        for scheme in args.schemes:
            done = subprocess.run([sys.executable, __file__, "--one", model_name, scheme, "--calib", str(args.calib)],
                                  check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    write(rows, args)


def write(rows, args):
    cmd = command(__file__)
    lines = [
        "# The data-aware (activation) basis: cost and effect", "",
        f"Made by `{cmd}` (one torch thread, each row in a fresh process). Each layer's Gram is collected on {args.calib} "
        "calibration images in one hooked pass (convs unfold 16 images at a time): the input second moment, or, where the "
        "matrix's other side is the smaller, the Gram of the inputs projected onto the matrix; every layer's whitened "
        "SVD is then computed. Rank-deficient: Grams whose smallest eigenvalue is under 1e-9 of their mean (the ridge of 1% "
        "of the mean eigenvalue keeps them finite). Accuracy: `exact` at 50% of the MACs on the 10,000 test images, no "
        "fine-tuning.", "",
        "| model | scheme | layers | rank-deficient Grams | seconds | Grams MiB | largest slice MiB (whole batch) | exact, weight basis | exact, activation basis |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['scheme']} | {r['layers']} | {r['rank_deficient']} of {r['moments']} | {r['seconds']} | "
              f"{r['moments_mib']} | {r['largest_slice_mib']} ({r['whole_batch_mib']}) | {r['exact_50_weight']:.2%} | {r['exact_50_activation']:.2%} |" for r in rows]
    write_report(args.out, "basis", rows, lines)


if __name__ == "__main__":
    main()
