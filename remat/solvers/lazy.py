"""The lazy schedule: keep a chosen set of forward values, recompute the rest on demand.

`schedule_from_kept` is the workhorse every heuristic here builds on and the ILP's warm start:
the forward part runs every forward op once in the reference order; the backward part runs the
backward ops in the reference order and, before each, recomputes whatever input is no longer
there (recursively, the producers in reference order). The simulator does the freeing: a value
lives until its last read, so a forward value that is not kept dies after its last forward use.

The `lazy` solver picks the kept set: it tries a fixed, budget-independent family of kept sets
(drop the values with the most bytes per second of recompute first, in growing numbers) and
returns the cheapest plan that fits. Because the family does not depend on the budget, a lower
budget can never get a plan with a higher peak.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass, replace

from remat.ir import Plan, RematGraph
from remat.solvers._common import confirmed_best, fast_plan, raise_infeasible
from remat.solvers._per_graph import per_graph
from remat.solvers.base import register

Schedule = tuple[tuple[int, ...], int]
"""(op ids in execution order, index in it where the backward part starts)."""


@dataclass(frozen=True)
class Structure:
    """What the lazy schedule needs to know about a graph, computed once per graph."""

    saved: tuple[int, ...]
    """Forward-produced tensors that some backward op reads: the candidates for keeping."""
    forced: frozenset[int]
    """Forward-produced tensors that cannot be recomputed in the backward (outputs, and the
    outputs of ops that are not recomputable): always kept."""
    storage_bytes: tuple[int, ...]
    """Bytes that keeping each tensor holds (a view holds its base's storage)."""


@per_graph
def structure(graph: RematGraph) -> Structure:
    boundary = graph.boundary
    forward_made = {tensor for op in graph.ops[:boundary] for tensor in op.outputs}
    read_in_backward = {tensor for op in graph.ops[boundary:] for tensor in op.inputs}
    forced = {tensor for tensor in graph.outputs if tensor in forward_made}
    for op in graph.ops[:boundary]:
        if not op.recomputable:
            forced.update(op.outputs)
    storage = tuple(graph.tensors[graph.storage_of(t.id)].bytes for t in graph.tensors)
    saved = tuple(sorted(forward_made & read_in_backward))
    return Structure(saved=saved, forced=frozenset(forced), storage_bytes=storage)


class _TooLong(Exception):
    """The schedule grew past the length the caller allowed."""


def schedule_from_kept(
    graph: RematGraph,
    kept: Collection[int],
    *,
    reuse_window: int | None = None,
    max_length: int | None = None,
) -> Schedule:
    """The lazy schedule that keeps `kept` (tensor ids) from the forward for the backward.

    reuse_window: a value recomputed in the backward stays available for the backward ops up to
    this many positions later, and is recomputed again after that (multiple recomputation);
    None keeps it until its last use.
    """
    info = structure(graph)
    count, boundary = len(graph.ops), graph.boundary
    never = count + 1
    expiry: dict[int, int] = {tensor: never for tensor in (*graph.inputs, *graph.late_inputs)}
    for tensor in (*kept, *info.forced):
        expiry[tensor] = never
    schedule = list(range(boundary))
    for position in range(boundary, count):
        op = graph.ops[position]
        pending = _missing_producers(graph, op.inputs, expiry, position)
        lifetime = never if reuse_window is None else position + reuse_window
        for producer in sorted(pending):
            schedule.append(producer)
            for tensor in graph.ops[producer].outputs:
                expiry[tensor] = lifetime
        schedule.append(position)
        for tensor in op.outputs:
            expiry[tensor] = never
        if max_length is not None and len(schedule) > max_length:
            raise _TooLong
    return tuple(schedule), boundary


def _missing_producers(
    graph: RematGraph, needed: Collection[int], expiry: dict[int, int], position: int
) -> set[int]:
    """Ops to recompute so that every tensor in `needed` is there at `position`."""
    pending: set[int] = set()
    stack = list(needed)
    while stack:
        tensor = stack.pop()
        if expiry.get(tensor, -1) >= position:
            continue
        producer = graph.tensors[tensor].producer
        if producer is None or producer in pending:
            continue
        pending.add(producer)
        stack.extend(graph.ops[producer].inputs)
    return pending


_MAX_GROWTH = 3
"""The multiple-recomputation variants stop once a schedule is this many times the graph."""


def drop_order(graph: RematGraph) -> tuple[int, ...]:
    """Saved tensors, the ones with the most kept bytes per second of recompute first."""
    info = structure(graph)
    candidates = [tensor for tensor in info.saved if tensor not in info.forced]
    smallest = min((op.time for op in graph.ops if op.time > 0), default=1.0)

    def score(tensor: int) -> tuple[float, int]:
        producer = graph.tensors[tensor].producer
        cost = graph.ops[producer].time if producer is not None else 0.0
        return (-info.storage_bytes[tensor] / (cost + smallest * 1e-3), tensor)

    return tuple(sorted(candidates, key=score))


_STEPS = 12
"""Kept sets per family up to _STEP_OPS ops; fewer beyond, so 10k-op graphs stay quick."""
_STEP_OPS = 3000


def default_steps(graph: RematGraph) -> int:
    """Sweep size of the lazy and sqrt families: the same for their solvers and for the ILP's
    warm starts, so the ILP's plan never costs more than theirs."""
    return max(4, min(_STEPS, _STEPS * _STEP_OPS // max(1, len(graph.ops))))


def sweep_counts(total: int, steps: int = 24) -> tuple[int, ...]:
    """About `steps` integers from 0 to `total`, denser near both ends, always both ends."""
    if total <= steps:
        return tuple(range(total + 1))
    counts = {0, total}
    for index in range(1, steps):
        fraction = (1 - math.cos(math.pi * index / steps)) / 2
        counts.add(round(fraction * total))
    return tuple(sorted(counts))


def lazy_family(graph: RematGraph, steps: int = 24) -> list[tuple[Schedule, str]]:
    """The kept sets the `lazy` solver tries, each as a schedule with a label."""
    info = structure(graph)
    order = drop_order(graph)
    family: list[tuple[Schedule, str]] = []
    longest = _MAX_GROWTH * len(graph.ops)
    for dropped in sweep_counts(len(order), steps):
        kept = set(info.saved) - set(order[:dropped])
        family.append((schedule_from_kept(graph, kept), f"lazy: {dropped} dropped"))
        if dropped and longest:
            again = _bounded(graph, kept, longest)
            if again is None:
                longest = 0  # more drops only grow it: recomputing everything per use is O(n^2)
            else:
                family.append((again, f"lazy: {dropped} dropped, x2"))
    return family


def _bounded(graph: RematGraph, kept: set[int], longest: int) -> Schedule | None:
    """The reuse_window=0 schedule, or None once it grows past `longest` steps."""
    try:
        return schedule_from_kept(graph, kept, reuse_window=0, max_length=longest)
    except _TooLong:
        return None


@dataclass(frozen=True, kw_only=True)
class LazyConfig:
    steps: int | None = None
    """How many kept sets to try (more: closer to the budget, slower); None: default_steps."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"lazy: steps must be >= 1 or None, got {self.steps}; try 12")


@register("lazy")
class LazySolver:
    """Greedy kept sets: drop the values with most bytes per recompute second first."""

    name = "lazy"

    def __init__(self, **config: object) -> None:
        self.config = LazyConfig(**config)  # type: ignore[arg-type]

    def solve(self, graph: RematGraph, budget: int) -> Plan:
        start = time.perf_counter()
        plans = [
            fast_plan(graph, *schedule, solver=self.name, notes=(label,))
            for schedule, label in lazy_family(graph, self.config.steps or default_steps(graph))
        ]
        best = confirmed_best(graph, plans, budget)
        if best is None:
            raise_infeasible(budget, plans, self.name)
        return replace(best, budget=budget, solve_s=time.perf_counter() - start)
