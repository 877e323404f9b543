"""Refit after truncation: each rebuilt layer's last factor re-solved by least squares so that,
on the calibration data, the layer's output in the rebuilt model matches the original layer's
output in the original model.

Why: a plan's factors are the best rank-r approximation of each layer on its *original* inputs;
in the rebuilt model a layer sees inputs that earlier truncations have already changed, and
the errors add up. Layer by layer, in the order the model runs them, the factor that makes
the output (``second`` of a factorised layer, the kept-channel conv of a pruned one) is solved
for again with the other factor fixed: a linear least-squares problem on the inputs that
factor really sees, with the original output as the target (SVD-LLM's parameter update, run
sequentially). Shapes and so every cost are unchanged; only weights move. Memory is two Gram
matrices a layer (the factor's fan-in squared), whatever the number of samples, and at most
:data:`KEPT_BYTES` of the original's outputs (more where one group's alone is larger), kept so
that one pass of the original serves many layers. In a chain of blocks (a transformer's decoder
layers) each pass starts at the block being refit, the blocks before it standing in by their
recorded outputs (:mod:`lowrank.factorise.resume`; one block's output per sample held per model).

Language models refit on few windows fit noise: a Linear reading tokens gets one row per
token, but the tokens of a window are far from independent, and on SmolLM2 a plain refit on
1,024 tokens (8 windows) raised test perplexity from 255 to 341 (on 4,096 it lowered it to
182). So for a Linear reading sequences with fewer than :data:`PLENTY` windows per unknown
(counting tokens instead, 16,384 of them passed that line for narrow factors, and perplexity
rose from 141 to 161), the ridge, which pulls toward the layer's current weights, is chosen on
data it was not fitted on: the samples (windows) are split in two halves, each half's
solution is scored on the other, for each weight in :data:`RIDGES`; the best is solved on all
samples, and the layer keeps its weights where no weight beats them there. On 1,024 tokens
that refit lowered perplexity from 255 to 182. In a causal language model the first token of
each window is left out of those fits (:func:`_sink`): on 16,384 tokens that took perplexity
from 141 to 115 (leaving out every token of massive energy instead, over 50x the median's:
152). Convs and Linears reading one vector a sample are fitted with the smallest weight:
on resnet20-fmnist the same choice lost 0.8-2.2 points (its classifier, 128 images for 65
unknowns, took larger weights that fitted the logits better and classified worse).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..kinds.prune import PrunedConv2d
from ..util.inputs import call_model, size
from ..util.modes import evaluating
from .resume import Chain, Resume

RIDGE = 1e-4  # Tikhonov weight, relative to the Gram matrix's mean diagonal: keeps a singular X^T X solvable
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # the weights the held-out halves choose among
KEPT_BYTES = 256 << 20  # the original's outputs kept at once for the layers refitted next (see _spans)
RESUME = True  # passes start at the block of the layers refit (resume.py); False: every pass from the input
PLENTY = 32  # samples (windows) per unknown from which a sequence Linear is fitted with RIDGE, no held-out choice


def refit(original: nn.Module, rebuilt: nn.Module, names: Sequence[str], batches: list, progress: bool = False) -> dict[str, float]:
    """Refit the named layers of ``rebuilt`` (in place) in the order the model runs them; returns
    per layer the share of the output's energy the refit layer leaves unexplained on ``batches``
    (calibration ``(inputs, targets)`` pairs). Both models run in eval mode meanwhile.
    ``progress``: a bar over the layers (each group of them costs a pass of ``rebuilt`` over ``batches``)."""
    with evaluating(original), evaluating(rebuilt):
        return _refit_all(original, rebuilt, names, batches, progress)


def _refit_all(original, rebuilt, names, batches, progress: bool) -> dict[str, float]:
    groups, sizes = _groups(rebuilt, names, batches)
    ours, theirs, starts = _resumes(original, rebuilt, groups, batches)
    sink = _sink(original)
    errors = {}
    bar = tqdm(total=sum(map(len, groups)), desc="refit", unit="layer", disable=not progress, leave=False, file=sys.stderr)
    for span in _spans(groups, sizes):
        members = [m for group in span for m in group]
        theirs.advance(min(starts[m.name] for m in members), batches)
        targets = _original_outputs(original, members, batches, theirs)
        for group in span:
            ours.advance(min(starts[m.name] for m in group), batches)
            errors.update(_refit_group(rebuilt, group, batches, targets, ours, sink))
            bar.update(len(group))
    bar.close()
    return errors


def _sink(model: nn.Module) -> int:
    """How many first positions of each window a sequence Linear's fit leaves out: 1 in a causal
    language model (Hugging Face's ``can_generate()``, not an encoder-decoder), else 0. Its first
    token attends to itself alone and carries activations of enormous norm (an attention sink):
    on SmolLM2 all but 0.0002% of layer 11's down_proj output energy, 590,000x the median
    token's, which a squared error over all tokens fits at the others' expense."""
    can_generate, config = getattr(model, "can_generate", None), getattr(model, "config", None)
    return int(callable(can_generate) and bool(can_generate()) and not getattr(config, "is_encoder_decoder", False))


def _resumes(original, rebuilt, groups, batches) -> tuple[Resume, Resume, dict[str, int]]:
    """Where each model's passes may start for each layer (:mod:`lowrank.factorise.resume`):
    the rebuilt model's chain of blocks, the original's at the same place."""
    chain = Chain.find(rebuilt, batches[0][0]) if RESUME and groups else None
    same = original.get_submodule(chain.prefix) if chain is not None else None
    theirs = Chain(same, chain.prefix) if isinstance(same, nn.ModuleList) and len(same) == len(chain.blocks) else None
    ours = Resume(rebuilt, chain if theirs is not None else None)
    starts = ours.starts({m.name: rebuilt.get_submodule(m.name) for group in groups for m in group}, batches[0][0])
    return ours, Resume(original, theirs), starts


def _spans(groups: list[list["_Member"]], sizes: dict[str, int]) -> list[list[list["_Member"]]]:
    """Runs of consecutive groups whose original outputs on all the batches fit in
    :data:`KEPT_BYTES` together (at least one group each): one pass of the original serves a
    run, where each group took its own (on SmolLM2, 120 groups in 3 runs on 1,024 tokens)."""
    spans, used = [], 0
    for group in groups:
        need = sum(sizes[m.name] for m in group)
        if not spans or used + need > KEPT_BYTES:
            spans.append([])
            used = 0
        spans[-1].append(group)
        used += need
    return spans


def _original_outputs(original, members: list["_Member"], batches, resume: Resume) -> dict[str, list[list[torch.Tensor]]]:
    """What each member layer outputs in the original model, per batch (a list: a layer a pass
    runs more than once); the pass starts where ``resume`` stands and stops after the last of them."""
    store = _Store({m.name: m.calls for m in members})
    hooks = [original.get_submodule(m.name).register_forward_hook(lambda mod, a, out, n=m.name: store.keep(n, out))
             for m in members]
    out = {m.name: [] for m in members}
    try:
        with torch.no_grad(), resume.skipping():
            for i, (x, _) in enumerate(batches):
                resume.batch = i
                store.run(original, x)
                for name, caught in store.caught.items():
                    out[name].append(list(caught))
    finally:
        for h in hooks:
            h.remove()
    return out


def _last_factor(module: nn.Module):
    """(the conv or Linear that makes the layer's output, the submodule whose output is that
    factor's input, or None where it is the factor's own input), or None: nothing to refit
    (e.g. a layer at rank 0, which outputs its bias alone, or a conv whose padding this refit
    does not unfold)."""
    found = _factor_and_source(module)
    if found is None or found[0].weight.numel() == 0:
        return None
    if isinstance(found[0], (nn.Conv1d, nn.Conv2d)):
        try:
            _pad(found[0])
        except _Unsupported:
            return None
    return found


def _factor_and_source(module: nn.Module):
    if isinstance(module, PrunedConv2d):
        return module.conv, None
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and getattr(module, "groups", 1) == 1:
        return module, None  # a layer kept dense: its inputs changed too
    second, first = getattr(module, "second", None), getattr(module, "first", None)
    if first is not None and isinstance(second, (nn.Conv1d, nn.Conv2d, nn.Linear)) and getattr(second, "groups", 1) == 1:
        return second, first
    return None


@dataclass
class _Member:
    name: str
    calls: int  # how many times one pass runs the layer
    factor: nn.Module
    source: nn.Module | None


def _groups(model: nn.Module, names: Iterable[str], batches: list) -> tuple[list[list[_Member]], dict[str, int]]:
    """The layers to refit in the order the model first runs them, in groups of layers that read
    the same input tensor (attention's q, k and v; an MLP's gate and up): refitting one cannot
    change another's input, so one pass serves the group, with the same result as one layer at
    a time. Also the bytes each layer outputs over all the batches (from the first batch)."""
    wanted, calls, inputs, out_bytes = set(names), {}, {}, {}

    def seen(name, args):
        calls[name] = calls.get(name, 0) + 1
        inputs.setdefault(name, args[0] if args else None)

    def made(name, output):
        out_bytes[name] = out_bytes.get(name, 0) + output.numel() * output.element_size()

    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen(n, a)) for n in wanted]
    hooks += [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: made(n, o)) for n in wanted]
    try:
        with torch.no_grad():
            call_model(model, batches[0][0])
    finally:
        for h in hooks:
            h.remove()
    groups: list[list[_Member]] = []  # (a layer the batch never reached is left as it is)
    for name, count in calls.items():
        found = _last_factor(model.get_submodule(name))
        if found is None:
            continue
        last = groups[-1][-1] if groups else None
        if count == 1 and last is not None and last.calls == 1 and inputs[name] is inputs[last.name]:
            groups[-1].append(_Member(name, count, *found))
        else:
            groups.append([_Member(name, count, *found)])
    scale = sum(size(x) for x, _ in batches) / max(size(batches[0][0]), 1)  # the first batch's outputs -> all batches'
    return groups, {name: int(b * scale) for name, b in out_bytes.items()}


class _Seen(Exception):
    """Raised by a hook once a pass has shown it all it needs: the rest of the pass is not run."""


class _Store:
    """What hooks catch in one model's pass, a list per layer; stops the pass once every layer
    has run as often as a pass runs it (on average half a network a pass)."""

    def __init__(self, wanted: dict[str, int]):
        self.wanted, self.caught = wanted, {name: [] for name in wanted}

    def keep(self, name: str, t: torch.Tensor) -> None:
        self.caught[name].append(t.detach())
        if all(len(self.caught[n]) >= k for n, k in self.wanted.items()):
            raise _Seen

    def run(self, model: nn.Module, x) -> None:
        for caught in self.caught.values():
            caught.clear()
        try:
            call_model(model, x)
        except _Seen:
            pass


def _refit_group(rebuilt, group: list[_Member], batches, targets: dict, resume: Resume, sink: int) -> dict[str, float]:
    """Refit the group's layers on the inputs they see in ``rebuilt`` (passes starting where
    ``resume`` stands) against the original's outputs ``targets`` (taken, then freed, per layer)."""
    inputs = _Store({m.name: m.calls for m in group})
    hooks = []
    for m in group:
        if m.source is None:
            hooks.append(m.factor.register_forward_pre_hook(lambda mod, a, n=m.name: inputs.keep(n, a[0])))
        else:
            hooks.append(m.source.register_forward_hook(lambda mod, a, out, n=m.name: inputs.keep(n, out)))
    stats = {m.name: _Folds(sink) for m in group}
    try:
        with torch.no_grad(), resume.skipping():
            for i, (x, _) in enumerate(batches):
                resume.batch = i
                inputs.run(rebuilt, x)
                for m in group:
                    stats[m.name].add(m.factor, inputs.caught[m.name], targets[m.name][i])
    finally:
        for h in hooks:
            h.remove()
    for m in group:
        del targets[m.name]
    return {m.name: stats[m.name].solve_and_assign(m.factor) for m in group}


