"""What a compressed SmolLM2-135M is like to use: per budget and method, its perplexity against
the original's, what it writes after two fixed prompts (greedy) beside what the original
writes, and how fast it generates (tokens per second at batch 1 with the key-value cache; the
original and the compressed model timed in turn, the median of several rounds).

    python bench/llm_use.py [--params 0.8 0.6] [--methods uniform cobla] [--tokens 64] [--rounds 5] [--threads 1]

Every plan is made by ``lowrank.compress`` with its defaults (the activation basis, and the
refit after truncation). Writes reports/llm/use.md and .csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lowrank  # noqa: E402
from lowrank import Budget  # noqa: E402
from lowrank.zoo import get  # noqa: E402
from lowrank.zoo.smollm import tokenizer  # noqa: E402
from tables import command, write_report  # noqa: E402

PROMPTS = ("JULIET. O Romeo, Romeo! wherefore art thou Romeo?\n",
           "The king is dead, and the")


@torch.inference_mode()
def greedy(model, prompt: str, new_tokens: int, exact: bool = False) -> tuple[str, float]:
    """The greedy continuation and the seconds it took (``exact``: exactly ``new_tokens``,
    end-of-text suppressed, so two models are timed on the same amount of work)."""
    tok = tokenizer()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    model.eval()
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens if exact else 0, do_sample=False,
                         use_cache=True, pad_token_id=tok.eos_token_id)
    seconds = time.perf_counter() - start
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), seconds


def tokens_per_second(original, compressed, tokens: int, rounds: int) -> tuple[float, float]:
    """Median tokens/s of each model, timed in turn (original, compressed, original, ...), after one warm-up each."""
    greedy(original, PROMPTS[0], 4, exact=True)
    greedy(compressed, PROMPTS[0], 4, exact=True)
    times = {"original": [], "compressed": []}
    for _ in range(rounds):
        for name, model in (("original", original), ("compressed", compressed)):
            times[name].append(greedy(model, PROMPTS[0], tokens, exact=True)[1])
    return tokens / statistics.median(times["original"]), tokens / statistics.median(times["compressed"])


def one_line(text: str) -> str:
    """Generated text as one Markdown table cell (stage directions' brackets escaped, not links)."""
    return " ".join(text.split()).replace("|", "/").replace("[", "\\[").replace("]", "\\]")


def llm_arguments(doc: str, threads: int) -> argparse.ArgumentParser:
    """The options the SmolLM2 benches share: budgets, methods, text shown, threads."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--params", type=float, nargs="+", default=[0.8, 0.6], help="share of the whole model's parameters kept")
    ap.add_argument("--methods", nargs="+", default=["uniform", "cobla"])
    ap.add_argument("--text-tokens", type=int, default=30, help="new tokens of greedy text shown per prompt")
    ap.add_argument("--threads", type=int, default=threads)
    return ap


def original_model(args) -> tuple:
    """(the entry, its original model, the original's test perplexity), at ``args.threads``."""
    torch.set_num_threads(args.threads)
    entry = get("smollm2-shakespeare")
    original = entry.load()
    return entry, original, lowrank.evaluate(original, entry)


def plans(args, entry, original):
    """(params, method, result, seconds) for each budget and method of ``args``: one
    ``lowrank.compress`` call with its defaults each, timed."""
    for params in args.params:
        for method in args.methods:
            torch.manual_seed(0)
            start = time.perf_counter()
            result = lowrank.compress(original, entry, Budget(params=params), method=method)
            yield params, method, result, time.perf_counter() - start


def main() -> None:
    ap = llm_arguments(__doc__, threads=1)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per timed generation")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    entry, original, base_ppl = original_model(args)
    base_text = [greedy(original, p, args.text_tokens)[0] for p in PROMPTS]
    rows = []
    for params, method, result, seconds in plans(args, entry, original):
        model = result.model
        ppl = lowrank.evaluate(model, entry)
        texts = [greedy(model, p, args.text_tokens)[0] for p in PROMPTS]
        tps_original, tps = tokens_per_second(original, model, args.tokens, args.rounds)
        rows.append({"params_budget": params, "method": method,
                     "params_kept": round(result.plan.fraction("params"), 4),
                     "params_kept_of_linears": round(result.plan.layers_fraction("params"), 4),
                     "compress_seconds": round(seconds, 1), "perplexity": round(ppl, 2),
                     "perplexity_ratio": round(ppl / base_ppl, 3),
                     "tokens_per_s_original": round(tps_original, 1), "tokens_per_s": round(tps, 1),
                     "speedup": round(tps / tps_original, 3),
                     **{f"text{i + 1}": one_line(t) for i, t in enumerate(texts)}})
        print({k: v for k, v in rows[-1].items() if not k.startswith("text")}, flush=True)
    lines = ["# What a compressed SmolLM2-135M is like to use", "",
             f"Made by `{command(__file__)}` ({args.threads} thread(s), CPU, float32). Each plan is "
             "`lowrank.compress(model, entry, Budget(params=...), method=...)` with its defaults: the activation "
             "basis and the refit after truncation, before any fine-tuning. `kept` is of the whole model (the "
             "tied embedding and head stay dense and count), `of linears` of the 210 compressible Linear layers. "
             f"Perplexity on the 48 test windows of 128 tokens; the original's is {base_ppl:.2f}. Generation speed: "
             f"{args.tokens} new tokens at batch 1 with the key-value cache (end of text suppressed), the original "
             f"and the compressed model timed in turn, median of {args.rounds} rounds. `compress` is the whole "
             "`lowrank.compress` call (calibration, allocation, rebuild and refit, and the checks).", "",
             "| params kept (of linears) | method | perplexity (x original) | tokens/s: original, compressed (speedup) | compress |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['params_kept']:.1%} ({r['params_kept_of_linears']:.1%}) | {r['method']} | {r['perplexity']:.2f} "
                     f"({r['perplexity_ratio']:.2f}x) | {r['tokens_per_s_original']:.1f}, {r['tokens_per_s']:.1f} "
                     f"({r['speedup']:.2f}x) | {r['compress_seconds']:.0f} s |")
    for i, prompt in enumerate(PROMPTS):
        lines += ["", f"## Greedy continuation of {prompt.strip()!r} ({args.text_tokens} new tokens)", "",
                  "| model | text |", "| --- | --- |", f"| original | {one_line(base_text[i])} |"]
        lines += [f"| {r['method']}, {r['params_kept']:.1%} kept | {r[f'text{i + 1}']} |" for r in rows]
    write_report(ROOT / "reports" / "llm", "use", rows, lines)


if __name__ == "__main__":
    main()
