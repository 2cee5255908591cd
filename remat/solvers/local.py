"""Iterated local search over schedules: destroy a window of recomputations, repair, prune.

From a plan within the budget: remove every recomputation placed in a random window of stages,
let the splitting walk (split.py, with randomised choices) bring the peak back under the budget,
drop the recomputations that turned out unnecessary, and keep the result if it costs no more.
Every step is scored by the fast replay; cheap enough for thousands of moves on 1000-op graphs,
where CP-SAT's own neighbourhoods (exact but slow to presolve) make few.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from remat.ir import RematGraph
from remat.solvers._fastsim import fast_simulate
from remat.solvers.split import Schedule, canonical, recomputed_steps, split_schedule

_WINDOWS = (0.02, 0.05, 0.1, 0.2)
"""Window widths, as shares of the stages, drawn at random per move."""
_SCATTER = 0.0
"""Share of moves that remove a random tenth of all recomputations instead of a window."""
_TEMPERATURE = 0.02
"""A move may cost this much more (relative) at the start; the allowance shrinks to 0."""
_PRUNE_TRIES = 40
_PATIENCE = 400
"""Moves in a row without a new best after which the search stops (at least; 3 per op)."""


def _stages(graph: RematGraph, schedule: tuple[int, ...]) -> list[int]:
    """Stage of every step: the position of the next first execution."""
    seen: set[int] = set()
    first = []
    for op_id in schedule:
        first.append(op_id not in seen)
        seen.add(op_id)
    stage, upcoming = [0] * len(schedule), len(graph.ops)
    for step in range(len(schedule) - 1, -1, -1):
        if first[step]:
            upcoming = schedule[step]
        stage[step] = upcoming
    return stage


def _without(graph: RematGraph, found: Schedule, steps: set[int]) -> Schedule:
    schedule, _ = found
    kept = tuple(op_id for step, op_id in enumerate(schedule) if step not in steps)
    return canonical(graph, kept)


def _prune_near(
    graph: RematGraph, budget: int, found: Schedule, low: int, high: int, deadline: float
) -> Schedule:
    """Drop recomputations in stages [low, high), the most expensive first, while it fits."""
    for _ in range(_PRUNE_TRIES):
        if time.perf_counter() > deadline:
            break
        stages = _stages(graph, found[0])
        steps = [s for s in recomputed_steps(found[0]) if low <= stages[s] < high]
        steps.sort(key=lambda s: (-graph.ops[found[0][s]].time, s))
        for step in steps:
            trial = _without(graph, found, {step})
            if fast_simulate(graph, *trial).peak <= budget:
                found = trial
                break
        else:
            break
    return found


def improve(
    graph: RematGraph,
    budget: int,
    start: Schedule,
    copies: int,
    deadline: float,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
    floor_cost: float = 0.0,
) -> Schedule:
    """The cheapest schedule within `budget` the search finds from `start`.

    Stops at `deadline`, after _PATIENCE moves in a row without a new best, or on reaching
    `floor_cost` (a proven lower bound).
    """
    rng = random.Random(seed)
    count = len(graph.ops)
    began = time.perf_counter()
    current = best = canonical(graph, start[0])
    current_cost = best_cost = fast_simulate(graph, *best).recompute_time
    moves = last_gain = 0
    patience = max(_PATIENCE, 3 * count)
    longest, move_began = 0.0, time.perf_counter()
    while moves - last_gain < patience:
        now = time.perf_counter()
        if moves:  # a move may run past the deadline: stop when the longest one would
            longest = max(longest, now - move_began)
        if now + longest >= deadline:
            break
        move_began = now
        if best_cost <= floor_cost * (1 + 1e-9):
            break
        moves += 1
        width = max(2, int(rng.choice(_WINDOWS) * count))
        low = rng.randrange(0, max(1, count - width))
        high = low + width
        stages = _stages(graph, current[0])
        if rng.random() < _SCATTER:
            extras = recomputed_steps(current[0])
            removed = set(rng.sample(extras, max(1, len(extras) // 10))) if extras else set()
            low, high = 0, count
        else:
            removed = {s for s in recomputed_steps(current[0]) if low <= stages[s] < high}
        repaired = split_schedule(
            graph, budget, _without(graph, current, removed), copies, deadline, rng
        )
        if repaired is None:
            continue
        repaired = _prune_near(graph, budget, repaired, low - width, high + width, deadline)
        cost = fast_simulate(graph, *repaired).recompute_time
        now = time.perf_counter()
        allowance = _TEMPERATURE * max(0.0, (deadline - now) / max(deadline - began, 1e-9))
        if cost <= current_cost * (1 + allowance * rng.random()):
            current, current_cost = repaired, cost
            if cost < best_cost:
                best, best_cost, last_gain = repaired, cost, moves
                if say is not None:
                    say(f"local search: move {moves}, recompute {cost:.6g} s")
    return best
