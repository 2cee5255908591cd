"""Re-planning a step that ran as several graphs, torch-free: what the next call should run.

The first call of a step plans each graph as Dynamo hands it over, before the graphs after it
are known (greedy: graph k gets the budget less what graphs 0..k-1 keep for their backward).
Once the call has run, every graph of the step is known; `plan_jointly` plans them together
(`step_solve.plan_step`) and says whether the plans that ran were over the budget (the call
must run again under the joint plans) or merely slower than the joint ones (later calls switch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from remat.budget import Budget
from remat.ir import Plan, RematGraph
from remat.simulate import simulate
from remat.solvers import keep_all_plan
from remat.step_graph import StepGraph, combine, join
from remat.step_links import StepLink
from remat.step_solve import StepPlanResult, plan_step

SPEEDUP_WORTH_RECOMPILING = 0.95
"""Later calls switch to the joint plans when these are estimated to recompute at most this
fraction of what the plans that ran recompute (recompiling the step costs a trace and a
compile per graph, paid once)."""


@dataclass(frozen=True)
class JointPlan:
    """The step's graphs planned together, against the plans that ran."""

    result: StepPlanResult
    ran_peak: int
    """Simulated peak of the step as it ran (each graph's plan joined into the step)."""
    ran_forward_peak: int
    """The same, up to the end of the last forward: what a call abandoned there reached."""
    ran_recompute_time: float
    keep_all_peak: int
    """Simulated peak of the whole step with nothing recomputed."""
    budget: int
    """The step's budget in bytes, less what the engine reserves."""

    @property
    def plans(self) -> tuple[Plan, ...]:
        return self.result.plans

    @property
    def peak(self) -> int:
        return self.result.peak

    @property
    def ran_over_budget(self) -> bool:
        return self.ran_peak > self.budget

    @property
    def worth_recompiling(self) -> bool:
        """The next call should run the joint plans: those that ran break the budget, or the
        joint ones are clearly cheaper."""
        if self.ran_over_budget:
            return True
        joint_time = self.result.simulation.recompute_time
        return joint_time < SPEEDUP_WORTH_RECOMPILING * self.ran_recompute_time


def keep_all_step_peak(
    graphs: Sequence[RematGraph], carried: int = 0, links: Sequence[StepLink] = ()
) -> int:
    """Simulated peak of the step's graphs, run as a step, with nothing recomputed."""
    return _keep_all_peak(combine(graphs, carried, links))


def _keep_all_peak(step: StepGraph) -> int:
    keep_all = join(step, [keep_all_plan(g) for g in step.graphs])
    return simulate(step.graph, *keep_all).peak


def resolve_step_budget(
    budget: Budget,
    graphs: Sequence[RematGraph],
    carried: int = 0,
    outside: int = 0,
    links: Sequence[StepLink] = (),
) -> int:
    """The step's budget in bytes: a fraction is of the whole step's keep-all peak, with
    `outside` (bytes held outside the graphs, measured) on top."""
    if budget.bytes is not None:
        return budget.bytes
    return budget.resolve(keep_all_step_peak(graphs, carried, links) + outside)


def plan_jointly(
    graphs: Sequence[RematGraph],
    ran: Sequence[Plan],
    budget: int,
    solver: str = "auto",
    *,
    carried: int = 0,
    links: Sequence[StepLink] = (),
    **config: object,
) -> JointPlan:
    """Plan `graphs` together for `budget` bytes and compare with the plans that `ran`.

    Raises InfeasibleBudgetError with the whole step's floor when no joint plan fits.
    """
    if len(ran) != len(graphs):
        raise ValueError(f"{len(ran)} plans ran for a step of {len(graphs)} graphs")
    result = plan_step(
        graphs, budget, solver, carried=carried, links=links, with_floor=False, **config
    )
    step = result.step
    schedule, boundary = join(step, ran)
    # The plans that ran may recompute an output the links pin (see combine): score them
    # without the links, as they were planned (conservative).
    unlinked = combine(graphs, carried) if links else step
    ran_sim = simulate(unlinked.graph, schedule, boundary)
    return JointPlan(
        result=result,
        ran_peak=ran_sim.peak,
        ran_forward_peak=max(ran_sim.timeline[:boundary], default=0),
        ran_recompute_time=ran_sim.recompute_time,
        keep_all_peak=_keep_all_peak(step),
        budget=budget,
    )


def same_structure(a: RematGraph, b: RematGraph) -> bool:
    """Whether two captures are the same graph (op times may differ: measured prices vary)."""
    return (
        a.boundary == b.boundary
        and a.inputs == b.inputs
        and a.late_inputs == b.late_inputs
        and a.outputs == b.outputs
        and [(t.name, t.bytes, t.alias_of) for t in a.tensors]
        == [(t.name, t.bytes, t.alias_of) for t in b.tensors]
        and [(o.name, o.inputs, o.outputs, o.transient_bytes) for o in a.ops]
        == [(o.name, o.inputs, o.outputs, o.transient_bytes) for o in b.ops]
    )
