"""remat.solvers._per_graph: solver caches live exactly as long as their graph."""

from __future__ import annotations

import gc

from factories import chain

from remat.solvers import find_floor, solve
from remat.solvers._fastsim import _layout
from remat.solvers._per_graph import per_graph
from remat.solvers.heuristics import budget_free_plans
from remat.solvers.lazy import structure


def test_a_value_is_computed_once_per_graph_and_forgotten_with_it() -> None:
    calls = []

    @per_graph
    def size(graph):  # type: ignore[no-untyped-def]
        calls.append(graph.name)
        return len(graph.ops)

    graph = chain(3)
    assert size(graph) == size(graph) == 6
    assert calls == ["chain3"] and len(size) == 1
    other = chain(4)
    assert size(other) == 8 and len(size) == 2
    del graph
    gc.collect()
    assert len(size) == 1
    assert size(other) == 8 and calls == ["chain3", "chain4"]


def test_an_equal_but_distinct_graph_is_a_new_entry() -> None:
    @per_graph
    def ident(graph):  # type: ignore[no-untyped-def]
        return object()

    a, b = chain(3), chain(3)
    assert a == b and ident(a) is not ident(b)


def test_solving_many_graphs_leaves_no_cache_behind() -> None:
    caches = (_layout, budget_free_plans, structure)
    before = [len(cache) for cache in caches]
    for length in range(2, 12):
        graph = chain(length)
        solve(graph, 10**6, workers=1)
        find_floor(graph, time_limit=1.0)
        grew = [len(cache) > count for cache, count in zip(caches, before)]
        assert all(grew), grew
    del graph
    gc.collect()
    assert [len(cache) for cache in caches] == before
