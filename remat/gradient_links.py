"""Which output gradients of a step's graphs are the input gradients a later graph returned.

Between two graphs of a step (a graph break, DDP's buckets, FSDP2's blocks), autograd hands
the gradient graph k+1's backward returns for its input straight to graph k's backward as the
gradient of graph k's output, when nothing else adds to it: one tensor, live from graph k+1's
backward until graph k's has read it. Planned apart, the two graphs count it twice and long
(graph k+1's output to the step's end, graph k's late input from the boundary). The backend
and remat.compile see at run time which it is: each graph's backward records the storages it
received and returned (`GraphIO`), and `gradient_links` matches them, for the step planned
whole (remat.step_graph.combine). A gradient autograd sums or copies is a new storage, not
linked; but a gradient for an input that an earlier graph's forward made is handed to that
graph's backward, which runs before the step ends: the forwards' records say which graph
made each input, and such a gradient is counted until that backward, not to the step's end
(a gradient a user's hook keeps, or `retain_grad()` on a tensor between graphs, is not seen).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from remat.step_links import GradientLink, ReleasedOutput, SourceLink, StepLink
from remat.torch_internals import (
    is_primal,
    is_tangent,
    runs_on_fake_tensors,
    split_joint_outputs,
)

StorageKey = tuple[int, int]
"""A storage as (address, bytes): live storages never share one."""


@dataclass
class GraphIO:
    """Where a graph's compiled forward and backward arguments and results sit in its
    RematGraph, and the storages their last runs took and gave."""

    inputs: tuple[int, ...]
    """Tensor id of each forward argument (the primals, in order)."""
    outputs: tuple[int | None, ...]
    """Tensor id of each of the forward's first results (what the caller gets)."""
    tangents: tuple[int, ...]
    """Tensor id of each of the backward's trailing arguments (its output gradients)."""
    gradients: tuple[int | None, ...]
    """Tensor id of each of the backward's results: the gradient of forward argument i."""
    fed: tuple[StorageKey | None, ...] = ()
    handed: tuple[StorageKey | None, ...] = ()
    received: tuple[StorageKey | None, ...] = ()
    returned: tuple[StorageKey | None, ...] = ()
    outlived: tuple[bool, ...] = ()
    """Per forward output: whether its storage was still held when the last step ended."""
    _handed_storages: tuple[weakref.ref | None, ...] = field(default=(), repr=False)

    def record_forward(
        self, arguments: Sequence[StorageKey | None], results: Sequence[Any]
    ) -> None:
        handed = results[: len(self.outputs)]
        self.fed = tuple(arguments)
        self.handed = tuple(_key(r) for r in handed)
        self._handed_storages = tuple(_weak_storage(r) for r in handed)
        self.outlived = ()

    def step_ended(self) -> None:
        """The step's backward pass has finished: note which forward outputs are still held."""
        storages = self._handed_storages
        if len(storages) == len(self.outputs):
            self.outlived = tuple(ref is None or ref() is not None for ref in storages)

    def record_backward(
        self, arguments: Sequence[StorageKey | None], results: Sequence[Any]
    ) -> None:
        count = len(self.tangents)
        self.received = tuple(
            arguments[len(arguments) - count :] if len(arguments) >= count else ()
        )
        self.returned = tuple(_key(r) for r in results)


Record = Callable[[GraphIO, Sequence[StorageKey | None], Sequence[Any]], None]


