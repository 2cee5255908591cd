"""remat as a torch.compile backend: `torch.compile(model, backend="remat", options={...})`.

The name `remat` is registered through the `torch_dynamo_backends` entry point (pyproject.toml),
so it works after `pip install` with no import; `remat.backend(budget=..., **options)` returns
the same backend as a callable. Dynamo hands over one graph per piece of the step (a graph
break starts a new one); each is planned by remat's Planner, rewritten, and compiled by the
inner compiler (Inductor by default, or run as fx code).

The budget is for the whole step. Graphs are planned in the order they first run, and graph k
is given the budget less (a) the bytes the graphs whose forward has run and whose backward has
not yet run keep for their backward (measured from the plans, at the moment graph k is planned)
and (b) room for the gradients of the trainable parameters the other graphs of the step will
produce (the parameters of the modules in the compiled frame's locals). That is safe, and
greedy: an earlier graph never leaves room for a later one's activations beyond (b).

A graph Dynamo made dynamic (a second input size, or `dynamic=True`) is planned once per
concrete input signature, when that signature first runs: a plan per shape.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from remat.aot import GraphPlan, InnerCompilers, Planner, PlanOptions, StepPlans
from remat.backend_options import OPTION_NAMES, BackendOptionError, BackendOptions
from remat.budget import InfeasibleBudgetError
from remat.engines import check_graph
from remat.report import RematPlanReport
from remat.simulate import simulate

logger = logging.getLogger(__name__)


@dataclass
class _Ledger:
    """Which planned graphs hold values for their backward right now, and the last step's plans.

    A forward adds its graph, its backward removes it; a forward that runs with no graph in
    flight starts a new step. A forward whose backward never runs stays counted until that
    graph's forward runs again (conservative: a later graph is planned with less room).
    """

    in_flight: dict[int, int] = field(default_factory=dict)
    step: list[GraphPlan] = field(default_factory=list)

    def held(self) -> int:
        return sum(self.in_flight.values())

    def forward_ran(self, token: int, plan: GraphPlan, carried: int) -> None:
        if not self.in_flight:
            self.step = []
        self.in_flight[token] = carried
        self.step = [p for p in self.step if p is not plan] + [plan]

    def backward_ran(self, token: int) -> None:
        self.in_flight.pop(token, None)


_last: list[RematBackend] = []
"""The backend whose graph ran a forward most recently (what remat.last_plans() reports)."""

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
class _Compiled:
    """What one compile of a graph produced, captured by the tracked compilers."""

    keep_fx: bool = False
    plan: GraphPlan | None = None
    forward_fx: fx.GraphModule | None = None
    backward_fx: fx.GraphModule | None = None
    forward: Callable | None = None
    backward: Callable | None = None
    forward_inputs: Sequence[Any] = ()
    backward_inputs: Sequence[Any] = ()


_Build = tuple[Callable, GraphPlan, InnerCheck]
"""An Inductor build of one graph: the compiled callable, its plan, and how it measured."""


class RematBackend:
    """A torch.compile backend with its own plans: call it as Dynamo does, (gm, example_inputs)."""

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.inner_checks: list[InnerCheck] = []
        """Every graph compiled with inner="inductor", in the order they were compiled."""
        self._checks: dict[int, InnerCheck] = {}
        self._ledger = _Ledger()
        self._grad_bytes = 0
        self._reserve = 0
        self._steps = itertools.count()
        self._tokens = itertools.count()
        plan_options = PlanOptions(
            options.budget, options.solver, options.time_limit, options.loss_reserve
        )
        self.planner = Planner(
            plan_options,
            _prices,
            trainable_grad_bytes=lambda: self._grad_bytes,
            held=self._ledger.held,
            reserve=lambda: self._reserve,
        )

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        check_graph(gm)
        grad_bytes = _trainable_bytes_in_scope(example_inputs)
        if _is_symbolic(example_inputs):
            return _PerShape(self, gm, grad_bytes)
        return self.compile_graph(gm, example_inputs, grad_bytes)

    def compile_graph(
        self, gm: fx.GraphModule, example_inputs: Sequence[Any], grad_bytes: int
    ) -> Callable:
        """Plan, rewrite and compile one graph with static shapes."""
        self._grad_bytes = grad_bytes
        if not self._ledger.in_flight:
            self.planner.freeze_budget()
            self.planner.current_key = ("step", next(self._steps))
        if self.options.inner == "eager":
            return self._compile(gm, example_inputs, InnerCompilers(), _Compiled())
        return self._compile_inductor(gm, example_inputs)

    def _compile_inductor(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
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

        name = f"graph{len(self.planner.plans_for(self.planner.current_key).graphs)}"
        reserve, best, tried = 0, None, set()
        for attempt in range(1, _ATTEMPTS + 1):
            tried.add(reserve)
            record = _Compiled(keep_fx=True)
            try:
                with compile_context(example_inputs):
                    inner = inductor_compilers(gm, example_inputs)
                    compiled = self._compile(gm, example_inputs, inner, record, reserve)
            except InfeasibleBudgetError as error:
                logger.info("%s attempt %d: %s", name, attempt, error)
                reserve += error.budget - error.floor  # plan at the simulator's floor
                if best is not None or reserve in tried:
                    break
                continue
            plan = record.plan
            if plan is None:  # no backward: AOTAutograd's inference path, nothing was planned
                return compiled
            predicted = plan.plan.predicted_peak
            allowed = plan.budget_bytes + reserve
            expected = _expected_peak(plan, record)
            logger.info(
                "%s attempt %d: reserve %d, predicted %d, compiled %d, allowed %d",
                *(name, attempt, reserve, predicted, expected, allowed),
            )
            check = InnerCheck(name, "inductor", attempt, allowed, predicted, expected, reserve)
            best = self._better(best, (compiled, plan, check))
            fits = expected <= allowed
            if fits and (allowed - expected <= _SLACK * allowed or not plan.plan.recompute_flops):
                break
            reserve = expected - predicted
            if reserve in tried or not fits and best is not None:
                break
        if best is None:
            return self._compile_eager_fallback(gm, example_inputs, name, attempt)
        compiled, plan, check = best
        self._checks[id(plan)] = check
        self.inner_checks.append(check)
        return compiled

    def _better(self, best: _Build | None, build: _Build) -> _Build | None:
        """Of two builds keep the one that fits with less recomputation; discard the other's
        plan from the step's record."""
        _, plan, check = build
        if check.expected_peak > check.allowed_bytes:
            self._discard(plan)
            return best
        if best is not None and best[1].plan.recompute_time <= plan.plan.recompute_time:
            self._discard(plan)
            return best
        if best is not None:
            self._discard(best[1])
        return build

    def _compile_eager_fallback(
        self, gm: fx.GraphModule, example_inputs: Sequence[Any], name: str, attempts: int
    ) -> Callable:
        # Raises InfeasibleBudgetError (the simulator's floor) where the plan cannot fit either.
        record = _Compiled()
        compiled = self._compile(gm, example_inputs, InnerCompilers(), record)
        if record.plan is not None:
            plan = record.plan
            logger.warning(
                "remat: no Inductor build of %s measured within its %d-byte share of the budget "
                "in %d attempt(s); it runs as unfused fx code, which the plan fits exactly",
                *(name, plan.budget_bytes, attempts),
            )
            peak = plan.plan.predicted_peak
            check = InnerCheck(name, "eager", attempts, plan.budget_bytes, peak, peak, 0)
            self._checks[id(plan)] = check
            self.inner_checks.append(check)
        return compiled

    def _compile(
        self,
        gm: fx.GraphModule,
        example_inputs: Sequence[Any],
        inner: InnerCompilers,
        record: _Compiled,
        reserve: int = 0,
    ) -> Callable:
        self._reserve = reserve
        try:
            return self.planner.backend(gm, example_inputs, inner=self._tracked(inner, record))
        finally:
            self._reserve = 0

    def _discard(self, plan: GraphPlan) -> None:
        step = self.planner.plans_for(self.planner.current_key)
        step.graphs = [g for g in step.graphs if g is not plan]

    def _tracked(self, inner: InnerCompilers, record: _Compiled) -> InnerCompilers:
        """The same compilers, recording what they make into `record`, with the forward and
        backward reporting to the ledger when they run."""
        token = next(self._tokens)
        ledger, planner = self._ledger, self.planner

        def forward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
            # The partition has just run: the plan it made is the newest of the current step.
            plan = record.plan = planner.plans_for(planner.current_key).graphs[-1]
            carried = simulate(plan.captured.graph, plan.plan.schedule, plan.plan.boundary)
            if record.keep_fx:
                from remat.inductor import fx_copy

                record.forward_fx, record.forward_inputs = fx_copy(gm), list(inputs)
            compiled = record.forward = _boxed(inner.forward(gm, inputs))

            def run(args: list[Any]) -> Any:
                ledger.forward_ran(token, plan, carried.saved_bytes)
                _last[:] = [self]
                return compiled(args)

            run._boxed_call = True  # type: ignore[attr-defined]
            return run

        def backward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
            if record.keep_fx:
                from remat.inductor import fx_copy

                record.backward_fx, record.backward_inputs = fx_copy(gm), list(inputs)
            compiled = record.backward = _boxed(inner.backward(gm, inputs))

            def run(args: list[Any]) -> Any:
                ledger.backward_ran(token)
                return compiled(args)

            run._boxed_call = True  # type: ignore[attr-defined]
            return run

        return InnerCompilers(
            forward, backward, inner.inference, inner.decompositions, inner.defers_tangents
        )

    @property
    def last_plans(self) -> RematPlanReport | None:
        """Per-graph plans of the most recent step, in the order its graphs ran."""
        if not self._ledger.step:
            return None
        report = RematPlanReport.from_step(StepPlans(list(self._ledger.step)), self.planner.options)
        return _with_checks(report, self._ledger.step, self._checks)

    def __repr__(self) -> str:
        o = self.options
        budget = o.budget.bytes if o.budget.bytes is not None else o.budget.fraction
        return f"remat.backend(budget={budget!r}, solver={o.solver!r}, inner={o.inner!r})"


