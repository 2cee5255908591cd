"""What turns a rewritten forward or backward graph into the callable AOTAutograd runs.

By default the graphs run as fx code (`run_as_fx`); the torch.compile backend may hand them to
Inductor instead (remat.inductor), with the decompositions the joint was traced with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch.fx as fx

from remat.fx_direct import direct_call_graph
from remat.measure import untracked
from remat.recompute_ranges import label_recomputations
from remat.torch_internals import boxed_codegen

Compiler = Callable[[fx.GraphModule, Sequence[Any]], Callable]


def run_as_fx(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    """Run the graph as fx code taking its arguments as one list, which it clears once read:
    a saved value is then freed at its last use in the backward, not when the backward ends."""
    # Built from a copy of the graph: `gm` stays as it was handed in, and the code is
    # generated once.
    graph = direct_call_graph(gm.graph)
    label_recomputations(graph)
    graph.set_codegen(boxed_codegen())
    runnable = fx.GraphModule(gm, graph)

    def run(args: list[Any]) -> Any:
        return runnable(args)

    run._boxed_call = True  # type: ignore[attr-defined]
    return run


def untracked_compiler(compiler: Compiler) -> Compiler:
    """`compiler` whose callables run with remat.measure's OutsideTracker paused, so a probe
    step measures only the memory allocated outside remat's graphs."""

    def compile_untracked(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        return untracked(compiler(gm, example_inputs))

    return compile_untracked


@dataclass(frozen=True)
class InnerCompilers:
    """What turns the rewritten forward and backward graphs into callables (AOTAutograd's
    fw_compiler/bw_compiler/inference_compiler), and the decompositions the joint is traced with."""

    forward: Callable[[fx.GraphModule, Sequence[Any]], Callable] = run_as_fx
    backward: Callable[[fx.GraphModule, Sequence[Any]], Callable] = run_as_fx
    inference: Callable[[fx.GraphModule, Sequence[Any]], Callable] = run_as_fx
    decompositions: Mapping[Any, Callable] | None = None
    defers_tangents: bool = True
    """The backward takes None for an output gradient that never comes (remat.tangents): fx
    code does; Inductor's compiled code needs every input a tensor."""
