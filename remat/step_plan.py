"""What a step's plans are: the user's options, each graph's plan, the step's plans together.

Made by `aot.Planner` as Dynamo hands it graphs; read by `remat.compile`, the backend, the
report and `remat analyze`. Torch-free but for the captured graphs they point to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from remat.budget import Budget, InfeasibleBudgetError
from remat.capture import CapturedGraph
from remat.ir import Plan, RematGraph
from remat.joint_plan import JointPlan
from remat.simulate import Simulation, simulation_of

if TYPE_CHECKING:
    from remat.eager_peak import EagerPeak
    from remat.gradient_links import GraphIO


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked for, resolved to values (see remat.compile)."""

    budget: Budget
    solver: str = "auto"
    time_limit: float | None = None
    loss_reserve: int | None = None
    """Bytes the caller's loss holds between forward and backward; None: the outputs' size."""
    progress: Callable[[str], None] | None = None


@dataclass(frozen=True)
class GraphRequest:
    """What a caller asks of one graph's plan beyond the planner's options."""

    reserve: int = 0
    """Bytes withheld from this graph's budget besides what the planner reserves (an Inductor
    fitting attempt's measured excess; negative: granted beyond it)."""
    pinned: tuple[RematGraph, Plan] | None = None
    """The plan to use if the graph is the one it was made on (its share of a joint plan)."""
    tolerate_infeasible: bool | None = None
    """Overrides the planner's `tolerate_infeasible` for this graph."""


@dataclass(frozen=True)
class GraphPlan:
    """One captured graph's plan, with what the budget meant for it."""

    index: int
    captured: CapturedGraph
    plan: Plan
    keep_all_peak: int
    budget_bytes: int
    """What this graph was allowed: the step's budget less what other graphs hold."""
    step_budget_bytes: int
    held_elsewhere: int
    saved_names: tuple[str, ...]
    replayed_random_ops: tuple[str, ...]
    plan_s: float
    grad_bytes: int = 0
    """Bytes of the gradients this graph's backward produces for trainable parameters."""
    infeasible: InfeasibleBudgetError | None = None
    """Planned alone, no plan fitted what the budget left it (this error says so); its
    lowest-peak plan ran and the step is planned again whole (see Planner.plan_jointly)."""
    io: GraphIO | None = field(default=None, compare=False)
    """What its forward and backward last took and gave (remat.gradient_links)."""

    @property
    def over_budget(self) -> bool:
        return self.infeasible is not None

    @property
    def simulation(self) -> Simulation:
        """What the simulator found for this graph's plan (the plan's own: not replayed)."""
        return simulation_of(self.captured.graph, self.plan)

    @property
    def carried_bytes(self) -> int:
        """Bytes this graph keeps live across its forward/backward boundary."""
        return self.simulation.saved_bytes


@dataclass
class StepPlans:
    """Every graph planned for one input signature of the step, in the order they ran."""

    graphs: list[GraphPlan] = field(default_factory=list)
    graph_breaks: tuple[str, ...] = ()
    """Why Dynamo split the step, one line per reason (empty: one graph, or none reported)."""
    joint: JointPlan | None = None
    """The step's graphs planned together, once a call ran more than one."""
    budget_bytes: int | None = None
    """The step's budget when its graphs were planned together."""
    joint_for: tuple[CapturedGraph, ...] = ()
    """The graphs `joint` was planned for."""
    replans: int = 0
    """How often the step was planned again whole (bounded: see MAX_REPLANS)."""

    other_grads: int = 0
    """Bytes of trainable parameters' gradients no graph of the step produces (eager's)."""
    outside_bytes: int = 0
    """Most bytes a probe step measured outside the graphs at once (FSDP2's buffers, the eager
    code around the blocks; remat.fsdp), counted in `predicted_peak` where they are held."""
    eager: EagerPeak | None = None
    """The eager step's peak, measured where the plans recompute nothing (remat.eager_peak)."""
    runs_eagerly: bool = False
    """The step runs the model as written: nothing to recompute and its eager step fits."""

    @property
    def ios(self) -> list[GraphIO | None]:
        """What each graph's last runs took and gave (remat.gradient_links)."""
        return [g.io for g in self.graphs]

    @property
    def carried_bytes(self) -> int:
        """Bytes the graphs planned so far keep live across their forward/backward boundary."""
        return sum(item.carried_bytes for item in self.graphs)

    @property
    def runs_joint_plan(self) -> bool:
        """Whether the graphs that ran are the ones the joint plan was made for, with its plans."""
        joint = self.joint
        return (
            joint is not None
            and all(a.plan is b for a, b in zip(self.graphs, joint.plans, strict=False))
            and len(self.graphs) == len(joint.plans)
        )

    @property
    def predicted_peak(self) -> int:
        """Simulated peak of the step as its graphs run (all of them, joined as autograd runs)."""
        if self.joint is not None and self.runs_joint_plan:
            return self.joint.peak
        if self.joint is not None and len(self.joint.plans) == len(self.graphs):
            return self.joint.ran_peak
        return max(g.plan.predicted_peak + g.held_elsewhere for g in self.graphs)
