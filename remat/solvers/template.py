"""Repeated blocks solved once: one keep-or-recompute choice per value of a block, for every copy.

A transformer's blocks are the same code on the same shapes. The plans users write
(per-block checkpointing, selective recompute) treat every block alike, and so do good plans
over most of the budget range. Here the blocks of one level (remat.solvers.structured) whose
forward ops match position by position (kind, output sizes, wiring inside the block) are lined
up; the saved values at one position of every block form a class, decided together. A search
over classes (drop the class that lowers the peak most per second of recompute until the plan
fits, then add back or swap classes while the plan stays within the budget and gets cheaper)
finds a uniform kept set. The number of classes does not grow with depth, so a 96-block step
takes as many moves as a 12-block one; each move is one fast replay of the whole graph.

Saved values outside the blocks (embeddings, the head, the loss), and those of a block that
matches fewer than two others (T5's first block, which holds the position bias), are classes
of one. The result
is a warm start like the other heuristics: the ILP's local search and CP-SAT refine it value
by value, so the returned plan is never worse than the template's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan
from remat.solvers._fastsim import FastResult, fast_simulate
from remat.solvers._per_graph import per_graph
from remat.solvers.lazy import Schedule, Structure, schedule_from_kept, structure
from remat.solvers.structured import Level, block_levels, boundary_kept, selective_kept

_FEWEST = 3
"""Matching blocks a set needs to be tied (fewer gain little over deciding each value)."""
_GROUPS = (1, 2)
"""Blocks tied per group: one (every block alike) and two (every other block alike)."""
_SMALL = 0.01
"""Classes whose values are under this fraction of the largest class's are always kept: they
barely move the peak and would only lengthen the search."""


@dataclass(frozen=True)
class Template:
    """The repeated blocks of a graph, as classes of saved values decided together."""

    level: Level
    """The blocks (structured.block_levels)."""
    blocks: int
    """Blocks tied (those that match at least two others)."""
    group: int
    """Blocks per group: the classes tie the same position of every group."""
    classes: tuple[tuple[int, ...], ...]
    """Per class, the tensors it ties (one per group, or one value outside the blocks)."""


@per_graph
def find_templates(graph: RematGraph) -> tuple[Template, ...]:
    """Templates of the first level (most blocks first) where at least 3 blocks match: blocks
    one at a time, and in pairs (every other block alike: the every-2-blocks plans and their
    kin). Blocks that match fewer than 3 others (T5's first block, with its position bias; a
    ResNet stage's first block, which changes the width) have their values decided one by one.
    Empty when no level has 3 matching blocks."""
    info = structure(graph)
    droppable = set(info.saved) - info.forced
    for level in block_levels(graph):
        alike: dict[tuple[object, ...], list[list[int]]] = {}
        for block in level.blocks:
            ordered = sorted(block)
            alike.setdefault(_signature(graph, ordered), []).append(ordered)
        matched = sorted((b for b in alike.values() if len(b) >= _FEWEST), key=len, reverse=True)
        if not matched:
            continue
        count = sum(len(blocks) for blocks in matched)
        return tuple(
            Template(level, count, group, _classes(graph, matched, group, droppable, info))
            for group in _GROUPS
            if len(matched[0]) >= 2 * group
        )
    return ()


def _classes(
    graph: RematGraph,
    matched: Sequence[Sequence[Sequence[int]]],
    group: int,
    droppable: set[int],
    info: Structure,
) -> tuple[tuple[int, ...], ...]:
    """Per set of matching blocks and position in a group of `group` of them (one where the set
    is too small for pairs), its droppable tensors in every group; then the other droppable
    tensors, one class each; classes too small to matter left out."""
    classes: list[tuple[int, ...]] = []
    tied: set[int] = set()
    for blocks in matched:
        size = group if len(blocks) >= 2 * group else 1
        for offset in range(size):
            members_of = blocks[offset::size]
            for position, op_id in enumerate(blocks[offset]):
                for index in range(len(graph.ops[op_id].outputs)):
                    members = tuple(graph.ops[b[position]].outputs[index] for b in members_of)
                    tied.update(members)
                    if all(tensor in droppable for tensor in members):
                        classes.append(members)
    classes += [(tensor,) for tensor in sorted(droppable - tied)]
    sizes = [max(info.storage_bytes[tensor] for tensor in members) for members in classes]
    largest = max(sizes, default=0)
    return tuple(c for c, b in zip(classes, sizes, strict=True) if b >= _SMALL * largest)


def _signature(graph: RematGraph, block: Sequence[int]) -> tuple[object, ...]:
    position_of = {op_id: position for position, op_id in enumerate(block)}
    signature: list[object] = []
    for op_id in block:
        op = graph.ops[op_id]
        wiring = []
        for tensor in op.inputs:
            producer = graph.tensors[tensor].producer
            if producer in position_of:
                made = graph.ops[producer].outputs.index(tensor)
                wiring.append((position_of[producer], made))
            else:
                wiring.append(None)  # from outside the block: the previous block, a parameter
        sizes = tuple(graph.tensors[tensor].bytes for tensor in op.outputs)
        signature.append((op.kind, op.recomputable, sizes, tuple(wiring)))
    return tuple(signature)


class _Search:
    """Kept sets given by the dropped classes, scored by the fast replay (cached)."""

    def __init__(self, graph: RematGraph, template: Template, budget: int) -> None:
        self.graph, self.template, self.budget = graph, template, budget
        info = structure(graph)
        self.keep_all = frozenset(set(info.saved) - info.forced)
        self.scores: dict[frozenset[int], tuple[Schedule, FastResult]] = {}
        self.count = len(template.classes)

    def kept(self, dropped: frozenset[int]) -> frozenset[int]:
        gone = {tensor for index in dropped for tensor in self.template.classes[index]}
        return self.keep_all - gone

    def score(self, dropped: frozenset[int]) -> tuple[Schedule, FastResult]:
        if dropped not in self.scores:
            schedule = schedule_from_kept(self.graph, self.kept(dropped))
            self.scores[dropped] = (schedule, fast_simulate(self.graph, *schedule))
        return self.scores[dropped]

    def alone(self, index: int) -> float:
        """Recompute seconds that dropping this class alone costs."""
        return self.score(frozenset({index}))[1].recompute_time

    def projected(self, kept: frozenset[int]) -> frozenset[int]:
        """The classes most of whose tensors `kept` leaves out."""
        return frozenset(
            index
            for index, members in enumerate(self.template.classes)
            if 2 * sum(tensor not in kept for tensor in members) > len(members)
        )

    def fit(self, dropped: frozenset[int], deadline: float) -> frozenset[int] | None:
        """Drop classes until the plan fits: the most peak per second of recompute added, or,
        once some drop fits, the cheapest that does."""
        _, result = self.score(dropped)
        while result.peak > self.budget:
            best: tuple[tuple[int, float], frozenset[int], FastResult] | None = None
            for index in range(self.count):
                if index in dropped:
                    continue
                if time.perf_counter() > deadline:
                    return None
                trial = dropped | {index}
                _, found = self.score(trial)
                if found.peak >= result.peak:
                    continue
                added = max(found.recompute_time - result.recompute_time, 1e-12)
                fits = found.peak <= self.budget
                key = (0, added) if fits else (1, -(result.peak - found.peak) / added)
                if best is None or key < best[0]:
                    best = (key, trial, found)
            if best is None:
                return None
            _, dropped, result = best
        return dropped

    def refine(self, dropped: frozenset[int], deadline: float) -> frozenset[int]:
        """Add a class back, or swap a dropped class for a kept one that costs less alone, while
        the plan fits and gets cheaper (the first gain found is taken)."""
        cost = self.score(dropped)[1].recompute_time
        improved = True
        while improved and time.perf_counter() < deadline:
            improved = False
            for trial in self._moves(dropped):
                if time.perf_counter() > deadline:
                    break
                _, found = self.score(trial)
                if found.peak <= self.budget and found.recompute_time < cost * (1 - 1e-9):
                    dropped, cost, improved = trial, found.recompute_time, True
                    break
        return dropped

    def _moves(self, dropped: frozenset[int]) -> list[frozenset[int]]:
        out = sorted(dropped, key=lambda i: -self.alone(i))
        kept = sorted((i for i in range(self.count) if i not in dropped), key=self.alone)
        swaps = [(d, k) for d in out for k in kept if self.alone(k) < self.alone(d)]
        swaps.sort(key=lambda pair: self.alone(pair[1]) - self.alone(pair[0]))
        return [dropped - {d} for d in out] + [(dropped - {d}) | {k} for d, k in swaps]


def template_plans(graph: RematGraph, budget: int, deadline: float) -> list[Plan]:
    """Uniform plans over the repeated blocks within `budget`. Blocks one at a time are searched
    from keep-all, per-block and selective checkpointing; blocks in pairs from what that found
    (a finer tying of the same classes) and from per-block checkpointing."""
    if graph.boundary >= len(graph.ops):
        return []
    templates = find_templates(graph)
    if not templates:
        return []
    level = templates[0].level
    per_block = boundary_kept(graph, level.blocks)
    plans: list[Plan] = []
    found_kept: list[frozenset[int]] = []
    for template in templates:
        search = _Search(graph, template, budget)
        if template.group == 1:
            starts = [search.keep_all, per_block, selective_kept(graph, level)]
        else:
            starts = [*found_kept, per_block]
        found: dict[frozenset[int], None] = {}
        for dropped in dict.fromkeys(search.projected(kept) for kept in starts):
            if time.perf_counter() > deadline:
                break
            fitted = search.fit(dropped, deadline)
            if fitted is not None:
                found[search.refine(fitted, deadline)] = None
        kind = "every block" if template.group == 1 else f"every {template.group} blocks"
        notes = (f"template: {template.blocks} blocks of {level.label}, {kind} alike",)
        for dropped in found:
            found_kept.append(search.kept(dropped))
            plans.append(
                fast_plan(graph, *search.score(dropped)[0], solver="heuristic", notes=notes)
            )
    return plans
