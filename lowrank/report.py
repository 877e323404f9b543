"""Reports: a sweep's rows turned into ``index.md``, a static ``index.html``, PNG plots,
``runs.csv`` and ``runs.json`` in one folder.

The page is built once as a list of blocks (headings, text, images, tables) and rendered
twice, to Markdown and to HTML, so the two never disagree. The HTML needs no server: its
images are files beside it.
"""
from __future__ import annotations

import csv
import html
import json
import statistics
from collections import defaultdict
from pathlib import Path

from .compress import DATA_METHODS
from .store import COLUMNS, JSON_COLUMNS

AXES = {"macs": "MAC budget", "params": "parameter budget", "both": "MAC and parameter budget"}


def budget_axis(row: dict) -> str:
    if row["budget_macs"] is not None and row["budget_params"] is not None:
        return "both"
    return "macs" if row["budget_macs"] is not None else "params"


def budget_label(row: dict) -> str:
    parts = []
    if row["budget_macs"] is not None:
        parts.append(f"MACs <= {_frac(row['budget_macs'])}")
    if row["budget_params"] is not None:
        parts.append(f"params <= {_frac(row['budget_params'])}")
    return ", ".join(parts)


def _frac(v: float) -> str:
    return f"{v:.0%}" if v <= 1 else f"{v:,.0f}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


# --- blocks and their two renderings ---------------------------------------------------------
class Page:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("h", level, text))

    def text(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        self.blocks.append(("ul", items))

    def image(self, path: str, alt: str):
        self.blocks.append(("img", path, alt))

    def table(self, header: list[str], rows: list[list]):
        self.blocks.append(("table", header, rows))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "ul":
                out += [f"- {item}" for item in b[1]] + [""]
            elif b[0] == "img":
                out += [f"![{b[2]}]({b[1]})", ""]
            else:
                header, rows = b[1], b[2]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join(" --- " for _ in header) + "|")
                out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
                out.append("")
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "img":
                body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>')
            else:
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
            "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}"
            "figcaption{font-size:13px;color:#555}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(self.title)}</title>\n'
            f"<style>{style}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
        )


