"""The recorded recompute-cost runs (benchmarks/results/recompute-cost-*.json) against item 4
of issue 12: with op times measured (`timing="measure"`), a plan's estimated recompute time is
within 20% of the time the step spends in remat's recompute ranges. Runs recorded before the
in-step measurement existed have no `in_step_ms` and are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("recompute-cost-*.json"))
WITH_IN_STEP = [
    p for p in FILES if all("in_step_ms" in r for r in json.loads(p.read_text())["rows"])
]


@pytest.mark.skipif(not WITH_IN_STEP, reason="no recompute-cost run with in-step figures")
@pytest.mark.parametrize("path", WITH_IN_STEP, ids=[p.stem for p in WITH_IN_STEP])
def test_measured_op_times_estimate_the_steps_recompute_within_20_percent(path: Path) -> None:
    rows = [r for r in json.loads(path.read_text())["rows"] if r["timing"] == "measure"]
    assert rows
    for row in rows:
        assert row["in_step_ms"] > 0, row
        assert 0.8 <= row["estimated_ms"] / row["in_step_ms"] <= 1.2, row
