"""Plots of a sweep: the metric against the cost each run reached, and kept rank per layer.

Every series is told apart three ways, so that none hides another and none depends on
colour alone: a method has its own colour (Okabe-Ito, safe for colour-blind readers) and its
own marker; a variant of it (basis, scheme, rank multiple) its own line style and marker
fill; fine-tuned points their own dash pattern with hollow markers; legends sit outside
the axes. Points that coincide (e.g. ``exact`` and ``milp`` on one plan)
are spread a little sideways, so that ties stay visible. Each plotting function returns the
styles it drew, one (label, colour, marker, line style) per series.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .. import resources, solvers
from .labels import axis_resources, axis_title, higher_is_better, method_label, variant

# Okabe & Ito (2008): eight colours told apart with any common colour-vision deficiency.
COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
VARIANT_STYLES = [("-", "full"), ("--", "none"), (":", "left"), ("-.", "top"), ((0, (4, 1, 1, 1, 1, 1)), "right")]
TUNED_STYLES = [(0, (6, 2, 1, 2)), (0, (2, 1)), (0, (8, 2)), (0, (1, 3)), (0, (6, 1, 1, 1, 1, 1, 1, 1))]
WIDTH, HEIGHT, DPI = 6.0, 4.0, 110  # axes area; legends add to the width (pages show images up to 1,000 px)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Methods in the order they joined lowrank: a method's style is its place here, so a method
#: added later (append it) does not change older methods' colours against committed plots.
STYLE_ORDER = ("alds", "cobla", "energy", "exact", "milp", "sensitivity", "uniform", "zhang", "svdllm", "svdllm2")


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of a method: fixed by its place in :data:`STYLE_ORDER`, the same in
    every plot; another method's from its name."""
    i = STYLE_ORDER.index(method) if method in STYLE_ORDER else len(STYLE_ORDER) + sum(map(ord, method))
    return COLOURS[i % len(COLOURS)], MARKERS[(i + i // len(COLOURS)) % len(MARKERS)]


def _series(rows: list[dict], fields: tuple) -> dict[tuple, list[dict]]:
    """Rows by (method, variant), in method order then variant order."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["method"], variant(r, fields))].append(r)
    return dict(sorted(out.items(), key=lambda kv: (solvers.methods().index(kv[0][0]) if kv[0][0] in solvers.methods() else 99, str(kv[0][1]))))


def pareto(points: list[tuple[float, float]], higher: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both counts (less cost, a better metric), by cost."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher else p[1])):
        if best is None or (y > best if higher else y < best):
            front.append((x, y))
            best = y
    return front


def _dodged(curves: list[dict]) -> None:
    """Spread points that coincide (ties: e.g. exact and milp on one plan) a little sideways,
    by 1% of the plot's cost span each, so that none hides another; other points stay put."""
    xs = [x for c in curves for x in c["x"]]
    span = (max(xs) - min(xs)) if len(xs) > 1 and max(xs) > min(xs) else 0.1
    at: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for ci, c in enumerate(curves):
        for pi, (x, y) in enumerate(zip(c["x"], c["y"])):
            at[(round(x, 4), round(y, 4))].append((ci, pi))
    for members in at.values():
        for k, (ci, pi) in enumerate(members):
            curves[ci]["x"][pi] += (k - (len(members) - 1) / 2) * 0.01 * span


def plot_budget_curves(rows: list[dict], model: str, axis: str, path: Path, fields: tuple = ()) -> list[tuple]:
    """The metric against the cost reached (first resource of ``axis``, as a fraction of the
    original), one series per (method, variant), fine-tuned beside; the Pareto front of the
    points; lines at the original, the original fine-tuned (the control) and chance. Means
    over seeds, bars from min to max. Returns the styles drawn."""
    plt = pyplot()
    res = axis_resources(axis)[0]
    metric, higher = rows[0]["metric_name"], higher_is_better(rows[0]["metric_name"])
    curves = _budget_curves(rows, res, fields)
    points = [(x, y) for c in curves if not c["tuned"] for x, y in zip(c["x"], c["y"])]
    _dodged(curves)
    lines = _reference_lines(rows)
    chance = next((value for label, value, *_ in lines if label.startswith("chance")), None)
    zoom = _zoom(curves, rows[0]["metric_original"], chance, higher)
    fig, axes = plt.subplots(2 if zoom else 1, 1, figsize=(WIDTH, HEIGHT * (1.8 if zoom else 1)), sharex=True, squeeze=False)
    for ax in axes[:, 0]:
        _draw_panel(ax, curves, pareto(points, higher), lines)
        ax.set_ylabel(metric + ("" if higher else " (lower is better)"))
    top = axes[0, 0]
    top.set_title(f"{model}: {metric} vs {resources.get(res).label} reached, under a {axis_title(axis)}", fontsize=10)
    if zoom:
        axes[1, 0].set_ylim(*zoom)
        axes[1, 0].set_title("the same, near the original", fontsize=9)
    axes[-1, 0].set_xlabel(f"{resources.get(res).label} reached (fraction of the original, counted on the rebuilt model)")
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return [(c["label"], c["colour"], c["marker"], str(c["style"])) for c in curves]


def _budget_curves(rows: list[dict], res: str, fields: tuple) -> list[dict]:
    """One curve per (method, variant) and per before / after fine-tuning: per budget, the
    mean cost reached and metric over seeds, and the metric's spread."""
    series = _series(rows, fields)
    variants = sorted({v for _, v in series}, key=str)
    curves = []
    for (method, var), srows in series.items():
        colour, marker = method_style(method)
        line, fill = VARIANT_STYLES[variants.index(var) % len(VARIANT_STYLES)]
        label = method_label(srows[0], fields)
        for key, style, face, suffix in (("metric_before", line, fill, ""),
                                         ("metric_after", TUNED_STYLES[variants.index(var) % len(TUNED_STYLES)], "none", " fine-tuned")):
            by_budget = defaultdict(list)
            for r in srows:
                if r.get(key) is not None and r.get(f"{res}_fraction") is not None:
                    by_budget[r[f"budget_{res}"]].append((r[f"{res}_fraction"], r[key]))
            if by_budget:
                curves.append(_curve(by_budget, {"label": label + suffix, "colour": colour, "marker": marker, "style": style,
                                                 "fill": face, "tuned": bool(suffix)}))
    return curves


def _curve(by_budget: dict, style: dict) -> dict:
    curve = {**style, "x": [], "y": [], "lo": [], "hi": []}
    for budget in sorted(by_budget):
        pts = by_budget[budget]
        y = statistics.fmean(p[1] for p in pts)
        curve["x"].append(statistics.fmean(p[0] for p in pts))
        curve["y"].append(y)
        curve["lo"].append(y - min(p[1] for p in pts))
        curve["hi"].append(max(p[1] for p in pts) - y)
    return curve


def _reference_lines(rows: list[dict]) -> list[tuple]:
    """(label, value, colour, line style) of the original, the control and chance, where known."""
    original = rows[0]["metric_original"]
    out = [(f"original {original:.3f}", original, "k", ":")]
    controls = [r["metric_original_finetuned"] for r in rows if r.get("metric_original_finetuned") is not None]
    if controls:
        control = statistics.fmean(controls)
        out.append((f"original fine-tuned {control:.3f}", control, "k", "--"))
    chances = [r["metric_chance"] for r in rows if r.get("metric_chance") is not None]
    if chances:
        chance = statistics.fmean(chances)
        out.append((f"chance (constant) {chance:.3f}", chance, "#D55E00", "-."))
    return out


def _draw_panel(ax, curves: list[dict], front: list, lines: list[tuple]) -> None:
    for c in curves:
        ax.errorbar(c["x"], c["y"], yerr=[c["lo"], c["hi"]], color=c["colour"], marker=c["marker"], fillstyle=c["fill"],
                    linestyle=c["style"] if len(c["x"]) > 1 else "none", label=c["label"], capsize=2, ms=5, lw=1.2, mew=1.1)
    if len(front) > 1:
        ax.plot(*zip(*front), color="#999999", lw=6, alpha=0.35, zorder=0, solid_capstyle="round", label="Pareto front")
    for label, value, colour, style in lines:
        ax.axhline(value, color=colour, lw=0.9, ls=style, label=label)
    ax.grid(alpha=0.3)


def _zoom(curves: list[dict], original: float, chance: float | None, higher: bool) -> tuple[float, float] | None:
    """A y-range near the original where several series crowd, when the full range would
    squeeze them together (points far below it stay in the full panel); None when not needed."""
    ys = [y for c in curves for y in c["y"]]
    if len(curves) < 3 or not ys:
        return None
    floor = chance if chance is not None else min(ys)
    band = 0.15 * abs(original - floor)
    if band <= 0:
        return None
    lo, hi = (original - band, original + 0.25 * band) if higher else (original - 0.25 * band, original + band)
    inside = [y for y in ys if lo <= y <= hi]
    full = max(ys + [original]) - min(ys + [original])
    if len(inside) < 3 or full < 3 * band:
        return None
    return lo, hi


def _kept(row: dict, layer: str) -> float:
    """The share a run kept of a layer (rank, or kept channels, over the full); 1 where its
    plan left the layer out (dense)."""
    full = row["full_ranks"].get(layer)
    return 1.0 if full is None else row["ranks"][layer] / full if full else 0.0


def plot_rank_heatmap(rows: list[dict], model: str, label: str, path: Path, fields: tuple = ()) -> list[tuple]:
    """Kept rank / full rank per layer (rows, network order) and series (columns) at one
    budget: a heatmap that stays readable at hundreds of layers (its height grows with them,
    its width does not). Returns one (label, colour, marker, line style) per column."""
    plt = pyplot()
    series = _series(rows, fields)
    columns = [(method_label(srows[0], fields), srows[0]) for srows in series.values()]
    layers = list(dict.fromkeys(n for _, r in columns for n in r["full_ranks"]))  # a prune-only plan lists fewer
    grid = [[_kept(r, n) for _, r in columns] for n in layers]
    cell_w = min(0.5, 5.2 / max(len(columns), 1))
    cell_h = 0.22 if len(layers) <= 60 else max(0.06, 14.0 / len(layers))
    fig, ax = plt.subplots(figsize=(2.6 + cell_w * len(columns) + 1.0, 1.6 + cell_h * len(layers)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c for c, _ in columns], rotation=60, ha="right", fontsize=7)
    step = max(1, len(layers) // 60)
    ax.set_yticks(range(0, len(layers), step))
    ax.set_yticklabels(layers[::step], fontsize=6 if len(layers) > 30 else 7)
    if len(layers) * len(columns) <= 400:
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "D" if v >= 1 else f"{v:.2f}"[1:] if v > 0 else "0", ha="center", va="center", fontsize=5.5,
                        color="white" if v < 0.6 else "black")
    ax.set_title(f"{model}: kept rank per layer at {label}\n(D: dense; fraction of the full rank)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="kept rank / full rank (1 = dense)")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return [(c, "heatmap", str(j), "column") for j, (c, _) in enumerate(columns)]
