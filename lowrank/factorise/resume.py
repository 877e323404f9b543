"""Passes that start part-way through a model: where its blocks run one after another, each
reading the one before's output (a transformer's decoder layers), the blocks before the one of
interest stand in by outputs recorded earlier, so a pass costs the blocks from there on rather
than the whole network.

Why: the refit (:mod:`lowrank.factorise.refit`) solves its layers in run order, and every group
of them needs the inputs that the rebuilt model, refit so far, gives it. From the input that is
a pass per group: on SmolLM2, 120 groups, so refitting cost O(layers^2) block runs and grew
with the calibration tokens to hours at 16k. Resumed at the group's block, it costs O(layers).
A model without such a chain runs every pass from the input, as before.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..util.inputs import call_model


class _Stop(Exception):
    """Raised by a hook once the block a pass was run for has given its output."""


class Chain:
    """A ModuleList of blocks run in order once a pass, block i reading block i-1's output, as
    seen on one batch; found by :meth:`find`."""

    def __init__(self, blocks: nn.ModuleList, prefix: str):
        self.blocks, self.prefix = blocks, prefix

    @staticmethod
    def find(model: nn.Module, inputs) -> "Chain | None":
        """The longest such ModuleList of ``model``, checked on one pass of ``inputs``, or None."""
        lists = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) >= 2]
        calls: dict[int, list] = {k: [] for k in range(len(lists))}  # per list: (index, first input, output)

        def hook(k, i):
            def fn(module, args, kwargs, out):
                calls[k].append((i, args[0] if args else next(iter(kwargs.values()), None), out))
            return fn

        handles = [b.register_forward_hook(hook(k, i), with_kwargs=True) for k, (_, blocks) in enumerate(lists) for i, b in enumerate(blocks)]
        try:
            with torch.no_grad():
                call_model(model, inputs)
        finally:
            for h in handles:
                h.remove()
        chains = [Chain(blocks, prefix) for k, (prefix, blocks) in enumerate(lists) if _runs_as_chain(calls[k], len(blocks))]
        return max(chains, key=lambda c: len(c.blocks), default=None)


def _runs_as_chain(calls: list, n: int) -> bool:
    """Each block ran once, in order, and each read the output of the one before."""
    if [i for i, _, _ in calls] != list(range(n)):
        return False
    return all(first is _main(previous) for (_, _, previous), (_, first, _) in zip(calls, calls[1:]))


def _main(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class Resume:
    """Where one model's passes start: after block ``at`` of ``chain``, whose recorded outputs
    (one per batch, in order) stand in for blocks 0..at. ``at`` = -1: from the input."""

    def __init__(self, model: nn.Module, chain: Chain | None):
        self.model, self.chain = model, chain
        self.at, self.outputs, self.batch = -1, [], 0

    def starts(self, modules: dict[str, nn.Module], inputs) -> dict[str, int]:
        """For each named module, the last block that has finished before the module first runs
        (-1: none, or no chain), from one pass of ``inputs``: passes for it may resume there."""
        if self.chain is None:
            return {name: -1 for name in modules}
        done, first = [-1], {}

        def finished(i):
            def fn(module, args, out):
                done[0] = i
            return fn

        def starting(name):
            def fn(module, args):  # a pre-hook returning a value would replace the inputs
                first.setdefault(name, done[0])
            return fn

        handles = [b.register_forward_hook(finished(i)) for i, b in enumerate(self.chain.blocks)]
        handles += [m.register_forward_pre_hook(starting(n)) for n, m in modules.items()]
        try:
            with torch.no_grad():
                call_model(self.model, inputs)
        finally:
            for h in handles:
                h.remove()
        return {name: first.get(name, -1) for name in modules}

    def advance(self, to: int, batches) -> None:
        """Record block ``to``'s outputs on ``batches`` (passes resumed where they stand), so
        that later passes start after it; nothing where they already start there or later."""
        if self.chain is None or to <= self.at:
            return
        outputs = []

        def keep(module, args, out):
            outputs.append(out)
            raise _Stop

        handle = self.chain.blocks[to].register_forward_hook(keep)
        try:
            with torch.no_grad(), self.skipping():
                for i, (x, _) in enumerate(batches):
                    self.batch = i
                    try:
                        call_model(self.model, x)
                    except _Stop:
                        pass
        finally:
            handle.remove()
        self.at, self.outputs = to, outputs

    @contextmanager
    def skipping(self):
        """Blocks 0..at replaced meanwhile by stand-ins that return block ``at``'s recorded
        output for batch :attr:`batch` (the caller sets it before each pass)."""
        if self.chain is None or self.at < 0:
            yield
            return
        blocks = self.chain.blocks
        kept = [blocks[i] for i in range(self.at + 1)]
        for i in range(self.at + 1):
            blocks[i] = _Recorded(self)
        try:
            yield
        finally:
            for i, block in enumerate(kept):
                blocks[i] = block


class _Recorded(nn.Module):
    """A block's stand-in: the recorded output of the last skipped block for the current batch."""

    def __init__(self, resume: Resume):
        super().__init__()
        self.source = [resume]  # in a list: not a submodule

    def forward(self, *args, **kwargs):
        resume = self.source[0]
        return resume.outputs[resume.batch]
