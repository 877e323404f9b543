"""How a stored row's budget is named: its axis (the resources it limits) and its label,
generated from the registered resources."""
from __future__ import annotations

from .. import resources


def budget_resources(row: dict) -> list[str]:
    """The resources a row's budget limits, in registration order."""
    return [r for r in resources.names() if row.get(f"budget_{r}") is not None]


def budget_axis(row: dict) -> str:
    """``macs``, ``params``, or ``macs+params`` for a joint budget."""
    return "+".join(budget_resources(row))


def axis_resources(axis: str) -> list[str]:
    return axis.split("+")


def axis_title(axis: str) -> str:
    """``MAC budget``, or ``MAC budget and parameter budget``."""
    return " and ".join(resources.get(r).axis for r in axis_resources(axis))


def axis_xlabel(axis: str) -> str:
    first, *others = axis_resources(axis)
    label = f"{resources.get(first).axis} (fraction of the original)"
    return label + "".join(f", with a {resources.get(r).axis} as well" for r in others)


def axis_order(axis: str) -> tuple:
    """Single-resource axes first, in registration order; joint budgets after."""
    names = resources.names()
    return (len(axis_resources(axis)), [names.index(r) for r in axis_resources(axis)])


def method_label(row: dict) -> str:
    """``cobla``, ``cobla (activation)`` for a run in the data-aware basis, ``cobla (ranks x8)``
    for ranks in multiples of 8."""
    basis = row.get("basis") or "weight"
    multiple = row.get("rank_multiple") or 1
    notes = ([basis] if basis != "weight" else []) + ([f"ranks x{multiple}"] if multiple != 1 else [])
    return f"{row['method']} ({', '.join(notes)})" if notes else row["method"]


def budget_label(row: dict) -> str:
    """``MACs <= 50%, latency <= 62%``; an absolute limit in the resource's unit: ``latency <= 40,000 us``."""
    return ", ".join(_limit(r, row[f"budget_{r}"]) for r in budget_resources(row))


def _limit(name: str, value: float) -> str:
    res = resources.get(name)
    return f"{res.label} <= {frac(value)}" + (f" {res.unit}" if value > 1 and res.unit else "")


def frac(v: float) -> str:
    return f"{v:.0%}" if v <= 1 else f"{v:,.0f}"


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"