class _Folds:
    """The least-squares statistics of one layer in two halves of the samples (even and odd
    samples of each batch; a batch of one sample goes to the half with fewer rows)."""

    def __init__(self, sink: int = 0):
        self.sink = sink  # the first positions of each window, left out (see _sink)
        self.halves = [[None, None, 0.0, 0], [None, None, 0.0, 0]]  # gram, cross, energy, rows
        self.sequences = False  # a Linear reading (batch, tokens, features): its rows are tokens of few windows
        self.samples = 0  # samples (windows, for sequences: their tokens are far from independent)

    def add(self, factor: nn.Module, inputs: list, outputs: list) -> None:
        for z, y in zip(inputs, outputs):
            sequence = isinstance(factor, nn.Linear) and z.dim() >= 3
            self.sequences |= sequence
            self.samples += z.shape[0]
            if sequence and self.sink and z.shape[-2] > self.sink:
                z, y = z[..., self.sink:, :], y[..., self.sink:, :]
            if z.shape[0] >= 2 and y.shape[0] == z.shape[0]:
                parts = [(z[0::2], y[0::2]), (z[1::2], y[1::2])]
            else:
                parts = [None, None]
                parts[min((0, 1), key=lambda i: self.halves[i][3])] = (z, y)
            for half, part in zip(self.halves, parts):
                if part is not None:
                    _accumulate(half, factor, *part)

    def solve_and_assign(self, factor: nn.Module) -> float:
        """Assign the ridge solution whose weight scores best on held-out samples (each half's
        solution on the other half), or keep the current weights where none beats them; the
        in-sample error left, as a share of the output's energy."""
        (ga, ca, ea, na), (gb, cb, eb, nb) = self.halves
        gram, cross, energy = _sum(ga, gb), _sum(ca, cb), ea + eb
        if gram is None or energy == 0.0:
            return 0.0
        current = _current(factor)
        before = _residual(gram, cross, energy, current)  # also the current weights' error on both halves together
        ridge = RIDGE
        if self.sequences and ga is not None and gb is not None and self.samples < PLENTY * gram.shape[0]:
            def held_out(r):
                return _residual(gb, cb, eb, _solve(ga, ca, current, r)) + _residual(ga, ca, ea, _solve(gb, cb, current, r))
            scores = {r: held_out(r) for r in RIDGES}
            ridge = min(scores, key=scores.get)
            if scores[ridge] >= before:
                return before / energy
        solution = _solve(gram, cross, current, ridge)
        after = _residual(gram, cross, energy, solution)
        if after < before:
            _assign(factor, solution)
        return min(after, before) / energy


def _sum(a, b):
    return b if a is None else a if b is None else a + b


def _accumulate(stat: list, factor: nn.Module, z: torch.Tensor, y: torch.Tensor) -> None:
    a, t = _design(factor, z), _flat_target(factor, y)
    g, c = a.T @ a, a.T @ t
    stat[0], stat[1] = (g, c) if stat[0] is None else (stat[0] + g, stat[1] + c)
    stat[2] += float((t * t).sum())
    stat[3] += a.shape[0]


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


def _solve(gram: torch.Tensor, cross: torch.Tensor, toward: torch.Tensor, relative: float = RIDGE) -> torch.Tensor:
    """argmin ||A w - T||^2 + ridge ||w - toward||^2 from A^T A and A^T T; ridge = ``relative`` x
    the Gram matrix's mean diagonal."""
    ridge = relative * float(gram.diagonal().mean()) + 1e-12
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge * eye, cross + ridge * toward)


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
