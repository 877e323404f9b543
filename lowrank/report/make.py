"""A sweep's rows turned into a report folder: the page's sections (overview, one per model,
every run), its plots, ``runs.csv`` and ``runs.json``."""
from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from .. import resources, solvers
from ..experiment.store import COLUMNS, JSON_COLUMNS
from ..zoo import ZOO
from .labels import axis_order, axis_title, budget_axis, budget_label, higher_is_better, method_label, pct, varying
from .page import Page
from .plots import plot_budget_curves, plot_rank_heatmap


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
    fields = varying(ok)  # basis, scheme, rank multiple: named in labels only where they vary
    page = Page(title)
    _overview(page, rows, ok, config, command)
    for model in dict.fromkeys(r["model"] for r in ok):
        _model_section(page, [r for r in ok if r["model"] == model], model, out, fields)
    _every_run(page, rows, fields)
    (out / "index.md").write_text(page.markdown())
    (out / "index.html").write_text(page.html())
    return out / "index.html"


def _overview(page: Page, rows: list[dict], ok: list[dict], config: dict | None, command: str | None) -> None:
    statuses = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
    page.text(
        f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + (f". Made by `{command}`." if command else ".")
    )
    violations = [r for r in ok if not r["fits"]]
    checks = [resources.get(n).checked_by for n in resources.names() if any(r.get(f"original_{n}") is not None for r in ok)]
    page.text(
        f"Every budget was met by an independent count of the rebuilt model ({'; '.join(checks)})." if ok and not violations
        else f"{len(violations)} runs exceed their budget by the independent count."
    )
    if ok:
        r0 = ok[0]
        data_methods = [m for m in solvers.methods() if solvers.method(m).uses_data]
        rd = next((r for r in ok if r["method"] in data_methods), None)
        page.bullets([
            f"metric: {r0['metric_name']} on the first {r0['eval_samples']:,} test samples of each dataset (compression never sees them)",
            (f"calibration ({', '.join(data_methods)}): {rd['calib_samples'] or 'all'} samples for gradients / sensitivity, "
             f"{rd['select_samples'] or 'all'} for choosing a rounding, drawn by seed from splits disjoint from test; the other "
             "methods allocate without data") if rd else "calibration: none (only data-free methods)",
            *_statistics_lines(ok),
            f"fine-tuning: {r0['finetune_epochs']} epochs" + (f" with distillation weight {r0['kd']}" if r0["kd"] else "")
            if r0["finetune_epochs"] else "fine-tuning: none (metric right after compression)",
            "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(r0["versions"].items())),
            "git revision: " + ", ".join(sorted({r["git_revision"] for r in ok})),
        ])
    if config:
        page.text("Sweep settings: " + json.dumps(config, sort_keys=True))


def _statistics_lines(rows: list[dict]) -> list[str]:
    """A line per model whose zoo entry streams its activation basis and refit over windows of
    its train part (``statistics_samples``) rather than over the calibration samples."""
    entries = [ZOO[m] for m in sorted({r["model"] for r in rows}) if m in ZOO]
    return [f"{e.name}: the activation basis and the refit made on {e.statistics_samples} samples of its train part "
            "(the entry's statistics windows), not on the calibration samples" for e in entries if e.statistics_samples]


