"""Profiler ranges around the recomputations of a rewritten graph run as fx code.

Each maximal run of recomputed nodes (remat.rewrite marks them) is wrapped in a
`remat::recompute` range, so a torch.profiler trace of a training step shows where and for how
long the plan recomputes (`recompute_seconds` sums them). With no profiler running, a range
costs two Python calls that return at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx

from remat.rewrite import RECOMPUTED
from remat.torch_internals import profiler_enabled

RANGE_NAME = "remat::recompute"


def range_begins() -> Any:
    """The open range's handle, or None when no profiler is running."""
    if not profiler_enabled():
        return None
    return torch.ops.profiler._record_function_enter_new.default(RANGE_NAME, None)


def range_ends(handle: Any) -> None:
    if handle is not None:
        torch.ops.profiler._record_function_exit._RecordFunction(handle)


def label_recomputations(graph: fx.Graph) -> int:
    """Wrap each run of consecutive recomputed nodes of `graph` in a range; the count of runs."""
    runs = _runs(graph.nodes)
    for first, last in runs:
        with graph.inserting_before(first):
            handle = graph.call_function(range_begins)
        with graph.inserting_after(last):
            graph.call_function(range_ends, (handle,))
    return len(runs)


def _runs(nodes: Iterable[fx.Node]) -> list[tuple[fx.Node, fx.Node]]:
    runs: list[tuple[fx.Node, fx.Node]] = []
    first = last = None
    for node in nodes:
        if node.meta.get(RECOMPUTED, False):
            first = first or node
            last = node
        elif first is not None:
            runs.append((first, last))
            first = last = None
    if first is not None:
        runs.append((first, last))
    return runs


def recompute_seconds(events: Iterable[Any]) -> float:
    """Seconds spent in remat's recompute ranges among a profiler's events."""
    return sum(e.time_range.elapsed_us() for e in events if e.name == RANGE_NAME) / 1e6
