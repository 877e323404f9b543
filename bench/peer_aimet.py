"""lowrank against Qualcomm AIMET on one model, the same data and one machine.

    python bench/peer_aimet.py [--macs 0.5] [--images 500] [--threads 2]

AIMET (aimet-torch 2.42, spatial SVD with greedy compression-ratio selection) scores each
layer's candidate ratios with an evaluation callback: here top-1 accuracy on ``--images``
calibration images. lowrank gets the same images as its calibration data (COBLA takes
gradients on three quarters and chooses its candidate on the last quarter). Both use the
spatial scheme on vgg-fmnist. Because AIMET's greedy search lands below its MAC target, lowrank
also runs at the MAC fraction AIMET reached. MACs are counted on each rebuilt model by
lowrank's independent counter (torch.utils.flop_counter); accuracy is on the 10,000 test
images. Writes reports/peers/peer_aimet.md and reports/peers/peer_aimet.csv.

Needs ``pip install torch==2.13.0 aimet-torch==2.42.0`` (see ../shared/PEERS.md for the
torchvision workaround this script applies).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.resources import count  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def import_aimet():
    """aimet-torch imports torchvision, whose PyPI wheel registers fake ops for two operators
    that the CPU torch wheel lacks; defining their schemas first lets the pure-Python parts load."""
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import aimet_torch
    from aimet_torch.common.defs import CompressionScheme, CostMetric, GreedySelectionParameters
    from aimet_torch.compress import ModelCompressor
    from aimet_torch.defs import SpatialSvdParameters

    return aimet_torch.__version__, ModelCompressor, SpatialSvdParameters, GreedySelectionParameters, CompressionScheme, CostMetric, lib


def accuracy(model, x, y, batch=500) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch))
    return hits / len(y)


def run_aimet(original, x, y, macs, candidates):
    version, ModelCompressor, Spatial, Greedy, Scheme, Cost, _lib = import_aimet()

    def eval_callback(model, iterations=None, use_cuda=False):
        return accuracy(model, x, y)

    params = Spatial(Spatial.Mode.auto, Spatial.AutoModeParams(Greedy(target_comp_ratio=macs, num_comp_ratio_candidates=candidates)))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # AIMET pickles its eval scores into ./data/
        os.chdir(scratch)
        try:
            t0 = time.perf_counter()
            compressed, stats = ModelCompressor.compress_model(
                copy.deepcopy(original), eval_callback=eval_callback, eval_iterations=1, input_shape=(1, *x.shape[1:]),
                compress_scheme=Scheme.spatial_svd, cost_metric=Cost.mac, parameters=params,
            )
            seconds = time.perf_counter() - t0
        finally:
            os.chdir(here)
    return compressed, seconds, f"aimet-torch {version}"


def run_lowrank(original, x, y, macs, method, basis):
    cut = len(y) * 3 // 4  # the same images: gradients on the first three quarters, the choice on the rest
    t0 = time.perf_counter()
    result = lowrank.compress(original, [(x[:cut], y[:cut])], Budget(macs=macs), method=method, scheme="spatial",
                              basis=basis, selection=[(x[cut:], y[cut:])])
    return result.model, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg-fmnist")
    ap.add_argument("--macs", type=float, default=0.5, help="AIMET's target MAC ratio")
    ap.add_argument("--images", type=int, default=500, help="calibration images both tools see")
    ap.add_argument("--candidates", type=int, default=10, help="AIMET's compression-ratio candidates per layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "reports" / "peers"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    entry = get(args.model)
    original = entry.load()
    x, y = entry.splits.calib
    x, y = x[: args.images], y[: args.images]
    x_test, y_test = entry.splits.test
    example = entry.example_input()
    dense_macs = count(original, example, ["macs"])["macs"]
    rows = []

    def record(tool, model, seconds, target):
        macs = count(model, example, ["macs"])["macs"] / dense_macs
        row = {"tool": tool, "target_macs": round(target, 4), "macs_fraction": round(macs, 4),
               "test_accuracy": accuracy(model, x_test, y_test), "seconds": round(seconds, 1)}
        rows.append(row)
        print(row, flush=True)
        return row

    aimet_model, seconds, version = run_aimet(original, x, y, args.macs, args.candidates)
    reached = record(f"{version} spatial SVD, greedy", aimet_model, seconds, args.macs)["macs_fraction"]
    for target in sorted({args.macs, reached}):
        for method, basis in (("cobla", "activation"), ("cobla", "weight"), ("exact", "activation")):
            model, seconds = run_lowrank(original, x, y, target, method, basis)
            record(f"lowrank {method} ({basis} basis)", model, seconds, target)
    write(rows, args, version)


def write(rows, args, version):
    aimet = rows[0]
    cobla = [r for r in rows if r["tool"].startswith("lowrank cobla (activation") and r["target_macs"] == aimet["macs_fraction"]]
    cmd = command(__file__)
    lines = [
        f"# lowrank vs {version} on {args.model} (spatial scheme)", "",
        f"Made by `{cmd}` on {platform.node()} ({args.threads} torch threads, one run each). Both tools see the same "
        f"{args.images} calibration images: AIMET's greedy search scores candidate ratios by top-1 accuracy on them "
        f"({args.candidates} candidates per layer, target MAC ratio {args.macs}); lowrank takes gradients on the first "
        "three quarters and chooses among its candidates on the last quarter. MACs are counted on the rebuilt models by "
        "torch.utils.flop_counter; accuracy is on the 10,000 test images, no fine-tuning.", "",
        "| tool | target MACs | MACs kept | test accuracy | seconds |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r['tool']} | {r['target_macs']:.1%} | {r['macs_fraction']:.1%} | {r['test_accuracy']:.2%} | {r['seconds']} |" for r in rows]
    if cobla:
        lines += ["", f"At the MACs AIMET reached, lowrank cobla took {cobla[0]['seconds'] / aimet['seconds']:.2f}x AIMET's time, "
                      f"for {100 * (cobla[0]['test_accuracy'] - aimet['test_accuracy']):+.2f} points of test accuracy."]
    write_report(args.out, "peer_aimet", rows, lines)


if __name__ == "__main__":
    main()
