"""The AOTAutograd side: a Dynamo backend whose partition hook plans and rewrites each graph.

Dynamo captures the model (splitting it at graph breaks), AOTAutograd traces each graph's joint
forward+backward, and `partition` is where remat decides: capture -> price -> solve -> rewrite.
The rewritten modules run as fx code (`inner="eager"`); the budget is for the whole step, so each
graph of a step that broke into several is planned with what the earlier graphs keep alive, and
with room for the gradients the other graphs will produce.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx

from remat.budget import InfeasibleBudgetError, format_bytes
from remat.capture import Priced, capture_joint
from remat.fx_nodes import graph_device
from remat.gradient_links import GraphIO, gradient_links, graph_io, recording
from remat.inner import InnerCompilers, untracked_compiler
from remat.ir import Plan, RematGraph
from remat.joint_plan import JointPlan, plan_jointly, resolve_step_budget, same_structure
from remat.outside import OUTSIDE_NOTE, OutsideProfile, placed_outside
from remat.redundant_copies import drop_redundant_clones
from remat.rewrite import rewrite
from remat.step_plan import GraphPlan, GraphRequest, PlanOptions, StepPlans
from remat.tangents import absent_tangents, accept_missing_gradients, defer_tangents
from remat.torch_internals import aot_module_simplified, dynamo_counters, runs_on_fake_tensors
from remat.workspace import measure_storage_bytes, measure_workspaces

logger = logging.getLogger(__name__)

_FLOOR_TIME_LIMIT = 5.0
"""Seconds to look for a graph's lowest-peak plan when no plan fits it alone."""

_NOTHING_ASKED = GraphRequest()

MAX_REPLANS = 3
"""Times a step is planned again whole before remat keeps what runs (a model whose graphs
change from call to call would otherwise recompile forever)."""


