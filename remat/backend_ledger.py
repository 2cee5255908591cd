"""What a torch.compile backend knows of the step that runs: which of its planned graphs hold
values for their backward right now (a graph planned next is given that much less), and the
last step's plans, reported as `remat.last_plans()` shows them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from remat.aot import GraphPlan, PlanOptions, StepPlans
from remat.backend_fit import InnerCheck
from remat.joint_plan import JointPlan
from remat.report import RematPlanReport


@dataclass
class Ledger:
    """Which planned graphs hold values for their backward right now, and the last step's plans.

    A forward adds its graph, its backward removes it; a forward that runs with no graph in
    flight, or after a backward, starts a new step. A forward whose backward never runs stays
    counted until that graph's forward runs again (conservative: a later graph is planned with
    less room).
    """

    in_flight: dict[int, int] = field(default_factory=dict)
    step: list[GraphPlan] = field(default_factory=list)
    step_ended: bool = False
    """The last backward in flight ran: `step` is a whole step, not yet taken."""
    steps: int = 0
    """Steps started so far."""
    on_step_end: list[Callable[[], None]] = field(default_factory=list)
    """Called when a step's last backward in flight starts to run."""
    _backward_since_forward: bool = False

    def held(self) -> int:
        return sum(self.in_flight.values())

    def next_forward_step(self) -> int:
        """The step a forward starting now belongs to (a new one, or the current one)."""
        starts = not self.in_flight or self._backward_since_forward
        return self.steps + 1 if starts else self.steps

    def forward_ran(self, token: int, plan: GraphPlan, carried: int) -> None:
        if self.next_forward_step() != self.steps:
            self.steps += 1
            self.step, self.step_ended, self._backward_since_forward = [], False, False
        self.in_flight[token] = carried
        self.step = [p for p in self.step if p is not plan] + [plan]

    def backward_ran(self, token: int) -> None:
        self._backward_since_forward = True
        if self.in_flight.pop(token, None) is not None and not self.in_flight:
            self.step_ended = True
            for callback in self.on_step_end:
                callback()

    def report(
        self,
        options: PlanOptions,
        checks: Mapping[int, InnerCheck],
        joints: Sequence[JointPlan] = (),
    ) -> RematPlanReport | None:
        """Per-graph plans of the most recent step, in the order its graphs ran (None before
        one ran), with each Inductor-compiled graph's figures as `checks` measured them; its
        peak is the joint plan's where the step runs one of `joints`."""
        if not self.step:
            return None
        step = StepPlans(list(self.step))
        for joint in joints:
            step.joint = joint
            if step.runs_joint_plan:
                break
            step.joint = None
        report = RematPlanReport.from_step(step, options)
        return _with_checks(report, self.step, checks, step.runs_joint_plan)


def _with_checks(
    report: RematPlanReport,
    plans: Sequence[GraphPlan],
    checks: Mapping[int, InnerCheck],
    joint: bool,
) -> RematPlanReport:
    """The report with each Inductor-compiled graph's peak and budget as measured and allowed
    (the simulator's figures are for the unfused plan); a joint plan's step peak is raised by
    the most any graph's build measured above its plan."""
    if not any(id(plan) in checks for plan in plans):
        return report
    graphs = []
    for summary, plan in zip(report.graphs, plans, strict=True):
        check = checks.get(id(plan))
        if check is not None:
            summary = replace(
                summary, predicted_peak=check.expected_peak, budget_bytes=check.allowed_bytes
            )
        graphs.append(summary)
    if joint:
        excess = (c.expected_peak - c.predicted_peak for c in map(checks.get, map(id, plans)) if c)
        peak = report.predicted_peak + max(0, *excess)
    else:
        peak = max(g.predicted_peak + p.held_elsewhere for g, p in zip(graphs, plans, strict=True))
    return replace(report, graphs=tuple(graphs), predicted_peak=peak)
