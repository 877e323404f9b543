"""The speed-versus-accuracy frontier of one model: every rebuilt model's measured speedup
(timed in turn with the original) against its metric, before and after fine-tuning, the
plans no other beats on both, and the fastest one within a given drop of the original (of
the original fine-tuned by the same recipe, after fine-tuning).

A person deploying a model asks "how much faster, for at most one point?": this answers it
from a sweep's rows (``lowrank frontier`` runs that sweep), for any measured resource.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import resources
from .labels import higher_is_better, method_label, varying
from .plots import COLOURS, DPI, HEIGHT, MARKERS, WIDTH, pareto, pyplot


@dataclass
class Point:
    """One rebuilt model: its plan, its measured speedup and its metric before and after fine-tuning."""

    label: str  # method and variant (scheme, basis)
    budget: float  # the fraction of the original's measured cost asked for
    speedup: float  # the original's measured cost over the rebuilt model's, timed in turn
    before: float
    after: float | None
    held: bool


@dataclass
class Frontier:
    model: str
    resource: str
    metric_name: str
    original: float
    control: float | None  # the original fine-tuned by the same recipe
    within: float  # the drop allowed, in points (percentage points for a metric in [0, 1])
    points: list[Point] = field(default_factory=list)

    @property
    def higher(self) -> bool:
        return higher_is_better(self.metric_name)

    @property
    def scale(self) -> float:
        """A metric in [0, 1] is read in percentage points."""
        return 100.0 if 0.0 <= self.original <= 1.0 else 1.0

    def drop(self, value: float, reference: float) -> float:
        """How far ``value`` falls short of ``reference``, in points (negative: better)."""
        return (reference - value if self.higher else value - reference) * self.scale

    def stage(self, after: bool) -> list[tuple[Point, float]]:
        """(point, metric) at one stage; after fine-tuning, only points that were fine-tuned."""
        return [(p, p.after if after else p.before) for p in self.points if not after or p.after is not None]

    def fastest_within(self, after: bool = False) -> Point | None:
        """The fastest rebuilt model within ``within`` points of the original (before) or of
        the control (after); None where none is."""
        reference = self.control if after else self.original
        if reference is None:
            return None
        ok = [p for p, m in self.stage(after) if self.drop(m, reference) <= self.within + 1e-9]
        return max(ok, key=lambda p: p.speedup, default=None)

    def front(self, after: bool = False) -> list[tuple[float, float]]:
        """(speedup, metric) of the points no other beats on both counts, fastest last."""
        pts = [(-p.speedup, m) for p, m in self.stage(after)]
        return sorted(((-x, y) for x, y in pareto(pts, self.higher)), key=lambda t: t[0])

    def shown(self, value: float) -> str:
        """A metric as read: a percentage for a metric in [0, 1], else its own units."""
        return f"{100 * value:.2f}%" if self.scale == 100 else f"{value:,.2f}"

    def to_markdown(self) -> str:
        label = resources.get(self.resource).label
        lines = [f"## {self.model}: speedup ({label} of the original over the rebuilt model's, timed in turn) versus "
                 f"{self.metric_name}", ""]
        ref = f"original {self.shown(self.original)}" + (f"; original fine-tuned by the same recipe (control) {self.shown(self.control)}"
                                                   if self.control is not None else "")
        lines += [ref + f"; within {self.within:g} point(s).", ""]
        for after in (False, True) if self.control is not None else (False,):
            best = self.fastest_within(after)
            stage = "after fine-tuning (against the control)" if after else "before fine-tuning"
            lines.append(f"- **Fastest within {self.within:g} point(s), {stage}:** " + (
                f"{best.speedup:.2f}x, {best.label} at {label} {best.budget:g}, {self.shown(best.after if after else best.before)}"
                if best else "none of these plans"))
        lines += ["", f"| plan | {label} budget | speedup | {self.metric_name} | drop (points) |"
                  + (" after fine-tuning | drop after |" if self.control is not None else ""),
                  "| --- | --- | --- | --- | --- |" + (" --- | --- |" if self.control is not None else "")]
        for p in sorted(self.points, key=lambda p: -p.speedup):
            row = f"| {p.label} | {p.budget:g} | {p.speedup:.2f}x{'' if p.held else ' (missed)'} | {self.shown(p.before)} | " \
                  f"{self.drop(p.before, self.original):+.2f} |"
            if self.control is not None:
                row += (f" {self.shown(p.after)} | {self.drop(p.after, self.control):+.2f} |" if p.after is not None else " - | - |")
            lines.append(row)
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Metric against speedup: before fine-tuning filled, after hollow, each stage's front
        drawn, the references dotted, the fastest plan within the drop circled."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(WIDTH + 2.4, HEIGHT), dpi=DPI)
        labels = sorted({p.label for p in self.points})
        for i, name in enumerate(labels):
            colour, marker = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
            pts = [p for p in self.points if p.label == name]
            ax.scatter([p.speedup for p in pts], [p.before * self.scale for p in pts], color=colour, marker=marker,
                       label=f"{name}, before fine-tuning", zorder=3)
            tuned = [p for p in pts if p.after is not None]
            if tuned:
                ax.scatter([p.speedup for p in tuned], [p.after * self.scale for p in tuned], facecolors="none",
                           edgecolors=colour, marker=marker, label=f"{name}, after fine-tuning", zorder=3)
        for after, style in ((False, "-"), (True, "--")):
            front = self.front(after)
            if len(front) > 1:
                ax.plot([x for x, _ in front], [y * self.scale for _, y in front], color="#555555", linestyle=style,
                        linewidth=1, label="front " + ("after" if after else "before") + " fine-tuning", zorder=2)
            best = self.fastest_within(after)
            if best is not None:
                value = best.after if after else best.before
                ax.scatter([best.speedup], [value * self.scale], s=220, facecolors="none", edgecolors="#000000",
                           linewidths=1.5, zorder=4, label=f"fastest within {self.within:g} pt " + ("after" if after else "before"))
        ax.axhline(self.original * self.scale, color="#000000", linestyle=":", linewidth=1, label="original")
        if self.control is not None:
            ax.axhline(self.control * self.scale, color="#777777", linestyle=(0, (1, 3)), linewidth=1, label="control (fine-tuned original)")
        ax.set_xlabel("speedup over the original (timed in turn)")
        ax.set_ylabel(self.metric_name + (" (%)" if self.scale == 100 else ""))
        ax.set_title(f"{self.model}: speed versus {self.metric_name}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def measured_resources() -> list[str]:
    """The registered resources read off a meter (a frontier's speed axis), in order."""
    return [r for r in resources.names() if not resources.get(r).cheap]


def frontier(rows: list[dict], resource: str | None = None, within: float = 1.0) -> Frontier:
    """The frontier of one model's runs (rows of a sweep, status ok) under budgets on a
    measured ``resource`` (default: the first registered measured resource)."""
    resource = resource or measured_resources()[0]
    ok = [r for r in rows if r.get("status") == "ok" and r.get(resource) and r.get(f"original_{resource}")]
    if not ok:
        raise ValueError(f"no run with a measured {resources.get(resource).label} to draw a frontier from")
    models = {r["model"] for r in ok}
    if len(models) != 1:
        raise ValueError(f"a frontier is of one model; these rows hold {', '.join(sorted(models))}")
    fields = varying(ok)
    controls = [r["metric_original_finetuned"] for r in ok if r.get("metric_original_finetuned") is not None]
    points = [Point(method_label(r, fields), float(r.get(f"budget_{resource}") or float("nan")),
                    float(r[f"original_{resource}"]) / float(r[resource]), float(r["metric_before"]),
                    None if r.get("metric_after") is None else float(r["metric_after"]), bool(r.get("fits")))
              for r in ok]
    return Frontier(ok[0]["model"], resource, ok[0]["metric_name"], float(ok[0]["metric_original"]),
                    controls[0] if controls else None, within, points)
