"""Synthetic allocation problems shaped like real networks, for tests and benchmarks."""
from __future__ import annotations

import numpy as np

from .problem import Group, Problem


def _spectrum(rng, rank: int) -> np.ndarray:
    decay = rng.uniform(1.0, 6.0)
    return np.sort(rng.gamma(1.0, 1.0, rank) * np.exp(-decay * np.arange(rank) / rank))[::-1] + 1e-6


def from_shapes(shapes, macs: float = 0.5, params: float = 0.4, seed: int = 0) -> Problem:
    """``shapes``: (rows, cols, spatial positions, bias) per layer; budgets as fractions."""
    rng = np.random.default_rng(seed)
    groups = []
    for i, (m, n, hw, bias) in enumerate(shapes):
        groups.append(Group(f"layer{i}", _spectrum(rng, min(m, n)), [hw * (m + n), m + n], [0, bias], [hw * m * n, m * n + bias]))
    dense = np.sum([g.dense_cost for g in groups], axis=0)
    return Problem(groups, budgets=[macs * dense[0], params * dense[1]], reference_cost=dense)


def vgg16_shapes():
    """VGG-16 on 224x224: 13 convs (channel scheme) and 3 linears."""
    cfg = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56), (256, 256, 56),
           (256, 512, 28), (512, 512, 28), (512, 512, 28), (512, 512, 14), (512, 512, 14), (512, 512, 14)]
    convs = [(c_out, c_in * 9, hw * hw, c_out) for c_in, c_out, hw in cfg]
    return convs + [(4096, 25088, 1, 4096), (4096, 4096, 1, 4096), (1000, 4096, 1, 1000)]


def resnet50_shapes():
    """ResNet-50 on 224x224: bottleneck 1x1 / 3x3 / 1x1 convs, downsample convs, the classifier."""
    shapes = [(64, 3 * 49, 112 * 112, 0)]
    c_in = 64
    for width, blocks, hw in ((64, 3, 56), (128, 4, 28), (256, 6, 14), (512, 3, 7)):
        for b in range(blocks):
            shapes += [(width, c_in, hw * hw, 0), (width, width * 9, hw * hw, 0), (width * 4, width, hw * hw, 0)]
            if b == 0:
                shapes.append((width * 4, c_in, hw * hw, 0))
            c_in = width * 4
    return shapes + [(1000, 2048, 1, 1000)]


def bert_shapes(layers: int = 24, d: int = 1024, seq: int = 128):
    """BERT encoder Linear layers (BERT-large by default): Q, K, V, O, FFN up, FFN down."""
    per_layer = [(d, d, seq, d)] * 4 + [(4 * d, d, seq, 4 * d), (d, 4 * d, seq, d)]
    return per_layer * layers
