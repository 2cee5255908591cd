"""Structured candidates: the checkpointing plans users write by hand, found from module paths.

Users checkpoint each repeated block (`torch.utils.checkpoint` around every `model.layers[i]`),
every k-th block, or only a block's cheap ops (Megatron's selective recompute). The floor and
every plan must be at least as lean as those, so they are among the candidates every solve
starts from. Only module paths are read (`Op.module_path`); no torch.

Each candidate is a kept set handed to `schedule_from_kept`, which recomputes lazily, just
before each backward op. Torch's checkpoint instead recomputes a whole block before the
block's backward; in the simulator's model that is never lower: it runs the same recomputations
(and possibly more) earlier, so each recomputed value lives at least as long as it does here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from remat.ir import RematGraph
from remat.solvers.lazy import Schedule, schedule_from_kept, structure

_LEVELS = 3
"""Block levels tried per graph (those with the most blocks): nesting is rarely deeper."""
_CHEAP = 0.1
"""An op is cheap (selective recompute) below this fraction of its block's mean op FLOPs."""


@dataclass(frozen=True)
class Level:
    """The blocks at one depth of integer-indexed module paths (`model.layers.<i>`)."""

    label: str
    """The containers, indices starred: 'transformer.h', 'encoder.stages.*.layers'."""
    blocks: tuple[frozenset[int], ...]
    """Each block's forward op ids, blocks in order of their first op."""


def block_levels(graph: RematGraph) -> list[Level]:
    """Levels with at least two blocks, most blocks first.

    A block is the forward ops whose module path starts with a prefix ending in an integer
    component; one level is every such prefix with the same number of components, so ResNet's
    `layer1.0` .. `layer4.2` and T5's `encoder.block.i`, `decoder.block.i` form one level.
    """
    by_depth: dict[int, dict[str, list[int]]] = {}
    for op in graph.ops[: graph.boundary]:
        parts = op.module_path.split(".") if op.module_path else []
        for depth, part in enumerate(parts, start=1):
            if part.isdigit():
                prefix = ".".join(parts[:depth])
                by_depth.setdefault(depth, {}).setdefault(prefix, []).append(op.id)
    levels = [_level(blocks) for blocks in by_depth.values() if len(blocks) >= 2]
    levels.sort(key=lambda level: (-len(level.blocks), level.label))
    return levels[:_LEVELS]


def _level(blocks: dict[str, list[int]]) -> Level:
    containers = {re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", p.rpartition(".")[0]) for p in blocks}
    ordered = sorted(blocks.values(), key=min)
    label = ", ".join(sorted(c or "(root)" for c in containers))
    return Level(label=label, blocks=tuple(frozenset(ops) for ops in ordered))


def boundary_kept(graph: RematGraph, groups: Iterable[frozenset[int]]) -> frozenset[int]:
    """What checkpointing each group keeps: every forward value made outside all groups, and
    every forward-made value that crosses into a group, or out of the groups into the rest."""
    groups = list(groups)
    grouped = frozenset().union(*groups)
    outside = frozenset(range(graph.boundary)) - grouped
    kept = {tensor for op_id in outside for tensor in graph.ops[op_id].outputs}
    for group in (*groups, outside):
        made = {tensor for op_id in group for tensor in graph.ops[op_id].outputs}
        kept.update(t for op_id in group for t in graph.ops[op_id].inputs if t not in made)
    return frozenset(t for t in kept if graph.tensors[t].producer is not None)


def every_kth(level: Level) -> dict[int, tuple[frozenset[int], ...]]:
    """Blocks merged k at a time (k = 2, 3, sqrt(n)): only every k-th block's input is kept."""
    count = len(level.blocks)
    sizes = {k for k in (2, 3, round(math.sqrt(count))) if 2 <= k < count}
    return {
        k: tuple(frozenset().union(*level.blocks[i : i + k]) for i in range(0, count, k))
        for k in sorted(sizes)
    }


def selective_kept(graph: RematGraph, level: Level) -> frozenset[int]:
    """Megatron-style: keep every saved value except the outputs of a block's cheap ops
    (no FLOPs, or few next to the block's mean: pointwise, softmax, norms), views of cheap
    outputs included, views of costly ones not."""
    cheap_ops: set[int] = set()
    for block in level.blocks:
        mean = sum(graph.ops[op_id].flops for op_id in block) / len(block)
        for op_id in block:
            op = graph.ops[op_id]
            if op.flops <= 0 or op.flops < _CHEAP * mean:
                cheap_ops.add(op_id)
    # A view is as cheap as what made its storage: dropping a reshape of a matmul's output
    # frees nothing and recomputes the matmul.
    cheap = {
        tensor
        for op_id in cheap_ops
        for tensor in graph.ops[op_id].outputs
        if graph.tensors[graph.storage_of(tensor)].producer in cheap_ops
    }
    info = structure(graph)
    saved = set(info.saved)
    kept = saved - cheap
    return frozenset(kept | _costly_sources(graph, cheap & saved, kept | info.forced, cheap_ops))


def _costly_sources(
    graph: RematGraph, dropped: set[int], kept: set[int] | frozenset[int], cheap_ops: set[int]
) -> set[int]:
    """What recomputing `dropped` would otherwise remake with a costly op: the values the chains
    of cheap ops that rebuild them start from (a copy of a view of a matmul's output needs that
    output, or the matmul runs again). Keeping them is selective recompute's premise."""
    sources: set[int] = set()
    seen: set[int] = set()
    pending = list(dropped)
    while pending:
        tensor = pending.pop()
        producer = graph.tensors[tensor].producer
        if tensor in seen or producer is None:
            continue
        seen.add(tensor)
        for source in graph.ops[producer].inputs:
            if source in kept or graph.tensors[source].producer is None:
                continue
            if graph.tensors[graph.storage_of(source)].producer in cheap_ops:
                pending.append(source)
            else:
                sources.add(source)
    return sources


def structured_kept_sets(graph: RematGraph) -> list[tuple[frozenset[int], str]]:
    """Per-block, every-k-blocks and selective kept sets for each block level, labelled."""
    found: list[tuple[frozenset[int], str]] = []
    for level in block_levels(graph):
        found.append((boundary_kept(graph, level.blocks), f"per-block: {level.label}"))
        for k, groups in every_kth(level).items():
            found.append((boundary_kept(graph, groups), f"every {k} blocks: {level.label}"))
        found.append((selective_kept(graph, level), f"selective: {level.label}"))
    return found


def structured_family(graph: RematGraph) -> list[tuple[Schedule, str]]:
    """The structured kept sets as lazy schedules; empty for a graph without block paths."""
    if graph.boundary >= len(graph.ops):
        return []
    return [(schedule_from_kept(graph, kept), label) for kept, label in structured_kept_sets(graph)]
