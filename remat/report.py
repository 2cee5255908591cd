"""What a user reads: the plan of a step, as text (print) and as a dict (JSON)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from remat.budget import format_bytes

if TYPE_CHECKING:
    from remat.step_plan import GraphPlan, PlanOptions, StepPlans


@dataclass(frozen=True)
class GraphSummary:
    index: int
    name: str
    ops: int
    forward_ops: int
    solver: str
    status: str
    gap: float | None
    budget_bytes: int
    predicted_peak: int
    keep_all_peak: int
    saved: tuple[str, ...]
    saved_bytes: int
    recomputed: tuple[tuple[str, int], ...]
    """(op name, extra executions), in schedule order."""
    recomputed_by_module: tuple[tuple[str, int], ...]
    recompute_time_s: float
    recompute_flops: int
    replayed_random_ops: tuple[str, ...]
    plan_s: float


@dataclass(frozen=True)
class RematPlanReport:
    budget: str
    step_budget_bytes: int
    keep_all_peak: int
    predicted_peak: int
    graphs: tuple[GraphSummary, ...]
    graph_breaks: tuple[str, ...] = ()
    outside_bytes: int = 0
    """Measured outside the graphs (FSDP2, eager code), included in `predicted_peak`."""
    runs_eagerly: bool = False
    """The model runs as written from the third call on: its eager step, measured on fake
    tensors (`eager_peak_bytes`) and then in one real step (`eager_probed_bytes`), fits the
    budget, so the plans below do not run (remat.eager_peak)."""
    eager_peak_bytes: int | None = None
    eager_probed_bytes: int | None = None
    """The eager step's peak in one real step, where the fake one fit (remat.eager_peak)."""
    eager_note: str = ""
    """Why the eager step was not measured, where it was tried."""

    @classmethod
    def from_step(cls, step: StepPlans, options: PlanOptions) -> RematPlanReport:
        summaries = tuple(_summarize(item) for item in step.graphs)
        if step.joint is not None:
            # Planned whole: the step's figures come from the graphs joined as autograd runs.
            budget = step.budget_bytes or max(g.step_budget_bytes for g in step.graphs)
            keep_all = step.joint.keep_all_peak
        else:
            # Each graph was planned with what the others hold; the step's figures are the
            # worst. A fractional budget resolves per graph against the keep-all peak that
            # graph sees, so the step's budget is the largest of those.
            budget = max(g.step_budget_bytes for g in step.graphs)
            keep_all = max(g.keep_all_peak + g.held_elsewhere for g in step.graphs)
        return cls(
            budget=options.budget.describe(),
            step_budget_bytes=budget,
            keep_all_peak=keep_all,
            predicted_peak=step.predicted_peak,
            graphs=summaries,
            graph_breaks=step.graph_breaks,
            outside_bytes=step.outside_bytes,
            runs_eagerly=step.runs_eagerly,
            eager_peak_bytes=step.eager.peak_bytes if step.eager else None,
            eager_probed_bytes=step.eager.probed_bytes if step.eager else None,
            eager_note=step.eager.reason if step.eager else "",
        )

    @property
    def budget_fraction(self) -> float:
        return self.step_budget_bytes / self.keep_all_peak if self.keep_all_peak else 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"budget_fraction": self.budget_fraction}

    def __str__(self) -> str:
        as_given = (
            "" if self.budget == format_bytes(self.step_budget_bytes) else f"{self.budget} = "
        )
        lines = [
            f"remat plan: {len(self.graphs)} graph(s); budget {as_given}"
            f"{format_bytes(self.step_budget_bytes)} ({self.step_budget_bytes} bytes, "
            f"{self.budget_fraction:.1%} of the keep-all peak {format_bytes(self.keep_all_peak)})",
            f"  predicted peak {format_bytes(self.predicted_peak)} ({self.predicted_peak} bytes)",
        ]
        if self.outside_bytes:
            lines.append(
                f"  of which held outside the graphs at most {format_bytes(self.outside_bytes)} "
                "(FSDP2's buffers, eager code: measured by a probe step)"
            )
        for reason in self.graph_breaks:
            lines.append(f"  graph break: {reason}")
        lines.extend(self._eager_lines())
        for g in self.graphs:
            gap = "n/a" if g.gap is None else f"{g.gap:.1%}"
            lines.append(
                f"  {g.name}: {g.ops} ops ({g.forward_ops} forward); solver {g.solver} "
                f"[{g.status}, gap {gap}, {g.plan_s:.2f}s]; peak {format_bytes(g.predicted_peak)} "
                f"of {format_bytes(g.budget_bytes)} allowed"
            )
            lines.append(
                f"    kept for backward: {len(g.saved)} values, {format_bytes(g.saved_bytes)}"
            )
            extra = sum(n for _, n in g.recomputed)
            lines.append(
                f"    recomputed: {extra} op runs, {g.recompute_flops / 1e9:.3f} GFLOP, "
                f"~{g.recompute_time_s * 1e3:.2f} ms estimated"
            )
            for module, count in g.recomputed_by_module[:8]:
                lines.append(f"      {module or '<top>'}: {count}")
            if g.replayed_random_ops:
                lines.append(f"    random ops replayed: {', '.join(g.replayed_random_ops)}")
        return "\n".join(lines)

    def _eager_lines(self) -> list[str]:
        if self.eager_peak_bytes is None:
            return [f"  runs as fx code: {self.eager_note}"] if self.eager_note else []
        fake = f"{format_bytes(self.eager_peak_bytes)} on fake tensors"
        if self.eager_probed_bytes is None:
            return [f"  runs as fx code: the eager step would peak at {fake}, over the budget"]
        probed = f"{format_bytes(self.eager_probed_bytes)} ({self.eager_probed_bytes} bytes)"
        if self.runs_eagerly:
            return [
                f"  runs the model as written (the plan below does not run): its eager step "
                f"peaked at {probed} in one real step ({fake}), within the budget"
            ]
        return [f"  runs as fx code: one real eager step peaked at {probed}, over the budget"]


def _summarize(item: GraphPlan) -> GraphSummary:
    graph, plan, sim = item.captured.graph, item.plan, item.simulation
    runs = Counter(plan.schedule)
    recomputed = tuple(
        (graph.ops[op_id].name, count - 1) for op_id, count in runs.items() if count > 1
    )
    by_module = Counter()
    for op_id, count in runs.items():
        if count > 1:
            by_module[graph.ops[op_id].module_path] += count - 1
    return GraphSummary(
        index=item.index,
        name=graph.name,
        ops=len(graph.ops),
        forward_ops=graph.boundary,
        solver=plan.solver,
        status=plan.status.value,
        gap=plan.gap,
        budget_bytes=item.budget_bytes,
        predicted_peak=sim.peak,
        keep_all_peak=item.keep_all_peak,
        saved=item.saved_names,
        saved_bytes=sim.saved_bytes,
        recomputed=recomputed,
        recomputed_by_module=tuple(by_module.most_common()),
        recompute_time_s=sim.recompute_time,
        recompute_flops=sim.recompute_flops,
        replayed_random_ops=item.replayed_random_ops,
        plan_s=item.plan_s,
    )
