"""The recorded recompute-cost runs (benchmarks/results/recompute-cost-*.json) against item 4
of issue 12: with op times measured (`timing="measure"`), a plan's estimated recompute time is
within 20% of the time the step spends in remat's recompute ranges. Runs recorded before the
in-step measurement existed have no `in_step_ms` and are skipped. A recorded run that misses is
listed in MISSED with the reason; its test is then an xfail(strict=True)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("recompute-cost-*.json"))
WITH_IN_STEP = [
    p for p in FILES if all("in_step_ms" in r for r in json.loads(p.read_text())["rows"])
]
MISSED = {
    "recompute-cost-cpu-2026-12-04": "GPT at 0.5: measured op times sum to 158.4 ms, the step "
    "spends 87.0 ms in the recompute ranges (1.82x; the other three rows 0.80x-0.93x); on "
    "2026-12-03 the step spent 159-179 ms on plans of that size, measured op times said 152",
}
"""Results file -> why a row of it misses the 20% (docs/recompute-cost.md)."""


def _cases() -> list:
    return [
        pytest.param(
            path,
            marks=[pytest.mark.xfail(strict=True, reason=MISSED[path.stem])]
            if path.stem in MISSED
            else [],
            id=path.stem,
        )
        for path in WITH_IN_STEP
    ]


@pytest.mark.skipif(not WITH_IN_STEP, reason="no recompute-cost run with in-step figures")
@pytest.mark.parametrize("path", _cases())
def test_measured_op_times_estimate_the_steps_recompute_within_20_percent(path: Path) -> None:
    rows = [r for r in json.loads(path.read_text())["rows"] if r["timing"] == "measure"]
    assert rows
    for row in rows:
        assert row["in_step_ms"] > 0, row
        assert 0.8 <= row["estimated_ms"] / row["in_step_ms"] <= 1.2, row