def recording(
    compiler: Callable[[fx.GraphModule, Sequence[Any]], Callable],
    io_of: Callable[[], GraphIO | None],
    record: Record,
) -> Callable[[fx.GraphModule, Sequence[Any]], Callable]:
    """`compiler`, whose compiled code records what each run took and gave into `io_of()`
    (read when it runs: the plan is made after the compiler is chosen) with `record`
    (GraphIO.record_forward or record_backward)."""

    def compile_recording(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        compiled = compiler(gm, example_inputs)
        boxed = getattr(compiled, "_boxed_call", False)

        def run(*call: Any) -> Any:
            io = io_of()
            arguments = call[0] if boxed else call
            if io is None or runs_on_fake_tensors(arguments):
                return compiled(*call)
            # Keys only, read before the call: a boxed callee empties its argument list so
            # that each argument is freed after its last use; a reference kept here would not.
            keys = [_key(argument) for argument in arguments]
            results = compiled(*call)
            record(io, keys, results if isinstance(results, list | tuple) else ())
            return results

        run._boxed_call = boxed  # type: ignore[attr-defined]
        return run

    return compile_recording


def gradient_links(ios: Sequence[GraphIO | None]) -> tuple[StepLink, ...]:
    """What the last runs of a step's graphs (in forward order) passed between them: graph j's
    backward result received by graph k < j as an output gradient (GradientLink), and graph
    j's gradient of an input graph k < j's forward made (SourceLink)."""
    links: list[StepLink] = []
    for consumer, io in enumerate(ios):
        if io is None:
            continue
        if len(io.received) == len(io.tangents):
            for late, key in zip(io.tangents, io.received, strict=True):
                found = _returned_by(ios, consumer, key)
                if found is not None:
                    links.append(GradientLink(found[0], found[1], consumer, late))
        if len(io.outlived) == len(io.outputs):
            for output, held in zip(io.outputs, io.outlived, strict=True):
                if output is not None and not held:
                    links.append(ReleasedOutput(consumer, output))
        if len(io.fed) == len(io.inputs) == len(io.gradients):
            for gradient, key in zip(io.gradients, io.fed, strict=True):
                source = _handed_by(ios, consumer, key)
                if gradient is not None and source is not None:
                    links.append(SourceLink(source, consumer, gradient))
    return tuple(links)


def _returned_by(
    ios: Sequence[GraphIO | None], consumer: int, key: StorageKey | None
) -> tuple[int, int] | None:
    if key is None:
        return None
    for producer in range(consumer + 1, len(ios)):  # the nearest later graph first
        io = ios[producer]
        if io is None or len(io.returned) != len(io.gradients):
            continue
        for gradient, returned in zip(io.gradients, io.returned, strict=True):
            if gradient is not None and returned == key:
                return producer, gradient
    return None


def _handed_by(ios: Sequence[GraphIO | None], consumer: int, key: StorageKey | None) -> int | None:
    if key is None:
        return None
    for source in reversed(range(consumer)):  # the nearest earlier graph first
        io = ios[source]
        if io is not None and key in io.handed:
            return source
    return None


def _weak_storage(value: Any) -> weakref.ref | None:
    if not isinstance(value, torch.Tensor):
        return None
    return weakref.ref(value.untyped_storage())


def _key(value: Any) -> StorageKey | None:
    if not isinstance(value, torch.Tensor):
        return None
    storage = value.untyped_storage()
    if storage.nbytes() == 0 or storage.data_ptr() == 0:
        return None
    return storage.data_ptr(), storage.nbytes()


def graph_io(
    joint: fx.GraphModule, tensor_nodes: Sequence[fx.Node | None], num_fwd_outputs: int
) -> GraphIO:
    """Where the compiled forward and backward of `joint` (as remat.rewrite builds them: the
    forward takes the primals and returns the outputs, then saved values; the backward takes
    saved values, then the output gradients, and returns the primals' gradients) sit in a
    capture with `tensor_nodes`."""
    ids = {node: tensor for tensor, node in enumerate(tensor_nodes) if node is not None}
    placeholders = list(joint.graph.find_nodes(op="placeholder"))
    outputs, results, _, _ = split_joint_outputs(joint, num_fwd_outputs=num_fwd_outputs)

    def id_of(node: Any) -> int | None:
        return ids.get(node) if isinstance(node, fx.Node) else None

    return GraphIO(
        inputs=tuple(ids[n] for n in placeholders if is_primal(n)),
        outputs=tuple(id_of(n) for n in outputs),
        tangents=tuple(ids[n] for n in placeholders if is_tangent(n)),
        gradients=tuple(id_of(n) for n in results),
    )
