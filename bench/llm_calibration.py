"""How many calibration tokens a language model needs: SmolLM2-135M on Shakespeare compressed
with a data-free rule (`uniform` by default: its allocation reads no data, so only the
calibration changes), its whitening and its refit made
on 1k / 4k / 16k / 64k tokens of the training plays (nested: each set holds the smaller ones),
perplexity on the 48 test windows, and the time each whole ``compress`` call took.

    python bench/llm_calibration.py [--params 0.8] [--windows 8 32 128 512] [--method uniform] [--threads 2] [--name calibration]

Writes reports/llm/<name>.md and .csv (after each point, so a cut-off run keeps its rows).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.util.batches import sample_batches  # noqa: E402
from llm_use import original_model  # noqa: E402
from tables import command, write_report  # noqa: E402

TOKENS_PER_WINDOW = 128
WITHIN = 0.03  # "stopped improving": the next point lowers perplexity by less than this share


def point(original, entry, params: float, windows: int, method: str) -> dict:
    calib = sample_batches(entry.splits.train, windows, seed=0, batch_size=8)
    torch.manual_seed(0)
    start = time.perf_counter()
    result = lowrank.compress(original, calib, Budget(params=params), method=method, progress=True)
    seconds = time.perf_counter() - start
    return {"method": method, "params_budget": params, "params_kept": round(result.plan.fraction("params"), 4),
            "windows": windows, "tokens": windows * TOKENS_PER_WINDOW, "seconds": round(seconds, 1),
            "perplexity": round(lowrank.evaluate(result.model, entry), 2)}


def report(rows: list[dict], original_ppl: float, args) -> None:
    lines = ["# How many calibration tokens SmolLM2-135M needs", "",
             f"Made by `{command(__file__)}` ({args.threads} thread(s), this project's 2-core CPU machine). Each row is one "
             f"`lowrank.compress(model, windows, Budget(params=...), method={args.method!r})` call: the activation basis "
             "(each layer whitened by its inputs) and the refit after truncation (each layer's output factor solved again "
             f"by least squares, in run order) are both made on the given windows of {TOKENS_PER_WINDOW} tokens, drawn by "
             "seed 0 from the training plays (each set holds the smaller ones), which share no text with the test plays. "
             f"`{args.method}` reads no data to allocate ranks, so only the calibration changes. Perplexity on the 48 test "
             f"windows; the original's is {original_ppl:.2f}. *Change* is against the row above (same budget).", "",
             "| params kept | tokens | perplexity | x original | change | compress time |", "| --- | --- | --- | --- | --- | --- |"]
    previous = {}
    for r in sorted(rows, key=lambda r: (-r["params_budget"], r["tokens"])):
        before = previous.get(r["params_budget"])
        change = f"{r['perplexity'] / before - 1:+.1%}" if before else ""
        lines.append(f"| {r['params_kept']:.1%} | {r['tokens']:,} | {r['perplexity']:.2f} | {r['perplexity'] / original_ppl:.2f}x "
                     f"| {change} | {r['seconds']:.0f} s |")
        previous[r["params_budget"]] = r["perplexity"]
    lines += ["", *flattening(rows)]
    write_report(ROOT / "reports" / "llm", args.name, rows, lines)


def flattening(rows: list[dict]) -> list[str]:
    """Per budget, the fewest tokens after which the next point improved by less than WITHIN."""
    out = []
    for params in sorted({r["params_budget"] for r in rows}, reverse=True):
        curve = sorted((r for r in rows if r["params_budget"] == params), key=lambda r: r["tokens"])
        if len(curve) < 2:
            out.append(f"- At {params:.0%} of the parameters: one size measured ({curve[0]['tokens']:,} tokens), no curve.")
            continue
        flat = next((a for a, b in zip(curve, curve[1:]) if b["perplexity"] > a["perplexity"] * (1 - WITHIN)), None)
        out.append(f"- At {params:.0%} of the parameters: " + (
            f"perplexity stopped improving within {WITHIN:.0%} from {flat['tokens']:,} tokens." if flat else
            f"still improving by {WITHIN:.0%} or more at the largest size measured ({curve[-1]['tokens']:,} tokens)."))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, nargs="+", default=[0.8], help="share of the whole model's parameters kept")
    ap.add_argument("--windows", type=int, nargs="+", default=[8, 32, 128, 512], help="calibration windows of 128 tokens")
    ap.add_argument("--method", default="uniform")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="calibration", help="report name under reports/llm/ (default calibration)")
    args = ap.parse_args()
    entry, original, original_ppl = original_model(args)
    rows = []
    for windows in args.windows:  # the largest sets last, for every budget
        for params in args.params:
            rows.append(point(original, entry, params, windows, args.method))
            print(rows[-1], flush=True)
            report(rows, original_ppl, args)


if __name__ == "__main__":
    main()