# --- plots ------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_budget_curves(rows: list[dict], model: str, axis: str, path: Path) -> None:
    """Metric against the budget, one line per method (mean over seeds, bars = min..max)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    key = "budget_params" if axis == "params" else "budget_macs"
    by_method: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    tuned: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_method[r["method"]][r[key]].append(r["metric_before"])
        if r.get("metric_after") is not None:
            tuned[r["method"]][r[key]].append(r["metric_after"])
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
    ax.set_xlabel({"macs": "MAC budget (fraction of the original)", "params": "parameter budget (fraction of the original)",
                   "both": "MAC budget (with a parameter budget as well)"}[axis])
    ax.set_ylabel(rows[0]["metric_name"])
    ax.set_title(f"{model}: {rows[0]['metric_name']} vs {AXES[axis]}")
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
    for i, r in enumerate(sorted(rows, key=lambda r: r["method"])):
        fr = [r["ranks"][n] / r["full_ranks"][n] if r["full_ranks"][n] else 0 for n in layers]
        ax.bar([j + (i - (len(rows) - 1) / 2) * width for j in range(len(layers))], fr, width, label=r["method"], color=f"C{i % 10}")
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


# --- the report -------------------------------------------------------------------------------
def write_runs(rows: list[dict], out: Path) -> None:
    (out / "runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(r.get(k)) if k in JSON_COLUMNS and r.get(k) is not None else r.get(k)) for k in COLUMNS})


def make_report(rows: list[dict], out: str | Path, title: str, config: dict | None = None, command: str | None = None) -> Path:
    """Write the report for ``rows`` (store rows) into folder ``out``; returns index.html."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for old in (out / "plots").glob("*.png"):
        old.unlink()
    write_runs(rows, out)
    ok = [r for r in rows if r["status"] == "ok"]
    page = Page(title)
    statuses = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
    page.text(
        f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + (f". Made by `{command}`." if command else ".")
    )
    violations = [r for r in ok if not r["fits"]]
    page.text(
        "Every budget was met by an independent count of the rebuilt model (torch.utils.flop_counter MACs, parameters counted "
        "from the module)." if ok and not violations else f"{len(violations)} runs exceed their budget by the independent count."
    )
    if ok:
        r0 = ok[0]
        revisions = sorted({r["git_revision"] for r in ok})
        page.bullets([
            f"metric: {r0['metric_name']} on the first {r0['eval_samples']} test samples of each dataset (compression never sees them)",
            (f"calibration (cobla, sensitivity): {rd['calib_samples'] or 'all'} samples for gradients / sensitivity, {rd['select_samples'] or 'all'} "
             "for choosing a rounding, drawn by seed from splits disjoint from test; the other methods use no data")
            if (rd := next((r for r in ok if r["method"] in DATA_METHODS), None)) else "calibration: none (only data-free methods)",
            f"fine-tuning: {r0['finetune_epochs']} epochs" + (f" with distillation weight {r0['kd']}" if r0["kd"] else "") if r0["finetune_epochs"] else "fine-tuning: none (metric right after compression)",
            "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(r0["versions"].items())),
            "git revision: " + ", ".join(revisions),
        ])
    if config:
        page.text("Sweep settings: " + json.dumps(config, sort_keys=True))

    for model in dict.fromkeys(r["model"] for r in ok):
        mrows = [r for r in ok if r["model"] == model]
        page.heading(model)
        page.text(f"Original: {mrows[0]['original_macs']:,} MACs per sample, {mrows[0]['original_params']:,} parameters, "
                  f"{mrows[0]['metric_name']} {mrows[0]['metric_original']:.4f}.")
        for axis in AXES:
            arows = [r for r in mrows if budget_axis(r) == axis]
            if not arows:
                continue
            name = f"plots/{_slug(model)}-{axis}.png"
            plot_budget_curves(arows, model, axis, out / name)
            page.image(name, f"{model}: {arows[0]['metric_name']} vs {AXES[axis]}")
        # rank allocations at the middle budget of the main axis, first seed
        axis = next(a for a in AXES if any(budget_axis(r) == a for r in mrows))
        labels = sorted({budget_label(r) for r in mrows if budget_axis(r) == axis})
        mid = labels[len(labels) // 2]
        seed = min(r["seed"] for r in mrows)
        chosen = [r for r in mrows if budget_label(r) == mid and r["seed"] == seed]
        name = f"plots/{_slug(model)}-ranks.png"
        plot_rank_allocation(chosen, model, mid, out / name)
        page.image(name, f"{model}: rank per layer at {mid} (seed {seed})")
        page.table(["budget", "best method", "metric", "runner-up", "metric "], _best_per_budget(mrows))

    page.heading("Every run")
    page.table(
        ["model", "budget", "method", "scheme", "seed", "MACs %", "params %", "fits", "metric", "fine-tuned", "solver s", "total s", "status"],
        [[r["model"], budget_label(r), r["method"], r["scheme"], r["seed"], _pct(r["macs_fraction"]), _pct(r["params_fraction"]),
          {1: "yes", 0: "NO", None: ""}[r["fits"]], "" if r["metric_before"] is None else f"{r['metric_before']:.4f}",
          "" if r["metric_after"] is None else f"{r['metric_after']:.4f}", "" if r["solver_seconds"] is None else f"{r['solver_seconds']:.2f}",
          f"{r['total_seconds']:.1f}", r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '').splitlines()[0][:120]}"]
         for r in rows],
    )
    page.text("All columns, per-layer ranks included: runs.csv and runs.json beside this page.")
    (out / "index.md").write_text(page.markdown())
    (out / "index.html").write_text(page.html())
    return out / "index.html"


def _best_per_budget(rows: list[dict]) -> list[list]:
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[budget_label(r)][r["method"]].append(r["metric_after"] if r.get("metric_after") is not None else r["metric_before"])
    out = []
    for label in sorted(groups):
        ranked = sorted(((statistics.fmean(v), m) for m, v in groups[label].items()), reverse=True)
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else (None, "")
        out.append([label, best[1], f"{best[0]:.4f}", second[1], "" if second[0] is None else f"{second[0]:.4f}"])
    return out


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)
