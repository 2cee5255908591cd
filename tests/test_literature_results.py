"""The recorded literature results (benchmarks/results/literature_*.json), re-checked.

Every schedule we recorded is re-scored by the README's memory model (remat.graphs.
score_schedule): valid, within its budget, with the recorded cost; and our cost is at most the
Moccasin-style baseline's wherever both have a schedule. No timing is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remat.graphs import (
    literature_budget,
    load_literature_graph,
    node_order,
    proven_infeasible,
    read_networkx,
    score_schedule,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
GRAPHS = Path(__file__).resolve().parents[1] / ".." / "shared" / "remat-graphs"
if not GRAPHS.is_dir():
    GRAPHS = Path("/work/shared/remat-graphs")
pytestmark = pytest.mark.skipif(not GRAPHS.is_dir(), reason="literature graphs not present")


def _rows(name: str) -> dict[tuple[str, float], dict]:
    path = RESULTS / name
    if not path.exists():
        return {}
    return {(r["graph"], r["fraction"]): r for r in json.loads(path.read_text())["rows"]}


OURS = _rows("literature_ours.json")
MOCCASIN = _rows("literature_moccasin_style.json")
MILP = _rows("literature_milp.json")

LOSSES: dict[tuple[str, float], str] = {
    ("random_layered_n250", 0.8): (
        "ours 4.837% against the baseline's 4.734% after 600 s (at 60 s it has no plan): in 60 s "
        "on 2 loaded cores our local search stops in local optima (4.76% to 5.02% in our runs) "
        "and CP-SAT does not improve on them in the time left"
    ),
}
"""Instances where our recorded cost is above the Moccasin-style baseline's, and why."""


def _case(key: tuple[str, float]):
    marks = []
    if key in LOSSES:
        marks.append(pytest.mark.xfail(strict=True, reason=LOSSES[key]))
    return pytest.param(key, id=f"{key[0]}-{key[1]}", marks=marks)


def test_every_instance_is_recorded() -> None:
    assert len(OURS) == 22
    assert {key for key, row in OURS.items() if "order" not in row} == {("vgg16_train", 0.8)}


@pytest.mark.parametrize("key", sorted(OURS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_recorded_schedules_rescore_within_budget(key: tuple[str, float]) -> None:
    row = OURS[key]
    path = GRAPHS / f"{key[0]}.json"
    graph = load_literature_graph(path)
    budget = literature_budget(graph, key[1])
    if "order" not in row:
        assert row["status"].startswith("infeasible")
        assert proven_infeasible(graph, budget) is not None
        return
    score = score_schedule(read_networkx(path), row["order"])
    assert score.peak <= budget
    assert round(score.peak / budget, 4) == row["peak_over_budget"]
    assert round(100 * (score.cost / graph.total_time - 1), 3) == row["overhead_pct"]
    assert row["lower_bound_pct"] <= row["overhead_pct"]
    assert sorted(set(row["order"]), key=str) == sorted(
        node_order(graph, range(len(graph.ops))), key=str
    )


@pytest.mark.parametrize(
    "key", [_case(k) for k in sorted(OURS) if "overhead_pct" in MOCCASIN.get(k, {})]
)
def test_ours_costs_no_more_than_the_moccasin_style_baseline(key: tuple[str, float]) -> None:
    assert "overhead_pct" in OURS[key], "we found no schedule, the baseline did"
    assert OURS[key]["overhead_pct"] <= MOCCASIN[key]["overhead_pct"]


@pytest.mark.parametrize("key", sorted(MILP), ids=lambda k: f"{k[0]}-{k[1]}")
def test_the_milp_schedules_rescore_and_bound_ours(key: tuple[str, float]) -> None:
    """The Checkmate MILP's schedules are valid too; where SCIP proved one optimal, ours is no
    more expensive up to SCIP's gap tolerance, and our lower bound does not exceed its cost."""
    row = MILP[key]
    if "order" not in row:
        return
    path = GRAPHS / f"{key[0]}.json"
    graph = load_literature_graph(path)
    score = score_schedule(read_networkx(path), row["order"])
    assert score.peak <= literature_budget(graph, key[1])
    ours = OURS[key]
    assert ours["lower_bound_pct"] <= row["overhead_pct"] + 1e-9
    if row["status"] == "optimal":
        assert ours["overhead_pct"] <= row["overhead_pct"] + 0.01
