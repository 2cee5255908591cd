"""Peak splitting: a greedy schedule for any graph at a given budget.

Start from a schedule (keep-all by default). While the simulated peak exceeds the budget, look
at the step where it happens and at the values alive there that this step does not read; split
one of them: drop it after its last read before the peak and recompute it just before its next
read after it. The value chosen frees the most bytes at the peak per second of recompute, after
what the recomputation costs there (its inputs may have to live longer). The simulator checks
every step, so the result is always scored, never estimated.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan
from remat.solvers._fastsim import FastResult, fast_simulate
from remat.solvers.gaps import Gap

Schedule = tuple[tuple[int, ...], int]

_NOISE = 1.0
"""With an rng, each candidate's cost is scaled by a random factor in [1, 1 + _NOISE)."""
_TRIES = 6
"""Candidates simulated per step before the walk gives up."""


@dataclass(frozen=True)
class _Instance:
    tensor: int
    made: int
    """Step that produced it."""
    reads: tuple[int, ...]
    """Steps that read it (len(schedule) stands for the end of the step, for outputs)."""


def _instances(graph: RematGraph, schedule: tuple[int, ...]) -> list[_Instance]:
    """Every production of a storage-owning tensor, with the steps that read it."""
    current: dict[int, int] = {}
    reads: dict[tuple[int, int], list[int]] = {}
    for step, op_id in enumerate(schedule):
        op = graph.ops[op_id]
        for tensor in op.inputs:
            for item in {tensor, graph.storage_of(tensor)}:
                if item in current:
                    reads[(item, current[item])].append(step)
        for tensor in op.outputs:
            current[tensor] = step
            reads[(tensor, step)] = []
    end = len(schedule)
    for tensor in graph.outputs:
        if tensor in current:
            reads[(tensor, current[tensor])].append(end)
    return [
        _Instance(tensor, made, tuple(steps))
        for (tensor, made), steps in reads.items()
        if graph.tensors[tensor].alias_of is None and graph.tensors[tensor].bytes > 0
    ]


def _candidates(
    graph: RematGraph,
    schedule: tuple[int, ...],
    boundary: int,
    peak_step: int,
    rng: random.Random | None = None,
) -> list[tuple[float, int, int, _Instance]]:
    """(score, -freed, step to insert at, instance), best first."""
    at = boundary - 0.5 if peak_step < 0 else peak_step
    instances = _instances(graph, schedule)
    last_read = {(i.tensor, i.made): (i.reads[-1] if i.reads else i.made) for i in instances}
    productions = _productions(graph, schedule)
    forward_outputs = set(graph.forward_outputs)
    found = []
    for instance in instances:
        producer = graph.tensors[instance.tensor].producer
        if producer is None or not graph.ops[producer].recomputable or instance.made >= at:
            continue
        later = [step for step in instance.reads if step > at]
        if not later or at in instance.reads:
            continue
        insert = later[0]
        if instance.tensor in forward_outputs and insert >= boundary:
            continue
        freed = graph.tensors[instance.tensor].bytes
        for source in graph.ops[producer].inputs:
            steps = productions.get(source, [])
            index = bisect.bisect_left(steps, insert) - 1
            if index >= 0 and last_read.get((source, steps[index]), insert) < at:
                freed -= graph.tensors[graph.storage_of(source)].bytes
        if freed > 0:
            cost = graph.ops[producer].time * (1.0 + _NOISE * rng.random() if rng else 1.0)
            found.append((cost / freed, -freed, insert, instance))
    found.sort(key=lambda item: item[:3] + (item[3].tensor,))
    return found


def _productions(graph: RematGraph, schedule: tuple[int, ...]) -> dict[int, list[int]]:
    """Steps at which each tensor is produced, in order."""
    made: dict[int, list[int]] = {}
    for step, op_id in enumerate(schedule):
        for tensor in graph.ops[op_id].outputs:
            made.setdefault(tensor, []).append(step)
    return made


def canonical(graph: RematGraph, schedule: tuple[int, ...]) -> Schedule:
    """`schedule` in the ILP's order: each execution in the stage of the next first execution,
    and within a stage by reference position (a valid order: the reference order is one)."""
    seen: set[int] = set()
    first = [False] * len(schedule)
    for step, op_id in enumerate(schedule):
        first[step] = op_id not in seen
        seen.add(op_id)
    stage, upcoming = [0] * len(schedule), len(graph.ops)
    for step in range(len(schedule) - 1, -1, -1):
        if first[step]:
            upcoming = schedule[step]
        stage[step] = upcoming
    order = sorted(range(len(schedule)), key=lambda step: (stage[step], schedule[step], step))
    boundary = sum(1 for step in order if stage[step] < graph.boundary)
    return tuple(schedule[step] for step in order), boundary


