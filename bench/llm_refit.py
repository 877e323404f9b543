"""What the refit after truncation (SVD-LLM's parameter update, run layer by layer) does for the
language model: SmolLM2-135M on Shakespeare, perplexity on the 48 test windows, the same plan
rebuilt with the truncated factors as they are and refit on 8 or 32 calibration windows (1,024
or 4,096 tokens); then the refit model saved with ``lowrank.save`` and loaded again with
``lowrank.load`` (no original weights), its size on disk and its logits against the model it
came from.

    python bench/llm_refit.py [--params 0.8 0.6] [--methods uniform exact] [--windows 8 32] [--threads 1]

Writes reports/llm/refit.md and .csv.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
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


def one(model, entry, params: float, method: str, windows: list[int]) -> tuple[dict, object]:
    torch.manual_seed(0)
    start = time.perf_counter()
    result = lowrank.compress(model, entry, Budget(params=params), method=method, refit=False)
    row = {"method": method, "params_budget": params, "params_kept": round(result.plan.fraction("params"), 4),
           "params_kept_of_linears": round(result.plan.layers_fraction("params"), 4),
           "plan_seconds": round(time.perf_counter() - start, 1), "ppl_truncated": round(lowrank.evaluate(result.model, entry), 2)}
    refit = None
    for n in windows:
        calib = sample_batches(entry.splits.calib, n, seed=0, batch_size=8)
        start = time.perf_counter()
        refit = lowrank.rebuild(model, result.plan, table=result.table, refit_on=calib, progress=True)
        row[f"refit{n}_seconds"] = round(time.perf_counter() - start, 1)
        row[f"ppl_refit{n}"] = round(lowrank.evaluate(refit, entry), 2)
    return row, refit


def round_trip(original, compressed, entry) -> dict:
    """Saved and loaded with no original weights: bytes on disk, and the largest logit difference."""
    x = {"input_ids": entry.splits.test[0]["input_ids"][:2]}
    with tempfile.TemporaryDirectory() as d:
        saved = lowrank.save(compressed, d, original=original)
        loaded = lowrank.load(d)
        with torch.no_grad():
            diff = float((loaded(**x).logits - compressed(**x).logits).abs().max())
    return {"saved_mib": round(saved.bytes / 2**20, 1), "original_mib": round(saved.original_bytes / 2**20, 1), "max_logit_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, nargs="+", default=[0.8, 0.6])
    ap.add_argument("--methods", nargs="+", default=["uniform", "exact"])
    ap.add_argument("--windows", type=int, nargs="+", default=[8, 32], help="calibration windows of 128 tokens to refit on")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    entry, model, original = original_model(args)
    rows = []
    for params in args.params:
        for method in args.methods:
            row, refit = one(model, entry, params, method, args.windows)
            rows.append({**row, **round_trip(model, refit, entry)})
            print(rows[-1], flush=True)
    lines = [f"# Refit after truncation on SmolLM2-135M (smollm2-shakespeare), before any fine-tuning", "",
             f"Made by `{command(__file__)}` ({args.threads} thread(s)). Each plan is made once (`refit=False`, the "
             "entry's 8 calibration windows for the activation basis) and rebuilt: with the truncated factors as they are, "
             "and with every layer refit in run order by least squares on the first N calibration windows of 128 tokens. "
             f"Perplexity on the 48 test windows; the original: {original:.2f}. `kept` is of the whole model (the tied "
             "embedding and head stay dense and count), `of linears` of the 210 compressible Linear layers. The refit "
             "model is then saved (`lowrank.save`) and loaded (`lowrank.load`, no base: the config saved beside it).", "",
             "| method | params kept (of linears) | truncated | " + " | ".join(f"refit on {n * 128:,} tokens" for n in args.windows)
             + " | refit time | saved / original | logits after load |",
             "| --- | --- | --- | " + " | ".join("---" for _ in args.windows) + " | --- | --- | --- |"]
    for r in rows:
        ppl = " | ".join(f"{r[f'ppl_refit{n}']:.2f} ({r[f'ppl_refit{n}'] / original:.2f}x)" for n in args.windows)
        times = ", ".join(f"{r[f'refit{n}_seconds']:.0f} s" for n in args.windows)
        lines.append(f"| {r['method']} | {r['params_kept']:.1%} ({r['params_kept_of_linears']:.1%}) | {r['ppl_truncated']:.2f} "
                     f"({r['ppl_truncated'] / original:.2f}x) | {ppl} | {times} | {r['saved_mib']:.1f} / {r['original_mib']:.1f} MiB | "
                     f"max diff {r['max_logit_diff']:.1e} |")
    write_report(ROOT / "reports" / "llm", "refit", rows, lines)


if __name__ == "__main__":
    main()
