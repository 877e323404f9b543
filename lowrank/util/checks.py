"""Checks of what a user hands over, made before any work, each naming what is wrong: a model
without values (the ``meta`` device), non-finite parameters or buffers anywhere in the model,
non-finite calibration inputs. Without them these end deep inside an SVD or an eigensolver
("failed to converge") naming nothing, or compress silently into a model that outputs NaN."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from .inputs import describe


def _bad(t: torch.Tensor) -> tuple[int, int]:
    if not t.is_floating_point() and not t.is_complex():
        return 0, 0
    return int(torch.isnan(t).sum()), int(torch.isinf(t).sum())


def check_module(model: nn.Module) -> None:
    """Refuse what is not a plain ``nn.Module`` lowrank can hook and copy: a TorchScript module
    (hooks are not supported on it, and its layers cannot be replaced), or no module at all."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("the model is a TorchScript module (torch.jit.script or torch.jit.trace): lowrank needs the Python "
                        "nn.Module it was made from, to record and replace its layers. Compress that nn.Module, then script "
                        "or trace the compressed model (result.model).")
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model must be a torch.nn.Module, not {type(model).__name__}"
                        + (": pass the nn.Module you exported, then export the compressed one (lowrank.export)"
                           if "ExportedProgram" in type(model).__name__ else ""))


def check_materialised(model: nn.Module) -> None:
    """Refuse a model whose tensors live on the ``meta`` device (shapes without values)."""
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise ValueError(f"the model's tensors are on the 'meta' device (shapes without values), e.g. {meta[0]!r}: load its "
                         "weights first (model.to_empty(device='cpu'), then model.load_state_dict(...))")


def check_finite_model(model: nn.Module) -> None:
    """Refuse NaN or infinite values in any parameter or buffer, naming each tensor."""
    bad = []
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        nan, inf = _bad(t.detach())
        if nan or inf:
            bad.append(f"{name!r} ({nan} NaN, {inf} infinite of {t.numel()})")
    if bad:
        raise ValueError("NaN or infinite values in the model's " + ", ".join(bad) + ": lowrank cannot compress it faithfully. "
                         "Check that the checkpoint loaded correctly or that training did not diverge.")


def check_finite_inputs(batches: Iterable[tuple[Any, Any]], what: str = "calibration") -> None:
    """Refuse NaN or infinite values in any input tensor of the batches, naming the batch."""
    for i, (x, _) in enumerate(batches):
        tensors = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else [x]
        for t in tensors:
            if isinstance(t, torch.Tensor):
                nan, inf = _bad(t)
                if nan or inf:
                    raise ValueError(f"{what} batch {i} (inputs {describe(x)}) holds {nan} NaN and {inf} infinite values: "
                                     "clean or drop those samples")