def _model_section(page: Page, mrows: list[dict], model: str, out: Path, fields: tuple) -> None:
    """Per model: the original's costs and metric with its references (chance, the control),
    a plot of the metric against the cost reached per budget axis, ranks per layer at the
    middle budget, and the best method per budget, scheme and basis."""
    page.heading(model)
    shown = [r for r in resources.names() if mrows[0].get(f"original_{r}") is not None]
    chance = [r["metric_chance"] for r in mrows if r.get("metric_chance") is not None]
    page.text("Original: " + ", ".join(resources.get(r).amount(mrows[0][f"original_{r}"]) for r in shown)
              + f", {mrows[0]['metric_name']} {mrows[0]['metric_original']:.4f}"
              + (f" (a constant prediction scores {chance[0]:.4f})" if chance else "") + "." + _control_text(mrows))
    axes = sorted({budget_axis(r) for r in mrows}, key=axis_order)
    for axis in axes:
        arows = [r for r in mrows if budget_axis(r) == axis]
        name = f"plots/{_slug(model)}-{_slug(axis)}.png"
        plot_budget_curves(arows, model, axis, out / name, fields)
        page.image(name, f"{model}: {arows[0]['metric_name']} against the {resources.get(axis.split('+')[0]).label} each run "
                         f"reached under a {axis_title(axis)}; grey band: the Pareto front; coinciding points spread sideways")
    # rank allocations at the middle budget of the main axis, first seed
    labels = sorted({budget_label(r) for r in mrows if budget_axis(r) == axes[0]})
    mid = labels[len(labels) // 2]
    seed = min(r["seed"] for r in mrows)
    chosen = [r for r in mrows if budget_label(r) == mid and r["seed"] == seed]
    name = f"plots/{_slug(model)}-ranks.png"
    plot_rank_heatmap(chosen, model, mid, out / name, fields)
    page.image(name, f"{model}: kept rank per layer at {mid} (seed {seed})")
    header, table = _best_per_budget(mrows, fields)
    page.table(header, table)
    _samples(page, mrows, fields)


def _samples(page: Page, rows: list[dict], fields: tuple) -> None:
    """What a language model writes from one prompt, the original first: what a metric means."""
    texts = [r for r in rows if r.get("sample_text")]
    if not texts:
        return
    page.text("What each model writes after the same prompt (greedy decoding, first seed):")
    seed = min(r["seed"] for r in texts)
    line = lambda t: " ".join(t.split())[:240]  # noqa: E731
    table = [["original", "", f"{texts[0]['metric_original']:.4g}", line(texts[0]["original_sample_text"] or "")]]
    for r in sorted((r for r in texts if r["seed"] == seed), key=lambda r: (budget_label(r), method_label(r, fields))):
        table.append([budget_label(r), method_label(r, fields), f"{r['metric_before']:.4g}", line(r["sample_text"])])
    page.table(["budget", "method", texts[0]["metric_name"], "text"], table)


def _control_text(rows: list[dict]) -> str:
    """The control beside fine-tuned numbers: the original fine-tuned by each recipe used."""
    controls = sorted({(r["finetune_epochs"], r["kd"], r["metric_original_finetuned"]) for r in rows
                       if r.get("metric_original_finetuned") is not None})
    return "".join(f" The original fine-tuned by the same recipe ({e} epochs" + (f", distillation weight {kd}" if kd else "")
                   + f"), the control for fine-tuned numbers: {m:.4f}." for e, kd, m in controls)


def _every_run(page: Page, rows: list[dict], fields: tuple) -> None:
    shown = [r for r in resources.names() if any(row.get(f"{r}_fraction") is not None for row in rows)]
    page.heading("Every run")
    page.table(
        ["model", "budget", "method", "scheme", "basis", "seed", *(f"{resources.get(r).label} %" for r in shown), "fits", "metric",
         "fine-tuned", "original fine-tuned", "solver s", "total s", "status"],
        [[r["model"], budget_label(r), method_label(r, fields), r["scheme"], r.get("basis") or "weight", r["seed"],
          *(pct(r.get(f"{x}_fraction")) for x in shown),
          {1: "yes", 0: "NO", None: ""}[r["fits"]], "" if r["metric_before"] is None else f"{r['metric_before']:.4f}",
          "" if r["metric_after"] is None else f"{r['metric_after']:.4f}",
          "" if r.get("metric_original_finetuned") is None else f"{r['metric_original_finetuned']:.4f}", "" if r["solver_seconds"] is None else f"{r['solver_seconds']:.2f}",
          f"{r['total_seconds']:.1f}", r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '').splitlines()[0][:120]}"]
         for r in rows],
    )
    page.text("All columns, per-layer ranks included: runs.csv and runs.json beside this page.")


def _best_per_budget(rows: list[dict], fields: tuple) -> tuple[list[str], list[list]]:
    """Per budget, scheme and basis (never averaged across them): the best method and the
    runner-up right after compression (means over seeds), and where the sweep fine-tuned, the
    best after fine-tuning beside the control (the original fine-tuned the same way)."""
    higher = higher_is_better(rows[0]["metric_name"])
    groups = defaultdict(lambda: defaultdict(lambda: {"before": [], "after": []}))
    for r in rows:
        key = (budget_label(r), r["scheme"], r.get("basis") or "weight")
        entry = groups[key][method_label(r, tuple(f for f in fields if f == "rank_multiple"))]
        entry["before"].append(r["metric_before"])
        if r.get("metric_after") is not None:
            entry["after"].append(r["metric_after"])
    tuned = any(r.get("metric_after") is not None for r in rows)
    controls = {}
    for r in rows:
        if r.get("metric_original_finetuned") is not None:
            controls.setdefault((budget_label(r), r["scheme"], r.get("basis") or "weight"), []).append(r["metric_original_finetuned"])

    def ranked(when, methods):
        scored = [(statistics.fmean(v[when]), m) for m, v in methods.items() if v[when]]
        return sorted(scored, key=lambda sm: -sm[0] if higher else sm[0])

    header = ["budget", "scheme", "basis", "best method", "metric", "runner-up", "metric "]
    if tuned:
        header += ["best fine-tuned", "fine-tuned", "control (original fine-tuned)"]
    out = []
    for key in sorted(groups):
        before = ranked("before", groups[key])
        second = before[1] if len(before) > 1 else (None, "")
        line = [*key, before[0][1], f"{before[0][0]:.4f}", second[1], "" if second[0] is None else f"{second[0]:.4f}"]
        if tuned:
            after = ranked("after", groups[key])
            control = controls.get(key)
            line += [after[0][1] if after else "", f"{after[0][0]:.4f}" if after else "",
                     f"{statistics.fmean(control):.4f}" if control else ""]
        out.append(line)
    return header, out


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)
