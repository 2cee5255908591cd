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


def attention_core(masked: bool = False, backward_size: int = 15) -> RematGraph:
    """An expensive product (the scores) under two cheap ops whose last output the backward
    reads, while a big backward value (`backward_size`) runs; the product and the scaled scores
    die in the forward, so remaking the probabilities later means remaking the whole chain.
    `masked`: a mask beside the scores, read by the scaling too; the ops are then 0-5 forward
    (scores, mask, scaled, probs, out, loss) and 6-9 backward (g_big, g_out, g_probs, g_x)."""
    builder = GraphBuilder("masked attention core" if masked else "attention core")
    x = builder.input("x")
    scores = builder.op("scores", [x], 10, 10.0)
    mask = [builder.op("mask", [x], 4, 0.1)] if masked else []
    scaled = builder.op("scaled", [scores, *mask], 10, 1.0)
    probs = builder.op("probs", [scaled], 10, 1.0)
    out = builder.op("out", [probs], 2, 1.0)
    loss = builder.op("loss", [out], 1, 0.5)
    builder.start_backward()
    grad = builder.input("tangent", 1, late=True)
    big = builder.op("g_big", [grad], backward_size, 1.0)
    g_out = builder.op("g_out", [big], 2, 1.0)
    g_probs = builder.op("g_probs", [g_out, probs], 10, 1.0)
    builder.op("g_x", [g_probs], 1, 1.0)
    return builder.build(outputs=[loss], forward_outputs=[loss])


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


def random_general_graph(rng: random.Random, ops: int = 10) -> RematGraph:
    """Any shape the IR allows: multi-output ops, views of produced values and of (late) inputs,
    late inputs read only after the boundary, random outputs, reserves and transients."""
    builder = GraphBuilder("general")
    values = [builder.input(f"x{i}", rng.choice([0, 0, 16])) for i in range(rng.randint(1, 2))]
    forward = rng.randint(1, max(1, ops - 1))
    late: list[int] = []
    for index in range(ops):
        if index == forward:
            builder.start_backward()
            late = [builder.input(f"t{i}", rng.choice([0, 4, 12]), late=True) for i in range(2)]
            late = late[: rng.randint(0, 2)]
            values.extend(late)
        readable = values if index >= forward else [v for v in values if v not in late]
        picks = rng.sample(readable, min(len(readable), rng.randint(1, 3)))
        owners = [v for v in picks if builder.tensors[v].alias_of is None]
        view_of = rng.choice(owners) if owners and rng.random() < 0.2 else None
        out = builder.op(
            f"op{index}",
            picks,
            rng.choice([0, 4, 8, 24, 64]),
            rng.choice([0.25, 1.0, 3.0]),
            view_of=view_of,
            recomputable=rng.random() > 0.1,
            transient=rng.choice([0, 0, 7]),
            outputs=1 if view_of is not None else rng.choice([1, 1, 2]),
        )
        values.extend(t.id for t in builder.tensors[out:])
    if builder.boundary is None:
        builder.start_backward()
    produced = [t.id for t in builder.tensors if t.producer is not None]
    outputs = rng.sample(produced, rng.randint(0, min(3, len(produced))))
    boundary = len(builder.ops) if builder.boundary is None else builder.boundary
    forward_outputs = [t for t in outputs if builder.tensors[t].producer < boundary]
    return builder.build(
        outputs=outputs,
        forward_outputs=rng.sample(forward_outputs, rng.randint(0, len(forward_outputs))),
        reserve=rng.choice([0, 0, 5]),
        backward_reserve=rng.choice([0, 0, 3]),
    )


def random_schedule(graph: RematGraph, rng: random.Random) -> tuple[list[int], int]:
    """A random execution order that runs every op at least once, recomputes some, and places
    the boundary at a random point that is mostly valid (keep those the simulator accepts)."""
    pending = set(range(len(graph.ops)))
    done: set[int] = set()
    available = set(graph.inputs) | set(graph.late_inputs)
    schedule: list[int] = []
    while pending:
        ready = [o for o in range(len(graph.ops)) if set(graph.ops[o].inputs) <= available]
        fresh = [o for o in ready if o in pending]
        again = [o for o in ready if o in done and graph.ops[o].recomputable]
        op_id = rng.choice(again if again and (rng.random() < 0.25 or not fresh) else fresh)
        schedule.append(op_id)
        pending.discard(op_id)
        done.add(op_id)
        available.update(graph.ops[op_id].outputs)
    late = set(graph.late_inputs)
    first_made = {}
    for step, op_id in enumerate(schedule):
        for tensor in graph.ops[op_id].outputs:
            first_made.setdefault(tensor, step)
    low = max((first_made[t] + 1 for t in graph.forward_outputs), default=0)
    reads_late = [s for s, o in enumerate(schedule) if late & set(graph.ops[o].inputs)]
    high = min(reads_late, default=len(schedule))
    if low > high or rng.random() < 0.1:
        return schedule, rng.randint(0, len(schedule))
    return schedule, rng.randint(low, high)
