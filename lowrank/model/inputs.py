"""Model inputs come as a tensor, a tuple of positional inputs, or a dict of keyword inputs.
This is the one place that knows those three forms."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


def call_args(inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) for calling a model on ``inputs``."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def call_model(model: nn.Module, inputs: Any):
    """Call ``model`` with a tensor, a tuple of positional inputs, or a dict of keyword inputs."""
    args, kwargs = call_args(inputs)
    return model(*args, **kwargs)


def take(x: Any, idx):
    """Index a tensor, or every tensor of a dict or tuple of inputs, along the batch dimension."""
    if isinstance(x, Mapping):
        return {k: take(v, idx) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(take(v, idx) for v in x)
    return x[idx] if isinstance(x, torch.Tensor) else x


def size(x: Any) -> int:
    """Batch size of a tensor, or of the first tensor of a dict or tuple of inputs."""
    if isinstance(x, Mapping):
        return size(next(iter(x.values())))
    if isinstance(x, (tuple, list)):
        return size(x[0])
    return len(x)


def first_sample(batch: Any) -> Any:
    """Slice every tensor in a batch to its first sample, so costs are counted per sample."""
    return take(batch, slice(0, 1))


def to_device(x: Any, device) -> Any:
    """Move every tensor of ``x`` (a tensor, dict or tuple of inputs) to ``device``."""
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x.to(device) if isinstance(x, torch.Tensor) else x
