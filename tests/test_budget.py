import math

import pytest

from remat.budget import Budget, BudgetError, InfeasibleBudgetError, format_bytes, parse_budget


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 2**20),
        ("1.5GB", 1_500_000_000),
        ("1.5GiB", int(1.5 * 2**30)),
        ("300 MB", 300_000_000),
        ("2048", 2048),
        ("64kb", 64_000),
        ("1e3B", 1000),
    ],
)
def test_size_strings_parse_to_bytes(text, expected):
    assert parse_budget(text) == Budget(bytes=expected)


def test_int_is_bytes_and_float_is_a_fraction():
    assert parse_budget(6_000_000_000).bytes == 6_000_000_000
    budget = parse_budget(0.5)
    assert budget.fraction == 0.5
    assert budget.resolve(1001) == 500
    assert parse_budget(1.0).resolve(777) == 777


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "positive"),
        (-5, "positive"),
        (0.0, "(0, 1]"),
        (1.5, "(0, 1]"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("12 parsecs", "unknown unit"),
        ("lots", "cannot read"),
        ("0MiB", "positive"),
        (True, "not True"),
        ([1], "got list"),
    ],
)
def test_bad_budgets_say_what_is_wrong(value, message):
    with pytest.raises(BudgetError, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_budget(value)


def test_budget_errors_are_value_errors():
    assert issubclass(BudgetError, ValueError)
    assert issubclass(InfeasibleBudgetError, ValueError)


def test_infeasible_error_names_the_floor_in_bytes_and_units():
    error = InfeasibleBudgetError(budget=1000, floor=3 * 2**20)
    text = str(error)
    assert str(3 * 2**20) in text
    assert "3.00 MiB" in text
    assert error.floor == 3 * 2**20


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(5 * 2**30) == "5.00 GiB"
