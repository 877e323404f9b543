"""How COBLA picks one of its candidate allocations from their scores on a selection split.

The loss (e.g. cross-entropy) is the smooth, low-variance estimate and decides, except where
the split's top-1 error says clearly otherwise: a wrecked network (all candidates near chance)
can have its losses in an order its accuracy does not follow. "Clearly" is two standard
errors of the best error rate plus one sample; inside that band the error is noise (on 125
images, 2 misclassified images more or fewer are).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Score:
    """One candidate on the selection split: its loss, and its top-1 error rate over
    ``samples`` class-labelled samples when the split has class labels."""

    loss: float
    error: float | None = None
    samples: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Scorer:
    """Scores whole allocations on held-out data: ``scorer([(ranks, active), ...])`` gives one
    :class:`Score` (or a plain loss) each, ranks over every group of the problem. Wrapped in
    this class, a scorer is restated with the problem (e.g. over rank multiples)."""

    def __init__(self, fn: Callable[[Sequence[tuple]], list]):
        self.fn = fn

    def __call__(self, allocations: Sequence[tuple]) -> list:
        return self.fn(allocations)


def error_band(best_error: float, samples: int) -> float:
    """How far above the best error rate a candidate's error still counts as a tie."""
    return 2.0 * math.sqrt(best_error * (1.0 - best_error) / samples) + 1.0 / samples


def choose(scores: Sequence[Score]) -> int:
    """Index of the candidate to keep: the lowest loss among those whose error is within the
    band of the lowest error (all of them when there are no errors).

    So no candidate beats the chosen one on both counts: every other has a loss at least as
    high, or an error clearly higher."""
    if not scores:
        raise ValueError("no candidates to choose from")
    tied = range(len(scores))
    with_error = [i for i in tied if scores[i].error is not None and scores[i].samples]
    if len(with_error) == len(scores):
        best = min(scores[i].error for i in tied)
        band = error_band(best, min(scores[i].samples for i in tied))
        tied = [i for i in tied if scores[i].error <= best + band]
    return min(tied, key=lambda i: scores[i].loss)
