"""Calibration data as a list of (inputs, targets-or-None) batches: what a user hands over
(a tensor or numpy array, an (inputs, targets) pair, a DataLoader, a list of those)
normalised, split into a gradient part and a selection part, cut into chunks, or drawn from
a dataset split by a seed.

The convention: a pair ``(a, b)`` is (inputs, targets). A model that takes several inputs
gets them as a tuple or dict in the inputs' place: ``((a, b), None)``, ``[((a, b), y), ...]``
or ``{"input_ids": ..., "attention_mask": ...}``.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from .inputs import describe, size, take

Batch = tuple[Any, Any]  # (inputs, targets or None)


def as_tensors(x: Any) -> Any:
    """numpy arrays (alone, or in a tuple, list or dict) as tensors; floating ones in torch's
    default dtype (numpy's float64 would not run through a float32 model)."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(torch.get_default_dtype()) if t.is_floating_point() else t
    if isinstance(x, dict):
        return {k: as_tensors(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(as_tensors(v) for v in x)
    return x


def as_batches(calib: Any) -> list[Batch]:
    """Normalise calibration data to a list of (inputs, targets-or-None) batches. A batch of
    no samples holds nothing and is left out; calibration data with none at all is refused."""
    batches = _batches(calib)
    out = [(x, y) for x, y in batches if size(x) > 0]
    if not out:
        raise ValueError(f"calib is empty: its {len(batches)} batch(es) hold 0 samples (the first: "
                         f"{describe(batches[0][0])}); give at least one batch of inputs")
    return out


def _batches(calib: Any) -> list[Batch]:
    if isinstance(calib, np.ndarray):
        calib = as_tensors(calib)
    if isinstance(calib, (torch.Tensor, dict)):
        return [(as_tensors(calib), None)]
    if _is_pair(calib):
        return [(as_tensors(calib[0]), as_tensors(calib[1]))]
    if isinstance(calib, Iterable):
        out = []
        for b in calib:
            # A DataLoader's default collate turns each (inputs, targets) sample into a list [inputs, targets].
            out += _batches(tuple(b) if isinstance(b, list) and _is_pair(tuple(b)) else b)
        if not out:
            raise ValueError("calib is empty: give at least one batch of inputs")
        return out
    raise ValueError(f"calib must be a tensor, a dict, an (inputs, targets) pair or an iterable of batches, not {type(calib).__name__}")


def _is_pair(calib: Any) -> bool:
    """An (inputs, targets) pair: inputs a tensor, array or dict; or a tuple of tensors (a
    model's several inputs) with a tensor of targets or None (a tuple of two (inputs,
    targets) batches is two batches)."""
    if not (isinstance(calib, tuple) and len(calib) == 2):
        return False
    inputs, targets = calib
    several = isinstance(inputs, (tuple, list)) and bool(inputs) and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in inputs)
    return isinstance(inputs, (torch.Tensor, np.ndarray, dict)) or (several and (targets is None or isinstance(targets, (torch.Tensor, np.ndarray))))


def split_calibration(batches: list[Batch], selection_fraction: float = 0.25) -> tuple[list[Batch], list[Batch]]:
    """Disjoint (gradient, selection) parts: the last batches, or the last samples of one batch."""
    if len(batches) >= 2:
        n_sel = max(1, int(round(len(batches) * selection_fraction)))
        return batches[:-n_sel], batches[-n_sel:]
    (x, y), = batches
    n = size(x)
    if n < 2:
        raise ValueError("this method needs at least 2 calibration samples (one part to take gradients or measure on, "
                         "one held out to choose on); give more, or a method that needs no data, e.g. method='exact'")
    cut = n - max(1, int(round(n * selection_fraction)))
    first, last = slice(0, cut), slice(cut, n)
    return [(take(x, first), None if y is None else y[first])], [(take(x, last), None if y is None else y[last])]


def in_chunks(batches: Iterable[Batch], most: int = 128) -> list[Batch]:
    """The batches cut to at most ``most`` samples each: the passes are repeated many times,
    and on a CPU a few hundred images at once run slower per image than a hundred (the
    activations leave the cache; measured 20% on vgg-fmnist's forward and backward)."""
    out = []
    for x, y in batches:
        n = size(x)
        for i in range(0, n, most):
            part = slice(i, min(i + most, n))
            out.append((take(x, part), None if y is None else y[part]))
    return out


def sample_batches(part: tuple[Any, torch.Tensor], n: int | None, seed: int, batch_size: int = 128) -> list[Batch]:
    """``n`` samples (None: all) of a dataset split part ``(inputs, labels)``, chosen by
    ``seed`` and kept in their order, as (inputs, labels) batches."""
    x, y = part
    if n is not None and n > len(y):
        raise ValueError(f"asked for {n} samples, but the split has only {len(y)}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: len(y) if n is None else n]
    idx = idx.sort().values
    return [(take(x, idx[i : i + batch_size]), y[idx[i : i + batch_size]]) for i in range(0, len(idx), batch_size)]
