"""Tiny graph builders for the solver tests: chains with exact costs, random fwd/bwd DAGs."""

from __future__ import annotations

import random
from collections.abc import Sequence

from remat.ir import Op, Phase, RematGraph, Tensor


class GraphBuilder:
    """Builds a RematGraph op by op, in reference order."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.ops: list[Op] = []
        self.tensors: list[Tensor] = []
        self.inputs: list[int] = []
        self.late: list[int] = []
        self.boundary: int | None = None

    def tensor(self, name: str, size: int, producer: int | None, alias_of: int | None) -> int:
        self.tensors.append(Tensor(len(self.tensors), name, size, producer, alias_of))
        return len(self.tensors) - 1

    def input(self, name: str, size: int = 0, late: bool = False) -> int:
        tensor = self.tensor(name, size, None, None)
        (self.late if late else self.inputs).append(tensor)
        return tensor

    def start_backward(self) -> None:
        self.boundary = len(self.ops)

    def op(
        self,
        name: str,
        inputs: Sequence[int],
        size: int,
        time: float = 1.0,
        *,
        view_of: int | None = None,
        recomputable: bool = True,
        transient: int = 0,
        outputs: int = 1,
    ) -> int:
        """Add an op with `outputs` outputs of `size` bytes each; return the first output's id."""
        op_id = len(self.ops)
        first = len(self.tensors)
        for index in range(outputs):
            base = None if view_of is None else self.tensors[view_of].alias_of or view_of
            suffix = "" if outputs == 1 else f".{index}"
            self.tensor(name + suffix, 0 if view_of is not None else size, op_id, base)
        phase = Phase.FORWARD if self.boundary is None else Phase.BACKWARD
        self.ops.append(
            Op(
                id=op_id,
                name=name,
                kind="test",
                inputs=tuple(inputs),
                outputs=tuple(range(first, first + outputs)),
                time=time,
                flops=int(time * 1000),
                phase=phase,
                recomputable=recomputable,
                transient_bytes=transient,
            )
        )
        return first

    def build(
        self,
        outputs: Sequence[int] = (),
        forward_outputs: Sequence[int] = (),
        reserve: int = 0,
        backward_reserve: int = 0,
    ) -> RematGraph:
        return RematGraph(
            ops=tuple(self.ops),
            tensors=tuple(self.tensors),
            boundary=len(self.ops) if self.boundary is None else self.boundary,
            inputs=tuple(self.inputs),
            late_inputs=tuple(self.late),
            outputs=tuple(outputs),
            forward_outputs=tuple(forward_outputs),
            boundary_reserve=reserve,
            backward_reserve=backward_reserve,
            name=self.name,
        )


def chain(
    length: int, size: int = 100, time: float = 1.0, grad_size: int | None = None
) -> RematGraph:
    """An MLP-like chain: f_i reads a_{i-1}; the backward g_i reads a_{i-1} and the grad."""
    grad_size = size if grad_size is None else grad_size
    builder = GraphBuilder(f"chain{length}")
    x = builder.input("x")
    activations = [x]
    for index in range(length):
        activations.append(builder.op(f"f{index}", [activations[-1]], size, time))
    builder.start_backward()
    grad = builder.input("tangent", grad_size, late=True)
    for index in reversed(range(length)):
        grad = builder.op(f"g{index}", [grad, activations[index]], grad_size, time)
    return builder.build(outputs=[grad])


def random_training_graph(seed: int | random.Random, forward_ops: int = 8) -> RematGraph:
    """A random forward DAG and a mirrored backward that reads the forward values it needs."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    builder = GraphBuilder(f"random{seed}")
    x = builder.input("x", 0)
    weight = builder.input("w", 0)
    values = [x]
    fwd_inputs: list[list[int]] = []
    for index in range(forward_ops):
        picks = sorted(set(rng.sample(values, min(len(values), rng.choice([1, 1, 2])))))
        if rng.random() < 0.15 and values[-1] != x:
            out = builder.op(f"view{index}", [values[-1]], 0, 0.01, view_of=values[-1])
            picks = [values[-1]]
        else:
            size = rng.choice([10, 20, 40, 80, 160])
            out = builder.op(
                f"f{index}",
                [*picks, weight],
                size,
                rng.choice([0.5, 1.0, 2.0, 4.0]),
                recomputable=rng.random() > 0.05,
                transient=rng.choice([0, 0, 0, 5]),
            )
        fwd_inputs.append(picks)
        values.append(out)
    loss = builder.op("loss", [values[-1]], 4, 0.5)
    builder.start_backward()
    grad = builder.input("tangent", 4, late=True)
    grads = []
    for index in reversed(range(forward_ops)):
        reads = [grad, *[t for t in fwd_inputs[index] if t != x]]
        if rng.random() < 0.5:
            reads.append(values[index + 1])
        grad = builder.op(f"g{index}", reads, rng.choice([10, 40, 80]), 1.0)
        if rng.random() < 0.3:
            grads.append(builder.op(f"dw{index}", [grad], 8, 0.5))
    return builder.build(
        outputs=[loss, grad, *grads],
        forward_outputs=[loss],
        reserve=rng.choice([0, 0, 8]),
        backward_reserve=rng.choice([0, 0, 6]),
    )