def split_schedule(
    graph: RematGraph,
    budget: int,
    start: Schedule | None = None,
    copies: int = 2,
    deadline: float = math.inf,
    rng: random.Random | None = None,
) -> Schedule | None:
    """A schedule whose simulated peak is <= budget, or None when the walk gets stuck.

    It runs no op more than `copies` times and stays in the ILP's canonical order, so the
    result is a complete warm start for the model.
    """
    schedule, boundary = start or (tuple(range(len(graph.ops))), graph.boundary)
    result = fast_simulate(graph, schedule, boundary)
    runs = [0] * len(graph.ops)
    for op_id in schedule:
        runs[op_id] += 1
    while time.perf_counter() < deadline:
        if result.peak <= budget:
            return schedule, boundary
        moved = False
        options = _candidates(graph, schedule, boundary, result.peak_step, rng)
        options = [item for item in options if runs[_producer(graph, item[3])] < copies]
        for _score, _freed, insert, instance in options[:_TRIES]:
            producer = _producer(graph, instance)
            trial, trial_boundary = canonical(
                graph, schedule[:insert] + (producer,) + schedule[insert:]
            )
            trial_result = fast_simulate(graph, trial, trial_boundary)
            if _progress(trial_result, result):
                schedule, boundary, result, moved = trial, trial_boundary, trial_result, True
                runs[producer] += 1
                break
        if not moved:
            return None
    return None


def _producer(graph: RematGraph, instance: _Instance) -> int:
    producer = graph.tensors[instance.tensor].producer
    assert producer is not None
    return producer


def _progress(new: FastResult, old: FastResult) -> bool:
    """Lower peak, or the same peak reached at fewer steps."""
    if new.peak != old.peak:
        return new.peak < old.peak
    return _at_peak(new) < _at_peak(old)


def _at_peak(result: FastResult) -> int:
    return sum(1 for v in (*result.timeline, result.boundary_bytes) if v == result.peak)


def recomputed_steps(schedule: Sequence[int]) -> list[int]:
    """Positions in `schedule` of every execution after an op's first (the recomputations)."""
    seen: set[int] = set()
    steps = []
    for step, op_id in enumerate(schedule):
        if op_id in seen:
            steps.append(step)
        seen.add(op_id)
    return steps


def prune(graph: RematGraph, budget: int, found: Schedule, deadline: float) -> Schedule:
    """Drop recomputations, the most expensive first, while the peak stays within `budget`."""
    schedule, boundary = found
    changed = True
    while changed and time.perf_counter() < deadline:
        changed = False
        extras = recomputed_steps(schedule)
        extras.sort(key=lambda step: (-graph.ops[schedule[step]].time, step))
        for step in extras:
            if time.perf_counter() >= deadline:
                break
            trial = schedule[:step] + schedule[step + 1 :]
            trial_boundary = boundary - (1 if step < boundary else 0)
            if fast_simulate(graph, trial, trial_boundary).peak <= budget:
                schedule, boundary, changed = trial, trial_boundary, True
                break
    return schedule, boundary


def split_plans(
    graph: RematGraph, budget: int, copies: int = 2, deadline: float = math.inf
) -> list[Plan]:
    """The splitting walk's plan at `budget` from keep-all, pruned until `deadline`."""
    found = split_schedule(graph, budget, copies=copies, deadline=deadline)
    if found is None:
        return []
    pruned = prune(graph, budget, found, deadline)
    return [fast_plan(graph, *pruned, solver="split", notes=("split: from keep-all",))]


def schedule_from_gaps(
    graph: RematGraph, budget: int, gaps: Iterable[Gap], copies: int, deadline: float
) -> Plan | None:
    """A plan from the relaxation's dropped gaps: recompute each value just before the read that
    closes its gap, then split until the peak fits (inputs kept alive longer cost memory the
    relaxation did not see) and prune."""
    schedule = list(range(len(graph.ops)))
    for before, producer in sorted(((gap.before, gap.producer) for gap in gaps), reverse=True):
        schedule.insert(before, producer)
    start = canonical(graph, tuple(schedule))
    found = split_schedule(graph, budget, start, copies, deadline)
    if found is None:
        return None
    pruned = prune(graph, budget, found, deadline)
    return fast_plan(graph, *pruned, solver="split", notes=("split: from the relaxation",))
