"""The table of methods: every method declares what it needs from its caller (:class:`Need`),
so callers ask the registry instead of comparing method names. A new method is one file that
calls ``@register(name, needs=...)`` (every module of ``solvers`` is imported); a method
with a new kind of need declares it there too, as a :class:`Need` of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from .problem import Allocation


@dataclass(frozen=True)
class Need:
    """What a method needs beyond the problem (its singular values and costs), by name;
    ``uses_data``: the caller must run the network on calibration data to supply it."""

    value: str
    uses_data: bool = False

    NOTHING: ClassVar["Need"]  # the singular values are enough
    SEPARABLE: ClassVar["Need"]  # optional per-layer loss curves (default: discarded energy)
    NETWORK_LOSS: ClassVar["Need"]  # objective=Differentiable and select= on held-out data
    SENSITIVITY: ClassVar["Need"]  # objective=Separable measured per layer on data


Need.NOTHING = Need("nothing")
Need.SEPARABLE = Need("separable objective")
Need.NETWORK_LOSS = Need("network loss on data", uses_data=True)
Need.SENSITIVITY = Need("sensitivity table", uses_data=True)


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Allocation]
    needs: Need

    @property
    def uses_data(self) -> bool:
        return self.needs.uses_data


_METHODS: dict[str, Method] = {}


def register(name: str, needs: Need = Need.NOTHING):
    """Decorator: make ``fn(problem, **options) -> Allocation`` reachable as ``solve(..., method=name)``."""

    def wrap(fn):
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = Method(name, fn, needs)
        return fn

    return wrap


def methods() -> list[str]:
    return sorted(_METHODS)


def method(name: str) -> Method:
    """The registered method ``name`` with what it needs; a clear error for an unknown name."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(methods())}")
    return _METHODS[name]
