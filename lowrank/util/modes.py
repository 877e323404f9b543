"""Every pass lowrank makes over a user's model runs in eval mode, and leaves it as it was.

Why: a pass in train mode updates BatchNorm running statistics (changing the user's model)
and normalises with batch statistics, so a loss measured that way is not the loss of the
model the user deploys. Each module's own ``training`` flag is put back afterwards, so a
model handed over in train mode (or with mixed flags) comes back exactly as it was.
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(model: nn.Module):
    """Put ``model`` in eval mode for the block; restore every module's flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def copy_modes(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` (a rebuilt copy) the training flags ``source`` has, module by module;
    modules new to ``target`` (factorised layers) take the flag of their nearest named parent."""
    flags = {name: m.training for name, m in source.named_modules()}
    for name, module in target.named_modules():
        key = name
        while key not in flags and key:
            key = key.rpartition(".")[0]
        module.training = flags.get(key, source.training)
