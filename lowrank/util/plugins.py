"""Registries whose entries are files: importing a package imports every module in it, and
each module registers what it defines. Adding a resource or a layer kind is adding a file."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__path__``), in name order."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")
