"""Inductor under `remat.compile(..., inner="inductor")`: the planner's graphs, fused and fitted.

A Dynamo backend around a `Planner` (the one `remat.compile` owns): each graph Dynamo hands
over is planned by the planner and compiled by Inductor, measured, and re-planned with the
difference withheld from its budget until a build fits (`backend_fit.fit_inductor`, the loop
the torch.compile backend uses); where none fits, the plan runs as fx code, which the simulator
models exactly. The planner keeps its own step accounting (joint planning of graph-broken steps
included); a graph with a joint plan fixed for it is compiled with that plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.fx as fx

from remat.aot import Planner
from remat.backend_fit import Compiled, InnerCheck, fit_inductor, recording_compilers
from remat.inner import InnerCompilers
from remat.step_plan import GraphRequest


class InductorFitting:
    """A Dynamo backend: (gm, example_inputs) -> Inductor code fitted to the planner's budget."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.checks: list[InnerCheck] = []
        """How each kept build measured against its budget, in the order they were compiled."""

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        step = self.planner.plans_for(self.planner.current_key)
        name = f"graph{len(step.graphs)}"

        def compile_once(inner: InnerCompilers, record: Compiled, reserve: int) -> Callable:
            inner = recording_compilers(inner, record, self.planner)
            return self.planner.backend(gm, example_inputs, inner, GraphRequest(reserve))

        fitted = fit_inductor(gm, example_inputs, name, compile_once, self.planner.discard)
        if fitted.check is not None:
            self.checks.append(fitted.check)
        return fitted.compiled
