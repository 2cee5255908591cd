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
from remat.solvers._per_graph import per_graph
from remat.solvers.gaps import Gap, reference_last_reads

Schedule = tuple[tuple[int, ...], int]

_NOISE = 1.0
"""With an rng, each candidate's cost is scaled by a random factor in [1, 1 + _NOISE)."""
_TRIES = 64
"""Candidates simulated per step before the walk gives up (splits that freed nothing at a peak
are not tried there again, so the tries go to new candidates: HF GPT-2, 12 layers at half the
keep-all peak, the relaxation's schedule fits after 14 splits, one of them the 27th candidate
at its peak)."""


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
        # An input whose storage dies before the peak is held through it instead; a view
        # input holds its base's storage (HF GPT-2's key/value clones read a permuted view).
        for owner in {graph.storage_of(source) for source in graph.ops[producer].inputs}:
            steps = productions.get(owner, [])
            index = bisect.bisect_left(steps, insert) - 1
            if index >= 0 and last_read.get((owner, steps[index]), insert) < at:
                freed -= graph.tensors[owner].bytes
        if freed > 0:
            cost = graph.ops[producer].time * (1.0 + _NOISE * rng.random() if rng else 1.0)
            found.append((cost / freed, -freed, insert, instance))
    found.sort(key=lambda item: item[:3] + (item[3].tensor,))
    return found


@per_graph
def derived_views(graph: RematGraph) -> dict[int, tuple[int, ...]]:
    """Per op, the view ops over its outputs' storage, in reference order. A recomputed value
    read through a view needs the view made again from it: the old view holds the old storage
    (HF GPT-2's Conv1D reads every activation through a view)."""
    views: dict[int, list[int]] = {}
    for op in graph.ops:
        made = [graph.tensors[t] for t in op.outputs]
        if made and all(t.alias_of is not None for t in made):
            base = graph.tensors[graph.storage_of(made[0].id)].producer
            if base is not None and base != op.id:
                views.setdefault(base, []).append(op.id)
    return {producer: tuple(found) for producer, found in views.items()}


def with_views(views: dict[int, tuple[int, ...]], producer: int, reader: int) -> tuple[int, ...]:
    """`producer` and the views of its outputs made before `reader` in the reference order."""
    return (producer, *(view for view in views.get(producer, ()) if view < reader))


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
    views = derived_views(graph)
    futile: set[tuple[int, int]] = set()
    """(tensor, op at the peak): splits that freed nothing there, not tried there again (each
    try is a replay; HF GPT-2's 24 key/value copies took every try at one peak)."""
    while time.perf_counter() < deadline:
        if result.peak <= budget:
            return schedule, boundary
        moved = False
        options = _candidates(graph, schedule, boundary, result.peak_step, rng)
        reader = (*schedule, len(graph.ops))  # a read at the end is a read by no op
        at = reader[result.peak_step] if result.peak_step >= 0 else -1
        inserts = [
            (insert, with_views(views, _producer(graph, instance), reader[insert]), instance)
            for _score, _freed, insert, instance in options
            if (instance.tensor, at) not in futile
        ]
        inserts = [item for item in inserts if all(runs[op] < copies for op in item[1])]
        for insert, added, instance in inserts[:_TRIES]:
            trial, trial_boundary = canonical(graph, schedule[:insert] + added + schedule[insert:])
            trial_result = fast_simulate(graph, trial, trial_boundary)
            if _progress(trial_result, result):
                schedule, boundary, result, moved = trial, trial_boundary, trial_result, True
                for op_id in added:
                    runs[op_id] += 1
                break
            futile.add((instance.tensor, at))
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


def recomputed_steps(schedule: Sequence[int], after: int = 1) -> list[int]:
    """Positions in `schedule` of every execution after an op's `after`-th (by default the
    recomputations)."""
    runs: dict[int, int] = {}
    steps = []
    for step, op_id in enumerate(schedule):
        runs[op_id] = runs.get(op_id, 0) + 1
        if runs[op_id] > after:
            steps.append(step)
    return steps


def prune(graph: RematGraph, budget: int, found: Schedule, deadline: float) -> Schedule:
    """Drop recomputations, the most expensive first, while the peak stays within `budget`:
    passes over them until one drops nothing (one replay per recomputation per pass). Repeat
    runs go first, in groups (`_without_repeats`)."""
    schedule, boundary = _without_repeats(graph, budget, found, deadline)
    changed = True
    while changed and time.perf_counter() < deadline:
        changed = False
        extras = recomputed_steps(schedule)
        extras.sort(key=lambda step: (-graph.ops[schedule[step]].time, step))
        removed: set[int] = set()
        for step in extras:
            if time.perf_counter() >= deadline:
                break
            trial, trial_boundary = _without(schedule, boundary, removed | {step})
            if fast_simulate(graph, trial, trial_boundary).peak <= budget:
                removed.add(step)
        if removed:
            schedule, boundary = _without(schedule, boundary, removed)
            changed = True
    return schedule, boundary


