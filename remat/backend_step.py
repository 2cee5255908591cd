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
from remat.backend_probe import OutsideProbe
from remat.budget import InfeasibleBudgetError
from remat.call_warnings import warn_probe_over_budget
from remat.capture import CapturedGraph
from remat.ir import Plan, RematGraph
from remat.joint_plan import JointPlan
from remat.signature import input_signature
from remat.step_plan import GraphPlan
from remat.torch_internals import runs_on_fake_tensors

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
    probe: OutsideProbe | None = None
    """Under FSDP2: what is held outside the graphs, measured in a step (remat.backend_probe);
    the step is planned whole only once it has been measured."""

    def before_run(self) -> None:
        """A graph is about to run: if it starts a step and the step that ended ran as several
        graphs not yet planned together, plan them whole now, each to be compiled again under
        its share of the joint plan when it next runs."""
        ledger = self.ledger
        if ledger.in_flight or not ledger.step_ended:
            return
        if self.probe is not None and self.probe.profile is None:
            return  # measuring what is held outside the graphs: their leanest plans meanwhile
        ran = list(ledger.step)
        captured = tuple(g.captured for g in ran)
        refusal = self.refusals.get(captured)
        if refusal is not None:
            raise refusal
        ledger.step_ended = False
        if all(id(g.plan) in self.joint_plan_ids for g in ran):
            return
        if len(ran) < 2 and self.probe is None:
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
        measured = self.probe.profile if self.probe is not None else None
        if measured is not None:
            self.planner.outside_profiles[key] = measured
            self.planner.lean_plans = False
        try:
            joint = self.planner.plan_jointly(key)
            if joint is not None and measured is not None and joint.ran_over_budget:
                warn_probe_over_budget(joint.ran_peak, measured.peak, joint.budget)
            return joint
        except InfeasibleBudgetError as error:
            if measured is None and not any(g.over_budget for g in ran):
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

    @property
    def compiled_without_plan(self) -> bool:
        """Compiled, with nothing planned (a graph with no backward)."""
        return self._compiled is not None and self.plan is None

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


MAX_RUNS_PER_STEP = 256
"""Runs of one graph within one step that each get their own plan (see PerRun)."""


class PerRun:
    """What Dynamo holds for one graph: a Replannable per run of it within a step (and, for a
    graph with symbolic sizes, per concrete input signature, planned when it first runs).

    Dynamo hands the backend one graph for code it runs several times a step (the blocks of a
    model compiled one by one, a block with a graph break: the parameters are inputs, so one
    graph serves every block). Each run holds its own values for its backward, so each is its
    own graph of the step, with its own plan and its own share of the joint plan; one plan for
    all of them would be counted once while the step holds it once per run.
    """

    def __init__(self, make: Callable[[], Replannable], ledger: Ledger, symbolic: bool) -> None:
        self._make = make
        self._ledger = ledger
        self._symbolic = symbolic
        self.compiled: dict[tuple, Replannable] = {}
        self._step = -1
        self._runs: dict[tuple, int] = {}

    def compile_first(self, example_inputs: Sequence[Any]) -> None:
        """Compile the first run's graph now, with Dynamo's example inputs."""
        graph = self.compiled[(0, torch.is_grad_enabled())] = self._make()
        graph.compile(example_inputs)

    def __call__(self, *args: Any) -> Any:
        key = (torch.is_grad_enabled(), *(input_signature(args) if self._symbolic else ()))
        first = self.compiled.get((0, *key))
        # A graph with no backward plans nothing and holds nothing: one compiled code for all.
        # DDPOptimizer runs each bucket's graph on fake tensors once compiled: the real run
        # that follows is the same place in the step, not another run.
        single = first is not None and first.compiled_without_plan
        fake = runs_on_fake_tensors(args)
        run = 0 if single or fake else self._run_index(key)
        graph = self.compiled.get((run, *key))
        if graph is None:
            graph = self.compiled[(run, *key)] = self._make()
        try:
            return graph(*args)
        except BaseException:
            if not (single or fake):  # a run refused (or failed) did not happen in the step
                self._runs[key] = run
            raise

    def _run_index(self, key: tuple) -> int:
        step = self._ledger.next_forward_step()
        if step != self._step:
            self._step, self._runs = step, {}
        run = self._runs.get(key, 0)
        if run >= MAX_RUNS_PER_STEP:
            raise RuntimeError(
                f"a graph compiled by remat ran {run} times in one step without a backward in "
                "between: run evaluation under torch.no_grad() (a forward whose backward never "
                "runs holds its saved values for as long as its outputs live)"
            )
        self._runs[key] = run + 1
        return run
