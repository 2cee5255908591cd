"""A fast replay of the simulator's memory model, for heuristics that score many schedules.

It computes exactly what remat.simulate.simulate computes for the peak (same instances, same
views sharing their base's storage, same late inputs, outputs and boundary), but with flat lists
and no validation: use it only on schedules the simulator accepts. Every plan a solver returns
is still replayed by the simulator itself (make_plan); a test checks the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from remat.ir import RematGraph
from remat.solvers._per_graph import per_graph

_FREE = -2
"""Storage id of graph inputs: always there, never counted."""


@dataclass(frozen=True)
class FastResult:
    peak: int
    peak_step: int
    """Index in the schedule of the peak; -1 at the boundary."""
    timeline: tuple[int, ...]
    boundary_bytes: int
    recompute_time: float


@dataclass(frozen=True)
class _Layout:
    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    transient: tuple[int, ...]
    size: tuple[int, ...]
    base: tuple[int, ...]
    """Storage owner of each tensor (itself when it owns storage)."""
    time: tuple[float, ...]


@per_graph
def _layout(graph: RematGraph) -> _Layout:
    """Per-graph arrays, computed once per graph object."""
    return _Layout(
        inputs=tuple(op.inputs for op in graph.ops),
        outputs=tuple(op.outputs for op in graph.ops),
        transient=tuple(op.transient_bytes for op in graph.ops),
        size=tuple(t.bytes for t in graph.tensors),
        base=tuple(graph.storage_of(t.id) for t in graph.tensors),
        time=tuple(op.time for op in graph.ops),
    )


def fast_simulate(graph: RematGraph, schedule: Sequence[int], boundary: int) -> FastResult:
    """The simulator's peak, peak step, timeline and boundary bytes for a valid schedule."""
    layout = _layout(graph)
    end = len(schedule)
    store_of = [_FREE] * len(graph.tensors)
    sizes: list[int] = []
    starts: list[int] = []
    lasts: list[int] = []
    has_backward = boundary < end
    for tensor in graph.late_inputs:
        store_of[tensor] = len(sizes)
        sizes.append(layout.size[tensor] if has_backward else 0)
        starts.append(boundary)
        lasts.append(-1)
    inputs, outputs, base = layout.inputs, layout.outputs, layout.base
    seen: set[int] = set()
    recompute = 0.0
    forward_outputs = graph.forward_outputs
    at_boundary: list[int] = []
    for step, op_id in enumerate(schedule):
        if step == boundary:
            at_boundary = [store_of[t] for t in forward_outputs]
        if op_id in seen:
            recompute += layout.time[op_id]
        seen.add(op_id)
        for tensor in inputs[op_id]:
            store = store_of[tensor]
            if store >= 0 and lasts[store] < step:
                lasts[store] = step
        for tensor in outputs[op_id]:
            owner = base[tensor]
            if owner == tensor:
                store_of[tensor] = len(sizes)
                sizes.append(layout.size[tensor])
                starts.append(step)
                lasts.append(step)
            else:
                store = store_of[owner]
                store_of[tensor] = store
                if store >= 0 and lasts[store] < step:
                    lasts[store] = step
    if boundary == end:
        at_boundary = [store_of[t] for t in forward_outputs]
    returned = {t: store for t, store in zip(forward_outputs, at_boundary)}
    for tensor in graph.outputs:
        store = returned.get(tensor, store_of[tensor])
        if store >= 0:
            lasts[store] = end
    return _profile(graph, schedule, boundary, sizes, starts, lasts, recompute)


def _profile(
    graph: RematGraph,
    schedule: Sequence[int],
    boundary: int,
    sizes: list[int],
    starts: list[int],
    lasts: list[int],
    recompute: float,
) -> FastResult:
    end = len(schedule)
    delta = [0] * (end + 1)
    saved = 0
    for size, start, last in zip(sizes, starts, lasts):
        if not size or start >= end:
            continue
        stop = max(last, start)
        delta[start] += size
        delta[min(stop, end - 1) + 1] -= size
        if start < boundary <= stop:
            saved += size
    transient = _layout(graph).transient
    timeline = []
    live = 0
    caller = graph.backward_reserve
    for step, op_id in enumerate(schedule):
        live += delta[step]
        timeline.append(live + transient[op_id] + (caller if step >= boundary else 0))
    late = sum(graph.tensors[t].bytes for t in graph.late_inputs) if boundary < end else 0
    boundary_bytes = saved + late + graph.boundary_reserve + caller
    peak, peak_step = boundary_bytes, -1
    for step, value in enumerate(timeline):
        if value > peak:
            peak, peak_step = value, step
    return FastResult(peak, peak_step, tuple(timeline), boundary_bytes, recompute)
