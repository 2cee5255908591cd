"""The gap relaxation's data (bound.py): the gaps between a stored value's reads and the
demand no plan avoids, per step."""

from __future__ import annotations

from dataclasses import dataclass

from remat.ir import RematGraph
from remat.solvers.ilp_problem import Problem


@dataclass(frozen=True)
class Gap:
    tensor: int
    producer: int
    after: int
    """Position of the production or read that opens the gap."""
    before: int
    """Position of the read that closes it (len(ops) for the end of the step)."""
    size: int
    """Memory units."""
    holds_boundary: bool = True
    """Whether the value is held between the parts when the gap spans them (the forward part of
    a forward output's gap is not: what is held there is the instance returned, fixed)."""

    def spans(self, boundary: int) -> bool:
        """Whether the gap's value is held at the boundary unless the gap is dropped."""
        return self.holds_boundary and self.after < boundary <= self.before


@dataclass(frozen=True)
class Relaxation:
    gaps: tuple[Gap, ...]
    fixed: tuple[int, ...]
    """Per position (the last entry is the boundary): memory units no plan avoids there."""
    problem: Problem

    def floor_units(self) -> int:
        return max(self.fixed, default=0)


def with_storages(graph: RematGraph, tensors: tuple[int, ...]) -> frozenset[int]:
    """`tensors` and the storages they view: a returned view holds its base's storage to the
    end (the simulator counts it there)."""
    return frozenset((*tensors, *(graph.storage_of(t) for t in tensors)))


def reference_last_reads(graph: RematGraph) -> dict[int, int]:
    """Last position each tensor (and the storage a read view holds) is read or produced in the
    reference order; len(ops) for what the step returns."""
    last: dict[int, int] = {}
    for op in graph.ops:
        for tensor in op.outputs:
            last[tensor] = op.id
        for tensor in op.inputs:
            last[tensor] = last[graph.storage_of(tensor)] = op.id
    for tensor in with_storages(graph, graph.outputs):
        last[tensor] = len(graph.ops)
    return last


def alike_gaps(relaxed: Relaxation, classes: tuple[tuple[int, ...], ...]) -> list[list[int]]:
    """Indices of the gaps to decide together: the k-th gap of every tensor of a class of
    `classes` (template.py: the same value of every repeated block), where those tensors have
    as many gaps each."""
    class_of = {t: c for c, members in enumerate(classes) if len(members) > 1 for t in members}
    of_tensor: dict[int, list[int]] = {}
    for index, gap in enumerate(relaxed.gaps):
        if gap.tensor in class_of:
            of_tensor.setdefault(gap.tensor, []).append(index)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for tensor, indices in of_tensor.items():
        indices.sort(key=lambda index: relaxed.gaps[index].after)
        for ordinal, index in enumerate(indices):
            groups.setdefault((class_of[tensor], ordinal, len(indices)), []).append(index)
    return [indices for indices in groups.values() if len(indices) > 1]
