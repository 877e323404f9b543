"""Refit after truncation: each rebuilt layer's last factor re-solved by least squares so that,
on the calibration data, the layer's output in the rebuilt model matches the original layer's
output in the original model.

Why: a plan's factors are the best rank-r approximation of each layer on its *original* inputs;
in the rebuilt model a layer sees inputs that earlier truncations have already changed, and
the errors add up. Layer by layer, in the order the model runs them, the factor that makes
the output (``second`` of a factorised layer, the kept-channel conv of a pruned one) is solved
for again with the other factor fixed: a linear least-squares problem on the inputs that
factor really sees, with the original output as the target (SVD-LLM's parameter update, run
sequentially). Shapes and so every cost are unchanged; only weights move. Memory is one Gram
matrix a layer (the factor's fan-in squared), whatever the number of samples.
"""
from __future__ import annotations

import sys
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..kinds.prune import PrunedConv2d
from ..util.inputs import call_model
from ..util.modes import evaluating

RIDGE = 1e-4  # Tikhonov weight, relative to the Gram matrix's mean diagonal: keeps a singular X^T X solvable


def refit(original: nn.Module, rebuilt: nn.Module, names: Sequence[str], batches: list, progress: bool = False) -> dict[str, float]:
    """Refit the named layers of ``rebuilt`` (in place) in the order the model runs them; returns
    per layer the share of the output's energy the refit layer leaves unexplained on ``batches``
    (calibration ``(inputs, targets)`` pairs). Both models run in eval mode meanwhile.
    ``progress``: a bar over the layers (each costs two passes over ``batches``)."""
    with evaluating(original), evaluating(rebuilt):
        return _refit_all(original, rebuilt, names, batches, progress)


def _refit_all(original, rebuilt, names, batches, progress: bool) -> dict[str, float]:
    targets = [n for n in _run_order(rebuilt, names, batches) if _last_factor(rebuilt.get_submodule(n)) is not None]
    errors = {}
    for name in tqdm(targets, desc="refit", unit="layer", disable=not progress, leave=False, file=sys.stderr):
        factor, source = _last_factor(rebuilt.get_submodule(name))
        try:
            errors[name] = _refit_layer(original, rebuilt, name, factor, source, batches)
        except _Unsupported:
            continue  # (a padding this refit does not unfold: the layer keeps its factors)
    return errors


def _last_factor(module: nn.Module):
    """(the conv or Linear that makes the layer's output, the submodule whose output is that
    factor's input, or None where it is the factor's own input), or None: nothing to refit
    (e.g. a layer at rank 0, which outputs its bias alone)."""
    found = _factor_and_source(module)
    return found if found is not None and found[0].weight.numel() > 0 else None


def _factor_and_source(module: nn.Module):
    if isinstance(module, PrunedConv2d):
        return module.conv, None
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and getattr(module, "groups", 1) == 1:
        return module, None  # a layer kept dense: its inputs changed too
    second, first = getattr(module, "second", None), getattr(module, "first", None)
    if first is not None and isinstance(second, (nn.Conv1d, nn.Conv2d, nn.Linear)) and getattr(second, "groups", 1) == 1:
        return second, first
    return None


def _run_order(model: nn.Module, names: Iterable[str], batches: list) -> list[str]:
    """``names`` in the order the model first calls them on a calibration batch."""
    wanted, order = set(names), []
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: order.append(n) if n not in order else None)
             for n in wanted]
    try:
        with torch.no_grad():
            call_model(model, batches[0][0])
    finally:
        for h in hooks:
            h.remove()
    return order + sorted(wanted - set(order))  # (a layer the batch never reached: last, and left as it is)


def _refit_layer(original, rebuilt, name, factor: nn.Module, source: nn.Module | None, batches) -> float:
    outputs, inputs = [], []
    hooks = [original.get_submodule(name).register_forward_hook(lambda m, a, out: outputs.append(out.detach()))]
    if source is None:
        hooks.append(factor.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())))
    else:
        hooks.append(source.register_forward_hook(lambda m, a, out: inputs.append(out.detach())))
    gram = cross = None
    energy = 0.0
    try:
        with torch.no_grad():
            for x, _ in batches:
                outputs.clear(), inputs.clear()
                call_model(original, x)
                call_model(rebuilt, x)
                for z, y in zip(inputs, outputs):
                    a, t = _design(factor, z), _flat_target(factor, y)
                    g, c = a.T @ a, a.T @ t
                    gram, cross = (g, c) if gram is None else (gram + g, cross + c)
                    energy += float((t * t).sum())
    finally:
        for h in hooks:
            h.remove()
    if gram is None or energy == 0.0:
        return 0.0
    solution = _solve(gram, cross)
    before = _residual(gram, cross, energy, _current(factor))
    after = _residual(gram, cross, energy, solution)
    if after < before:  # (always, in-sample, but for the ridge)
        _assign(factor, solution)
    return min(after, before) / energy


def _design(factor: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The factor's input as rows of its fan-in (conv windows unfolded), a 1 appended for the bias."""
    z = z.to(torch.float64)
    if isinstance(factor, nn.Linear):
        rows = z.reshape(-1, z.shape[-1])
    else:
        if isinstance(factor, nn.Conv1d):
            z = z.unsqueeze(-2)
            kernel, dilation, padding, stride = (1, *factor.kernel_size), (1, *factor.dilation), (0, *_pad(factor)), (1, *factor.stride)
        else:
            kernel, dilation, padding, stride = factor.kernel_size, factor.dilation, _pad(factor), factor.stride
        windows = F.unfold(z, kernel, dilation=dilation, padding=padding, stride=stride)  # N x (C k) x P
        rows = windows.transpose(1, 2).reshape(-1, windows.shape[1])
    if factor.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


def _pad(conv) -> tuple:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise _Unsupported
    return tuple(conv.padding)


class _Unsupported(Exception):
    """A factor this refit does not handle (a padding mode other than zeros, or 'same')."""


def _flat_target(factor: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The target as rows matching :func:`_design`'s: one a position, channels last."""
    y = y.to(torch.float64)
    if isinstance(factor, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.movedim(1, -1).reshape(-1, y.shape[1])


def _solve(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    ridge = RIDGE * float(gram.diagonal().mean()) + 1e-12
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge * eye, cross)


def _current(factor: nn.Module) -> torch.Tensor:
    w = factor.weight.detach().to(torch.float64).reshape(factor.weight.shape[0], -1).T
    if factor.bias is not None:
        w = torch.cat([w, factor.bias.detach().to(torch.float64)[None, :]], dim=0)
    return w


def _residual(gram, cross, energy: float, w: torch.Tensor) -> float:
    """||A w - T||^2 from the sufficient statistics."""
    return max(energy - 2 * float((w * cross).sum()) + float((w * (gram @ w)).sum()), 0.0)


def _assign(factor: nn.Module, w: torch.Tensor) -> None:
    with torch.no_grad():
        fan_in = w.shape[0] - (factor.bias is not None)
        factor.weight.copy_(w[:fan_in].T.reshape(factor.weight.shape).to(factor.weight.dtype))
        if factor.bias is not None:
            factor.bias.copy_(w[fan_in].to(factor.bias.dtype))
