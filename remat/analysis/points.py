"""What `remat analyze --measure` records: plain values, no torch.

Made by `analysis.measured`, held by `analysis.core.Analysis`, shown by `analysis.tables`; kept
apart so that none of those has to import another to name them.
"""

from __future__ import annotations

from dataclasses import dataclass

SKIPPED = "not run: the budget is infeasible"


@dataclass(frozen=True)
class MeasuredPoint:
    kind: str
    """'eager', 'remat' or 'torch'."""
    setting: str
    """The remat budget as the user wrote it, or torch's activation_memory_budget."""
    peak_bytes: int | None = None
    step_s: float | None = None
    predicted_peak: int | None = None
    """remat only: the predicted peak of the plan this run made (its own solve)."""
    error: str | None = None


@dataclass(frozen=True)
class Measurements:
    device: str
    method: str
    eager: MeasuredPoint
    remat: tuple[MeasuredPoint, ...] = ()
    """One per budget of the analysis, in the same order."""
    torch: tuple[MeasuredPoint, ...] = ()
    torch_backend: str = ""
