"""The literature's graphs load as the README describes, and plans score the same both ways."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from remat.graphs import (
    literature_budget,
    load_literature_graph,
    node_order,
    read_networkx,
    score_schedule,
    solve_literature,
    topo_peak,
)
from remat.simulate import simulate

GRAPHS = Path(__file__).resolve().parents[1] / ".." / "shared" / "remat-graphs"
if not GRAPHS.is_dir():
    GRAPHS = Path("/work/shared/remat-graphs")
pytestmark = pytest.mark.skipif(not GRAPHS.is_dir(), reason="literature graphs not present")

# From the README's table: sum of costs and topo_peak.
README = {
    "random_layered_n100": (47_769, 46_319),
    "random_layered_n250": (125_569, 146_840),
    "random_layered_n500": (255_302, 284_439),
    "random_layered_n1000": (497_270, 608_619),
}


@pytest.mark.parametrize("name", sorted(README))
def test_costs_and_topo_peak_match_the_readme(name: str) -> None:
    graph = load_literature_graph(GRAPHS / f"{name}.json")
    total, peak = README[name]
    assert graph.total_time == total
    assert topo_peak(graph) == peak
    assert literature_budget(graph, 0.8) == math.ceil(0.8 * peak)


def test_random_graphs_follow_the_files_reference_order() -> None:
    path = GRAPHS / "random_layered_n100.json"
    graph = load_literature_graph(path)
    network = read_networkx(path)
    assert node_order(graph, range(len(graph.ops))) == network.graph["order"]


def test_checkmate_graphs_load_in_topological_order() -> None:
    graph = load_literature_graph(GRAPHS / "vgg16_train.json")
    assert len(graph.ops) == 45 and graph.boundary == 45 and not graph.outputs
    assert all(max(op.inputs, default=-1) < op.id for op in graph.ops)


def test_the_readme_scorer_agrees_with_the_simulator_on_a_recomputing_plan() -> None:
    path = GRAPHS / "vgg16_train.json"
    plan = solve_literature(path, 0.9, time_limit=10.0, workers=1)
    graph = load_literature_graph(path)
    score = score_schedule(read_networkx(path), node_order(graph, plan.schedule))
    assert score.peak == plan.predicted_peak <= literature_budget(graph, 0.9)
    assert score.cost == graph.total_time + plan.recompute_time
    assert plan.recompute_time > 0
    assert simulate(graph, plan.schedule, plan.boundary).peak == score.peak


def test_the_scorer_rejects_a_node_run_before_its_input() -> None:
    network = read_networkx(GRAPHS / "vgg16_train.json")
    order = list(range(45))
    order[0], order[1] = order[1], order[0]
    with pytest.raises(ValueError, match="before its input"):
        score_schedule(network, order)
