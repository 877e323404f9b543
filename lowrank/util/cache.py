"""An on-disk cache for per-model work that every budget of a sweep shares (SVDs,
sensitivity tables, the original model's metric).

Entries are files named by a hash of their key, written to a temporary name and renamed
into place, so a killed process never leaves a half-written entry. A lock file per entry
makes concurrent workers wait for the one computing it instead of repeating the work.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch


def digest(key: Any) -> str:
    """A stable hash of a JSON-serialisable key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


class DiskCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: Any) -> Path:
        return self.root / kind / f"{digest(key)}.pt"

    def get(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computing and storing it on a miss.

        Values are what ``torch.save`` writes and ``torch.load(weights_only=True)`` reads:
        tensors, numbers, strings, and lists / tuples / dicts of them.
        """
        path = self.path(kind, key)
        if path.exists():
            return torch.load(path, weights_only=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
            if path.exists():  # another worker finished it while we waited
                return torch.load(path, weights_only=True)
            value = compute()
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(value, tmp)
            os.replace(tmp, path)
        return value
