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
    """``macs=0.5,params=0.4`` -> {"macs": 0.5, "params": 0.4} (any registered resources;
    ``macs_abs=N`` for an absolute amount)."""
    keys = [*resources.names(), *(f"{r}_abs" for r in resources.names())]
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in keys or not value:
            raise argparse.ArgumentTypeError(
                f"a budget is RESOURCE=F pairs ({', '.join(resources.names())}: fractions; RESOURCE_abs=N: absolute amounts), "
                f"e.g. macs=0.5,params=0.4; got {text!r}")
        out[key.strip()] = float(value)
    try:
        check_fractions({k: v for k, v in out.items() if not k.endswith("_abs")})
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
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


def min_rank(text: str):
    """``auto``, one non-negative integer for every layer, or LAYER=N pairs."""
    if text == "auto":
        return text
    try:
        if "=" not in text:
            value = int(text)
            if value < 0:
                raise ValueError
            return value
        out = {}
        for part in text.split(","):
            name, value = part.rsplit("=", 1)
            out[name.strip()] = int(value)
            if out[name.strip()] < 0:
                raise ValueError
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, a non-negative integer or LAYER=N pairs (e.g. features.0=4,"
                                         f"classifier.1=8), got {text!r}") from None


def samples(text: str) -> int | None:
    """A number of samples, or ``all`` (None)."""
    return None if text == "all" else int(text)


def add_budget_flags(parser, defaults: dict | None = None, many: bool = False) -> None:
    """Two flags per registered resource: --macs (a fraction of the original) and --macs-abs
    (an absolute amount), ... A sweep takes comma-separated fractions (absolute amounts go in
    --budget macs_abs=N)."""
    for name in resources.names():
        res = resources.get(name)
        if many:
            parser.add_argument(f"--{name}", type=floats, help=f"{res.axis}s, comma-separated fractions, e.g. 0.3,0.5,0.7")
        else:
            default = (defaults or {}).get(name)
            parser.add_argument(f"--{name}", type=float, default=default, help=f"{res.axis}: a fraction of the original, in (0, 1]"
                                + (f" (default {default})" if default is not None else ""))
            unit = f"{res.unit} " if res.unit else ""
            parser.add_argument(f"--{name}-abs", type=float, default=None, dest=f"{name}_abs", metavar="N",
                                help=f"{res.axis} as an absolute amount: at most N {unit or res.label + ' '}".rstrip())


def check_fractions(values: dict) -> None:
    """Refuse a fraction above 1 in the CLI's own words (it would otherwise read as a count)."""
    for name, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v > 1:
                raise ValueError(f"--{name} {v:g}: a fraction of the original must be in (0, 1]; for an absolute amount use "
                                 f"--{name}-abs {v:g}" + (" (in a sweep: --budget {name}_abs={v:g})".format(name=name, v=v)
                                                          if isinstance(value, list) else ""))


def budget_of(args) -> Budget:
    """The budget of a command's --macs/--macs-abs/... flags (two per registered resource)."""
    limits = {r: getattr(args, r) for r in resources.names()}
    check_fractions(limits)
    absolute = {f"{r}_abs": getattr(args, f"{r}_abs", None) for r in resources.names()}
    given = {k: v for k, v in {**limits, **absolute}.items() if v is not None}
    if not given:
        flags = ", ".join(f"--{r}" for r in resources.names())
        raise ValueError(f"give a budget: {flags} (fractions of the original), or the same with -abs for absolute amounts")
    return Budget(given)


def add_settings_flags(parser) -> None:
    """For each measured resource, a group of flags --NAME-FIELD saying where it is measured."""
    for name in resources.names():
        res = resources.get(name)
        if not res.settings_flags:
            continue
        group = parser.add_argument_group(f"where --{name} is measured (layers are measured once and cached on disk)")
        fields = {f.name: f for f in dataclasses.fields(res.settings_type)}
        for field, help in res.settings_flags.items():
            default, flag = fields[field].default, f"--{name}-{field.replace('_', '-')}"
            if isinstance(default, bool):  # --latency-fold-batchnorm / --no-latency-fold-batchnorm
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help, dest=f"{name}_{field}")
                continue
            kind = type(default) if default is not None else str
            group.add_argument(flag, type=kind, default=default, help=help, dest=f"{name}_{field}")


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
