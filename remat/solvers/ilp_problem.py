"""The ILP's view of a graph: integer times, scaled bytes and costs, and what may be recomputed.

Time axis. Stage s (one per position of the reference order) holds the recomputations that run
before op s, in reference order, then op s itself (its mandatory first execution). Event
(stage s, op p) sits at time s * width + p + 1, so every execution has a time of its own and the
memory of the model is exact at each step; slot 0 of stage `boundary` is the forward/backward
boundary, and slot 0 of stage n (n = number of ops) the end of the step.

Presolve reductions:
- an op gets extra executions only if it may be recomputed and one of its outputs is read (or
  kept as a step output) after its own stage; with a backward part, only forward ops;
- each extra execution's stage lies between the op's own stage and the last stage at which
  anything that depends on the op can still run (its horizon);
- views own no bytes and are recomputed only where their base may be;
- bytes are divided by their greatest common divisor, and times scaled to integers rounding
  down (so the solver's bound, scaled back, is still a lower bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

from remat.ir import RematGraph

_COST_RESOLUTION = 10**6
"""Largest op's time in cost units when times are not integers."""


@dataclass(frozen=True)
class Problem:
    graph: RematGraph
    copies: tuple[int, ...]
    """Executions the model allows per op (1 = never recomputed)."""
    lo: tuple[int, ...]
    """Earliest stage of an extra execution per op."""
    hi: tuple[int, ...]
    """Latest stage of an extra execution per op."""
    reads: tuple[tuple[int, ...], ...]
    """Per op, the tensors that must be there when it runs: inputs and the bases of input views,
    graph inputs left out."""
    end_reads: tuple[int, ...]
    """What must be there at the end of the step: the outputs and the storages of returned views
    (a returned logits view holds its matmul's bytes to the end)."""
    size: tuple[int, ...]
    """Per tensor, bytes / mem_unit (0 for views and graph inputs)."""
    transient: tuple[int, ...]
    cost: tuple[int, ...]
    """Per op, one execution's time in cost units (rounded down)."""
    reserve: int
    """The caller's bytes at the boundary, in memory units."""
    backward_reserve: int
    """The caller's bytes from the boundary to the end, in memory units."""
    mem_unit: int
    time_unit: float
    """Seconds per cost unit."""

    @property
    def count(self) -> int:
        return len(self.graph.ops)

    @property
    def width(self) -> int:
        return self.count + 1

    def at(self, op_id: int, stage: int) -> int:
        return stage * self.width + op_id + 1

    @property
    def boundary_time(self) -> int:
        return self.graph.boundary * self.width

    @property
    def end_time(self) -> int:
        return self.count * self.width

    def capacity(self, budget: int) -> int:
        """The budget in memory units (exact: every demand is a multiple of mem_unit)."""
        return budget // self.mem_unit

    def seconds(self, cost_units: float) -> float:
        return cost_units * self.time_unit


def build_problem(graph: RematGraph, copies: int, recompute_backward: bool) -> Problem:
    count = len(graph.ops)
    inputs = set(graph.inputs)
    reads = tuple(_reads(graph, op.inputs, inputs) for op in graph.ops)
    lo, hi, allowed = _extra_ranges(graph, reads, recompute_backward)
    mem_unit = _gcd(
        [t.bytes for t in graph.tensors if t.id not in inputs]
        + [op.transient_bytes for op in graph.ops]
        + [graph.boundary_reserve, graph.backward_reserve]
    )
    size = tuple(0 if t.id in inputs else t.bytes // mem_unit for t in graph.tensors)
    cost, time_unit = _scale_times([op.time for op in graph.ops])
    return Problem(
        graph=graph,
        copies=tuple(copies if allowed[p] else 1 for p in range(count)),
        lo=lo,
        hi=hi,
        reads=reads,
        end_reads=_reads(graph, graph.outputs, inputs),
        size=size,
        transient=tuple(op.transient_bytes // mem_unit for op in graph.ops),
        cost=cost,
        reserve=graph.boundary_reserve // mem_unit,
        backward_reserve=graph.backward_reserve // mem_unit,
        mem_unit=mem_unit,
        time_unit=time_unit,
    )


def _reads(graph: RematGraph, tensors: tuple[int, ...], inputs: set[int]) -> tuple[int, ...]:
    needed: list[int] = []
    for tensor in tensors:
        for item in (tensor, graph.storage_of(tensor)):
            if item not in inputs and item not in needed:
                needed.append(item)
    return tuple(needed)


def _extra_ranges(
    graph: RematGraph, reads: tuple[tuple[int, ...], ...], recompute_backward: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
    """Stage ranges of extra executions, walking the reference order backwards."""
    count, boundary = len(graph.ops), graph.boundary
    readers: dict[int, list[int]] = {}
    for op in graph.ops:
        for tensor in reads[op.id]:
            readers.setdefault(tensor, []).append(op.id)
    outputs, forward_outputs = set(graph.outputs), set(graph.forward_outputs)
    last_stage = list(range(count))
    lo, hi, allowed = [0] * count, [0] * count, [False] * count
    for op in reversed(graph.ops):
        horizon = -1
        for tensor in op.outputs:
            if tensor in outputs:
                horizon = count - 1
            horizon = max([horizon, *(last_stage[r] for r in readers.get(tensor, ()))])
        if forward_outputs.intersection(op.outputs):
            horizon = min(horizon, boundary - 1)
        backward_ok = recompute_backward or op.id < boundary or boundary == count
        if op.recomputable and backward_ok and horizon > op.id:
            lo[op.id], hi[op.id], allowed[op.id] = op.id + 1, horizon, True
            last_stage[op.id] = horizon
    for op in graph.ops:
        views = [graph.tensors[t] for t in op.outputs if graph.tensors[t].alias_of is not None]
        if views and len(views) == len(op.outputs):
            bases = [graph.tensors[graph.storage_of(v.id)].producer for v in views]
            allowed[op.id] = allowed[op.id] and all(b is not None and allowed[b] for b in bases)
    return tuple(lo), tuple(hi), tuple(allowed)


def _gcd(values: list[int]) -> int:
    return reduce(math.gcd, [v for v in values if v > 0], 0) or 1


def _scale_times(times: list[float]) -> tuple[tuple[int, ...], float]:
    """Integer costs (rounded down) and the seconds one cost unit stands for."""
    largest = max(times, default=0.0)
    if largest <= 0:
        return tuple(0 for _ in times), 1.0
    if all(float(t).is_integer() for t in times) and largest < 2**40:
        unit = _gcd([int(t) for t in times])
        return tuple(int(t) // unit for t in times), float(unit)
    unit = largest / _COST_RESOLUTION
    return tuple(math.floor(t / unit) for t in times), unit
