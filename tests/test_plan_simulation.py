"""A Plan carries what the simulator found for it, and what reads a plan reads that.

Every plan a solver returns (and every per-graph plan of a step planned whole) carries its
simulation, equal to replaying it; consumers (the report, `remat analyze`'s tables and figures)
build from an already-planned step without running the simulator again.
"""

from __future__ import annotations

import gc
import pickle
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from solvers.factories import chain, random_training_graph

import remat
import remat.simulate
from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, RematGraph
from remat.simulate import simulate, simulation_of
from remat.solvers import find_floor, keep_all_plan, solve, solver_names
from remat.step_solve import plan_step

CONFIG = {"ilp": {"workers": 1, "time_limit": 10.0}, "auto": {"workers": 1}}


def _graphs() -> list[RematGraph]:
    return [chain(6), random_training_graph(random.Random(3), 8)]


def _assert_carries_its_simulation(graph: RematGraph, plan: Plan) -> None:
    assert plan.simulation is not None, f"{plan.solver}: no simulation"
    assert plan.simulation == simulate(graph, plan.schedule, plan.boundary)
    assert plan.simulation.of(graph)
    assert plan.simulation.peak == plan.predicted_peak
    assert plan.simulation.recompute_time == plan.recompute_time
    assert simulation_of(graph, plan) is plan.simulation


@pytest.mark.parametrize("solver", solver_names())
@pytest.mark.parametrize("fraction", [1.0, 0.7])
def test_every_solvers_plan_carries_its_simulation(solver: str, fraction: float) -> None:
    made = 0
    for graph in _graphs():
        budget = int(keep_all_plan(graph).predicted_peak * fraction)
        try:
            plan = solve(graph, budget, solver, **CONFIG.get(solver, {}))
        except InfeasibleBudgetError as error:
            assert fraction < 1
            if isinstance(error.floor_plan, Plan):
                _assert_carries_its_simulation(graph, error.floor_plan)
            continue
        _assert_carries_its_simulation(graph, plan)
        made += 1
    assert made or solver in ("none", "sqrt")


def test_floor_and_keep_all_plans_carry_their_simulation() -> None:
    for graph in _graphs():
        _assert_carries_its_simulation(graph, keep_all_plan(graph))
        _assert_carries_its_simulation(graph, find_floor(graph, 2.0).plan)


def test_a_step_planned_whole_gives_each_graph_a_plan_with_its_own_simulation() -> None:
    graphs = [replace(chain(5), name="a"), replace(chain(4, size=70), name="b")]
    keep_all = sum(keep_all_plan(g).predicted_peak for g in graphs)
    result = plan_step(graphs, int(keep_all * 0.6), "ilp", with_floor=False, **CONFIG["ilp"])
    assert result.step.graphs == tuple(graphs)
    for graph, plan in zip(graphs, result.plans):
        _assert_carries_its_simulation(graph, plan)
    _assert_carries_its_simulation(result.step.graph, result.combined)


def test_the_simulation_is_not_part_of_a_plans_value() -> None:
    graph = chain(4)
    plan = keep_all_plan(graph)
    bare = replace(plan, simulation=None)
    assert bare == plan and hash(bare) == hash(plan)
    assert "simulation" not in repr(plan)


def test_a_plan_used_with_another_graph_object_is_replayed_on_that_graph() -> None:
    graph = chain(4)
    plan = solve(graph, keep_all_plan(graph).predicted_peak, "lazy")
    # The same structure with other op times (a recapture whose measured prices differ).
    slower = replace(graph, ops=tuple(replace(op, time=op.time * 2) for op in graph.ops))
    assert plan.simulation is not None and not plan.simulation.of(slower)
    fresh = simulation_of(slower, plan)
    assert fresh is not plan.simulation
    assert fresh == simulate(slower, plan.schedule, plan.boundary)
    assert fresh.time == 2 * plan.simulation.time
    # A plan with no simulation (e.g. built by hand) is replayed as well.
    bare = replace(plan, simulation=None)
    assert simulation_of(graph, bare) == plan.simulation


def test_a_plan_keeps_no_graph_alive_and_still_pickles() -> None:
    graph = chain(4)
    plan = keep_all_plan(graph)
    assert plan.simulation is not None
    copy = pickle.loads(pickle.dumps(plan))
    assert copy == plan and copy.simulation == plan.simulation
    assert not copy.simulation.of(graph)  # a copy is of no graph in particular: replayed
    assert simulation_of(graph, copy) == plan.simulation
    del graph
    gc.collect()
    assert plan.simulation.graph_ref is not None and plan.simulation.graph_ref() is None


@contextmanager
def _simulator_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Count every call of the simulator, under whichever name a module of remat imported it."""
    calls: list[str] = []
    original = remat.simulate.simulate

    def counted(graph, schedule, boundary):  # type: ignore[no-untyped-def]
        calls.append(graph.name)
        return original(graph, schedule, boundary)

    for name, module in list(sys.modules.items()):
        if name.startswith("remat") and getattr(module, "simulate", None) is original:
            monkeypatch.setattr(module, "simulate", counted)
    yield calls


def test_reports_of_a_planned_step_read_the_plans_simulations(monkeypatch) -> None:
    from remat.analysis import core, memory, plots
    from remat.analysis.step import CapturedStep, held_bytes, step_peak
    from remat.examples import ResidualMLP

    torch.manual_seed(0)
    model = ResidualMLP(width=32, depth=3)
    compiled = remat.compile(model, budget=0.8, solver="lazy")
    x = torch.randn(64, 32)
    compiled(x).sum().backward()
    (step_plans,) = compiled.remat_plans.values()
    graphs = tuple(step_plans.graphs)
    step = CapturedStep(graphs, (0,) * len(graphs), 0.0)
    plans = tuple(item.plan for item in graphs)
    for item in graphs:
        _assert_carries_its_simulation(item.captured.graph, item.plan)
    carried = sum(simulation_of(item.captured.graph, item.plan).saved_bytes for item in graphs)

    with _simulator_calls(monkeypatch) as calls:
        report = compiled.remat_plan
        assert report is not None
        str(report), report.to_dict()
        assert step_plans.carried_bytes == carried
        held = held_bytes(step, plans)
        step_peak(step, plans)
        core._summarize(step, "0.8", report.step_budget_bytes, "lazy", plans, 0.0)
        memory.model_bytes(model, [x], step)
        memory.peak_breakdown(step)
        plots._step_timeline(SimpleNamespace(step=step), plans, held, 1.0)
    assert calls == [], f"re-simulated plans that carry their simulation: {calls}"
