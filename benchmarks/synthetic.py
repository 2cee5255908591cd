"""Synthetic training-step graphs for solver benchmarks (no torch): GPT-like stacks of blocks.

Each block is pre-norm attention + MLP with residual adds; the backward mirrors the forward and
reads what autograd would save (matmul inputs, the softmax output, the GELU input, the norm
input), accumulating gradients where a value has two users. Bytes are bf16; times come from a
roofline (max of FLOPs / 400 TFLOP/s and bytes / 3 TB/s), roughly an H100.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from remat.ir import Op, Phase, RematGraph, Tensor

_FLOPS = 4e14
_BANDWIDTH = 3e12
_BYTES = 2


@dataclass
class _Builder:
    ops: list[Op] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    phase: Phase = Phase.FORWARD
    path: str = ""
    """Module path of the ops being built (the block's, as `h.<layer>`)."""

    def tensor(
        self, name: str, elements: int, producer: int | None, view: int | None = None
    ) -> int:
        size = 0 if view is not None else elements * _BYTES
        self.tensors.append(Tensor(len(self.tensors), name, size, producer, view))
        return len(self.tensors) - 1

    def op(
        self,
        name: str,
        inputs: list[int],
        outputs: list[tuple[str, int]],
        flops: int = 0,
        view_of: int | None = None,
    ) -> list[int]:
        op_id = len(self.ops)
        made = [self.tensor(out, elements, op_id, view_of) for out, elements in outputs]
        moved = sum(self.tensors[t].bytes for t in (*inputs, *made))
        seconds = 1e-7 if view_of is not None else max(flops / _FLOPS, moved / _BANDWIDTH)
        kind = "aten.mm" if flops else "aten.pointwise"
        self.ops.append(
            Op(
                op_id, name, kind, tuple(inputs), tuple(made), seconds, flops, self.phase,
                module_path=self.path,
            )
        )  # fmt: skip
        return made


@dataclass(frozen=True)
class GptShape:
    layers: int = 12
    batch: int = 8
    seq: int = 1024
    dim: int = 768
    heads: int = 12


def gpt_like(shape: GptShape) -> RematGraph:
    """A GPT-2-like training step with `shape.layers` blocks (about 40 ops per block)."""
    b = _Builder()
    tokens = shape.batch * shape.seq
    x = b.tensor("embeddings", tokens * shape.dim, None)
    b.inputs.append(x)
    saved: list[tuple[str, list[int], list[int], int]] = []
    for layer in range(shape.layers):
        b.path = f"h.{layer}"
        x = _block(b, shape, layer, x, saved)
    b.path = ""
    (loss,) = b.op("loss", [x], [("loss", 1)], tokens * shape.dim * 2)
    boundary = len(b.ops)
    b.phase = Phase.BACKWARD
    tangent = b.tensor("dloss", 1, None)
    grads = _backward(b, saved, x, tangent)
    return RematGraph(
        ops=tuple(b.ops),
        tensors=tuple(b.tensors),
        boundary=boundary,
        inputs=tuple(b.inputs),
        late_inputs=(tangent,),
        outputs=(loss, *grads),
        forward_outputs=(loss,),
        name=f"gpt_like_{shape.layers}",
    )


def _block(
    b: _Builder,
    shape: GptShape,
    layer: int,
    x: int,
    saved: list[tuple[str, list[int], list[int], int]],
) -> int:
    tokens, dim = shape.batch * shape.seq, shape.dim
    scores = shape.batch * shape.heads * shape.seq * shape.seq
    weights = {
        name: b.tensor(f"w.{layer}.{name}", n, None)
        for name, n in (
            ("qkv", dim * 3 * dim),
            ("proj", dim * dim),
            ("fc1", dim * 4 * dim),
            ("fc2", 4 * dim * dim),
        )
    }
    b.inputs.extend(weights.values())

    def run(name: str, inputs: list[int], elements: int, flops: int, keep: list[int]) -> int:
        (out,) = b.op(f"{name}.{layer}", inputs, [(f"{name}.{layer}", elements)], flops)
        saved.append((f"{name}.{layer}", inputs, keep, len(b.ops) - 1))
        return out

    h = run("ln1", [x], tokens * dim, 0, [x])
    qkv = run("qkv", [h, weights["qkv"]], tokens * 3 * dim, 6 * tokens * dim * dim, [h])
    q, k, v = b.op(f"split.{layer}", [qkv], [(f"{n}.{layer}", 0) for n in "qkv"], 0, qkv)
    saved.append((f"split.{layer}", [qkv], [], len(b.ops) - 1))
    s = run("scores", [q, k], scores, 2 * tokens * shape.seq * dim, [q, k])
    p = run("softmax", [s], scores, 0, [])
    saved[-1] = (saved[-1][0], saved[-1][1], [p], saved[-1][3])
    a = run("attn_v", [p, v], tokens * dim, 2 * tokens * shape.seq * dim, [p, v])
    o = run("proj", [a, weights["proj"]], tokens * dim, 2 * tokens * dim * dim, [a])
    x = run("add1", [x, o], tokens * dim, 0, [])
    h2 = run("ln2", [x], tokens * dim, 0, [x])
    f1 = run("fc1", [h2, weights["fc1"]], tokens * 4 * dim, 8 * tokens * dim * dim, [h2])
    g = run("gelu", [f1], tokens * 4 * dim, 0, [f1])
    f2 = run("fc2", [g, weights["fc2"]], tokens * dim, 8 * tokens * dim * dim, [g])
    return run("add2", [x, f2], tokens * dim, 0, [])


def _backward(
    b: _Builder,
    saved: list[tuple[str, list[int], list[int], int]],
    last: int,
    tangent: int,
) -> list[int]:
    """One backward op per forward op, in reverse; gradient sums where a value fans out."""
    contributions: dict[int, list[int]] = {last: []}
    (seed,) = b.op("dloss", [tangent, last], [("grad.out", b.tensors[last].bytes // _BYTES)])
    contributions[last].append(seed)
    weight_grads = []
    for name, inputs, keep, op_id in reversed(saved):
        incoming = []
        for out in b.ops[op_id].outputs:
            parts = contributions.pop(out, [])
            if len(parts) > 1:
                elements = b.tensors[parts[0]].bytes // _BYTES
                parts = b.op(f"sum.{name}", parts, [(f"gsum.{name}", elements)])
            incoming.extend(parts)
        if not incoming:
            continue
        flops = b.ops[op_id].flops * 2
        outs = [(f"d{b.tensors[i].name}", max(1, b.tensors[i].bytes // _BYTES)) for i in inputs]
        grads = b.op(f"grad.{name}", [*incoming, *keep], outs, flops)
        for source, made in zip(inputs, grads):
            if b.tensors[source].producer is None:
                weight_grads.append(made)
            else:
                contributions.setdefault(source, []).append(made)
    return weight_grads
