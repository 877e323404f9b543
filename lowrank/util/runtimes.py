"""Runtimes a model is deployed on, as callables to time: eager PyTorch, or ONNX Runtime on the
CPU (the ``export`` extra installs it).

A speedup measured in eager PyTorch need not hold where the model runs: ONNX Runtime fuses
and schedules operations its own way. So a latency target names its runtime, and every
timing (layers, the whole model, the rebuilt model against the original) runs there.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Callable

import torch
from torch import nn

from .inputs import call_model

RUNTIMES = ("eager", "onnxruntime")


def check_runtime(name: str) -> None:
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose {', '.join(RUNTIMES)}")


def runner(module: nn.Module, inputs: list, runtime: str = "eager", threads: int = 1) -> Callable[[], Any]:
    """A callable that runs ``module`` on each of ``inputs`` (tensors, tuples or dicts of
    them) on ``runtime``, ready to time: for ONNX Runtime the module is exported once here."""
    check_runtime(runtime)
    if runtime == "eager":
        def go():
            for x in inputs:
                module(x) if isinstance(x, torch.Tensor) else call_model(module, x)
        return go
    sessions = [_onnx_session(module, x, threads) for x in inputs]

    def go_onnx():
        for session, feeds in sessions:
            session.run(None, feeds)
    return go_onnx


def _onnx_session(module: nn.Module, x: Any, threads: int):
    """An ONNX Runtime session of ``module`` at ``x``'s shapes, with its input feeds."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("timing on ONNX Runtime needs onnxruntime: pip install -e '.[export]'") from err
    args = (x,) if isinstance(x, torch.Tensor) else tuple(x) if isinstance(x, (tuple, list)) else None
    if args is None or not all(isinstance(a, torch.Tensor) for a in args):
        raise ValueError("timing on ONNX Runtime takes models called with tensors (not keyword inputs); use runtime='eager'")
    buf = io.BytesIO()
    names = [f"input{i}" for i in range(len(args))]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: it is the quick one for many small graphs
        torch.onnx.export(module.eval(), args, buf, input_names=names, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args) if n in wanted}
    return session, feeds
