"""Results computed once per RematGraph object, and dropped when that graph is collected.

Keyed by identity (hashing a big frozen graph costs more than most of what is cached), holding
the graph only weakly: no solver cache outlives the graph it was made for. A cached value must
not refer to its graph, or the graph stays alive through the cache.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from remat.ir import RematGraph

T = TypeVar("T")


class PerGraph(Generic[T]):
    """`function(graph)`, computed once per live graph object."""

    def __init__(self, function: Callable[[RematGraph], T]) -> None:
        self._function = function
        self._entries: dict[int, tuple[weakref.ref[RematGraph], T]] = {}
        functools.update_wrapper(self, function)

    def __call__(self, graph: RematGraph) -> T:
        key = id(graph)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is graph:
            return entry[1]
        value = self._function(graph)
        self._entries[key] = (weakref.ref(graph, self._forgetter(key)), value)
        return value

    def __len__(self) -> int:
        """Graphs with an entry (each alive: an entry goes when its graph is collected)."""
        return len(self._entries)

    def _forgetter(self, key: int) -> Callable[[weakref.ref[RematGraph]], None]:
        # The callback holds the key, never the graph (a closure over the graph would keep it
        # alive for ever), and drops only its own entry, not a later graph's that reused the id.
        entries = self._entries

        def forget(ref: weakref.ref[RematGraph]) -> None:
            entry = entries.get(key)
            if entry is not None and entry[0] is ref:
                del entries[key]

        return forget


def per_graph(function: Callable[[RematGraph], T]) -> PerGraph[T]:
    """Decorator: cache `function` per graph object, for as long as the graph lives."""
    return PerGraph(function)
