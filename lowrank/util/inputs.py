"""Model inputs come as a tensor, a tuple of positional inputs, or a dict of keyword inputs.
This is the one place that knows those three forms."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Mapping

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
    """Call ``model`` with a tensor, a tuple of positional inputs, or a dict of keyword inputs,
    moved to the device the model is on (calibration data may live on the CPU)."""
    args, kwargs = call_args(to_device(inputs, model_device(model)))
    return model(*args, **kwargs)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def map_inputs(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn`` applied to every leaf of ``x`` (a tensor, or a dict, tuple or list of inputs,
    nested), the structure kept: the one walk that moving, slicing, casting and laying out
    inputs share."""
    if isinstance(x, Mapping):
        return {k: map_inputs(fn, v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(map_inputs(fn, v) for v in x)
    return fn(x)


def take(x: Any, idx):
    """Index a tensor, or every tensor of a dict or tuple of inputs, along the batch dimension."""
    return map_inputs(lambda t: t[idx] if isinstance(t, torch.Tensor) else t, x)


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
    return map_inputs(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, x)


def main_output(out: Any) -> torch.Tensor:
    """The tensor a loss compares: the output itself, ``.logits`` (Hugging Face outputs), or the
    first tensor of a tuple or dict of outputs."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise ValueError(f"the model returned a {type(out).__name__}, which holds no tensor to compute a loss on; "
                     "pass loss=fn(outputs, targets) to compress")


def class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of class targets: one per row, or one per position of a sequence (a
    language model's next tokens: logits (batch, length, classes), targets (batch, length))."""
    import torch.nn.functional as F

    targets = targets.to(logits.device)
    if logits.dim() == targets.dim() + 1 and logits.dim() > 2 and not targets.is_floating_point():
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return F.cross_entropy(logits, targets)


def describe(x: Any) -> str:
    """The shapes (and dtypes) of model inputs, for messages: ``tensor (4, 1, 28, 28) float32``."""
    if isinstance(x, torch.Tensor):
        return f"tensor {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in x) + ")"
    return type(x).__name__


class ModelCallError(ValueError):
    """Running the user's model on the given input failed; the message shows the input."""


@contextmanager
def naming_input(inputs: Any, what: str = "calibration input"):
    """Report a failure inside the block as a :class:`ModelCallError` that names the input's
    shapes and the original error (instead of a raw error from deep inside the model)."""
    try:
        yield
    except ModelCallError:
        raise
    except Exception as err:
        raise ModelCallError(
            f"running the model on the {what} failed: input {describe(inputs)}; the model raised "
            f"{type(err).__name__}: {err}. Check that the calibration data has the shape, dtype and form "
            "(tensor, tuple of positional inputs, or dict of keyword inputs) that model(...) expects."
        ) from err


def call_checked(model: nn.Module, inputs: Any, what: str = "calibration input"):
    """``call_model`` under :func:`naming_input`."""
    with naming_input(inputs, what):
        return call_model(model, inputs)
