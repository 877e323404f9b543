"""lowrank against structured pruning (torch-pruning) on the zoo CNNs: speed and accuracy,
side by side, after one shared fine-tuning recipe.

    python bench/peer_pruning.py [--models vgg-fmnist resnet20-fmnist] [--macs 0.7 0.5 0.3]

What a user picks for speed today is channel pruning. Here torch-pruning is set up as its
users set it up at their best: ``MetaPruner`` with global pruning across layers (at most 90%
of any layer's channels; the final Linear left alone), with ``GroupMagnitudeImportance(p=2)``
and with ``GroupTaylorImportance`` (gradients of the loss on the zoo entry's calibration
draw), each at the global ratio found by bisection so that the MACs counted on the pruned
model (lowrank's independent counter, torch.utils.flop_counter) land at or just under each
target; the page compares lowrank with the better of the two at each point. lowrank plans
with each ``--plans`` method and scheme (default ``exact`` with ``auto`` and ``prune``, and
``cobla`` with ``auto``; activation basis, calibration and selection from the zoo entry):

- at the same MAC budgets, and
- under a latency budget equal to each pruned model's measured time (the speed pruning
  reached, asked of lowrank), plus ``--latency`` budgets of its own.

Every model, the original included (the control), is then fine-tuned by one recipe (1 epoch
of ``--ft-samples`` training images, distillation ``--kd`` from the original, seed 0), and
evaluated on ``--eval`` test images before and after. Speed is the original and each model
timed in turn (eager CPU, 1 thread, batch 64, BatchNorm folded in both, channels-last as
``LatencyTarget`` times by default, median of per-round ratios). For each pruning point the
page names the most accurate lowrank plan at least as fast after fine-tuning, and the gap. Writes reports/peers/peer_pruning.md, .csv and .png.

torch-pruning (1.6.1) is one of lowrank's own dependencies.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import lowrank  # noqa: E402
from lowrank import Budget, LatencyTarget  # noqa: E402
from lowrank.finetuning import finetune  # noqa: E402
from lowrank.resources import count  # noqa: E402
from lowrank.timing import compare_speed  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from tables import command, write_report  # noqa: E402


def macs_of(model: nn.Module, x) -> float:
    return float(count(model, x, ["macs"])["macs"])


def pruned_to(model: nn.Module, x, share: float, importance: str, calib, steps: int = 14) -> tuple[nn.Module, float]:
    """The pruned copy of ``model`` with the smallest global channel ratio whose MACs are at
    most ``share`` of the original's, and that ratio; ``importance``: magnitude or taylor
    (gradients of the loss on the ``calib`` batches)."""
    import torch_pruning as tp

    full = macs_of(model, x)

    def prune(ratio: float) -> nn.Module:
        m = copy.deepcopy(model).eval()
        last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
        imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else tp.importance.GroupTaylorImportance()
        pruner = tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=ratio, global_pruning=True, max_pruning_ratio=0.9,
                                      ignored_layers=[last])
        if importance == "taylor":
            m.zero_grad()
            for xb, yb in calib:
                nn.functional.cross_entropy(m(xb), yb).backward()
        pruner.step()
        m.zero_grad(set_to_none=True)
        return m

    # The MACs are not monotone in the global ratio near its top (vgg-fmnist at 0.9 keeps 73%, at 0.6
    # 15%: the global ranking then empties the first conv and spares the rest), so the bracket's top
    # is the highest ratio, stepping down from 0.9, that reaches the target.
    lo, hi = 0.0, next((r for r in (0.9, 0.8, 0.7, 0.6, 0.5) if macs_of(prune(r), x) <= share * full), None)
    if hi is None:
        raise ValueError(f"no global ratio from 0.5 to 0.9 keeps at most {share:.0%} of the MACs")
    for _ in range(steps):
        mid = (lo + hi) / 2
        if macs_of(prune(mid), x) <= share * full:
            hi = mid
        else:
            lo = mid
    return prune(hi), hi


def tuned(model: nn.Module, entry, teacher: nn.Module, args) -> tuple[nn.Module, float]:
    """A fine-tuned copy and its metric: the one recipe every model here gets."""
    m = copy.deepcopy(model)
    history = finetune(m, entry, teacher=teacher, kd=args.kd, samples_per_epoch=args.ft_samples, seed=0,
                       progress=False, eval_limit=args.eval)
    return m.eval(), float(history[-1])


def measure(name: str, kind: str, plan: str, model: nn.Module, original: nn.Module, entry, x, target, args, full_macs, **extra):
    """One row: MACs kept, speed (timed in turn with the original), metric before and after fine-tuning."""
    t0 = time.perf_counter()
    before = float(entry.evaluate(model, limit=args.eval))
    speed = compare_speed(original, model, x, target, rounds=args.rounds)
    _, after = tuned(model, entry, original, args)
    row = {"model": name, "method": kind, "plan": plan, "macs_kept": round(macs_of(model, x) / full_macs, 4),
           "speedup": round(speed.speedup, 3), "noise": round(speed.noise_us / speed.rebuilt_us, 3),
           "before": round(before, 4), "after": round(after, 4), "ratio": None, "plan_seconds": None, **extra}
    print(f"{row} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["vgg-fmnist", "resnet20-fmnist"])
    ap.add_argument("--macs", nargs="*", type=float, default=[0.5, 0.3])
    ap.add_argument("--latency", nargs="*", type=float, default=[0.8, 0.7], help="lowrank's own latency budgets, besides pruning's speeds")
    ap.add_argument("--plans", nargs="*", default=["exact:auto", "exact:prune", "cobla:auto"], help="lowrank's method:scheme pairs")
    ap.add_argument("--importance", nargs="*", default=["magnitude", "taylor"], help="torch-pruning's channel importances")
    ap.add_argument("--ft-samples", type=int, default=15000)
    ap.add_argument("--kd", type=float, default=0.5)
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--name", default="peer_pruning")
    ap.add_argument("--out", default=str(ROOT / "reports" / "peers"))
    args = ap.parse_args()
    import torch_pruning as tp

    target = LatencyTarget(device="cpu", threads=1, batch=64, fold_batchnorm=True)
    plan_target = LatencyTarget(device="cpu", threads=1, batch=64)  # what lowrank plans latency on (see LatencyTarget)
    rows, controls, originals = [], {}, {}
    for name in args.models:
        entry = get(name)
        original = entry.load()
        x = entry.example_input()
        full = macs_of(original, x)
        originals[name] = float(entry.evaluate(original, limit=args.eval))
        controls[name] = tuned(original, entry, original, args)[1]
        print(f"{name}: original {originals[name]:.2%}, control (fine-tuned the same way) {controls[name]:.2%}", file=sys.stderr)
        speeds = []
        for share in args.macs:
            for importance in args.importance:
                try:
                    model, ratio = pruned_to(original, x, share, importance, entry.calibration())
                except ValueError as err:
                    print(f"{name} torch-pruning {importance} at macs {share:g}: {err}", file=sys.stderr)
                    continue
                row = measure(name, "torch-pruning", f"{importance}, macs {share:g}", model, original, entry, x, target,
                              args, full, ratio=round(ratio, 4))
                rows.append(row)
                speeds.append(row["speedup"])
        budgets = [Budget(macs=m) for m in args.macs] + [Budget(latency=round(1 / s, 3)) for s in speeds] + \
                  [Budget(latency=f) for f in args.latency]
        for method, scheme in (p.split(":") for p in args.plans):
            for budget in budgets:
                t0 = time.perf_counter()
                try:
                    torch.manual_seed(0)
                    result = lowrank.compress(original, entry, budget, method=method, scheme=scheme,
                                              measure_on=plan_target)  # used by measured budgets only
                except lowrank.InfeasibleBudgetError as err:
                    print(f"{name} {method} {scheme} {budget}: {err}", file=sys.stderr)
                    continue
                plan = ", ".join(f"{k} {v:g}" for k, v in budget.stored().items())
                rows.append(measure(name, f"lowrank {method} ({scheme})", plan, result.model, original, entry, x, target, args,
                                    full, plan_seconds=round(time.perf_counter() - t0, 1)))
    write_report(args.out, args.name, rows, page(rows, originals, controls, args, tp.__version__))
    plot(rows, controls, Path(args.out) / f"{args.name}.png")


def _better_pruning(rows: list[dict]) -> list[dict]:
    """Per model and MAC target, torch-pruning's more accurate importance after fine-tuning."""
    best: dict[tuple, dict] = {}
    for r in (r for r in rows if r["method"] == "torch-pruning"):
        key = (r["model"], r["plan"].split(", ")[-1])
        if key not in best or r["after"] > best[key]["after"]:
            best[key] = r
    return list(best.values())


