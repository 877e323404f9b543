"""Speed where it counts: real-size networks at 224x224, rebuilt under MAC (and optionally
latency) budgets, each timed in turn with its original on the runtime a user deploys with.

    python bench/real_size.py [--models resnet18 resnet50 vgg16 mobilenetv2] [--macs 0.3 0.5 0.7]
        [--latency 0.6 [--and-macs 0.5]] [--batches 1 32] [--threads 1 2] [--runtimes eager onnxruntime]
        [--schemes channel spatial auto] [--rounds 7]

torchvision's ResNet-18, ResNet-50 and VGG-16 are architectures only (random weights: timing
does not depend on the values, though the ranks ``exact`` picks from their flat spectra do);
``mobilenetv2`` is the zoo's MobileNetV2 with its real ImageNet weights (extra ``mobilenet``).
BatchNorm is folded in both models before timing (`LatencyTarget(fold_batchnorm=True)`), and
eager PyTorch times them channels-last (the target's default memory format). Plans
come from ``exact`` in the weight basis (no data needed); every MAC fraction is counted on the
rebuilt model. Writes reports/speed/real_size.md and .csv.

torchvision from PyPI beside the CPU torch wheel imports only once the schemas of the two
operators it registers fakes for are defined (../shared/PEERS.md): done here before import.
Install it in a venv of its own (``pip install --no-deps torchvision==0.28.0``): beside it,
transformers imports torchvision without those definitions and its model classes fail.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.resources import count  # noqa: E402
from lowrank.timing import LatencyTarget, compare_speed  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402

TORCHVISION = {"resnet18": "resnet18", "resnet50": "resnet50", "vgg16": "vgg16"}


def _torchvision():
    """torchvision, importable beside the CPU torch wheel (see the module doc)."""
    if "torchvision" not in sys.modules:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision.keep = lib  # the definitions live as long as the library object
    import torchvision

    return torchvision


def load(name: str) -> torch.nn.Module:
    if name == "mobilenetv2":
        return get("mobilenetv2-imagenet").load()
    torch.manual_seed(0)
    return getattr(_torchvision().models, TORCHVISION[name])().eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "vgg16", "mobilenetv2"])
    ap.add_argument("--macs", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--latency", nargs="*", type=float, default=[], help="latency budgets (each planned on its own target)")
    ap.add_argument("--and-macs", type=float, default=None,
                    help="each latency budget also keeps at most this share of the MACs (both hold at once)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--runtimes", nargs="*", default=["eager", "onnxruntime"])
    ap.add_argument("--schemes", nargs="*", default=["channel", "spatial"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--name", default="real_size")
    ap.add_argument("--out", default=str(ROOT / "reports" / "speed"))
    args = ap.parse_args()
    x = torch.randn(1, 3, 224, 224)
    targets = [LatencyTarget(device="cpu", threads=t, batch=b, runtime=r, repeats=args.rounds, fold_batchnorm=True)
               for r in args.runtimes for b in args.batches for t in args.threads]
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        original = load(name)
        print(f"{name}: loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for scheme in args.schemes:
            table = lowrank.LayerTable(original, x)
            plans = [(Budget(macs=m), None) for m in args.macs] + [(Budget(latency=f, macs=args.and_macs), t) for f in args.latency for t in targets]
            for budget, plan_target in plans:
                t0 = time.perf_counter()
                result = lowrank.compress(original, x, budget, method="exact", scheme=scheme, basis="weight", table=table,
                                          measure_on=plan_target)
                seconds = time.perf_counter() - t0
                macs = count(result.model, x, ["macs"])["macs"] / count(original, x, ["macs"])["macs"]
                for target in ([plan_target] if plan_target else targets):
                    speed = compare_speed(original, result.model, x, target, rounds=args.rounds)
                    row = {"model": name, "scheme": scheme, "budget": ", ".join(f"{k} {v:g}" for k, v in budget.stored().items()), "macs_kept": round(macs, 4),
                           "runtime": target.runtime, "batch": target.batch, "threads": target.threads,
                           "original_ms": round(speed.original_us / 1e3, 3), "rebuilt_ms": round(speed.rebuilt_us / 1e3, 3),
                           "noise_ms": round(speed.noise_us / 1e3, 3), "speedup": round(speed.speedup, 3),
                           "share_of_mac_promise": round(speed.speedup * macs, 3), "plan_seconds": round(seconds, 1)}
                    rows.append(row)
                    print(row, file=sys.stderr)
    lines = [
        "# Real-size networks: speed of rebuilt models, timed in turn with the original",
        "",
        f"Made by `{command(__file__)}` on {platform.processor() or platform.machine()} ({torch.get_num_threads()} "
        f"torch threads available), torch {torch.__version__}. Plans: `exact`, weight basis; BatchNorm folded in both "
        "models, channels-last in eager PyTorch; `speedup` is the median of per-round ratios of the original's time to "
        "the rebuilt model's "
        f"({args.rounds} rounds); `share_of_mac_promise` is the speedup times the MAC fraction kept (1.0: the speedup "
        "the MAC count promises).",
        "",
        "| model | scheme | budget | MACs kept | runtime | batch | threads | original ms | rebuilt ms | speedup | of MAC promise |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['scheme']} | {r['budget']} | {r['macs_kept']:.1%} | {r['runtime']} | {r['batch']} | "
                     f"{r['threads']} | {r['original_ms']:,.1f} | {r['rebuilt_ms']:,.1f} | {r['speedup']:.2f}x | "
                     f"{r['share_of_mac_promise']:.0%} |")
    write_report(args.out, args.name, rows, lines)


if __name__ == "__main__":
    main()
