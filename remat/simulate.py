"""Replays a schedule and returns its live-bytes timeline: the oracle every plan is checked by.

Memory model (the literature's, extended with aliases, graph inputs and step outputs): running an
op allocates its outputs; a stored value stays live until the last execution that reads it
before the value is produced again; a view keeps its base's storage live. Graph inputs cost
nothing, late inputs count from the boundary, step outputs stay live to the end. Every op runs
at least once. The memory at a
step is everything live while that op runs: its inputs, its outputs and its transient bytes.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from remat.ir import Plan, RematGraph, Simulation, schedule_cost

__all__ = ["InvalidScheduleError", "Simulation", "simulate", "simulation_of"]

_BEFORE_STEP = -1
"""Producing step of a graph input (it exists before the schedule starts)."""


class InvalidScheduleError(ValueError):
    """A schedule reads a value that is not there, or leaves a required output unproduced."""


@dataclass
class _Instance:
    """One production of a tensor: where its storage came from and when it was last read."""

    storage: tuple[int, int]
    last_read: int


def simulate(graph: RematGraph, schedule: Sequence[int], boundary: int) -> Simulation:
    """Score `schedule` (op ids; its backward part starts at index `boundary`)."""
    if not 0 <= boundary <= len(schedule):
        raise InvalidScheduleError(f"boundary {boundary} outside 0..{len(schedule)}")
    instances, storage_last_read, current = _trace_reads(graph, schedule, boundary)
    end = len(schedule)
    late = set(graph.late_inputs)

    delta = [0] * (end + 1)
    saved_bytes = 0
    for (tensor, step), stop in storage_last_read.items():
        size = graph.tensors[tensor].bytes
        if step == _BEFORE_STEP:
            if tensor not in late or boundary == end:
                continue
            step = boundary
            stop = max(stop, step)  # a late input nobody reads still arrives at the boundary
        delta[step] += size
        delta[min(stop, end - 1) + 1] -= size
        if step < boundary <= stop:
            saved_bytes += size

    saved = sorted(
        tensor
        for (tensor, step), instance in instances.items()
        if 0 <= step < boundary <= instance.last_read
    )

    timeline: list[int] = []
    live = 0
    for step, op_id in enumerate(schedule):
        live += delta[step]
        caller = graph.backward_reserve if step >= boundary else 0
        timeline.append(live + graph.ops[op_id].transient_bytes + caller)

    late_bytes = sum(graph.tensors[t].bytes for t in late) if boundary < end else 0
    boundary_bytes = saved_bytes + late_bytes + graph.boundary_reserve + graph.backward_reserve
    peak, peak_step = boundary_bytes, -1
    for step, value in enumerate(timeline):
        if value > peak:
            peak, peak_step = value, step

    recompute_time, recompute_flops = schedule_cost(graph, schedule)
    return Simulation(
        peak=peak,
        peak_step=peak_step,
        timeline=tuple(timeline),
        boundary_bytes=boundary_bytes,
        saved_bytes=saved_bytes,
        saved=tuple(saved),
        time=sum(graph.ops[op_id].time for op_id in schedule),
        recompute_time=recompute_time,
        recompute_flops=recompute_flops,
        graph_ref=weakref.ref(graph),
    )


def simulation_of(graph: RematGraph, plan: Plan) -> Simulation:
    """What the simulator finds for `plan` on `graph`: the simulation the plan carries when it
    was made for that graph object (every plan a solver returns), else a fresh replay."""
    carried = plan.simulation
    if carried is not None and carried.of(graph):
        return carried
    return simulate(graph, plan.schedule, plan.boundary)


def _trace_reads(
    graph: RematGraph, schedule: Sequence[int], boundary: int
) -> tuple[dict[tuple[int, int], _Instance], dict[tuple[int, int], int], dict[int, int]]:
    """Follow every read to the instance it sees; return instances and storages' last reads."""
    late = set(graph.late_inputs)
    current: dict[int, int] = {}
    instances: dict[tuple[int, int], _Instance] = {}
    storage_last_read: dict[tuple[int, int], int] = {}

    def touch(instance: _Instance, step: int) -> None:
        instance.last_read = max(instance.last_read, step)
        storage_last_read[instance.storage] = max(storage_last_read[instance.storage], step)

    for tensor in (*graph.inputs, *graph.late_inputs):
        key = (graph.storage_of(tensor), _BEFORE_STEP)
        storage_last_read.setdefault(key, _BEFORE_STEP)
        instances[(tensor, _BEFORE_STEP)] = _Instance(key, _BEFORE_STEP)
        current[tensor] = _BEFORE_STEP

    at_boundary: dict[int, int] = dict(current)
    for step, op_id in enumerate(schedule):
        if step == boundary:
            at_boundary = dict(current)
        op = graph.ops[op_id]
        for tensor in op.inputs:
            name = graph.tensors[tensor].name
            if tensor in late and step < boundary:
                raise InvalidScheduleError(
                    f"step {step} runs {op.name!r}, which reads the late input {name!r} "
                    "before the boundary"
                )
            if tensor not in current:
                raise InvalidScheduleError(
                    f"step {step} runs {op.name!r}, which reads {name!r} before any op produced it"
                )
            touch(instances[(tensor, current[tensor])], step)
        for tensor in op.outputs:
            base = graph.tensors[tensor].alias_of
            if base is None:
                storage = (tensor, step)
                storage_last_read[storage] = step
            elif base in current:
                storage = instances[(base, current[base])].storage
                storage_last_read[storage] = max(storage_last_read[storage], step)
            else:
                raise InvalidScheduleError(
                    f"{op.name!r} views {graph.tensors[base].name!r}, which was never produced"
                )
            instances[(tensor, step)] = _Instance(storage, step)
            current[tensor] = step

    end = len(schedule)
    if boundary == end:
        at_boundary = dict(current)
    missing = set(range(len(graph.ops))) - set(schedule)
    if missing:
        names = ", ".join(sorted(graph.ops[i].name for i in missing)[:5])
        raise InvalidScheduleError(f"{len(missing)} ops never run (every op must run): {names}")
    runs = Counter(schedule)
    repeated = sorted(
        graph.ops[i].name for i, n in runs.items() if n > 1 and not graph.ops[i].recomputable
    )
    if repeated:
        raise InvalidScheduleError(
            f"ops that may not be recomputed run more than once: {', '.join(repeated[:5])}"
        )
    forward_outputs = set(graph.forward_outputs)
    for tensor in graph.outputs:
        name = graph.tensors[tensor].name
        # A forward output is the instance the forward part returned; later ones are internal.
        produced = at_boundary if tensor in forward_outputs else current
        if tensor not in produced:
            where = "before the boundary" if tensor in forward_outputs else "at all"
            raise InvalidScheduleError(f"output {name!r} is never produced {where}")
        touch(instances[(tensor, produced[tensor])], end)
    return instances, storage_last_read, current
