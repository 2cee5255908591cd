"""remat as a torch.compile backend: `torch.compile(model, backend="remat", options={...})`.

The name `remat` is registered through the `torch_dynamo_backends` entry point (pyproject.toml),
so it works after `pip install` with no import; `remat.backend(budget=..., **options)` returns
the same backend as a callable. Dynamo hands over one graph per piece of the step (a graph
break starts a new one); each is planned by remat's Planner, rewritten, and compiled by the
inner compiler (Inductor by default, or run as fx code).

The budget is for the whole step. On the first step graphs are planned in the order they first
run: graph k is given the budget less (a) the bytes the graphs whose forward has run and whose
backward has not yet run keep for their backward and (b) room for the gradients of the
trainable parameters the step's other graphs produce (the parameters of the modules in the
compiled frame's locals). Once that step has ended, a step of several graphs (graph breaks,
DDP's buckets) is planned whole and each graph compiled again under its share of the joint
plan (remat.backend_step): from the second step on, the floor is the whole step's.

A graph Dynamo made dynamic (a second input size, or `dynamic=True`) is planned once per
concrete input signature, when that signature first runs: a plan per shape.

Modules: this one is the entry points and the backend object; remat.backend_fit fits one graph's
Inductor build to its budget (or falls back to fx code); remat.backend_ledger tracks which
graphs hold values for their backward, and reports the last step's plans; remat.backend_step
plans a graph-broken step whole and compiles its graphs again.

Nothing here outlives what it was made for: a backend lives as long as the compiled code it
made (Dynamo's caches hold that until the model is dropped and `torch._dynamo.reset()`), and
the backend of a torch.compile call's options dict, or the one `remat.last_plans()` reports,
is held by a weak reference.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from remat.aot import GraphPlan, Planner, PlanOptions
from remat.backend_fit import Compiled, Fitted, InnerCheck, fit_inductor, recording_compilers
from remat.backend_ledger import Ledger
from remat.backend_options import OPTION_NAMES, BackendOptionError, BackendOptions
from remat.backend_probe import OutsideProbe
from remat.backend_step import PerRun, Replannable, WholeStep
from remat.call_warnings import warn_first_step_over_budget
from remat.engines import check_backend_graph, traced_from_fsdp2
from remat.inner import InnerCompilers
from remat.ir import Plan, RematGraph
from remat.measure import outside_tracking_paused
from remat.report import RematPlanReport
from remat.signature import is_symbolic
from remat.step_plan import GraphRequest, StepPlans
from remat.torch_internals import dynamo_frame_locals, queue_backward_callback

_last: weakref.ref[RematBackend] | None = None
"""The backend whose graph ran a forward most recently (what remat.last_plans() reports), for
as long as it lives."""


class RematBackend:
    """A torch.compile backend with its own plans: call it as Dynamo does, (gm, example_inputs)."""

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.inner_checks: list[InnerCheck] = []
        """Every graph compiled with inner="inductor", in the order they were compiled."""
        self._checks: dict[int, InnerCheck] = {}
        self._ledger = Ledger()
        self._grad_bytes = 0
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
        )
        self.whole_step = WholeStep(self.planner, self._ledger)
        self._ledger.on_step_end.append(self._step_ending)

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        check_backend_graph()
        if self.whole_step.probe is None and traced_from_fsdp2(gm, dynamo_frame_locals()):
            # What FSDP2 and the eager code around the blocks hold is measured in the second
            # step; until then each graph runs its leanest plan (remat.backend_probe).
            self.whole_step.probe = OutsideProbe()
            self.planner.lean_plans = True
        grad_bytes = _trainable_bytes_in_scope(example_inputs)
        make = functools.partial(Replannable, self.whole_step, self.compile_graph, gm, grad_bytes)
        symbolic = is_symbolic(example_inputs)
        graph = PerRun(make, self._ledger, symbolic)
        if not symbolic:
            graph.compile_first(example_inputs)
        return graph

    def compile_graph(
        self,
        gm: fx.GraphModule,
        example_inputs: Sequence[Any],
        grad_bytes: int,
        pinned: tuple[RematGraph, Plan] | None = None,
    ) -> tuple[Callable, GraphPlan | None]:
        """Plan, rewrite and compile one graph with static shapes (under `pinned`, its plan
        from the step's joint plan); returns the compiled code and its plan (None: no backward,
        nothing planned)."""
        self._grad_bytes = grad_bytes
        if not self._ledger.in_flight:
            self.planner.freeze_budget()
            self.planner.current_key = ("step", next(self._steps))
        # A graph after the first of a step that no plan fits beside what the graphs before it
        # hold runs its lowest-peak plan (with a warning); the step is then planned whole.
        request = GraphRequest(pinned=pinned, tolerate_infeasible=bool(self._ledger.in_flight))
        compile_once = functools.partial(self._compile, gm, example_inputs, request)
        if self.options.inner == "eager":
            record = Compiled()
            fitted = Fitted(compile_once(InnerCompilers(), record, 0), record.plan, None)
        else:
            name = f"graph{len(self.planner.plans_for(self.planner.current_key).graphs)}"
            fitted = fit_inductor(gm, example_inputs, name, compile_once, self.planner.discard)
        if fitted.plan is not None and fitted.plan.over_budget:
            step = StepPlans([*self._ledger.step, fitted.plan])
            warn_first_step_over_budget(
                fitted.plan.index, step.predicted_peak, fitted.plan.step_budget_bytes
            )
        return self._keep(fitted), fitted.plan

    def _keep(self, fitted: Fitted) -> Callable:
        if fitted.plan is not None and fitted.check is not None:
            self._checks[id(fitted.plan)] = fitted.check
            self.inner_checks.append(fitted.check)
        return fitted.compiled

    def _compile(
        self,
        gm: fx.GraphModule,
        example_inputs: Sequence[Any],
        request: GraphRequest,
        inner: InnerCompilers,
        record: Compiled,
        reserve: int,
    ) -> Callable:
        tracked = self._tracked(inner, record)
        return self.planner.backend(gm, example_inputs, tracked, replace(request, reserve=reserve))

    def _tracked(self, inner: InnerCompilers, record: Compiled) -> InnerCompilers:
        """The same compilers, recording what they make into `record`, with the forward and
        backward reporting to the ledger when they run."""
        token = next(self._tokens)
        ledger = self._ledger
        recorded = recording_compilers(inner, record, self.planner)

        def forward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
            compiled = recorded.forward(gm, inputs)
            plan = record.plan
            assert plan is not None  # the partition that planned it has just run
            carried = plan.carried_bytes

            def run(args: list[Any]) -> Any:
                ledger.forward_ran(token, plan, carried)
                _remember(self)
                with outside_tracking_paused():
                    return compiled(args)

            run._boxed_call = True  # type: ignore[attr-defined]
            return run

        def backward(gm: fx.GraphModule, inputs: Sequence[Any]) -> Callable:
            compiled = recorded.backward(gm, inputs)

            def run(args: list[Any]) -> Any:
                ledger.backward_ran(token)
                with outside_tracking_paused():
                    return compiled(args)

            run._boxed_call = True  # type: ignore[attr-defined]
            return run

        return InnerCompilers(
            forward, backward, inner.inference, inner.decompositions, inner.defers_tangents
        )

    def _step_ending(self) -> None:
        probe = self.whole_step.probe
        if probe is not None:
            probe.step_ending()
        # Which graph outputs the step still holds once its backward pass is over (what
        # nothing holds after it is counted until its graph's backward: remat.gradient_links).
        ios = [g.io for g in self._ledger.step if g.io is not None]
        queue_backward_callback(lambda: [io.step_ended() for io in ios])

    @property
    def last_plans(self) -> RematPlanReport | None:
        """Per-graph plans of the most recent step, in the order its graphs ran."""
        return self._ledger.report(self.planner.options, self._checks, self.whole_step.joints)

    def __repr__(self) -> str:
        o = self.options
        budget = o.budget.bytes if o.budget.bytes is not None else o.budget.fraction
        return f"remat.backend(budget={budget!r}, solver={o.solver!r}, inner={o.inner!r})"


def backend(budget: int | float | str, **options: Any) -> RematBackend:
    """The remat torch.compile backend as a callable: torch.compile(m, backend=remat.backend(...)).

    Options as for `torch.compile(m, backend="remat", options={...})`: solver ("auto", "ilp",
    "sqrt", "none"), time_limit (seconds), inner ("inductor" or "eager"), loss_reserve (bytes).
    """
    return RematBackend(BackendOptions.parse({"budget": budget, **options}))


_by_options: dict[int, tuple[Mapping[str, Any], weakref.ref[RematBackend]]] = {}
"""One backend per torch.compile call: torch passes that call's own options dict every time.
An entry lasts while its backend does, i.e. while the compiled code it made is alive; it keeps
the options dict so that its id is not reused meanwhile."""


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
    return _backend_for(options)(gm, example_inputs)


def _backend_for(options: Mapping[str, Any] | None) -> RematBackend:
    """The backend of this options dict: the one made for it before if it is still alive."""
    key = id(options)
    entry = _by_options.get(key) if options is not None else None
    found = entry[1]() if entry is not None and entry[0] is options else None
    if found is not None:
        return found
    made = RematBackend(BackendOptions.parse(options))
    if options is not None:

        def forget(ref: weakref.ref[RematBackend], key: int = key) -> None:
            if _by_options.get(key, (None, None))[1] is ref:
                del _by_options[key]

        _by_options[key] = (options, weakref.ref(made, forget))
    return made


def last_plans() -> RematPlanReport | None:
    """The per-graph plans of the most recent step any remat backend ran (None before one, or
    once that backend is gone with the model it compiled)."""
    backend = last_backend()
    return backend.last_plans if backend is not None else None


def last_backend() -> RematBackend | None:
    """The remat backend whose graph ran a forward most recently (its plans, inner_checks)."""
    return _last() if _last is not None else None


def _remember(backend: RematBackend) -> None:
    global _last
    if _last is None or _last() is not backend:
        _last = weakref.ref(backend)


def _prices(gm: fx.GraphModule, device: torch.device) -> dict:
    from remat.cost import estimate_costs

    return estimate_costs(gm, device)


def _trainable_bytes_in_scope(example_inputs: Sequence[Any]) -> int:
    """Bytes of the trainable parameters whose gradients this step produces, as far as can be
    seen: the parameters of every module among the compiled frame's locals, and this graph's."""
    params: dict[int, nn.Parameter] = {
        id(x): x for x in example_inputs if isinstance(x, nn.Parameter) and x.requires_grad
    }
    for value in dynamo_frame_locals().values():
        if isinstance(value, nn.Module):
            params.update((id(p), p) for p in value.parameters() if p.requires_grad)
    return sum(p.numel() * p.element_size() for p in params.values())
