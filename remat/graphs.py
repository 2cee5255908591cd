"""The rematerialization literature's benchmark graphs, as RematGraphs (issue 6).

Files are networkx node-link JSON (see ../shared/remat-graphs/README.md): Checkmate's training
graphs (`cost_cpu`, `cost_ram`) and Moccasin's random layered DAGs (`duration`, `out_cost`, the
reference order in `graph["order"]`). One op per node, in the reference topological order, with
one output tensor whose bytes are the node's output size; every node's output is read by its
successors; nothing is kept to the end and there is no backward part (boundary = number of ops),
which makes the simulator's memory model the README's:
memory at step j = the output of step j + every earlier output some step >= j still reads.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import networkx as nx

from remat.ir import Op, Plan, RematGraph, Tensor
from remat.solvers import keep_all_plan, solve

_COST_KEYS = ("cost_cpu", "duration")
_SIZE_KEYS = ("cost_ram", "out_cost")


def read_networkx(path: str | os.PathLike[str]) -> nx.DiGraph:
    """The file as networkx loads it per the README (random layered graphs: edges '0' -> '1')."""
    with open(path) as handle:
        data = json.load(handle)
    links = data.get("links") or data.get("edges") or []
    if links and "0" in links[0]:
        return nx.node_link_graph(
            data, directed=True, multigraph=False, source="0", target="1", edges="links"
        )
    return nx.node_link_graph(data, directed=True, multigraph=False, edges="links")


def reference_order(network: nx.DiGraph) -> list[Hashable]:
    """`graph['order']` when the file has one, else the lexicographic topological order."""
    order = network.graph.get("order")
    if order is not None:
        return list(order)
    return list(nx.lexicographical_topological_sort(network))


def _attribute(attributes: dict[str, object], keys: tuple[str, ...], node: Hashable) -> int:
    for key in keys:
        if key in attributes:
            return int(attributes[key])  # type: ignore[call-overload]
    raise ValueError(f"node {node!r} has none of the attributes {', '.join(keys)}")


def graph_from_networkx(network: nx.DiGraph, name: str = "graph") -> RematGraph:
    order = reference_order(network)
    position = {node: index for index, node in enumerate(order)}
    ops, tensors = [], []
    for index, node in enumerate(order):
        attributes = network.nodes[node]
        tensors.append(Tensor(index, str(node), _attribute(attributes, _SIZE_KEYS, node), index))
        inputs = tuple(sorted(position[p] for p in network.predecessors(node)))
        if any(p >= index for p in inputs):
            raise ValueError(f"the reference order runs {node!r} before one of its inputs")
        ops.append(
            Op(
                id=index,
                name=str(node),
                kind="node",
                inputs=inputs,
                outputs=(index,),
                time=float(_attribute(attributes, _COST_KEYS, node)),
            )
        )
    return RematGraph(ops=tuple(ops), tensors=tuple(tensors), boundary=len(ops), name=name)


def load_literature_graph(path: str | os.PathLike[str]) -> RematGraph:
    network = read_networkx(path)
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return graph_from_networkx(network, name)


def topo_peak(graph: RematGraph) -> int:
    """Peak of the reference order with no recomputation (the literature's `topo_peak`)."""
    return keep_all_plan(graph).predicted_peak


def literature_budget(graph: RematGraph, fraction: float) -> int:
    """The literature's budget: ceil(fraction * topo_peak)."""
    return math.ceil(fraction * topo_peak(graph))


def node_order(graph: RematGraph, schedule: Sequence[int]) -> list[int | str]:
    """A schedule as the file's node ids (ints where the ids are integers)."""
    names = [graph.ops[op_id].name for op_id in schedule]
    return [int(name) if name.lstrip("-").isdigit() else name for name in names]


@dataclass(frozen=True)
class Score:
    cost: int
    """Sum of the compute costs of every step (recomputations included)."""
    peak: int


def score_schedule(network: nx.DiGraph, order: Sequence[Hashable]) -> Score:
    """Re-score `order` under the README's memory model, independently of the simulator.

    Raises ValueError if a node runs before one of its inputs was computed, or never runs.
    """
    missing = set(network.nodes) - set(order)
    if missing:
        raise ValueError(f"{len(missing)} nodes never run, e.g. {sorted(map(str, missing))[:3]}")
    last_made: dict[Hashable, int] = {}
    serves: list[list[int]] = [[] for _ in order]
    for step, node in enumerate(order):
        for source in network.predecessors(node):
            if source not in last_made:
                raise ValueError(f"step {step} runs {node!r} before its input {source!r}")
            serves[last_made[source]].append(step)
        last_made[node] = step
    sizes = [_attribute(network.nodes[node], _SIZE_KEYS, node) for node in order]
    delta = [0] * (len(order) + 1)
    for step, readers in enumerate(serves):
        delta[step] += sizes[step]
        delta[max(readers, default=step) + 1] -= sizes[step]
    peak = live = 0
    for change in delta[:-1]:
        live += change
        peak = max(peak, live)
    cost = sum(_attribute(network.nodes[node], _COST_KEYS, node) for node in order)
    return Score(cost=cost, peak=peak)


@dataclass(frozen=True)
class NodeFloor:
    bytes: int
    """The node's inputs plus its output: memory at every step that runs it."""
    node: int
    """Op id of the node with the largest such demand."""


def node_floor(graph: RematGraph) -> NodeFloor:
    """A proven floor under the README's model: a step that runs node v holds v's output and
    every input v consumes there, however often anything is recomputed, and every node runs at
    least once; so no schedule peaks below the largest such sum."""
    demands = [
        (sum(graph.tensors[t].bytes for t in {*op.inputs, *op.outputs}), op.id) for op in graph.ops
    ]
    size, node = max(demands, default=(0, -1))
    return NodeFloor(size, node)


def proven_infeasible(graph: RematGraph, budget: int) -> str | None:
    """Why no schedule fits `budget`, when node_floor proves it; None otherwise."""
    floor = node_floor(graph)
    if floor.bytes <= budget:
        return None
    op = graph.ops[floor.node]
    return (
        f"node {op.name} consumes {len(set(op.inputs))} inputs; with its output that is "
        f"{floor.bytes} bytes at any step that runs it, above the budget {budget}"
    )


LITERATURE_CONFIG: dict[str, object] = {"copies": 3, "local_copies": 5, "workers": 2}
"""ilp settings for these graphs: recomputing a node twice pays on them (the CP-SAT model
allows 3 executions per node, the local search 5: see IlpConfig.local_copies), and this
machine has two cores."""


def solve_literature(
    path: str | os.PathLike[str],
    budget_fraction: float,
    time_limit: float = 60.0,
    **config: object,
) -> Plan:
    """Solve one benchmark instance with `ilp` at ceil(budget_fraction * topo_peak).

    `time_limit` covers loading the file too. `config` overrides LITERATURE_CONFIG (e.g.
    workers=1 for a deterministic run).
    """
    start = time.perf_counter()
    graph = load_literature_graph(path)
    budget = literature_budget(graph, budget_fraction)
    left = max(0.1, time_limit - (time.perf_counter() - start))
    return solve(graph, budget, "ilp", time_limit=left, **{**LITERATURE_CONFIG, **config})
