"""Healing a compressed SmolLM2-135M: a short fine-tune of the factors alone on the training
plays, and what it buys against what the same fine-tune buys the original.

    python bench/llm_heal.py [--params 0.8 0.6] [--methods uniform cobla] [--windows 512] [--kd 0] [--threads 2] [--name heal]

Each plan is made by ``lowrank.compress`` with its defaults (activation basis, refit), then
``lowrank.finetune(result, entry, samples_per_epoch=windows)`` with the entry's recipe (the
factorised layers' factors only; embeddings, norms and layers kept dense stay as they are).
The control is the uncompressed original trained by the same recipe on the same windows (all
of its weights: it has no factors). The training plays share no text with the test plays.
Writes reports/llm/<name>.md and .csv.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank.finetuning import RECIPE  # noqa: E402
from llm_use import PROMPTS, greedy, llm_arguments, one_line, original_model, plans  # noqa: E402
from tables import command, write_report  # noqa: E402


def heal(model, entry, args, teacher=None, train=None) -> tuple[float, float]:
    """Fine-tune in place; (perplexity after, seconds)."""
    start = time.perf_counter()
    history = lowrank.finetune(model, entry, epochs=1, samples_per_epoch=args.windows, teacher=teacher,
                               kd=args.kd if teacher is not None else 0.0, train=train, seed=0, progress=False)
    return history[-1], time.perf_counter() - start


def main() -> None:
    ap = llm_arguments(__doc__, threads=2)
    ap.add_argument("--windows", type=int, default=512, help="training windows of 128 tokens (one pass)")
    ap.add_argument("--kd", type=float, default=0.0, help="distillation weight from the original while healing")
    ap.add_argument("--name", default="heal", help="report name under reports/llm/ (default heal)")
    args = ap.parse_args()
    entry, original, base_ppl = original_model(args)
    control = entry.load()
    control_ppl, control_seconds = heal(control, entry, args, teacher=original if args.kd else None, train="all")
    texts = {"original": [greedy(original, p, args.text_tokens)[0] for p in PROMPTS],
             "original, fine-tuned alike": [greedy(control, p, args.text_tokens)[0] for p in PROMPTS]}
    del control
    print(f"original {base_ppl:.2f}; fine-tuned alike {control_ppl:.2f} in {control_seconds:.0f} s", flush=True)
    rows = []
    for params, method, result, compress_seconds in plans(args, entry, original):
        before = lowrank.evaluate(result.model, entry)
        after, seconds = heal(result, entry, args, teacher=original if args.kd else None)
        texts[f"{method}, {result.plan.fraction('params'):.1%} kept, healed"] = [
            greedy(result.model, p, args.text_tokens)[0] for p in PROMPTS]
        rows.append({"params_budget": params, "method": method,
                     "params_kept": round(result.plan.fraction("params"), 4),
                     "params_kept_of_linears": round(result.plan.layers_fraction("params"), 4),
                     "compress_seconds": round(compress_seconds, 1), "perplexity_before": round(before, 2),
                     "perplexity_healed": round(after, 2), "heal_seconds": round(seconds, 1),
                     "ratio_before": round(before / base_ppl, 3), "ratio_healed": round(after / base_ppl, 3),
                     "ratio_healed_to_control": round(after / control_ppl, 3),
                     "original": round(base_ppl, 2), "original_fine_tuned_alike": round(control_ppl, 2)})
        print(rows[-1], flush=True)
    recipe = {**RECIPE, **(entry.finetune_recipe or {})}
    lines = ["# Healing a compressed SmolLM2-135M: fine-tuning its factors on the training plays", "",
             f"Made by `{command(__file__)}` ({args.threads} thread(s), CPU, float32). Each plan is "
             "`lowrank.compress(model, entry, Budget(params=...), method=...)` with its defaults (activation basis, "
             "refit), then `lowrank.finetune(result, entry, samples_per_epoch=windows)`: one pass over "
             f"{args.windows} windows of 128 tokens ({args.windows * 128:,} tokens) from the training plays, which share "
             f"no text with the test plays, with the entry's recipe (AdamW, learning rate {recipe['lr']:g} with a cosine "
             f"decay, batches of {recipe['batch_size']} windows, gradient norm clipped at {recipe['clip']}, "
             f"distillation weight {args.kd:g}), training the factorised layers' factors only: the embedding, the "
             "norms and the layers kept dense stay as they are.", "",
             f"Perplexity on the 48 test windows. The original's is {base_ppl:.2f}; the original fine-tuned by the same "
             f"recipe on the same windows (all its weights: it has no factors) reaches {control_ppl:.2f} in "
             f"{control_seconds:.0f} s. A healed model is compared with both: the first ratio is what a user who "
             "ships the original as it is sees, the second what the compression itself costs, since fine-tuning on "
             "Shakespeare helps any model on Shakespeare.", "",
             "| params kept (of linears) | method | before healing (x original) | healed (x original, x original fine-tuned alike) | heal | compress |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['params_kept']:.1%} ({r['params_kept_of_linears']:.1%}) | {r['method']} | "
                     f"{r['perplexity_before']:.2f} ({r['ratio_before']:.2f}x) | **{r['perplexity_healed']:.2f}** "
                     f"({r['ratio_healed']:.2f}x, {r['ratio_healed_to_control']:.2f}x) | {r['heal_seconds']:.0f} s | "
                     f"{r['compress_seconds']:.0f} s |")
    for i, prompt in enumerate(PROMPTS):
        lines += ["", f"## Greedy continuation of {prompt.strip()!r} ({args.text_tokens} new tokens)", "",
                  "| model | text |", "| --- | --- |"]
        lines += [f"| {name} | {one_line(t[i])} |" for name, t in texts.items()]
    write_report(ROOT / "reports" / "llm", args.name, rows, lines)


if __name__ == "__main__":
    main()
