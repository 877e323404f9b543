"""Budgets: how much of the original model's resources (MACs, parameters, ...) a plan may keep."""
from __future__ import annotations

import math
from typing import Iterator, Mapping

from . import resources


def _check_number(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Budget {field}: expected a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Budget {field}: expected a finite number, got {value}")
    return value


class Budget(Mapping):
    """Upper bounds on registered resources, as a mapping resource name -> limit.

    ``Budget(macs=0.5, params=0.4)`` or ``Budget({"macs": 0.5})``: each limit is a fraction of
    the original model's total, 0 < f <= 1; a value above 1 there is refused (it would read as
    a count and keep almost nothing). An absolute amount is spelled out: ``macs_abs=2e6``
    (any ``<resource>_abs=``), in the resource's unit (MACs per sample, parameters,
    microseconds per batch). ``None`` means no limit. At least one bound must be given.
    """

    def __init__(self, limits: Mapping[str, float | None] | None = None, **kwargs: float | None):
        given = {**(limits or {}), **kwargs}
        known = resources.names()
        fractions: dict[str, float] = {}
        absolute: dict[str, float] = {}
        for field, value in given.items():
            res, is_abs = (field[:-4], True) if field.endswith("_abs") else (field, False)
            if res not in known:
                raise ValueError(f"Budget: unknown resource {field!r}; budgets can limit {', '.join(known)} "
                                 f"(a fraction, or {', '.join(k + '_abs' for k in known)} for absolute counts)")
            if value is None:
                continue
            v = _check_number(field, value)
            if v <= 0:
                raise ValueError(f"Budget {field}={value!r}: must be positive (a fraction in (0, 1], or {res}_abs= for an absolute amount)")
            if is_abs and v < 1:
                raise ValueError(f"Budget {field}={value!r}: an absolute amount must be at least 1")
            if not is_abs and v > 1:
                raise ValueError(f"Budget {field}={value!r}: a fraction of the original must be in (0, 1]; for an absolute "
                                 f"amount write Budget({res}_abs={value!r})")
            (absolute if is_abs else fractions)[res] = v
        both = sorted(set(fractions) & set(absolute))
        if both:
            raise ValueError(f"Budget: give {both[0]}= or {both[0]}_abs=, not both")
        if not fractions and not absolute:
            raise ValueError("Budget: give at least one of " + ", ".join(f"{k}=" for k in known)
                             + " (or " + ", ".join(f"{k}_abs=" for k in known) + ")")
        # one entry per limited resource, in registration order
        self._fractions = {r: fractions[r] for r in known if r in fractions}
        self._absolute = {r: absolute[r] for r in known if r in absolute}

    # --- the mapping: resource -> the value as given (fraction or count) ----------------------
    def __getitem__(self, res: str) -> float:
        if res in self._absolute:
            return self._absolute[res]
        return self._fractions[res]

    def __iter__(self) -> Iterator[str]:
        return (r for r in resources.names() if r in self._fractions or r in self._absolute)

    def __len__(self) -> int:
        return len(self._fractions) + len(self._absolute)

    def __getattr__(self, attr: str):
        """``budget.macs`` / ``budget.macs_abs``: the value as given, or None (older spelling)."""
        if attr.startswith("_"):
            raise AttributeError(attr)
        res, is_abs = (attr[:-4], True) if attr.endswith("_abs") else (attr, False)
        if res not in resources.names():
            raise AttributeError(f"Budget has no resource {attr!r}")
        return (self._absolute if is_abs else self._fractions).get(res)

    def __eq__(self, other) -> bool:
        return isinstance(other, Budget) and (self._fractions, self._absolute) == (other._fractions, other._absolute)

    def __hash__(self) -> int:
        return hash((tuple(self._fractions.items()), tuple(self._absolute.items())))

    def is_absolute(self, res: str) -> bool:
        return res in self._absolute

    @classmethod
    def from_stored(cls, limits: Mapping[str, float | None]) -> "Budget":
        """From the stored form (sweep rows, run keys): resource -> limit, where a value above 1
        is an absolute amount (no fraction is)."""
        return cls({(r if v is None or v <= 1 or r.endswith("_abs") else f"{r}_abs"): v for r, v in limits.items()})

    def stored(self) -> dict[str, float]:
        """The stored form: resource -> the value as given (absolute amounts are above 1)."""
        return dict(self.items())

    def limit(self, res: str) -> resources.Limit:
        """The limit on ``res`` as a fraction of the original or an absolute amount."""
        return resources.Limit(self[res], self.is_absolute(res))

    def limits(self, totals: Mapping[str, float]) -> dict[str, float]:
        """Absolute limit per resource in ``totals`` given the original's totals (inf = no limit)."""
        out = {res: self.limit(res).at(total) if res in self else math.inf for res, total in totals.items()}
        missing = [r for r in self if r not in totals]
        if missing:
            raise ValueError(f"Budget limits {', '.join(missing)}, which this model's costs do not include")
        return out

    def __str__(self) -> str:
        parts = []
        for res in self:
            v = self[res]
            parts.append(f"{res} <= {v:,.0f}" if self.is_absolute(res) else f"{res} <= {v:.1%}")
        return "Budget(" + ", ".join(parts) + ")"

    def __repr__(self) -> str:
        args = [f"{r}={v!r}" for r, v in self._fractions.items()] + [f"{r}_abs={v!r}" for r, v in self._absolute.items()]
        return "Budget(" + ", ".join(args) + ")"
