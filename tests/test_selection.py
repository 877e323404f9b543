"""How COBLA chooses among its candidates (solvers.selection): the loss decides, unless the
top-1 error clearly disagrees."""
import pytest

from lowrank.needs.network_loss import top1_misses
from solvers.selection import Score, choose, error_band


def test_loss_decides_when_the_errors_are_within_noise():
    # 125 samples: 5 vs 7 misclassified is noise; the lower loss wins
    scores = [Score(0.2125, 5 / 125, 125), Score(0.1942, 7 / 125, 125), Score(0.1976, 7 / 125, 125)]
    assert choose(scores) == 1


def test_a_clearly_lower_error_wins_over_a_lower_loss():
    # a wrecked network: losses above chance do not follow accuracy; 1,000 samples
    scores = [Score(2.5996, 0.894, 1000), Score(2.7395, 0.764, 1000), Score(3.0871, 0.796, 1000)]
    assert choose(scores) == 1
    assert error_band(0.764, 1000) == pytest.approx(2 * (0.764 * 0.236 / 1000) ** 0.5 + 0.001)


def test_losses_alone_and_mixed_scores():
    assert choose([Score(0.3), Score(0.1), Score(0.2)]) == 1
    assert choose([Score(0.3, 0.5, 10), Score(0.1)]) == 1  # an error for some only: the loss decides
    with pytest.raises(ValueError, match="no candidates"):
        choose([])


def test_the_choice_is_never_beaten_on_both_counts():
    import random

    rng = random.Random(0)
    for _ in range(500):
        n = rng.choice([50, 125, 1000])
        scores = [Score(rng.random(), rng.randint(0, n) / n, n) for _ in range(rng.randint(1, 12))]
        c = scores[choose(scores)]
        assert all(c.loss <= s.loss or c.error < s.error for s in scores)


def test_top1_misses_only_for_class_labels():
    import torch

    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert top1_misses(out, torch.tensor([0, 1, 1])) == 1
    assert top1_misses(out, None) is None
    assert top1_misses(out, torch.tensor([0.5, 1.0, 2.0])) is None  # a regression target
    assert top1_misses(out[:, :, None], torch.tensor([0, 1, 1])) is None  # not one row per sample