def best_at_least_as_fast(rows: list[dict], model: str, speed: float) -> dict | None:
    """The most accurate lowrank plan (after fine-tuning) of ``model`` at least ``speed`` fast."""
    fast = [r for r in rows if r["model"] == model and r["method"].startswith("lowrank") and r["speedup"] >= speed]
    return max(fast, key=lambda r: r["after"]) if fast else None


def page(rows, originals, controls, args, tp_version) -> list[str]:
    lines = [
        "# lowrank against structured pruning (torch-pruning), after the same fine-tuning",
        "",
        f"Made by `{command(__file__)}` on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"torch-pruning {tp_version}. Pruning: `MetaPruner` with global pruning (at most 90% of a layer), "
        "`GroupMagnitudeImportance(p=2)` and `GroupTaylorImportance` (gradients on the calibration draw), the global "
        "ratio bisected to the MAC target (final Linear left alone). lowrank: " + ", ".join(f"`{p}`" for p in args.plans) +
        " (method:scheme), activation basis, "
        "calibration from the zoo entry; at the same MAC budgets, and under a latency budget equal to each pruned "
        "model's measured time. Fine-tuning, the same for every model and the original (the control): 1 epoch of "
        f"{args.ft_samples:,} training images, distillation {args.kd:g} from the original, seed 0. Accuracy: top-1 on "
        f"the first {args.eval:,} test images. Speed: original and model timed in turn, eager CPU, 1 thread, batch 64, "
        f"BatchNorm folded in both, channels-last, median of {args.rounds} per-round ratios (`noise`: robust SD as a "
        "share).",
        "",
        "## At every speed pruning reaches: the most accurate lowrank plan at least as fast",
        "",
        "| model | pruning at | pruning: speedup, accuracy after FT | lowrank at least as fast: plan, speedup, accuracy after FT | lowrank minus pruning (points) | control |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in _better_pruning(rows):
        best = best_at_least_as_fast(rows, r["model"], r["speedup"])
        ours = "none" if best is None else f"{best['method'][8:]} {best['plan']}, {best['speedup']:.2f}x, {best['after']:.2%}"
        gap = "-" if best is None else f"{100 * (best['after'] - r['after']):+.2f}"
        lines.append(f"| {r['model']} | {r['plan']} | {r['speedup']:.2f}x, {r['after']:.2%} | {ours} | {gap} | "
                     f"{controls[r['model']]:.2%} |")
    lines += ["", "## Every model measured", "",
              "| model | method | plan | MACs kept | speedup | noise | accuracy before FT | after FT | drop after FT vs control |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['plan']} | {r['macs_kept']:.1%} | {r['speedup']:.2f}x | "
                     f"{r['noise']:.1%} | {r['before']:.2%} | {r['after']:.2%} | "
                     f"{100 * (controls[r['model']] - r['after']):+.2f} |")
    lines += ["", "Originals before fine-tuning: " + ", ".join(f"{k} {v:.2%}" for k, v in originals.items()) + ".",
              "", f"![speed versus accuracy after fine-tuning]({args.name}.png)"]
    return lines


def plot(rows, controls, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for method, marker in (("torch-pruning", "s"), ("lowrank", "o")):
            pts = [r for r in rows if r["model"] == model and r["method"].startswith(method)]
            ax.scatter([r["speedup"] for r in pts], [100 * r["after"] for r in pts], marker=marker, label=method)
        ax.axhline(100 * controls[model], color="grey", ls="--", lw=1, label="control (original, fine-tuned)")
        ax.set(title=model, xlabel="speedup (BatchNorm folded, 1 thread, batch 64)", ylabel="top-1 after fine-tuning (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
