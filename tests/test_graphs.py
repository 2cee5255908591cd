"""The literature's graphs load as the README describes, and plans score the same both ways."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import pytest

from remat.budget import InfeasibleBudgetError
from remat.graphs import (
    graph_from_networkx,
    literature_budget,
    load_literature_graph,
    node_floor,
    node_order,
    proven_infeasible,
    read_networkx,
    score_schedule,
    solve_literature,
    topo_peak,
)
from remat.simulate import simulate
from remat.solvers import solve

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


def test_vgg16_at_0_8_is_proven_infeasible_by_its_last_node() -> None:
    """Node 44's three inputs and its output exceed ceil(0.8 * topo_peak) at any step that runs
    it, so no schedule, with any recomputation, fits."""
    graph = load_literature_graph(GRAPHS / "vgg16_train.json")
    floor = node_floor(graph)
    assert floor.node == 44 and floor.bytes == 13_153_337_344
    assert floor.bytes > literature_budget(graph, 0.8)
    assert proven_infeasible(graph, literature_budget(graph, 0.8)) is not None
    assert proven_infeasible(graph, literature_budget(graph, 0.9)) is None
    with pytest.raises(InfeasibleBudgetError):
        solve_literature(GRAPHS / "vgg16_train.json", 0.8, time_limit=5.0, workers=1)


def _small_network() -> nx.DiGraph:
    """A chain of 7 nodes with two skip edges (sizes and costs made up)."""
    network = nx.DiGraph()
    sizes = [4, 3, 5, 2, 4, 3, 1]
    for node, size in enumerate(sizes):
        network.add_node(node, cost_cpu=1 + node % 3, cost_ram=size)
    network.add_edges_from([(i, i + 1) for i in range(6)] + [(0, 5), (2, 6)])
    return network


def test_the_checkmate_milp_agrees_with_ours_on_a_small_graph() -> None:
    from benchmarks.literature_milp import checkmate_milp

    network = _small_network()
    graph = graph_from_networkx(network, "small")
    budget = literature_budget(graph, 0.7)
    ours = solve(graph, budget, "ilp", time_limit=10.0, copies=4, workers=1)
    found = checkmate_milp(graph, budget, time_limit=60.0)
    assert found["status"] == "optimal"
    score = score_schedule(network, node_order(graph, found["schedule"]))
    assert score.peak <= budget
    assert score.cost == graph.total_time + ours.recompute_time
    assert ours.lower_bound is not None and ours.lower_bound <= ours.recompute_time
