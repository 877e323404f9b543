"""Saving a rebuilt model for deployment, and checking the saved file against the model.

Two formats: ``torch`` (``torch.export``, a ``.pt2`` file that loads without lowrank) and
``onnx`` (through torch's dynamo exporter; checked with onnxruntime, the optional extra
``pip install -e '.[export]'``). The batch dimension is exported dynamic where the model
allows it, so the file runs at any batch size; the check runs the saved file on inputs the
caller gives (the calibration batch, on the CLI) and reports the largest absolute difference
from the PyTorch model's outputs. BatchNorm is folded into the layer before it first (as
runtimes do; lowrank.util.fold), and the check compares against the unfolded model.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .util.fold import batchnorms, fold_batchnorm
from .util.inputs import call_args
from .util.modes import evaluating

FORMATS = {"torch": ".pt2", "onnx": ".onnx"}


@dataclass
class ExportCheck:
    """Where a model was saved and how closely the saved file reproduces it."""

    format: str
    path: Path
    max_abs_diff: float  # over every output element of the check inputs
    check_shapes: list  # the input shapes the check ran on
    dynamic_batch: bool  # False when the model only exported at the example's batch size
    folded: int = 0  # BatchNorms folded into the layer before them

    def __str__(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else "fixed batch size"
        folded = f", {self.folded} BatchNorm folded" if self.folded else ""
        return (f"{self.format} export written to {self.path} ({batch}{folded}); largest difference from the PyTorch model "
                f"on inputs {self.check_shapes}: {self.max_abs_diff:.3g}")


def export(model: nn.Module, example: Any, path: str | Path, format: str = "onnx", check_inputs: Any = None,
           fold: bool = True) -> ExportCheck:
    """Save ``model`` (run in eval mode) as ``format`` at ``path``; check it on ``check_inputs``.

    ``example``: what the model is called with (a tensor, a tuple of tensors, or a dict of
    keyword tensors), batch first; a batch of at least 2 lets the batch dimension be dynamic.
    ``check_inputs`` (default ``example``): inputs to compare the saved file with the model on.
    ``fold``: fold each BatchNorm into the layer before it (default True).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_inputs = example if check_inputs is None else check_inputs
    args, kwargs = call_args(example)
    check_args, check_kwargs = call_args(check_inputs)
    saved = fold_batchnorm(model) if fold else model
    folded = batchnorms(model) - batchnorms(saved)
    with evaluating(model), torch.no_grad(), warnings.catch_warnings():
        # torch's own exporter trips a deprecation inside torch (pytree LeafSpec): not the user's concern
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        expected = _leaves(model(*check_args, **check_kwargs))  # the model as given: the check covers the folding
        program, dynamic = _exported_program(saved.eval(), args, kwargs)
        if format == "torch":
            torch.export.save(program, path)
            got = _leaves(torch.export.load(path).module()(*check_args, **check_kwargs))
        else:
            _save_onnx(saved, args, kwargs, path, dynamic)
            got = _run_onnx(path, check_inputs)
    if len(got) != len(expected):
        raise RuntimeError(f"the {format} export returns {len(got)} outputs, the model {len(expected)}")
    diff = max((float((g.to(e.dtype) - e).abs().max()) if e.numel() else 0.0) for g, e in zip(got, expected))
    shapes = [list(t.shape) for t in tree_flatten(check_inputs)[0] if isinstance(t, torch.Tensor)]
    return ExportCheck(format, path, diff, shapes, dynamic is not None, folded)


def _batch_dims(model, args, kwargs):
    """Dim 0 of every input tensor as one shared dynamic batch dimension, keyed by the name
    of the forward argument it is passed as."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {name: ({0: batch} if isinstance(v, torch.Tensor) else None) for name, v in bound.items()}


def _exported_program(model, args, kwargs):
    """torch.export with a dynamic batch when the model allows it, else at the example's shapes."""
    if not args or not isinstance(args[0], torch.Tensor) or len(args[0]) >= 2:
        try:
            dynamic = _batch_dims(model, args, kwargs)
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic), dynamic
        except Exception:  # e.g. the model branches on the batch size: export it fixed instead
            pass
    return torch.export.export(model, args, kwargs), None


def _save_onnx(model, args, kwargs, path: Path, dynamic) -> None:
    # The exporter narrates its steps on stdout and warns about torchvision operators it skips
    # (none of which a factorised model uses): keep both out of the user's terminal.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, args, str(path), kwargs=kwargs or None, dynamo=True, dynamic_shapes=dynamic,
                              external_data=False, verbose=False)
    finally:
        registry_log.setLevel(level)


def _run_onnx(path: Path, inputs) -> list[torch.Tensor]:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install -e '.[export]'") from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensors = [t for t in tree_flatten(call_args(inputs))[0] if isinstance(t, torch.Tensor)]
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(tensors):
        raise RuntimeError(f"the ONNX graph takes {len(names)} inputs, the check has {len(tensors)} tensors")
    outputs = session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)})
    return [torch.from_numpy(o) for o in outputs]


def _leaves(output) -> list[torch.Tensor]:
    return [t.detach().cpu() for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
