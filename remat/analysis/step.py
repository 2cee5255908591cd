"""One training step, captured through the real pipeline and planned again at any budget.

`capture_step` runs the step once through `remat.compile(model, budget=1.0, solver="none")`:
Dynamo and AOTAutograd trace it, the cost model prices it, nothing is recomputed. What the
planner recorded (one GraphPlan per captured graph, more than one where the model breaks the
graph) is then planned again at other budgets by `plan_step`, the way the planner itself does:
graph by graph, each allowed the step's budget less what the other graphs hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, PlanStatus, RematGraph
from remat.simulate import simulation_of
from remat.step_plan import GraphPlan
from remat.torch_internals import tree_leaves


class TraceError(ValueError):
    """The model's training step could not be captured (the message says why)."""


@dataclass(frozen=True)
class CapturedStep:
    graphs: tuple[GraphPlan, ...]
    """The planner's record of each captured graph, in the order they ran (keep-all plans)."""
    other_grads: tuple[int, ...]
    """Per graph: gradient bytes the step's other graphs produce (held while it runs)."""
    capture_s: float

    @property
    def rematgraphs(self) -> tuple[RematGraph, ...]:
        return tuple(item.captured.graph for item in self.graphs)

    @property
    def keep_all_plans(self) -> tuple[Plan, ...]:
        return tuple(item.plan for item in self.graphs)

    @property
    def keep_all_peak(self) -> int:
        return step_peak(self, self.keep_all_plans)

    @property
    def keep_all_time(self) -> float:
        """Estimated seconds of the whole step with nothing recomputed."""
        return sum(graph.total_time for graph in self.rematgraphs)


def step_loss(output: Any) -> torch.Tensor:
    """The model's own loss (a scalar among its outputs), else the sum of its float outputs."""
    leaves = [
        x
        for x in tree_leaves(output)
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad
    ]
    if not leaves:
        raise TraceError(
            "the model's outputs have no float tensor that requires grad; "
            "analyze a model in training mode with trainable parameters"
        )
    scalars = [x for x in leaves if x.dim() == 0]
    if scalars:
        return sum(scalars[1:], scalars[0])
    return sum((x.float().sum() for x in leaves[1:]), leaves[0].float().sum())


def capture_step(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    *,
    loss: Callable[[Any], torch.Tensor] = step_loss,
) -> CapturedStep:
    """Run one forward+backward of `model` through remat (nothing recomputed) and return it.

    The step really runs: parameter gradients are set to None again afterwards, and buffers
    such as BatchNorm running statistics update once, as in a training step.
    """
    import remat

    started = time.perf_counter()
    compiled = remat.compile(model, budget=1.0, solver="none")
    try:
        loss(compiled(*args, **(kwargs or {}))).backward()
    except TraceError:
        raise
    except Exception as error:  # Dynamo, AOTAutograd and the model itself raise anything
        raise TraceError(f"the training step failed to trace: {_one_line(error)}") from error
    finally:
        model.zero_grad(set_to_none=True)
    steps = list(compiled.remat_plans.values())
    if not steps or not steps[0].graphs:
        raise TraceError("nothing was captured: the step has no backward graph")
    graphs = tuple(steps[0].graphs)
    carried, other = 0, []
    for item in graphs:
        other.append(max(0, item.held_elsewhere - carried))
        carried += _saved_bytes(item.captured.graph, item.plan)
    return CapturedStep(graphs, tuple(other), time.perf_counter() - started)


def _one_line(error: BaseException) -> str:
    """The first line of the root cause (Dynamo wraps the model's own error several times)."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _saved_bytes(graph: RematGraph, plan: Plan) -> int:
    return simulation_of(graph, plan).saved_bytes


def held_bytes(step: CapturedStep, plans: tuple[Plan, ...]) -> tuple[int, ...]:
    """Per graph: bytes the other graphs hold while it runs, under `plans` for the earlier ones."""
    held, carried = [], 0
    for item, other, plan in zip(step.graphs, step.other_grads, plans):
        held.append(other + carried)
        carried += _saved_bytes(item.captured.graph, plan)
    return tuple(held)


def step_peak(step: CapturedStep, plans: tuple[Plan, ...]) -> int:
    """Predicted peak of the whole step: the worst graph's peak plus what the others hold."""
    held = held_bytes(step, plans)
    return max(plan.predicted_peak + h for plan, h in zip(plans, held))


def plan_step(
    step: CapturedStep, budget: int, solve: Callable[[RematGraph, int], Plan]
) -> tuple[Plan, ...]:
    """Plan every graph so the step peaks at <= `budget` bytes; InfeasibleBudgetError if not."""
    plans: list[Plan] = []
    carried = 0
    for item, other in zip(step.graphs, step.other_grads):
        held = other + carried
        graph = item.captured.graph
        try:
            plan = solve(graph, max(1, budget - held))
        except InfeasibleBudgetError as error:
            if held == 0:
                raise
            raise InfeasibleBudgetError(
                budget, error.floor + held, f"{graph.name}, with {held} bytes held by others"
            ) from None
        plans.append(plan)
        carried += _saved_bytes(graph, plan)
    return tuple(plans)


_STATUS_RANK = {PlanStatus.HEURISTIC: 0, PlanStatus.FEASIBLE: 1, PlanStatus.OPTIMAL: 2}


def step_status(plans: tuple[Plan, ...]) -> PlanStatus:
    """The weakest guarantee among the graphs' plans."""
    return min((plan.status for plan in plans), key=_STATUS_RANK.__getitem__)


def step_gap(plans: tuple[Plan, ...]) -> float | None:
    """Relative gap of the step's recompute time to the sum of the proven bounds."""
    if any(plan.lower_bound is None for plan in plans):
        return None
    cost = sum(plan.recompute_time for plan in plans)
    bound = sum(plan.lower_bound or 0.0 for plan in plans)
    return 0.0 if cost <= 0 else max(0.0, (cost - bound) / cost)
