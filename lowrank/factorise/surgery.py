"""Surgery: a copy of a model with chosen layers replaced; the original is untouched."""
from __future__ import annotations

import copy
from typing import Mapping

from torch import nn

from ..util.modes import copy_modes


def replace_layers(model: nn.Module, replacements: Mapping[str, nn.Module]) -> nn.Module:
    """A deep copy of ``model`` with each named layer replaced by its new module; new modules
    take the train/eval flag of the place they go to."""
    new = copy.deepcopy(model)
    for name, module in replacements.items():
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, module)
    copy_modes(model, new)
    return new
