"""What the commands share: parsers of flag values, one budget flag per registered resource,
flags that say where each measured resource is measured, and counts in words."""
from __future__ import annotations

import argparse
import dataclasses

from .. import kinds, resources
from ..budget import Budget

SCHEME_CHOICES = [*kinds.scheme_names(), "auto"]


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def joint_budget(text: str) -> dict:
    """``macs=0.5,params=0.4`` -> {"macs": 0.5, "params": 0.4} (any registered resources)."""
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in resources.names() or not value:
            raise argparse.ArgumentTypeError(
                f"a budget is RESOURCE=F pairs ({', '.join(resources.names())}), e.g. macs=0.5,params=0.4; got {text!r}")
        out[key.strip()] = float(value)
    return out


def rank_multiple(text: str):
    """``auto`` or a positive integer."""
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}")
    return k


def samples(text: str) -> int | None:
    """A number of samples, or ``all`` (None)."""
    return None if text == "all" else int(text)


def add_budget_flags(parser, defaults: dict | None = None, many: bool = False) -> None:
    """One flag per registered resource: --macs, --params, ..."""
    for name in resources.names():
        res = resources.get(name)
        if many:
            parser.add_argument(f"--{name}", type=floats, help=f"{res.axis}s, comma-separated fractions, e.g. 0.3,0.5,0.7")
        else:
            default = (defaults or {}).get(name)
            parser.add_argument(f"--{name}", type=float, default=default, help=f"{res.axis}: fraction (0, 1] or absolute count"
                                + (f" (default {default})" if default is not None else ""))


def budget_of(args) -> Budget:
    """The budget of a command's --macs/--params/... flags (one flag per registered resource)."""
    return Budget({r: getattr(args, r) for r in resources.names()})


def add_settings_flags(parser) -> None:
    """For each measured resource, a group of flags --NAME-FIELD saying where it is measured."""
    for name in resources.names():
        res = resources.get(name)
        if not res.settings_flags:
            continue
        group = parser.add_argument_group(f"where --{name} is measured (layers are measured once and cached on disk)")
        fields = {f.name: f for f in dataclasses.fields(res.settings_type)}
        for field, help in res.settings_flags.items():
            default = fields[field].default
            kind = type(default) if default is not None else str
            group.add_argument(f"--{name}-{field}", type=kind, default=default, help=help, dest=f"{name}_{field}")


def settings_of(args) -> list:
    """The settings objects the measured resources' flags describe (for compress's measure_on)."""
    out = []
    for name in resources.names():
        res = resources.get(name)
        if res.settings_flags:
            out.append(res.settings_type(**{f: getattr(args, f"{name}_{f}") for f in res.settings_flags}))
    return out


def in_words(counts: dict) -> str:
    """``123 MACs, 45 params``: totals in words, each in its resource's unit."""
    return ", ".join(f"{v:,} {resources.get(r).heading}" for r, v in counts.items())
