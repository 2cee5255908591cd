"""A graph-broken step under the torch.compile backend, planned whole from its second step on.

Dynamo hands the backend a step's graphs one at a time, and the backend cannot run a step again
as `remat.compile` does: so the first step runs the plans made graph by graph (graph k gets the
budget less what graphs 0..k-1 hold; one that cannot fit runs its lowest-peak plan, with a
warning). When that step has ended (its last backward ran), the next one starts by planning the
step's graphs together (`Planner.plan_jointly`); each graph is compiled again, with the inputs
of its next call, under its share of the joint plan. No plan fitting the whole step is refused
with the step's floor, at that step and every later one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from remat.aot import Planner
from remat.backend_ledger import Ledger
from remat.budget import InfeasibleBudgetError
from remat.capture import CapturedGraph
from remat.ir import Plan, RematGraph
from remat.joint_plan import JointPlan
from remat.signature import input_signature
from remat.step_plan import GraphPlan

MAX_WHOLE_STEPS = 16
"""Distinct graph-broken steps one backend plans whole (a model whose graphs change from step
to step would otherwise re-plan forever); later ones keep their graph-by-graph plans."""

Pinned = tuple[RematGraph, Plan]
"""A joint plan's plan for one graph, with the capture it was made on."""

CompileGraph = Callable[
    [fx.GraphModule, Sequence[Any], int, "Pinned | None"], tuple[Callable, "GraphPlan | None"]
]
"""The backend's compile of one static graph: (gm, inputs, trainable bytes in scope, pinned
plan) -> (compiled code, its plan; None where nothing was planned)."""


@dataclass
class WholeStep:
    """What the backend knows of its steps as wholes: which were planned together, refused,
    and the graphs to compile again."""

    planner: Planner
    ledger: Ledger
    graphs: weakref.WeakSet[Replannable] = field(default_factory=weakref.WeakSet)
    """The graphs the backend compiled, while Dynamo's code holds them."""
    planned: set[tuple[CapturedGraph, ...]] = field(default_factory=set)
    """Steps (as their graphs) planned together: each once."""
    refusals: dict[tuple[CapturedGraph, ...], InfeasibleBudgetError] = field(default_factory=dict)
    """Steps no plan of whose graphs fits the budget: each later run of them is refused."""
    joints: list[JointPlan] = field(default_factory=list)
    joint_plan_ids: set[int] = field(default_factory=set)
    """Plans compiled for a joint plan: a step running only these is not planned again."""

    def before_run(self) -> None:
        """A graph is about to run: if it starts a step and the step that ended ran as several
        graphs not yet planned together, plan them whole now, each to be compiled again under
        its share of the joint plan when it next runs."""
        ledger = self.ledger
        if ledger.in_flight or not ledger.step_ended:
            return
        ran = list(ledger.step)
        captured = tuple(g.captured for g in ran)
        refusal = self.refusals.get(captured)
        if refusal is not None:
            raise refusal
        ledger.step_ended = False
        if len(ran) < 2 or all(id(g.plan) in self.joint_plan_ids for g in ran):
            return
        if captured in self.planned or len(self.planned) >= MAX_WHOLE_STEPS:
            return
        self.planned.add(captured)
        joint = self._plan(ran, captured)
        if joint is None or not joint.worth_recompiling:
            return
        self.joints.append(joint)
        self.joint_plan_ids.update(id(p) for p in joint.plans)
        by_plan = {id(g.plan): g for g in self.graphs if g.plan is not None}
        for ran_plan, plan in zip(ran, joint.plans, strict=True):
            graph = by_plan.get(id(ran_plan))
            if graph is not None:
                graph.pending = (ran_plan.captured.graph, plan)

    def _plan(self, ran: list[GraphPlan], captured: tuple[CapturedGraph, ...]) -> JointPlan | None:
        key = ("whole", len(self.planned))
        step = self.planner.plans_for(key)
        step.graphs = list(ran)
        in_scope = max((g.grad_bytes for g in self.graphs), default=0)
        step.other_grads = max(0, in_scope - sum(g.grad_bytes for g in ran))
        self.planner.current_key = key
        try:
            return self.planner.plan_jointly(key)
        except InfeasibleBudgetError as error:
            if not any(g.over_budget for g in ran):
                return None  # the plans that ran fit; keep them
            # No plan of the step's graphs fits: the error names the whole step's floor.
            self.refusals[captured] = error.with_traceback(None)
            self.ledger.step_ended = True
            raise
        finally:
            self.planner.forget(key)


class Replannable:
    """One graph as Dynamo runs it: the compiled code of its current plan. Once its step's
    graphs are planned together, its next call compiles it again, with that call's inputs,
    under its share of the joint plan."""

    def __init__(
        self, whole: WholeStep, compile_graph: CompileGraph, gm: fx.GraphModule, grad_bytes: int
    ) -> None:
        self._whole = whole
        self._compile_graph = compile_graph
        self._gm = gm
        self.grad_bytes = grad_bytes
        self._compiled: Callable | None = None
        self.plan: GraphPlan | None = None
        self.pending: Pinned | None = None
        """The joint plan's plan for this graph, not yet compiled."""
        whole.graphs.add(self)

    def compile(self, example_inputs: Sequence[Any]) -> None:
        pinned, self.pending = self.pending, None
        self._compiled, self.plan = self._compile_graph(
            self._gm, example_inputs, self.grad_bytes, pinned
        )
        if pinned is not None and self.plan is not None:
            # Compiled for a joint plan even where its plan could not be used (Inductor's
            # build did not fit and the fx capture differs): the step is not planned again.
            self._whole.joint_plan_ids.add(id(self.plan.plan))

    def __call__(self, *args: Any) -> Any:
        self._whole.before_run()
        if self._compiled is None or self.pending is not None:
            self.compile(list(args))
        assert self._compiled is not None
        return self._compiled(*args)


class PerShape:
    """A Dynamo graph with symbolic sizes, planned once per concrete signature when it runs:
    `make` gives the graph for a new signature (a Replannable of the graph module)."""

    def __init__(self, make: Callable[[], Replannable]) -> None:
        self._make = make
        self.compiled: dict[tuple, Replannable] = {}

    def __call__(self, *args: Any) -> Any:
        key = (torch.is_grad_enabled(), *input_signature(args))
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.compiled[key] = self._make()
        return compiled(*args)
