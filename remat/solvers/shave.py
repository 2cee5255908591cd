"""Structured plans brought under a budget they just miss, one more value recomputed at a time.

Per-block checkpointing (and its kin, remat.solvers.structured) is often the cheapest plan near
its own peak; at a budget a little below that peak it does not fit, and a search from scratch
may land on a plan recomputing much more. Here each structured kept set within reach of the
budget drops saved values greedily: at each step the one that lowers the peak most per second of
recompute it adds, or, once some drop fits, the cheapest that fits. Scored by the fast replay,
like every warm start (confirmed_best replays the pick in the simulator).
"""

from __future__ import annotations

import time

from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan
from remat.solvers._fastsim import FastResult, fast_simulate
from remat.solvers.lazy import Schedule, Structure, schedule_from_kept, structure
from remat.solvers.structured import structured_kept_sets

_REACH = 1.25
"""Only kept sets whose peak is at most this multiple of the budget are shaved."""
_DROPS = 6
"""Values dropped from one kept set at most."""
_TRIED = 32
"""Saved values tried per drop: the largest."""


def shaved_plans(graph: RematGraph, budget: int, deadline: float) -> list[Plan]:
    """The structured kept sets that miss `budget` by a little, shaved until they fit."""
    if graph.boundary >= len(graph.ops):
        return []
    info = structure(graph)
    plans = []
    for kept, label in structured_kept_sets(graph):
        if time.perf_counter() > deadline:
            break
        schedule = _shave(graph, info, kept, budget, deadline)
        if schedule is not None:
            notes = (f"{label}, shaved to the budget",)
            plans.append(fast_plan(graph, *schedule, solver="heuristic", notes=notes))
    return plans


def _shave(
    graph: RematGraph, info: Structure, kept: frozenset[int], budget: int, deadline: float
) -> Schedule | None:
    current = set(kept)
    result = fast_simulate(graph, *schedule_from_kept(graph, current))
    if result.peak <= budget or result.peak > _REACH * budget:
        return None  # fits as it is (a budget-free candidate), or out of reach
    saved = set(info.saved) - info.forced
    for _ in range(_DROPS):
        options = sorted(current & saved, key=lambda t: (-info.storage_bytes[t], t))[:_TRIED]
        best: tuple[tuple[int, float], int, Schedule, FastResult] | None = None
        for tensor in options:
            schedule = schedule_from_kept(graph, current - {tensor})
            trial = fast_simulate(graph, *schedule)
            if trial.peak >= result.peak:
                continue
            added = max(trial.recompute_time - result.recompute_time, 1e-12)
            fits = trial.peak <= budget
            key = (0, added) if fits else (1, -(result.peak - trial.peak) / added)
            if best is None or key < best[0]:
                best = (key, tensor, schedule, trial)
            if time.perf_counter() > deadline:
                break
        if best is None:
            return None
        _, tensor, schedule, result = best
        current.discard(tensor)
        if result.peak <= budget:
            return schedule
    return None