class _PerShape:
    """A Dynamo graph with symbolic sizes, planned once per concrete signature when it runs."""

    def __init__(self, backend: RematBackend, gm: fx.GraphModule, grad_bytes: int) -> None:
        self._backend = backend
        self._gm = gm
        self._grad_bytes = grad_bytes
        self.compiled: dict[tuple, Callable] = {}

    def __call__(self, *args: Any) -> Any:
        key = (torch.is_grad_enabled(), *_signature(args))
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self._backend.compile_graph(self._gm, list(args), self._grad_bytes)
            self.compiled[key] = compiled
        return compiled(*args)


def backend(budget: int | float | str, **options: Any) -> RematBackend:
    """The remat torch.compile backend as a callable: torch.compile(m, backend=remat.backend(...)).

    Options as for `torch.compile(m, backend="remat", options={...})`: solver ("auto", "ilp",
    "sqrt", "none"), time_limit (seconds), inner ("inductor" or "eager"), loss_reserve (bytes).
    """
    return RematBackend(BackendOptions.parse({"budget": budget, **options}))


_by_options: dict[int, tuple[Mapping[str, Any], RematBackend]] = {}
"""One backend per torch.compile call: torch passes that call's own options dict every time
(the dict is kept so its id is not reused)."""


def compile_with_options(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    options: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> Callable:
    """The `remat` entry point: torch calls it as compiler_fn(gm, example_inputs, options=...)."""
    if mode is not None and mode != "default":
        raise BackendOptionError(
            f"the remat backend takes no mode ({mode!r}); pass options={{'budget': ...}} with "
            f"any of {', '.join(OPTION_NAMES)}"
        )
    key = id(options)
    if options is None or key not in _by_options or _by_options[key][0] is not options:
        _by_options[key] = (options, RematBackend(BackendOptions.parse(options)))
    return _by_options[key][1](gm, example_inputs)


def last_plans() -> RematPlanReport | None:
    """The per-graph plans of the most recent step any remat backend ran (None before one)."""
    backend = last_backend()
    return backend.last_plans if backend is not None else None


def last_backend() -> RematBackend | None:
    """The remat backend whose graph ran a forward most recently (its plans, inner_checks)."""
    return _last[0] if _last else None


def _with_checks(
    report: RematPlanReport, plans: Sequence[GraphPlan], checks: Mapping[int, InnerCheck]
) -> RematPlanReport:
    """The report with each Inductor-compiled graph's peak and budget as measured and allowed
    (the simulator's figures are for the unfused plan)."""
    graphs = []
    for summary, plan in zip(report.graphs, plans, strict=True):
        check = checks.get(id(plan))
        if check is not None:
            summary = replace(
                summary, predicted_peak=check.expected_peak, budget_bytes=check.allowed_bytes
            )
        graphs.append(summary)
    peak = max(g.predicted_peak + p.held_elsewhere for g, p in zip(graphs, plans, strict=True))
    return replace(report, graphs=tuple(graphs), predicted_peak=peak)


def _expected_peak(plan: GraphPlan, record: _Compiled) -> int:
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
    sim = simulate(plan.captured.graph, plan.plan.schedule, boundary)
    forward_peak = max(sim.timeline[:boundary], default=0)
    backward_peak = max((*sim.timeline[boundary:], sim.boundary_bytes))
    return max(forward_peak + forward_excess, backward_peak + backward_excess)


def _prices(gm: fx.GraphModule, device: torch.device) -> dict:
    from remat.cost import estimate_costs

    return estimate_costs(gm, device)


def _boxed(compiled: Callable) -> Callable:
    if getattr(compiled, "_boxed_call", False):
        return compiled
    from torch._functorch.aot_autograd import make_boxed_func

    return make_boxed_func(compiled)


def _is_symbolic(example_inputs: Sequence[Any]) -> bool:
    for x in example_inputs:
        if isinstance(x, torch.SymInt | torch.SymFloat):
            return True
        if isinstance(x, torch.Tensor) and any(
            isinstance(d, torch.SymInt) for d in (*x.shape, *x.stride())
        ):
            return True
    return False


def _signature(args: Sequence[Any]) -> tuple:
    return tuple(
        (tuple(x.shape), tuple(x.stride()), x.dtype, x.device.type, x.requires_grad)
        if isinstance(x, torch.Tensor)
        else (type(x).__name__, x if isinstance(x, int | float | bool) else None)
        for x in args
    )


def _trainable_bytes_in_scope(example_inputs: Sequence[Any]) -> int:
    """Bytes of the trainable parameters whose gradients this step produces, as far as can be
    seen: the parameters of every module among the compiled frame's locals, and this graph's."""
    params: dict[int, nn.Parameter] = {
        id(x): x for x in example_inputs if isinstance(x, nn.Parameter) and x.requires_grad
    }
    for value in _frame_locals().values():
        if isinstance(value, nn.Module):
            params.update((id(p), p) for p in value.parameters() if p.requires_grad)
    return sum(p.numel() * p.element_size() for p in params.values())


def _frame_locals() -> dict[str, Any]:
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except (ImportError, AttributeError, AssertionError, IndexError):
        return {}
    return dict(getattr(tx, "f_locals", None) or {}) if tx is not None else {}
