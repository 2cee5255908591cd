"""Where the step's memory goes: the bytes live at the keep-all peak, by module path and by op."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from torch import nn

from remat.analysis.step import CapturedStep, held_bytes
from remat.ir import RematGraph
from remat.simulate import simulation_of

TOP_LEVEL = "(top level)"
"""Module path shown for ops traced outside any submodule (the model's own forward)."""
INCOMING_GRADS = "(incoming output gradients)"
CALLER = "(caller: loss and its gradient)"
OTHER_GRAPHS = "(held by other graphs)"


@dataclass(frozen=True)
class Consumer:
    name: str
    bytes: int
    tensors: int


@dataclass(frozen=True)
class PeakBreakdown:
    """The values live when the keep-all step peaks, grouped two ways; both sum to `peak`."""

    peak: int
    graph: str
    step: int
    """Index in the graph's reference order (-1: between forward and backward)."""
    op: str
    """The op running at the peak ('' at the boundary)."""
    by_module: tuple[Consumer, ...]
    by_op: tuple[Consumer, ...]


@dataclass(frozen=True)
class ModelBytes:
    parameters: int
    gradients: int
    """Bytes of the gradients backward produces (trainable parameters)."""
    buffers: int
    inputs: int
    activations: int
    """Bytes the keep-all step holds from forward to backward (saved for backward)."""


def model_bytes(model: nn.Module, inputs: list, step: CapturedStep) -> ModelBytes:
    params = list(model.parameters())
    saved = sum(g.simulation.saved_bytes for g in step.graphs)
    return ModelBytes(
        parameters=sum(p.numel() * p.element_size() for p in params),
        gradients=sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        buffers=sum(b.numel() * b.element_size() for b in model.buffers()),
        inputs=sum(x.numel() * x.element_size() for x in inputs),
        activations=saved,
    )


def peak_breakdown(step: CapturedStep) -> PeakBreakdown:
    """What is live at the keep-all step's peak (in the graph where the step peaks)."""
    plans = step.keep_all_plans
    held = held_bytes(step, plans)
    index = max(range(len(plans)), key=lambda i: plans[i].predicted_peak + held[i])
    graph = step.graphs[index].captured.graph
    sim = simulation_of(graph, plans[index])
    modules: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for tensor, size in _live_at(graph, sim.peak_step):
        producer = graph.tensors[tensor].producer
        if producer is None:
            module, kind = INCOMING_GRADS, INCOMING_GRADS
        else:
            op = graph.ops[producer]
            module, kind = op.module_path or TOP_LEVEL, op.kind
        for table, key in ((modules, module), (kinds, kind)):
            table[key][0] += size
            table[key][1] += 1
    extras = _extras(graph, sim.peak_step) + [(OTHER_GRAPHS, held[index])]
    for name, size in extras:
        if size:
            for table in (modules, kinds):
                table[name][0] += size
    op_name = graph.ops[sim.peak_step].name if sim.peak_step >= 0 else ""
    return PeakBreakdown(
        peak=sim.peak + held[index],
        graph=graph.name,
        step=sim.peak_step,
        op=op_name,
        by_module=_ranked(modules),
        by_op=_ranked(kinds),
    )


def _extras(graph: RematGraph, step: int) -> list[tuple[str, int]]:
    """Bytes at `step` that belong to no tensor: the running op's scratch, the caller's hold."""
    if step < 0:
        return [(CALLER, graph.boundary_reserve + graph.backward_reserve)]
    op = graph.ops[step]
    caller = graph.backward_reserve if step >= graph.boundary else 0
    return [(f"(scratch of {op.kind})", op.transient_bytes), (CALLER, caller)]


def _ranked(table: dict[str, list[int]]) -> tuple[Consumer, ...]:
    ordered = sorted(table.items(), key=lambda item: (-item[1][0], item[0]))
    return tuple(Consumer(name, size, count) for name, (size, count) in ordered if size)


def _live_at(graph: RematGraph, step: int) -> list[tuple[int, int]]:
    """(storage-owning tensor, bytes) live at `step` of the reference order (-1: boundary).

    The same liveness the simulator uses for a schedule that runs every op once: storage from
    its producer (late inputs: from the boundary) to the last read of it or of any view of it;
    step outputs to the end.
    """
    end = len(graph.ops) - 1
    last = [-2] * len(graph.tensors)
    for op in graph.ops:
        for tensor in (*op.inputs, *op.outputs):
            owner = graph.storage_of(tensor)
            last[owner] = max(last[owner], op.id)
    for tensor in graph.outputs:
        last[graph.storage_of(tensor)] = end
    inputs, late = set(graph.inputs), set(graph.late_inputs)
    live = []
    for tensor in graph.tensors:
        if tensor.alias_of is not None or tensor.id in inputs or not tensor.bytes:
            continue
        start = graph.boundary if tensor.id in late else tensor.producer
        if start is None:
            continue
        if step < 0:
            alive = start < graph.boundary <= last[tensor.id] or tensor.id in late
        else:
            alive = start <= step <= last[tensor.id]
        if alive:
            live.append((tensor.id, tensor.bytes))
    return live
