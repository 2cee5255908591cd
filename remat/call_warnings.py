"""The RuntimeWarnings a training call under remat.compile or the torch.compile backend raises:
each says when a call may have gone over the budget, or planned nothing, and what to do."""

from __future__ import annotations

import warnings

from remat.budget import format_bytes
from remat.step_plan import StepPlans


def warn_over_budget(step: StepPlans, budget: int | None) -> None:
    warnings.warn(
        f"remat: this call ran graphs planned one by one whose step peak is predicted at "
        f"{format_bytes(step.predicted_peak)}, above the budget "
        f"{format_bytes(budget or 0)}; the step's graphs kept changing from call to call, so "
        "remat stopped planning them whole. Remove the graph breaks or raise the budget.",
        RuntimeWarning,
        stacklevel=3,
    )


def warn_nothing_planned() -> None:
    warnings.warn(
        "remat: Dynamo compiled no graph of this training call (it skipped the model's forward, "
        "e.g. at a graph break inside a loop, or the forward is excluded from tracing), so the "
        "call ran eagerly with nothing planned: the budget does not hold. Set "
        'TORCH_LOGS="graph_breaks" to see why, and remove the break.',
        RuntimeWarning,
        stacklevel=3,
    )


def warn_discarded_forward(peak: int, budget: int) -> None:
    warnings.warn(
        f"remat: the first call's forward, planned graph by graph before the step's graphs were "
        f"known, may have reached {format_bytes(peak)} (simulated), above the budget "
        f"{format_bytes(budget)}; it was discarded and the call ran again planned whole. Later "
        "calls run the whole step's plan. Remove the graph breaks to avoid this.",
        RuntimeWarning,
        stacklevel=3,
    )


def warn_probe_over_budget(peak: int, outside: int, budget: int) -> None:
    warnings.warn(
        f"remat: the probe step that measures what FSDP2 and the model's eager code hold may "
        f"have reached {format_bytes(peak)} (simulated, with what it measured), above the "
        f"budget {format_bytes(budget)}: it ran with plans made before that was known (at most "
        f"{format_bytes(outside)} at once). Later calls count it and run within the budget.",
        RuntimeWarning,
        stacklevel=3,
    )


def warn_first_step_over_budget(index: int, peak: int, budget: int) -> None:
    warnings.warn(
        f"remat: graph {index} of this graph-broken step has no plan within what the budget "
        f"leaves it beside the graphs before it, so this step runs its lowest-peak plan and may "
        f"reach {format_bytes(peak)} (simulated), above the budget {format_bytes(budget)}. The "
        "step's graphs are planned together before the next step, which runs within the budget "
        "(or raises InfeasibleBudgetError naming the whole step's floor). Remove the graph "
        "breaks to plan the first step whole too.",
        RuntimeWarning,
        stacklevel=3,
    )