class Planner:
    """Holds the options and the plans made so far; its `backend` goes to torch.compile."""

    def __init__(
        self,
        options: PlanOptions,
        prices: Callable[[fx.GraphModule, torch.device], Mapping[fx.Node, Priced]],
        trainable_grad_bytes: Callable[[], int] | None = None,
        inner: InnerCompilers | None = None,
        held: Callable[[], int] | None = None,
        reserve: Callable[[], int] | None = None,
    ) -> None:
        """`held`: bytes the step's other graphs keep alive while the next one is planned;
        default: what the graphs planned before it for the same key carry to their backward.
        `reserve`: bytes withheld from every graph's budget besides `held` (what the engine
        holds); default none."""
        self.options = options
        self._inner = inner or InnerCompilers()
        self._prices = prices
        self._trainable_grad_bytes = trainable_grad_bytes
        self._held = held
        self._reserve = reserve
        self.steps: dict[tuple, StepPlans] = {}
        self.current_key: tuple = ()
        self._ran: list[GraphPlan] | None = None
        """Graphs whose forward ran in the current call, when the caller tracks calls."""
        self.recording = True  # graphs record each run's GraphIO; off in a settled step's calls
        self.last_planned: GraphPlan | None = None
        """The graph the latest partition planned (its forward is compiled next)."""
        self._ran_fake: set[int] = set()
        """Ids of the graphs this call ran on fake tensors (DDPOptimizer's compile-time run)."""
        self.budget_bytes: int | None = options.budget.bytes
        """The step's budget in bytes: a fraction is resolved on the first planned step and
        held from then on, so a later, smaller input (an epoch's last batch) fits it too."""
        self.tolerate_infeasible = False
        """A graph no plan fits alone runs its lowest-peak plan instead of raising; the caller
        then plans the step whole (`plan_jointly`) and runs the call again if need be."""
        self.graphs_planned = 0
        """Graphs planned so far (a call that planned none ran what was compiled before)."""
        self.outside_profiles: dict[tuple, OutsideProfile] = {}
        """Per input signature: bytes a probe step measured outside the graphs (FSDP2, eager
        code; remat.fsdp): their peak is reserved, or, planning jointly, each counted where held."""
        self.lean_plans = False
        """Plan each graph at its leanest heuristic plan: for the probe step."""
        self.untracked_graphs = False
        """Run the graphs' backwards with the probe's OutsideTracker paused (remat.measure);
        their forwards step aside where remat.fsdp enters each unit, before Dynamo does."""
        self._fixed: dict[tuple, tuple[tuple[RematGraph, Plan], ...]] = {}
        """Per input signature: the joint plan's graphs and plans, for the step's next compile."""

    def freeze_budget(self) -> None:
        """Resolve a fractional budget for good, from the step planned for the current key:
        the fraction of the whole step's keep-all peak (all its graphs, run as a step)."""
        step = self.steps.get(self.current_key, StepPlans())
        if self.budget_bytes is not None or not step.graphs:
            return
        if len(step.graphs) == 1:
            self.budget_bytes = step.graphs[0].step_budget_bytes
            return
        graphs, links = [g.captured.graph for g in step.graphs], gradient_links(step.ios)
        self.budget_bytes = resolve_step_budget(
            self.options.budget, graphs, step.other_grads, self._outside(), links
        )

    def plan_jointly(self, key: tuple) -> JointPlan | None:
        """Plan the step of `key` whole when it ran as several graphs not yet planned together:
        the joint plan (`worth_recompiling`: whether the step's next compile should use it), or
        None. Raises InfeasibleBudgetError with the whole step's floor if no plan fits."""
        step = self.steps.get(key)
        fewest = 1 if key in self.outside_profiles else 2  # one graph with what is held around
        if step is None or len(step.graphs) < fewest or step.runs_joint_plan:
            return None
        if step.joint_for == tuple(g.captured for g in step.graphs) or step.replans >= MAX_REPLANS:
            return None  # planned whole already (the plans that ran were kept), or often enough
        self.current_key = key
        self.freeze_budget()
        assert self.budget_bytes is not None
        graphs, links = [g.captured.graph for g in step.graphs], gradient_links(step.ios)
        planned = placed_outside(graphs, self.outside_profiles.get(key))
        reserve = self._reserved() - (self._outside() if planned is not graphs else 0)
        started = time.perf_counter()
        try:
            joint = plan_jointly(
                planned,
                [g.plan for g in step.graphs],
                self.budget_bytes - reserve,
                self.options.solver,
                carried=step.other_grads,
                links=links,
                **self._solver_config(),
            )
        except InfeasibleBudgetError as error:
            detail = error.detail + (f"; {format_bytes(reserve)} reserved" if reserve else "")
            detail += OUTSIDE_NOTE if planned is not graphs else ""
            raise InfeasibleBudgetError(self.budget_bytes, error.floor + reserve, detail) from None
        step.joint, step.outside_bytes = joint, self._outside()
        step.joint_for = tuple(g.captured for g in step.graphs)
        step.budget_bytes = self.budget_bytes
        step.replans += 1
        logger.info(
            "planned the step's %d graphs together in %.2fs: peak %s (ran %s)",
            len(graphs),
            time.perf_counter() - started,
            format_bytes(joint.peak),
            format_bytes(joint.ran_peak),
        )
        if joint.worth_recompiling:
            self._fixed[key] = tuple(zip(graphs, joint.plans, strict=True))
        return joint

    def measured_outside(self, key: tuple) -> int:
        """Most bytes the probe step for `key` measured outside the graphs at once (0: none)."""
        profile = self.outside_profiles.get(key)
        return profile.peak if profile is not None else 0

    def _outside(self) -> int:
        return self.measured_outside(self.current_key)

    def _reserved(self) -> int:
        """Bytes withheld from the budget: the caller's reserve and what a probe measured."""
        return (self._reserve() if self._reserve is not None else 0) + self._outside()

    def _solver_config(self) -> dict[str, Any]:
        config = {"time_limit": self.options.time_limit, "progress": self.options.progress}
        return {name: value for name, value in config.items() if value is not None}

    def begin_call(self, key: tuple) -> None:
        """A training call for input signature `key` starts: record which graphs it runs."""
        self.current_key = key
        self._ran = []
        self._ran_fake = set()

    def _record_run(self, graph: GraphPlan, fake: bool) -> None:
        """`graph` runs in this call. DDPOptimizer runs each bucket's graph on fake tensors
        right after compiling it, before the next bucket is planned: that run counts (the next
        graph is planned after it), and the real run of the same graph later in the call is
        the same place in the step, not another graph."""
        assert self._ran is not None
        if fake:
            self._ran_fake.add(id(graph))
        if fake or id(graph) not in self._ran_fake:
            self._ran.append(graph)
        else:
            self._ran_fake.discard(id(graph))

    def end_call(self) -> None:
        """The graphs that ran in this call are the step: a graph Dynamo compiled again (a guard
        failed, e.g. on config a model sets on first use) replaces the one it was compiled for."""
        ran, self._ran = self._ran, None
        if not ran:
            return
        step = self.plans_for(self.current_key)
        if [g.captured for g in ran] != [g.captured for g in step.graphs]:
            step.graphs = list(ran)
        if self._trainable_grad_bytes is not None:
            produced = sum(g.grad_bytes for g in step.graphs)
            step.other_grads = max(0, self._trainable_grad_bytes() - produced)
        self.freeze_budget()

    def forget(self, key: tuple) -> None:
        """Drop what was planned for input signature `key`: its next call plans afresh."""
        self.steps.pop(key, None)
        self._fixed.pop(key, None)
        self.outside_profiles.pop(key, None)

    def plans_for(self, key: tuple) -> StepPlans:
        return self.steps.setdefault(key, StepPlans())

    def discard(self, plan: GraphPlan) -> None:
        """A build not kept (Inductor fitting): its plan leaves the step's record."""
        step = self.plans_for(self.current_key)
        step.graphs = [g for g in step.graphs if g is not plan]

    def backend(
        self,
        gm: fx.GraphModule,
        example_inputs: Sequence[Any],
        inner: InnerCompilers | None = None,
        request: GraphRequest = _NOTHING_ASKED,
    ) -> Callable:
        """`inner` overrides the planner's inner compilers for this graph (Inductor's are made
        per graph: they carry the graph's id and output count); `request` is what the caller
        asks of this graph's plan (a reserve, a pinned plan)."""
        grads_here = sum(
            x.numel() * x.element_size()
            for x in example_inputs
            if isinstance(x, torch.nn.Parameter) and x.requires_grad
        )

        made: list[GraphPlan] = []

        inner = inner or self._inner
        io = lambda: made[-1].io if made and self.recording else None  # noqa: E731
        forward_compiler = recording(inner.forward, io, GraphIO.record_forward)
        backward_compiler = recording(inner.backward, io, GraphIO.record_backward)
        if self.untracked_graphs:
            backward_compiler = untracked_compiler(backward_compiler)

        def partition(joint: fx.GraphModule, joint_inputs: Any, *, num_fwd_outputs: int, **_: Any):
            forward, backward, graph_plan = self._partition(
                joint, num_fwd_outputs, grads_here, inner.defers_tangents, request
            )
            made.append(graph_plan)
            return forward, backward

        # DDPOptimizer (Dynamo's split of a DDP step at its buckets) reads this count to tell
        # that AOTAutograd compiled the bucket, as torch's own aot_autograd backend does.
        dynamo_counters["aot_autograd"]["total"] += 1
        compiled = aot_module_simplified(
            gm,
            example_inputs,
            fw_compiler=forward_compiler,
            bw_compiler=backward_compiler,
            inference_compiler=inner.inference,
            partition_fn=partition,
            decompositions=inner.decompositions,
        )
        if not made:  # no backward (inference): nothing was planned
            return compiled

        def run(*args: Any) -> Any:
            if self._ran is not None:
                self._record_run(made[-1], fake=runs_on_fake_tensors(args))
            outputs = compiled(*args)
            if inner.defers_tangents:
                accept_missing_gradients(outputs)
            return outputs

        run.__dict__.update(compiled.__dict__)
        return run

    def _partition(
        self,
        joint: fx.GraphModule,
        num_fwd_outputs: int,
        grads_here: int,
        defer: bool,
        request: GraphRequest,
    ) -> tuple[fx.GraphModule, fx.GraphModule, GraphPlan]:
        from remat.solvers import find_floor, keep_all_plan, lean_plan, solve

        started = time.perf_counter()
        step = self.plans_for(self.current_key)
        drop_redundant_clones(joint)
        device = graph_device(list(joint.graph.nodes))
        absent: frozenset[str] = frozenset()
        if defer:
            absent = absent_tangents(joint, num_fwd_outputs, self.options.loss_reserve)
            defer_tangents(joint, absent)
        captured = capture_joint(
            joint,
            num_fwd_outputs,
            self._prices(joint, device),
            workspaces=measure_workspaces(joint, device),
            storage_bytes=measure_storage_bytes(joint, device),
            boundary_reserve=self.options.loss_reserve,
            absent_inputs=absent,
            name=f"graph{self._graph_index(step)}",
        )
        keep_all = keep_all_plan(captured.graph)
        other_grads = 0
        if self._trainable_grad_bytes is not None:
            other_grads = max(0, self._trainable_grad_bytes() - grads_here)
        if self._held is not None:
            carried = self._held()
        elif self._ran is not None:
            carried = sum(g.carried_bytes for g in self._ran)
        else:
            carried = step.carried_bytes
        held = carried + other_grads
        step_budget = self.budget_bytes
        if step_budget is None:
            step_budget = self.options.budget.resolve(
                keep_all.predicted_peak + held + self._outside()
            )
        reserve = self._reserved() + request.reserve
        allowed = step_budget - held - reserve
        infeasible = None
        plan = self._fixed_plan(captured.graph, self._graph_index(step), request.pinned)
        if plan is not None:  # its share of a joint plan: an Inductor build may not exceed it
            allowed = plan.predicted_peak - reserve
        if plan is None and self.lean_plans:
            plan = lean_plan(captured.graph)
        if plan is None:
            try:
                plan = solve(
                    captured.graph, allowed, solver=self.options.solver, **self._solver_config()
                )
            except InfeasibleBudgetError as error:
                infeasible = self._step_error(error, step, step_budget, held, reserve)
                tolerate = request.tolerate_infeasible
                if not (self.tolerate_infeasible if tolerate is None else tolerate):
                    raise infeasible from None
                # The step is planned whole once this call has shown all its graphs.
                plan = error.floor_plan
                if not isinstance(plan, Plan):
                    time_limit = self.options.time_limit or _FLOOR_TIME_LIMIT
                    plan = find_floor(captured.graph, time_limit).plan
        rewritten = rewrite(joint, captured, plan, num_fwd_outputs)
        graph_plan = GraphPlan(
            index=self._graph_index(step),
            captured=captured,
            plan=plan,
            keep_all_peak=keep_all.predicted_peak,
            budget_bytes=allowed,
            step_budget_bytes=step_budget,
            held_elsewhere=held,
            saved_names=rewritten.saved,
            replayed_random_ops=rewritten.replayed_random_ops,
            plan_s=time.perf_counter() - started,
            grad_bytes=grads_here,
            infeasible=infeasible,
            io=graph_io(joint, captured.tensor_nodes, num_fwd_outputs),
        )
        step.graphs.append(graph_plan)
        self.last_planned = graph_plan
        self.graphs_planned += 1
        logger.info("planned %s in %.2fs: %s", captured.graph.name, graph_plan.plan_s, plan.status)
        return rewritten.forward, rewritten.backward, graph_plan

    def _fixed_plan(
        self, graph: RematGraph, index: int, pinned: tuple[RematGraph, Plan] | None
    ) -> Plan | None:
        """The plan given for `graph`, if it is the graph the plan was made on: the one the
        caller pinned, or the joint plan's for graph `index` of the current step."""
        fixed = self._fixed.get(self.current_key, ())
        given = [pinned] if pinned is not None else []
        given += [fixed[index]] if index < len(fixed) else []
        return next((plan for known, plan in given if same_structure(known, graph)), None)

    def _step_error(
        self,
        error: InfeasibleBudgetError,
        step: StepPlans,
        step_budget: int,
        held: int,
        reserve: int,
    ) -> InfeasibleBudgetError:
        """Say it in the step's terms: what the other graphs hold comes on top of this graph's
        floor (and the solver's word on whether the floor is proven stays)."""
        details = [error.detail] if error.detail else []
        if held:
            details.append(
                f"graph {self._graph_index(step)} of the step; {format_bytes(held)} held by "
                "the step's other graphs: removing graph breaks lets remat plan the step whole"
            )
        return InfeasibleBudgetError(step_budget, error.floor + held + reserve, "; ".join(details))

    def _graph_index(self, step: StepPlans) -> int:
        """Position in the step of the graph being planned."""
        return len(self._ran) if self._ran is not None else len(step.graphs)
