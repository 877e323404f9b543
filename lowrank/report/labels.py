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


# What a run's series is told apart by, besides its method: the basis, the scheme, the rank multiple.
VARIANT_FIELDS = ("basis", "scheme", "rank_multiple")
_DEFAULTS = {"basis": "weight", "rank_multiple": 1}


def _value(row: dict, field: str):
    return row.get(field) if row.get(field) is not None else _DEFAULTS.get(field)


def varying(rows: list[dict]) -> tuple[str, ...]:
    """The variant fields that take more than one value in ``rows`` (only those need saying)."""
    return tuple(f for f in VARIANT_FIELDS if len({_value(r, f) for r in rows}) > 1)


def variant(row: dict, fields: tuple[str, ...]) -> tuple:
    return tuple(_value(row, f) for f in fields)


def method_label(row: dict, fields: tuple[str, ...] | None = None) -> str:
    """``cobla``; with ``fields`` (see :func:`varying`) the run's values of them, e.g.
    ``cobla (activation, spatial)`` or ``cobla (ranks x8)``. Without ``fields``: the basis
    and the rank multiple where they are not the weight basis and 1."""
    if fields is None:
        fields = tuple(f for f in ("basis", "rank_multiple") if _value(row, f) != _DEFAULTS[f])
    notes = [f"ranks x{_value(row, f)}" if f == "rank_multiple" else str(_value(row, f)) for f in fields]
    return f"{row['method']} ({', '.join(notes)})" if notes else row["method"]


LOWER_IS_BETTER = ("perplexity", "loss", "error")  # words in a metric's name that mean less is better


def higher_is_better(metric_name: str) -> bool:
    """Accuracy-like metrics rise with quality; perplexity, losses and error rates fall."""
    return not any(word in metric_name.lower() for word in LOWER_IS_BETTER)


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
