import math

import pytest

from lowrank import Budget


def test_fractions_and_counts_resolve_against_totals():
    totals = {"macs": 1000, "params": 200}
    assert Budget(macs=0.5).limits(totals) == {"macs": 500.0, "params": math.inf}
    assert Budget(macs=0.5, params=0.25).limits(totals) == {"macs": 500.0, "params": 50.0}
    assert Budget(params_abs=150).limits(totals)["params"] == 150.0  # an absolute amount is spelled out
    assert Budget(macs_abs=1).limits(totals)["macs"] == 1.0
    assert Budget(macs=1.0).limits(totals)["macs"] == 1000.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({}, "at least one"),
        ({"macs": 0}, "macs"),
        ({"macs": -0.5}, "macs"),
        ({"params": float("nan")}, "params"),
        ({"params": float("inf")}, "params"),
        ({"macs": "half"}, "macs"),
        ({"macs": True}, "macs"),
        ({"params_abs": 0.5}, "params_abs"),
        ({"macs": 0.5, "macs_abs": 100}, "macs"),
        ({"macs": 1.5}, "macs_abs"),  # a fraction above 1 is refused, not read as a count
    ],
)
def test_invalid_budgets_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Budget(**kwargs)


def test_str_is_readable():
    assert str(Budget(macs=0.5, params_abs=1e6)) == "Budget(macs <= 50.0%, params <= 1,000,000)"
