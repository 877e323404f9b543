"""Speed against accuracy after fine-tuning, three series a model: low-rank only (the
``channel``, ``spatial`` and ``input`` schemes), prune-or-factorise (``prune`` and ``auto``, the
solver choosing per layer), and torch-pruning at its best (global, magnitude or Taylor), each
with its Pareto line. Reads what other commands measured; times nothing itself:

- lowrank's runs from the ``runs.csv`` of each ``lowrank frontier`` folder given (one fine-tuning
  recipe: 1 epoch of 15,000 images, distillation 0.5; the control is the original fine-tuned so),
- torch-pruning's from ``bench/peer_pruning.py``'s CSV (the same recipe, the same timing: eager
  CPU, 1 thread, batch 64, BatchNorm folded, channels-last, timed in turn with the original).

    python bench/three_series.py [--frontiers DIR ...] [--peer CSV] [--name three_series]

For each pruning point the page names the most accurate prune-or-factorise plan at least as
fast, and the gap. Writes reports/peers/NAME.md, .csv and .png.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowrank import LatencyTarget  # noqa: E402
from lowrank.resources import settings_by_resource  # noqa: E402
from tables import command, write_report  # noqa: E402

TIME, = settings_by_resource(LatencyTarget())  # the measured resource's name, spelled only where it is defined

LOW_RANK, PRUNE_OR_FACTORISE, PEER = "low-rank only", "prune-or-factorise", "torch-pruning"
SERIES_SCHEMES = {"channel": LOW_RANK, "spatial": LOW_RANK, "input": LOW_RANK, "prune": PRUNE_OR_FACTORISE, "auto": PRUNE_OR_FACTORISE}
STYLE = {LOW_RANK: ("tab:blue", "o"), PRUNE_OR_FACTORISE: ("tab:red", "s"), PEER: ("tab:gray", "^")}


def lowrank_points(folder: Path) -> tuple[str, float, list[dict]]:
    """(model, the control's accuracy, points) of one frontier folder's fine-tuned runs."""
    rows = [r for r in csv.DictReader(open(folder / "runs.csv")) if r["status"] == "ok" and r["metric_after"] and r[TIME]]
    if not rows:
        raise SystemExit(f"{folder}/runs.csv holds no fine-tuned run under a measured budget")
    points = [{"model": r["model"], "series": SERIES_SCHEMES[r["scheme"]], "plan": f"{r['method']} ({r['scheme']}) {TIME} {float(r['budget_' + TIME]):g}",
               "speedup": float(r["original_" + TIME]) / float(r[TIME]), "after": float(r["metric_after"]),
               "before": float(r["metric_before"])} for r in rows]
    return rows[0]["model"], float(rows[0]["metric_original_finetuned"]), points


def peer_points(path: Path) -> list[dict]:
    return [{"model": r["model"], "series": PEER, "plan": r["plan"], "speedup": float(r["speedup"]), "after": float(r["after"]),
             "before": float(r["before"])} for r in csv.DictReader(open(path)) if r["method"] == "torch-pruning"]


def pareto(points: list[dict]) -> list[dict]:
    """The points no other beats on both speed and accuracy, fastest first."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (-p["speedup"], -p["after"])):
        if p["after"] > best:
            front.append(p)
            best = p["after"]
    return front


def comparisons(points: list[dict]) -> list[dict]:
    """For each torch-pruning point: the most accurate prune-or-factorise plan at least as fast."""
    out = []
    for peer in sorted((p for p in points if p["series"] == PEER), key=lambda p: p["speedup"]):
        faster = [p for p in points if p["series"] == PRUNE_OR_FACTORISE and p["speedup"] >= peer["speedup"]]
        best = max(faster, key=lambda p: p["after"]) if faster else None
        out.append({"peer": peer, "ours": best, "gap": None if best is None else 100 * (best["after"] - peer["after"])})
    return out


def plot(by_model: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_model), figsize=(6.5 * len(by_model), 4.8), squeeze=False)
    for ax, (model, (control, points)) in zip(axes[0], by_model.items()):
        for series, (color, marker) in STYLE.items():
            mine = [p for p in points if p["series"] == series]
            if not mine:
                continue
            ax.scatter([p["speedup"] for p in mine], [100 * p["after"] for p in mine], color=color, marker=marker, alpha=0.45)
            front = pareto(mine)[::-1]  # slowest first: the best accuracy at this speed or more, a falling step
            ax.step([p["speedup"] for p in front], [100 * p["after"] for p in front], where="pre", color=color, label=series)
        ax.axhline(100 * control, color="black", lw=0.8, ls=":", label=f"control (original fine-tuned) {control:.2%}")
        ax.axhspan(100 * control - 0.5, 100 * control, color="green", alpha=0.08, label="within 0.5 points of the control")
        ax.set(title=model, xlabel="speedup over the original (eager CPU, 1 thread, batch 64)", ylabel="top-1 after fine-tuning (%)")
        ax.set_ylim(max(ax.get_ylim()[0], 100 * control - 6), 100 * control + 1)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frontiers", nargs="+", default=["reports/speed/frontier-resnet20-fmnist-refit-finetuned",
                                                      "reports/speed/frontier-vgg-fmnist-refit-finetuned"])
    ap.add_argument("--peer", default="reports/peers/peer_pruning_refit.csv")
    ap.add_argument("--name", default="three_series")
    args = ap.parse_args()
    peers = peer_points(ROOT / args.peer)
    by_model = {}
    for folder in args.frontiers:
        model, control, points = lowrank_points(ROOT / folder)
        by_model[model] = (control, points + [p for p in peers if p["model"] == model])
    out = ROOT / "reports" / "peers"
    out.mkdir(parents=True, exist_ok=True)
    plot(by_model, out / f"{args.name}.png")
    lines = [f"# Speed against accuracy after fine-tuning: low-rank only, prune-or-factorise, torch-pruning", "",
             f"Made by `{command(__file__)}` from the frontiers {', '.join(f'`{f}`' for f in args.frontiers)} and "
             f"`{args.peer}` (see their pages for the commands). Every model, the original included (the control), got the "
             "same fine-tuning: 1 epoch of 15,000 training images, distillation 0.5 from the original. Top-1 on the first "
             "2,000 test images. Speed: the original and the model timed in turn, eager CPU, 1 thread, batch 64, BatchNorm "
             "folded, channels-last.", "", f"![three series]({args.name}.png)", ""]
    rows = []
    for model, (control, points) in by_model.items():
        lines += [f"## {model} (control {control:.2%})", "", "| series | fastest within 0.5 points of the control | Pareto points (speedup, top-1 after) |",
                  "| --- | --- | --- |"]
        for series in STYLE:
            mine = [p for p in points if p["series"] == series]
            within = [p for p in mine if p["after"] >= control - 0.005]
            fastest = max(within, key=lambda p: p["speedup"]) if within else None
            lines.append(f"| {series} | " + (f"{fastest['speedup']:.2f}x, {fastest['plan']}, {fastest['after']:.2%}" if fastest else "none")
                         + " | " + ", ".join(f"{p['speedup']:.2f}x {p['after']:.2%}" for p in pareto(mine)) + " |")
        lines += ["", "| torch-pruning at | speedup, top-1 after | prune-or-factorise at least as fast | speedup, top-1 after | gap (points) |",
                  "| --- | --- | --- | --- | --- |"]
        for c in comparisons(points):
            peer, ours = c["peer"], c["ours"]
            lines.append(f"| {peer['plan']} | {peer['speedup']:.2f}x, {peer['after']:.2%} | "
                         + (f"{ours['plan']} | {ours['speedup']:.2f}x, {ours['after']:.2%} | {c['gap']:+.2f} |" if ours else "none as fast | | |"))
        lines.append("")
        rows += [{**p, "control": control} for p in points]
    write_report(out, args.name, rows, lines)


if __name__ == "__main__":
    main()
