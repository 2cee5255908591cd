"""One graph of the torch.compile backend compiled by Inductor and fitted to its budget.

The simulator models the plan's unfused fx code exactly; Inductor's code fuses some of the
values it counts away and may allocate others it does not. So each Inductor build is measured
when it is compiled (remat.inductor.measure_excess), and the graph is planned again with the
difference withheld from its budget (or granted beyond it) until a build fits. Where none does,
the plan runs as fx code (the eager fallback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.fx as fx

from remat.aot import GraphPlan, Planner
from remat.budget import InfeasibleBudgetError
from remat.inner import InnerCompilers
from remat.torch_internals import make_boxed_func

logger = logging.getLogger(__name__)

_ATTEMPTS = 4
"""Inductor compiles of one graph while its measured peak is re-fitted to the budget."""

_SLACK = 0.05
"""A fitting Inductor build leaving more than this fraction of the graph's budget unused is
re-planned with that much more (fewer recomputations), if attempts remain."""


@dataclass(frozen=True)
class InnerCheck:
    """One graph's Inductor code against its budget, measured when it was compiled."""

    graph: str
    inner: str
    """"inductor", or "eager" where no Inductor build fitted (the plan then runs as fx code)."""
    attempts: int
    allowed_bytes: int
    """The graph's share of the step's budget."""
    predicted_peak: int
    """The simulator's peak of the plan that was kept (unfused fx code)."""
    expected_peak: int
    """That peak, each phase (forward, backward) moved by what the compiled code measured
    above or below the plan's fx modules in it: what the graph adds to the step's peak."""
    reserve_bytes: int
    """Bytes withheld from the solver's budget (negative: granted beyond it) to get there."""


@dataclass
class Compiled:
    """What one compile of a graph produced, captured by the tracked compilers."""

    keep_fx: bool = False
    plan: GraphPlan | None = None
    forward_fx: fx.GraphModule | None = None
    backward_fx: fx.GraphModule | None = None
    forward: Callable | None = None
    backward: Callable | None = None
    forward_inputs: Sequence[Any] = ()
    backward_inputs: Sequence[Any] = ()


CompileOnce = Callable[[InnerCompilers, Compiled, int], Callable]
"""Plan the graph with `reserve` bytes withheld from its budget (the int), rewrite it, and
compile the result with the inner compilers, recording what they made into the `Compiled`."""

Discard = Callable[[GraphPlan], None]
"""Remove a plan whose build was not kept from the step's record."""


@dataclass(frozen=True)
class Fitted:
    """The build of one graph that was kept."""

    compiled: Callable
    plan: GraphPlan | None
    """None where nothing was planned (no backward: AOTAutograd's inference path)."""
    check: InnerCheck | None
    """How the kept build measured against its budget; None where nothing was planned."""


_Build = tuple[Callable, GraphPlan, InnerCheck]
"""An Inductor build of one graph: the compiled callable, its plan, and how it measured."""


def fit_inductor(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    name: str,
    compile_once: CompileOnce,
    discard: Discard,
) -> Fitted:
    """Compile with Inductor and fit its measured peak to the graph's budget.

    Each attempt plans with `reserve` bytes withheld from the graph's budget (negative:
    granted beyond it), compiles, and measures the compiled code's peak against the plan's
    simulated one; the difference is the next attempt's reserve. So an over-budget build is
    re-planned tighter, and one far below its budget (Inductor fuses away values the
    simulator counts) looser, for fewer recomputations. A budget below the simulator's
    floor is tried at the floor, whose compiled code may fit. The fitting build with the
    least recomputation is kept; with none, the plan runs as fx code, which the simulator
    models exactly."""
    from remat.inductor import compile_context, inductor_compilers

    reserve, best, tried = 0, None, set()
    for attempt in range(1, _ATTEMPTS + 1):
        tried.add(reserve)
        record = Compiled(keep_fx=True)
        try:
            with compile_context(example_inputs):
                inner = inductor_compilers(gm, example_inputs)
                compiled = compile_once(inner, record, reserve)
        except InfeasibleBudgetError as error:
            logger.info("%s attempt %d: %s", name, attempt, error)
            reserve += error.budget - error.floor  # plan at the simulator's floor
            if best is not None or reserve in tried:
                break
            continue
        plan = record.plan
        if plan is None:  # no backward: AOTAutograd's inference path, nothing was planned
            return Fitted(compiled, None, None)
        predicted = plan.plan.predicted_peak
        allowed = plan.budget_bytes + reserve
        expected = _expected_peak(plan, record)
        logger.info(
            "%s attempt %d: reserve %d, predicted %d, compiled %d, allowed %d",
            *(name, attempt, reserve, predicted, expected, allowed),
        )
        check = InnerCheck(name, "inductor", attempt, allowed, predicted, expected, reserve)
        best = _better(best, (compiled, plan, check), discard)
        fits = expected <= allowed
        if fits and (allowed - expected <= _SLACK * allowed or not plan.plan.recompute_flops):
            break
        reserve = expected - predicted
        if reserve in tried or not fits and best is not None:
            break
    if best is None:
        return eager_fallback(name, attempt, compile_once)
    compiled, plan, check = best
    return Fitted(compiled, plan, check)


