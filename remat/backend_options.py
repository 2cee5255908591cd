"""The remat backend's options: torch.compile's `options={...}` dict, validated into a dataclass.

Every bad name or value fails here, before anything is traced, with the valid ones listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from remat.budget import Budget, parse_budget, parse_reserve

INNER_NAMES = ("inductor", "eager")
OPTION_NAMES = ("budget", "solver", "time_limit", "inner", "loss_reserve")


class BackendOptionError(ValueError):
    """An option torch.compile passed to the remat backend is unknown or has a bad value."""


@dataclass(frozen=True)
class BackendOptions:
    """The backend's options, validated (`options={...}` of torch.compile, or remat.backend)."""

    budget: Budget
    """As remat.compile: int bytes, "1.5GiB", or a float in (0, 1] of the keep-all peak."""
    solver: str = "auto"
    time_limit: float | None = None
    inner: str = "inductor"
    """What compiles the rewritten graphs: "inductor" (fused kernels) or "eager" (fx code)."""
    loss_reserve: int | None = None
    """Bytes the caller's loss holds between forward and backward (see remat.compile)."""

    def __post_init__(self) -> None:
        from remat.solvers import solver_names

        names = sorted({"auto", *solver_names()})
        if self.solver not in names:
            raise BackendOptionError(
                f"unknown solver {self.solver!r}; valid solvers: {', '.join(names)}"
            )
        if self.inner not in INNER_NAMES:
            raise BackendOptionError(
                f"unknown inner {self.inner!r}; valid values: {', '.join(INNER_NAMES)}"
            )
        limit = self.time_limit
        if limit is not None and (isinstance(limit, bool) or not (limit > 0)):
            raise BackendOptionError(
                f"time_limit must be a positive number of seconds or None, got {limit!r}"
            )

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> BackendOptions:
        """Validate torch.compile's `options` dict; the error lists the valid names."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise BackendOptionError(
                f"unknown remat backend option(s) {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(OPTION_NAMES)}"
            )
        if "budget" not in options:
            raise BackendOptionError(
                "the remat backend needs a budget: options={'budget': '2GiB'} (bytes, a size "
                "string, or a float in (0, 1] of the keep-all peak)"
            )
        reserve = parse_reserve(options.get("loss_reserve"))
        return cls(
            budget=parse_budget(options["budget"]),
            solver=options.get("solver", "auto"),
            time_limit=options.get("time_limit"),
            inner=options.get("inner", "inductor"),
            loss_reserve=reserve,
        )
