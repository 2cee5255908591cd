"""fx code that calls each aten kernel directly.

fx emits `torch.ops.aten.mm.default(a, b)`: four attribute reads and a Python frame
(`OpOverload.__call__`, whose whole body is `return self._op(*args, **kwargs)`) per op, on every
call. The graph built here calls the same kernel through a C-level partial bound to `_op`, one
global per op: the same dispatch, with fewer Python steps per op.
"""

from __future__ import annotations

import functools
from typing import Any

import torch.fx as fx

from remat.torch_internals import OpOverload, codegen_of, kernel_of


def direct_call_graph(graph: fx.Graph) -> fx.Graph:
    """A copy of `graph` (its codegen and nodes' meta included) with every aten op called
    through its kernel directly; `graph` is left as it was."""
    copy = fx.Graph()
    copy.set_codegen(codegen_of(graph))
    copy.output(copy.graph_copy(graph, {}))
    kernels: dict[OpOverload, Any] = {}
    for node in copy.nodes:
        if node.op == "call_function" and isinstance(node.target, OpOverload):
            if node.target not in kernels:
                kernels[node.target] = _kernel(node.target)
            node.target = kernels[node.target]
    return copy


def _kernel(op: OpOverload) -> Any:
    kernel = functools.partial(kernel_of(op))
    # fx names the global after these (a name from torch would be emitted as torch.ops...).
    kernel.__name__ = str(op).replace(".", "_")  # type: ignore[attr-defined]
    kernel.__module__ = "remat_kernels"  # type: ignore[attr-defined]
    return kernel
