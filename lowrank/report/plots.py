"""Plots of a sweep: metric against budget per method, and kept rank per layer."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .labels import axis_resources, axis_title, axis_xlabel, method_label

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_budget_curves(rows: list[dict], model: str, axis: str, path: Path) -> None:
    """Metric against the budget, one line per method (mean over seeds, bars = min..max)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    key = f"budget_{axis_resources(axis)[0]}"
    by_method: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    tuned: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_method[method_label(r)][r[key]].append(r["metric_before"])
        if r.get("metric_after") is not None:
            tuned[method_label(r)][r[key]].append(r["metric_after"])
    for i, (method, points) in enumerate(sorted(by_method.items())):
        color = f"C{i % 10}"
        for series, style, suffix in ((points, "-o", ""), (tuned.get(method, {}), "--s", " fine-tuned")):
            if not series:
                continue
            xs = sorted(series)
            mean = [statistics.fmean(series[x]) for x in xs]
            lo = [m - min(series[x]) for m, x in zip(mean, xs)]
            hi = [max(series[x]) - m for m, x in zip(mean, xs)]
            ax.errorbar(xs, mean, yerr=[lo, hi], fmt=style, color=color, label=method + suffix, capsize=3, ms=4, lw=1.3)
    original = rows[0]["metric_original"]
    ax.axhline(original, color="k", lw=0.8, ls=":", label=f"original {original:.3f}")
    controls = [r["metric_original_finetuned"] for r in rows if r.get("metric_original_finetuned") is not None]
    if controls:  # the control for the fine-tuned lines: the original trained by the same recipe
        control = statistics.fmean(controls)
        ax.axhline(control, color="k", lw=0.8, ls="--", label=f"original fine-tuned {control:.3f}")
    ax.set_xlabel(axis_xlabel(axis))
    ax.set_ylabel(rows[0]["metric_name"])
    ax.set_title(f"{model}: {rows[0]['metric_name']} vs {axis_title(axis)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rank_allocation(rows: list[dict], model: str, label: str, path: Path) -> None:
    """Kept rank / full rank per layer (network order), one bar per method, for one budget."""
    plt = _pyplot()
    layers = list(rows[0]["full_ranks"])
    fig, ax = plt.subplots(figsize=(max(6.4, 0.45 * len(layers) * max(1, len(rows)) / 3), 4.2))
    width = 0.8 / len(rows)
    for i, r in enumerate(sorted(rows, key=method_label)):
        fr = [r["ranks"][n] / r["full_ranks"][n] if r["full_ranks"][n] else 0 for n in layers]
        ax.bar([j + (i - (len(rows) - 1) / 2) * width for j in range(len(layers))], fr, width, label=method_label(r), color=f"C{i % 10}")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("kept rank / full rank (1 = dense)")
    ax.set_title(f"{model}: rank per layer at {label}")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=4)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
