"""Profiler ranges around a rewritten graph's recomputations (remat.recompute_ranges)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.profiler import profile

import remat
from remat.examples import ResidualMLP
from remat.recompute_ranges import RANGE_NAME, label_recomputations, recompute_seconds
from remat.rewrite import RECOMPUTED


def _ranges(events) -> list:
    return [e for e in events if e.name == RANGE_NAME]


def test_each_run_of_recomputed_nodes_gets_one_range():
    graph = fx.Graph()
    x = graph.placeholder("x")
    values = [x]
    for recomputed in (False, True, True, False, True):
        node = graph.call_function(torch.ops.aten.sin.default, (values[-1],))
        if recomputed:
            node.meta[RECOMPUTED] = True
        values.append(node)
    graph.output(values[-1])
    gm = fx.GraphModule(torch.nn.Module(), graph)
    assert label_recomputations(gm.graph) == 2
    gm.recompile()
    x = torch.randn(16)
    with profile() as prof:
        out = gm(x)
    torch.testing.assert_close(out, x.sin().sin().sin().sin().sin())
    ranges = _ranges(prof.events())
    assert len(ranges) == 2
    # Each range holds exactly the ops of its run: two sines, then one.
    assert sorted(len(r.cpu_children) for r in ranges) == [1, 2]
    assert gm(x) is not None  # no profiler: the ranges cost nothing and change nothing


def _profiled_step(compiled, x):
    with profile() as prof:
        compiled(x).square().mean().backward()
    return prof.events()


def test_a_profiled_step_shows_each_recomputed_op_inside_a_range():
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    compiled = remat.compile(ResidualMLP(64, 6, 256), budget=0.5)
    compiled(x).square().mean().backward()
    (step,) = compiled.remat_plans.values()
    (graph,) = step.graphs
    schedule, op_nodes = graph.plan.schedule, graph.captured.op_nodes
    repeats = len(schedule) - len(set(schedule))
    assert repeats > 0 and graph.plan.recompute_time > 0
    emitted = [i for i in schedule if op_nodes[i] is not None]
    recomputed_ops = len(emitted) - len(set(emitted))
    events = _profiled_step(compiled, x)
    ranges = _ranges(events)
    assert ranges and recompute_seconds(events) > 0
    inside = [child for r in ranges for child in r.cpu_children]
    assert all(child.name.startswith("aten::") for child in inside)
    assert len(inside) == recomputed_ops


def test_a_plan_that_recomputes_nothing_has_no_ranges():
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    compiled = remat.compile(ResidualMLP(64, 6, 256), budget=1.0)
    compiled(x).square().mean().backward()
    events = _profiled_step(compiled, x)
    assert _ranges(events) == [] and recompute_seconds(events) == 0.0
