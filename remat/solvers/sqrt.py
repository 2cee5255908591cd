"""`sqrt`: Chen et al. 2016, evenly spaced checkpoints over the forward.

The forward is cut into segments at cut points (ops after which nothing but their own outputs
is still needed by the rest of the forward: the residual stream of a transformer, the
activation between two layers of an MLP). The outputs at the segment ends are kept; everything
else is dropped and recomputed, one segment at a time, in the backward (the lazy schedule does
the recomputing). sqrt(n) segments minimise the peak; under a budget the solver sweeps the
segment count and returns the cheapest plan that fits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from remat.ir import Plan, RematGraph
from remat.solvers._common import confirmed_best, fast_plan, raise_infeasible
from remat.solvers.base import register
from remat.solvers.lazy import (
    Schedule,
    default_steps,
    schedule_from_kept,
    structure,
    sweep_counts,
)


def cut_points(graph: RematGraph) -> tuple[int, ...]:
    """Forward ops after which only their own outputs are still read by later forward ops."""
    boundary = graph.boundary
    last_read = [-1] * len(graph.tensors)
    for op in graph.ops[:boundary]:
        for tensor in op.inputs:
            last_read[tensor] = op.id
    opened = [0] * (boundary + 1)
    own = [0] * boundary
    for op in graph.ops[:boundary]:
        for tensor in op.outputs:
            if last_read[tensor] > op.id:
                opened[op.id] += 1
                opened[last_read[tensor]] -= 1
                own[op.id] += 1
    cuts, live = [], 0
    for position in range(boundary - 1):
        live += opened[position]
        if own[position] and live == own[position]:
            cuts.append(position)
    if not cuts:
        saved = set(structure(graph).saved)
        cuts = [op.id for op in graph.ops[:boundary] if saved.intersection(op.outputs)]
    return tuple(cuts)


def segment_schedule(graph: RematGraph, cuts: tuple[int, ...], segments: int) -> Schedule:
    """The lazy schedule that keeps the outputs at `segments - 1` evenly spaced cut points."""
    count = len(cuts)
    chosen = {
        cuts[max(0, min(count - 1, round(j * (count + 1) / segments) - 1))]
        for j in range(1, segments)
    }
    kept = {tensor for op_id in chosen for tensor in graph.ops[op_id].outputs}
    return schedule_from_kept(graph, kept)


def sqrt_family(graph: RematGraph, steps: int = 24) -> list[tuple[Schedule, str]]:
    """Segmentations for a sweep of segment counts, sqrt(n) among them."""
    cuts = cut_points(graph)
    if not cuts:
        return [(schedule_from_kept(graph, set()), "sqrt: 1 segment")]
    counts = {count + 1 for count in sweep_counts(len(cuts), steps)}
    counts.add(max(1, round(math.sqrt(graph.boundary))))
    return [
        (segment_schedule(graph, cuts, segments), f"sqrt: {segments} segments")
        for segments in sorted(counts)
    ]


@dataclass(frozen=True, kw_only=True)
class SqrtConfig:
    segments: int | None = None
    """A fixed segment count; None sweeps the count and keeps the cheapest plan that fits."""
    steps: int | None = None
    """How many segment counts the sweep tries; None: lazy.default_steps."""

    def __post_init__(self) -> None:
        if self.segments is not None and self.segments < 1:
            raise ValueError(f"sqrt: segments must be >= 1 or None, got {self.segments}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"sqrt: steps must be >= 1 or None, got {self.steps}; try 12")


@register("sqrt")
class SqrtSolver:
    """Chen et al. 2016: keep evenly spaced checkpoints, recompute each segment in backward."""

    name = "sqrt"

    def __init__(self, **config: object) -> None:
        self.config = SqrtConfig(**config)  # type: ignore[arg-type]

    def solve(self, graph: RematGraph, budget: int) -> Plan:
        start = time.perf_counter()
        if self.config.segments is not None:
            cuts = cut_points(graph) or (0,)
            family = [(segment_schedule(graph, cuts, self.config.segments), "sqrt: fixed segments")]
        else:
            family = sqrt_family(graph, self.config.steps or default_steps(graph))
        plans = [
            fast_plan(graph, *schedule, solver=self.name, notes=(label,))
            for schedule, label in family
        ]
        best = confirmed_best(graph, plans, budget)
        if best is None:
            raise_infeasible(budget, plans, self.name)
        return replace(best, budget=budget, solve_s=time.perf_counter() - start)