def _without_repeats(graph: RematGraph, budget: int, found: Schedule, deadline: float) -> Schedule:
    """Drop the runs of an op after its second (a value made again for several reads made
    again once), as many as fit, by halving groups: one replay accepts a whole group. Plans
    from the relaxation have hundreds of these (it pays one run per remade input, the schedule
    makes one per read): HF GPT-2, 96 layers at half the keep-all peak, 580 of 2412 runs,
    which one replay each took 30 s to find."""
    schedule, boundary = found
    repeats = recomputed_steps(schedule, after=2)
    removed: set[int] = set()
    groups = [repeats] if repeats else []
    while groups and time.perf_counter() < deadline:
        group = groups.pop()
        trial, trial_boundary = _without(schedule, boundary, removed | set(group))
        if fast_simulate(graph, trial, trial_boundary).peak <= budget:
            removed.update(group)
        elif len(group) > 1:
            half = len(group) // 2
            groups += [group[half:], group[:half]]  # the earlier half is tried first
    return _without(schedule, boundary, removed)


def _without(schedule: tuple[int, ...], boundary: int, steps: set[int]) -> Schedule:
    kept = tuple(op for step, op in enumerate(schedule) if step not in steps)
    return kept, boundary - sum(1 for step in steps if step < boundary)


def split_plans(
    graph: RematGraph, budget: int, copies: int = 2, deadline: float = math.inf
) -> list[Plan]:
    """The splitting walk's plan at `budget` from keep-all, pruned until `deadline`."""
    found = split_schedule(graph, budget, copies=copies, deadline=deadline)
    if found is None:
        return []
    pruned = prune(graph, budget, found, deadline)
    return [fast_plan(graph, *pruned, solver="split", notes=("split: from keep-all",))]


def _with_inputs(
    graph: RematGraph, gaps: Sequence[Gap], remade: Iterable[tuple[int, int]]
) -> set[tuple[int, int]]:
    """(position, producer) of the recomputations the relaxation's solution stands for: each
    dropped gap's value made again before the read that closes it, and the inputs the
    relaxation chose to make again (`remade`) there. A recomputation needs its inputs: where
    one is neither alive in the reference order nor made again by an earlier run, the next
    run of its producer moves up to it (one run, held from there, not two; the relaxation
    paid for one); with no later run it is held (the replay counts that)."""
    runs = [[gap.before, gap.producer] for gap in gaps] + [list(item) for item in remade]
    of_producer: dict[int, list[list[int]]] = {}
    for run in runs:
        of_producer.setdefault(run[1], []).append(run)
    dropped: dict[int, list[Gap]] = {}
    for gap in gaps:
        dropped.setdefault(graph.storage_of(gap.tensor), []).append(gap)
    last_read = reference_last_reads(graph)
    changed = True
    while changed:
        changed = False
        for position, producer in sorted(tuple(run) for run in runs):
            for tensor in graph.ops[producer].inputs:
                storage = graph.storage_of(tensor)
                made_by = graph.tensors[storage].producer
                if made_by is None:
                    continue
                earlier = [run for run in of_producer.get(made_by, ()) if run[0] <= position]
                spans = any(g.after < position <= g.before for g in dropped.get(storage, ()))
                if earlier or (last_read.get(storage, -1) >= position - 1 and not spans):
                    continue
                later = [run for run in of_producer.get(made_by, ()) if run[0] > position]
                if later:
                    min(later)[0] = position
                    changed = True
    return {(position, producer) for position, producer in runs}


def direct_from_gaps(
    graph: RematGraph, gaps: Sequence[Gap], remade: Iterable[tuple[int, int]] = ()
) -> Schedule:
    """The reference order with each dropped gap's value made again just before the read that
    closes the gap, and the inputs the relaxation makes again (`_with_inputs`)."""
    schedule = list(range(len(graph.ops)))
    views = derived_views(graph)
    for before, producer in sorted(_with_inputs(graph, gaps, remade), reverse=True):
        schedule[before:before] = with_views(views, producer, before)
    return canonical(graph, tuple(schedule))


def repaired_plan(
    graph: RematGraph, budget: int, start: Schedule, copies: int, deadline: float
) -> Plan | None:
    """`start` (a direct schedule) split until the peak fits (inputs kept alive longer cost
    memory the relaxation did not see) and pruned. Where splitting gets stuck with `copies`
    runs per op, it is tried once more with one run more: near the floor what a recomputation
    holds while it runs is what is over, and splitting it needs a third run (HF GPT-2, 12
    layers at 0.30 of keep-all, 0.5% above the lowest peak found: stuck at 2.2% over with two
    runs; with three, 27.3% of the step recomputed against the bound's 26.4%)."""
    found = split_schedule(graph, budget, start, copies, deadline)
    if found is None:
        found = split_schedule(graph, budget, start, copies + 1, deadline)
    if found is None:
        return None
    pruned = prune(graph, budget, found, deadline)
    return fast_plan(graph, *pruned, solver="split", notes=("split: from the relaxation",))