def eager_fallback(name: str, attempts: int, compile_once: CompileOnce) -> Fitted:
    """The graph's plan run as fx code, where no Inductor build fitted.

    Raises InfeasibleBudgetError (the simulator's floor) where the plan cannot fit either."""
    record = Compiled()
    compiled = compile_once(InnerCompilers(), record, 0)
    plan = record.plan
    if plan is None:
        return Fitted(compiled, None, None)
    logger.warning(
        "remat: no Inductor build of %s measured within its %d-byte share of the budget "
        "in %d attempt(s); it runs as unfused fx code, which the plan fits exactly",
        *(name, plan.budget_bytes, attempts),
    )
    peak = plan.plan.predicted_peak
    check = InnerCheck(name, "eager", attempts, plan.budget_bytes, peak, peak, 0)
    return Fitted(compiled, plan, check)


def _better(best: _Build | None, build: _Build, discard: Discard) -> _Build | None:
    """Of two builds keep the one that fits with less recomputation; discard the other's
    plan from the step's record."""
    _, plan, check = build
    if check.expected_peak > check.allowed_bytes:
        discard(plan)
        return best
    if best is not None and best[1].plan.recompute_time <= plan.plan.recompute_time:
        discard(plan)
        return best
    if best is not None:
        discard(best[1])
    return build


def _expected_peak(plan: GraphPlan, record: Compiled) -> int:
    """The graph's simulated peak, each phase raised by what Inductor's code measured above the
    plan's fx modules in that phase."""
    from remat.inductor import measure_excess

    forward_excess, backward_excess = measure_excess(
        record.forward_fx,
        record.backward_fx,
        record.forward,
        record.backward,
        (record.forward_inputs, record.backward_inputs),
        plan.captured.device,
    )
    boundary = plan.plan.boundary
    sim = plan.simulation
    forward_peak = max(sim.timeline[:boundary], default=0)
    backward_peak = max((*sim.timeline[boundary:], sim.boundary_bytes))
    return max(forward_peak + forward_excess, backward_peak + backward_excess)


def recording_compilers(
    inner: InnerCompilers, record: Compiled, planner: Planner
) -> InnerCompilers:
    """`inner`, recording into `record` what fit_inductor measures: the fx modules, their
    compiled (boxed) code and example inputs, and the plan the partition just made."""
    from remat.inductor import fx_copy

    def forward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
        # AOTAutograd compiles the forward right after the partition that planned it.
        record.plan = planner.last_planned
        if record.keep_fx:
            record.forward_fx, record.forward_inputs = fx_copy(gm), list(inputs)
        record.forward = boxed(inner.forward(gm, inputs))
        return record.forward

    def backward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
        if record.keep_fx:
            record.backward_fx, record.backward_inputs = fx_copy(gm), list(inputs)
        record.backward = boxed(inner.backward(gm, inputs))
        return record.backward

    return InnerCompilers(
        forward, backward, inner.inference, inner.decompositions, inner.defers_tangents
    )


def boxed(compiled: Callable) -> Callable:
    """`compiled` in AOTAutograd's boxed calling convention (one list of arguments)."""
    if getattr(compiled, "_boxed_call", False):
        return compiled
    return make_boxed_func(compiled)
