"""What run time showed of the tensors passed between a step's graphs (no torch).

Planned apart, each graph counts its outputs to the step's end and its output gradients from
the step's boundary (remat.step_graph's conservative assumptions). remat.gradient_links watches
the graphs run and reports where they were one tensor, or released early; `apply_links` turns
that into reads in the combined graph, so the step's plan counts each value once and for as
long as it is really held:

- `GradientLink`: graph k's output gradient is the very tensor graph j > k's backward returned
  (autograd handed it on): read as that tensor, from graph j's backward to graph k's end;
- `SourceLink`: graph j's gradient of an input graph k < j's forward made ends with graph k's
  backward, which autograd hands it to (or a sum of it);
- `ReleasedOutput`: graph k's forward output nothing held once the step ended is held until
  graph k's backward has run (the nodes that saved it run before), not to the step's end.

Every graph's output gradients are read by its last backward op: AOTAutograd's backward holds
them until it returns (the autograd call's argument tuple), not only until their last read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from remat.ir import Op, RematGraph


@dataclass(frozen=True)
class GradientLink:
    """Graph `consumer`'s late input `late` (an output gradient) is the very tensor graph
    `producer`'s backward returned as `gradient`: autograd handed it on, as run time showed.
    Tensor ids are each graph's own; `producer` > `consumer` (later graphs' backwards run
    first)."""

    producer: int
    gradient: int
    consumer: int
    late: int

    def fits(self, graphs: Sequence[RematGraph]) -> bool:
        """Whether the link names a backward output and a late input of those graphs, one
        storage of the same size (a link that does not fit is ignored: conservative)."""
        if not 0 <= self.consumer < self.producer < len(graphs):
            return False
        made, taken = graphs[self.producer], graphs[self.consumer]
        if self.gradient not in made.outputs or self.gradient in made.forward_outputs:
            return False
        if self.late not in taken.late_inputs:
            return False
        a, b = made.tensors[self.gradient], taken.tensors[self.late]
        return a.alias_of is None and b.alias_of is None and a.bytes == b.bytes


@dataclass(frozen=True)
class SourceLink:
    """Graph `consumer`'s result `gradient` is the gradient of an input that graph `source`'s
    forward made (as run time showed): autograd hands it to graph `source`'s backward, so it is
    gone once that backward has run, not held to the step's end. `source` < `consumer`."""

    source: int
    consumer: int
    gradient: int

    def fits(self, graphs: Sequence[RematGraph]) -> bool:
        if not 0 <= self.source < self.consumer < len(graphs):
            return False
        made = graphs[self.consumer]
        has_backward = graphs[self.source].boundary < len(graphs[self.source].ops)
        return (
            has_backward
            and self.gradient in made.outputs
            and (self.gradient not in made.forward_outputs)
        )


@dataclass(frozen=True)
class ReleasedOutput:
    """Graph `graph`'s forward output `output` was no longer held when the step ended (run time
    showed it): neither the caller nor anything after the step held it, so what held it was
    the forward's code or autograd, which lets it go by the end of graph `graph`'s backward
    (every node that saved it runs before it). Held until then, not to the step's end."""

    graph: int
    output: int

    def fits(self, graphs: Sequence[RematGraph]) -> bool:
        if not 0 <= self.graph < len(graphs):
            return False
        made = graphs[self.graph]
        return made.boundary < len(made.ops) and self.output in made.forward_outputs


StepLink = GradientLink | SourceLink | ReleasedOutput


@dataclass
class LinkedReads:
    """The links applied to a combined graph's numbering (combined ids throughout)."""

    reads: list[list[int]]
    """Per graph: its tensor id -> the combined tensor its ops read."""
    not_held_to_end: set[int] = field(default_factory=set)
    """Combined tensors that are no longer outputs of the step."""
    relinked_late: set[int] = field(default_factory=set)
    """Combined late inputs read as another graph's gradient: no longer late inputs."""
    held_until: dict[int, set[int]] = field(default_factory=dict)
    """Combined op id -> tensors it reads last (besides its own inputs)."""
    pinned: set[int] = field(default_factory=set)
    """Combined op ids that may not be recomputed."""

    def applied(self, ops: Sequence[Op]) -> tuple[Op, ...]:
        """The combined ops with the extra reads and pins."""
        linked = []
        for op in ops:
            extra = sorted(self.held_until.get(op.id, set()) - set(op.inputs))
            if extra:
                op = replace(op, inputs=(*op.inputs, *extra))
            if op.id in self.pinned:
                op = replace(op, recomputable=False)
            linked.append(op)
        return tuple(linked)


def apply_links(
    graphs: Sequence[RematGraph],
    tensor_ids: Sequence[Sequence[int]],
    op_ids: Sequence[Sequence[int]],
    links: Sequence[StepLink],
) -> LinkedReads:
    """`links` (those that fit) in the combined numbering given by `tensor_ids` and `op_ids`."""
    linked = LinkedReads([list(ids) for ids in tensor_ids])
    reads = linked.reads

    def hold_until_end_of(graph: int, tensor: int) -> None:
        last = op_ids[graph][len(graphs[graph].ops) - 1]
        linked.held_until.setdefault(last, set()).add(tensor)

    # Later graphs first: a gradient that is its graph's own late input passed through is
    # read as whatever that late input was linked to.
    gradients = sorted((g for g in links if isinstance(g, GradientLink)), key=lambda g: -g.consumer)
    others = [link for link in links if not isinstance(link, GradientLink)]
    for link in (*gradients, *others):
        if not link.fits(graphs):
            continue
        if isinstance(link, GradientLink):
            reads[link.consumer][link.late] = reads[link.producer][link.gradient]
            linked.relinked_late.add(tensor_ids[link.consumer][link.late])
            linked.not_held_to_end.add(tensor_ids[link.producer][link.gradient])
        elif isinstance(link, SourceLink):
            hold_until_end_of(link.source, reads[link.consumer][link.gradient])
            linked.not_held_to_end.add(tensor_ids[link.consumer][link.gradient])
        else:
            hold_until_end_of(link.graph, tensor_ids[link.graph][link.output])
            linked.not_held_to_end.add(tensor_ids[link.graph][link.output])
            producer = graphs[link.graph].tensors[link.output].producer
            if producer is not None:
                # The output the forward handed out is the value held: a recomputation of it
                # would not free it (the simulator would let it go at its last read).
                linked.pinned.add(op_ids[link.graph][producer])
    for k, graph in enumerate(graphs):
        if graph.boundary < len(graph.ops):
            for late in graph.late_inputs:
                hold_until_end_of(k, reads[k][late])
    return linked
