"""Budgets: how much of the original model's MACs and parameters a plan may keep."""
from __future__ import annotations

import math
from dataclasses import dataclass

RESOURCES = ("macs", "params")


def _check_number(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Budget {field}: expected a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Budget {field}: expected a finite number, got {value}")
    return value


@dataclass(frozen=True)
class Budget:
    """Upper bounds on MACs and parameters of the compressed model.

    ``macs`` / ``params``: a fraction of the original model's total (0 < f <= 1) or, when
    greater than 1, an absolute count. ``macs_abs`` / ``params_abs`` give an absolute count
    explicitly (needed for a count of exactly 1). At least one bound must be given.
    MACs are counted for one sample of the example input.
    """

    macs: float | None = None
    params: float | None = None
    macs_abs: float | None = None
    params_abs: float | None = None

    def __post_init__(self):
        given = {k: getattr(self, k) for k in ("macs", "params", "macs_abs", "params_abs")}
        if all(v is None for v in given.values()):
            raise ValueError("Budget: give at least one of macs=, params=, macs_abs=, params_abs=")
        for res in RESOURCES:
            if given[res] is not None and given[f"{res}_abs"] is not None:
                raise ValueError(f"Budget: give {res}= or {res}_abs=, not both")
        for field, value in given.items():
            if value is None:
                continue
            v = _check_number(field, value)
            if v <= 0:
                raise ValueError(
                    f"Budget {field}={value!r}: must be positive (a fraction in (0, 1] or a count > 1)"
                )
            if field.endswith("_abs") and v < 1:
                raise ValueError(f"Budget {field}={value!r}: an absolute count must be at least 1")

    def limits(self, totals: dict[str, float]) -> dict[str, float]:
        """Absolute limit per resource given the original model's totals (inf = no limit)."""
        out = {}
        for res in RESOURCES:
            frac_or_count, absolute = getattr(self, res), getattr(self, f"{res}_abs")
            if absolute is not None:
                out[res] = float(absolute)
            elif frac_or_count is None:
                out[res] = math.inf
            elif frac_or_count <= 1:
                out[res] = float(frac_or_count) * float(totals[res])
            else:
                out[res] = float(frac_or_count)
        return out

    def __str__(self) -> str:
        parts = []
        for res in RESOURCES:
            v, a = getattr(self, res), getattr(self, f"{res}_abs")
            if a is not None or (v is not None and v > 1):
                parts.append(f"{res} <= {a if a is not None else v:,.0f}")
            elif v is not None:
                parts.append(f"{res} <= {v:.1%}")
        return "Budget(" + ", ".join(parts) + ")"
