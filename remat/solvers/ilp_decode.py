"""Between schedules and the CP-SAT model: decode a solution, hint a known schedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from remat.solvers.ilp_model import Reader, RetentionModel

Values = Callable[[object], int]
"""Reads a variable's value from a solution (CpSolver.value or a callback's value)."""


def decode(built: RetentionModel, value: Values) -> tuple[tuple[int, ...], int]:
    """The schedule a solution describes: executions sorted by their event time."""
    problem = built.problem
    events = [(problem.at(op_id, op_id), op_id) for op_id in range(problem.count)]
    for (op_id, index), literal in built.present.items():
        if value(literal):
            events.append((problem.at(op_id, value(built.stage[(op_id, index)])), op_id))
    events.sort()
    boundary = sum(1 for when, _ in events if when < problem.boundary_time)
    return tuple(op_id for _, op_id in events), boundary


def executions(built: RetentionModel, schedule: Sequence[int]) -> dict[Reader, int] | None:
    """Stage of each execution of `schedule` the model can represent, or None if it cannot.

    A schedule fits when the first executions follow the reference order; an extra execution
    belongs to the stage of the next first execution. Extras beyond the model's copies, or
    outside an op's stage range, are left out (the hint is then partial).
    """
    problem = built.problem
    stages: list[int] = [problem.count] * len(schedule)
    seen: set[int] = set()
    firsts = 0
    for op_id in schedule:
        if op_id not in seen:
            if op_id != firsts:
                return None
            seen.add(op_id)
            firsts += 1
    first_step: dict[int, int] = {}
    for step, op_id in enumerate(schedule):
        first_step.setdefault(op_id, step)
    upcoming = problem.count
    for step in range(len(schedule) - 1, -1, -1):
        if first_step[schedule[step]] == step:
            upcoming = schedule[step]
        stages[step] = upcoming
    placed: dict[Reader, int] = {}
    counts = [0] * problem.count
    for step, op_id in enumerate(schedule):
        index = counts[op_id]
        stage = stages[step]
        if index == 0:
            placed[(op_id, 0)] = op_id
            counts[op_id] = 1
            continue
        last = placed.get((op_id, index - 1), -1)
        inside = problem.lo[op_id] <= stage <= problem.hi[op_id] and stage > last
        if index < problem.copies[op_id] and inside:
            placed[(op_id, index)] = stage
            counts[op_id] += 1
    return placed


def representable(built: RetentionModel, schedule: Sequence[int]) -> bool:
    """True when every execution of `schedule` has a place in the model (a complete hint)."""
    placed = executions(built, schedule)
    return placed is not None and len(placed) == len(schedule)


def add_hint(built: RetentionModel, schedule: Sequence[int]) -> bool:
    """Hint the solver with `schedule`; False when the model cannot represent it."""
    placed = executions(built, schedule)
    if placed is None:
        return False
    problem, model = built.problem, built.model
    time_of = {key: problem.at(key[0], stage) for key, stage in placed.items()}
    ends, chosen = _trace(built, time_of)
    for key, literal in built.present.items():
        model.add_hint(literal, key in placed)
        model.add_hint(built.stage[key], placed.get(key, problem.lo[key[0]]))
    for (tensor, index), var in built.end.items():
        producer = problem.graph.tensors[tensor].producer
        assert producer is not None
        start = time_of.get((producer, index), problem.at(producer, problem.lo[producer]))
        end = ends.get((tensor, index), start)
        model.add_hint(var, end)
        if (tensor, index) in built.sizes:
            model.add_hint(built.sizes[(tensor, index)], end + 1 - start)
    for tensor, var in built.late_end.items():
        model.add_hint(var, ends.get((tensor, -1), problem.boundary_time))
    for read in built.reads:
        for index, literal in read.options:
            if literal is not True:
                model.add_hint(literal, chosen.get((read.reader, read.tensor)) == index)
    return True


def _trace(
    built: RetentionModel, time_of: dict[Reader, int]
) -> tuple[dict[tuple[int, int], int], dict[tuple[Reader, int], int]]:
    """Last read time of each (tensor, execution), and which execution each read sees."""
    problem, graph = built.problem, built.problem.graph
    late = set(graph.late_inputs)
    order = sorted(time_of.items(), key=lambda item: item[1])
    current: dict[int, int] = {}
    ends: dict[tuple[int, int], int] = {}
    chosen: dict[tuple[Reader, int], int] = {}

    def read(reader: Reader, tensor: int, when: int) -> None:
        index = -1 if tensor in late else current.get(tensor)
        if index is None:
            return
        ends[(tensor, index)] = max(ends.get((tensor, index), when), when)
        chosen[(reader, tensor)] = index

    for (op_id, index), when in order:
        for tensor in problem.reads[op_id]:
            read((op_id, index), tensor, when)
        for tensor in graph.ops[op_id].outputs:
            current[tensor] = index
            ends.setdefault((tensor, index), when)
    for tensor in problem.end_reads:
        read((-1, 0), tensor, problem.end_time)
    return ends, chosen
