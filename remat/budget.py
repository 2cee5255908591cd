"""The only place budgets are parsed and validated.

A budget is the cap on the peak bytes allocated during one forward+backward call above what was
allocated before the forward began. Accepted forms: an int (bytes), a string with a unit
("512MiB", "1.5GB", "300 MB"), or a float in (0, 1]: that fraction of the same step's predicted
peak with nothing recomputed. The float is a fraction of the *whole step's* peak, not PyTorch's
`activation_memory_budget` (a fraction of saved activations between "recompute all" and default).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


class BudgetError(ValueError):
    """A budget that cannot be understood or can never be met."""


class InfeasibleBudgetError(BudgetError):
    """The budget is below the smallest peak any plan reaches (the floor)."""

    def __init__(
        self, budget: int, floor: int, detail: str = "", floor_plan: object = None
    ) -> None:
        self.budget = budget
        self.floor = floor
        self.detail = detail
        self.floor_plan = floor_plan
        """The plan that peaks at `floor`, where the solver found one (a remat.ir.Plan)."""
        message = (
            f"budget {format_bytes(budget)} ({budget} bytes) is below the smallest feasible "
            f"budget for this step, {format_bytes(floor)} ({floor} bytes); "
            f"pass budget >= {floor}"
        )
        super().__init__(message + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Budget:
    """A parsed budget: absolute bytes, or a fraction of the keep-all peak to resolve later."""

    bytes: int | None = None
    fraction: float | None = None

    def resolve(self, keep_all_peak: int) -> int:
        """Bytes this budget allows for a step whose keep-all peak is `keep_all_peak`."""
        if self.bytes is not None:
            return self.bytes
        assert self.fraction is not None
        return math.floor(self.fraction * keep_all_peak)

    def describe(self) -> str:
        if self.bytes is not None:
            return format_bytes(self.bytes)
        return f"{self.fraction:g} of the keep-all peak"


def parse_budget(value: object) -> Budget:
    """Parse a user's budget; raise BudgetError saying what is wrong and how to fix it."""
    if isinstance(value, Budget):
        return value
    if isinstance(value, bool):
        raise BudgetError(f"budget must be bytes, a size string or a fraction, not {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise BudgetError(f"budget must be a positive number of bytes, got {value}")
        return Budget(bytes=value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise BudgetError(f"budget must be a finite number, got {value}")
        if not 0.0 < value <= 1.0:
            raise BudgetError(
                f"a float budget is a fraction of the keep-all peak and must lie in (0, 1], "
                f"got {value}; for bytes pass an int or a string such as '512MiB'"
            )
        return Budget(fraction=value)
    if isinstance(value, str):
        return Budget(bytes=parse_size(value))
    raise BudgetError(
        f"budget must be an int (bytes), a string such as '1.5GiB', or a float in (0, 1]; "
        f"got {type(value).__name__}"
    )


def parse_reserve(value: object) -> int | None:
    """A byte count that may be zero (remat.compile's `loss_reserve`): None, an int >= 0, or a
    size string ("0", "64MiB"); a fraction is refused, it has nothing to be a fraction of."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if isinstance(value, str) and _PATTERN.match(value) and float(_PATTERN.match(value)[1]) == 0:
        return 0
    if isinstance(value, float):
        raise BudgetError(f"loss_reserve takes bytes or a size string, not a fraction: {value!r}")
    parsed = parse_budget(value)
    assert parsed.bytes is not None
    return parsed.bytes


def parse_size(text: str) -> int:
    """'1.5GiB' -> 1610612736. Units: B, kB/MB/GB/TB (powers of 10), KiB/MiB/GiB/TiB."""
    match = _PATTERN.match(text)
    if match is None:
        raise BudgetError(f"cannot read size {text!r}; write a number and a unit, e.g. '512MiB'")
    number, unit = float(match.group(1)), match.group(2).lower() or "b"
    if unit not in _UNITS:
        known = ", ".join(["B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"])
        raise BudgetError(f"unknown unit {match.group(2)!r} in {text!r}; use one of {known}")
    size = math.floor(number * _UNITS[unit])
    if size <= 0:
        raise BudgetError(f"budget must be positive, got {text!r}")
    return size


def format_bytes(size: float) -> str:
    """Human units in powers of two: 1536 -> '1.50 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
