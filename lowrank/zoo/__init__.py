"""Built-in architectures and the zoo of trained entries.

Each entry is a :class:`ZooEntry` defined beside its data (``builtin.py``, ``minilm.py``,
``mobilenet.py``, ``smollm.py``); this module only collects them, so nothing imports back up here.
"""
from __future__ import annotations

from . import builtin, minilm, mobilenet, smollm
from .archs import ARCHITECTURES, LeNet5, MobileNetStyle, ResNet, mlp, vgg_style
from .entry import WEIGHTS_DIR, ZooEntry

ZOO: dict[str, ZooEntry] = {e.name: e for e in (*builtin.ENTRIES, minilm.ENTRY, mobilenet.ENTRY, smollm.ENTRY)}


def get(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"no zoo entry {name!r}; `lowrank zoo list` shows: {', '.join(ZOO)}")
    return ZOO[name]


__all__ = ["ARCHITECTURES", "LeNet5", "MobileNetStyle", "ResNet", "WEIGHTS_DIR", "ZOO", "ZooEntry", "get", "mlp", "vgg_style"]
