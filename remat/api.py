"""remat.compile: wrap a module so its training step runs under a memory budget.

Thin on purpose: capture, pricing, solving and rewriting live in their own modules; this file
turns the user's call into a Planner, hands the model to Dynamo with remat's backend, and routes
no-grad calls (eval, inference) to the original module, where remat costs nothing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from remat.aot import Planner
from remat.backend_options import INNER_NAMES
from remat.budget import InfeasibleBudgetError, parse_budget, parse_reserve
from remat.call_warnings import (
    warn_discarded_forward,
    warn_nothing_planned,
    warn_over_budget,
    warn_probe_over_budget,
)
from remat.dynamo_calls import break_reasons, call_under_dynamo, static_only, summarize_break
from remat.eager_peak import eager_candidate, eager_step_within, model_modes
from remat.engines import engine_reserve
from remat.fsdp import ShardedUnits, check_units, probe_outside, sharded_units
from remat.inductor_fit import InductorFitting
from remat.model_state import ModelState
from remat.report import RematPlanReport
from remat.signature import input_signature
from remat.step_plan import PlanOptions, StepPlans
from remat.torch_internals import profiler_enabled, unset_fake_temporarily


class RematModule(nn.Module):
    """The compiled model: same parameters, buffers, call signature and outputs as the original."""

    def __init__(
        self,
        module: nn.Module,
        options: PlanOptions,
        timing: str = "estimate",
        inner: str = "eager",
    ) -> None:
        super().__init__()
        self._orig_mod = module
        self._options = options
        units = sharded_units(module)
        if units:
            check_units(units, inner)
        self._sharded = ShardedUnits(module, tuple(units)) if units else None
        """Under FSDP2: the sharded blocks, compiled one by one (remat.fsdp)."""
        self._planner = Planner(
            options,
            _PRICES[timing],
            # Under FSDP2 the gradients of what runs eagerly (sharded, as reduce-scattered)
            # are among what the probe step measures outside the graphs.
            None if self._sharded else lambda: _trainable_grad_bytes(module),
            reserve=lambda: engine_reserve(module),
        )
        self._inductor = InductorFitting(self._planner) if inner == "inductor" else None
        """With inner="inductor": the backend that compiles each planned graph by Inductor."""
        self._planner.tolerate_infeasible = True
        self._planner.untracked_graphs = self._sharded is not None
        self._joint: dict[tuple, Callable[..., Any]] = {}
        """Per input signature: the step compiled afresh with its graphs' joint plan."""
        self._settled: set[tuple] = set()
        """Input signatures whose last call planned nothing: their calls just run."""
        self._eager: dict[tuple, bool] = {}
        """Per settled input signature and the model's modes (`model_modes`): whether it runs
        the model as written (remat.eager_peak)."""
        self._compiled: Callable[..., Any] = self._compile()
        # Tools that read the forward's parameters (HF Trainer drops dataset columns the model
        # does not take) see the original's signature.
        step = type(self).forward.__get__(self)
        self.forward = functools.wraps(module.forward)(lambda *a, **k: step(*a, **k))

    def _fresh_backend(self) -> Callable[..., Any]:
        """A backend Dynamo has not seen (so it compiles the step afresh) that plans with the
        planner: each graph with the joint plan made for it, where there is one."""
        return static_only(self._inductor if self._inductor is not None else self._planner.backend)

    def _compile(self) -> Callable[..., Any]:
        """The model under Dynamo with a fresh backend (so it compiles afresh); under FSDP2,
        each sharded block on its own, the rest eager."""
        if self._sharded is not None:
            return self._sharded.compile(self._fresh_backend)
        return torch.compile(self._orig_mod, backend=self._fresh_backend(), dynamic=False)

    @property
    def original_module(self) -> nn.Module:
        return self._orig_mod

    def __getattr__(self, name: str) -> Any:
        """What the wrapper does not have comes from the model it wraps (as torch.compile's
        module does): `model.config`, `save_pretrained`, `generate` (which runs the original)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "_orig_mod":
                raise
            return getattr(self._orig_mod, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self._orig_mod(*args, **kwargs)
        key = input_signature(args, kwargs)
        if key in self._settled:
            if self._runs_eagerly(key, args, kwargs):
                self._planner.current_key = key
                return self._orig_mod(*args, **kwargs)
            return self._run_settled(key, args, kwargs)
        self._planner.recording = True
        # This call may plan graphs: if the step turns out to be several graphs whose plans,
        # made one by one, break the budget, it runs again under a plan of the whole step.
        state = ModelState.save(self._orig_mod)
        probe = None
        if self._sharded is not None and key not in self._planner.outside_profiles:
            probe = self._measure_outside(key, args, kwargs, state)
        planned_before = self._planner.graphs_planned
        while True:
            result = self._run(key, args, kwargs)
            try:
                joint = self._planner.plan_jointly(key)
            except InfeasibleBudgetError:
                del result
                self._abandon(key, state)
                raise
            if joint is not None and joint.worth_recompiling:
                self._joint[key] = self._compile()
            if joint is None or not joint.ran_over_budget:
                break
            if joint.ran_forward_peak > joint.budget:
                warn_discarded_forward(joint.ran_forward_peak, joint.budget)
            del result
            state.restore()
        step = self._planner.steps.get(key)
        if step is not None and _ran_over_budget(step, self._planner.budget_bytes):
            error = next(g.infeasible for g in step.graphs if g.infeasible is not None)
            if len(step.graphs) == 1:  # the step is this graph: its floor is the step's
                del result
                self._abandon(key, state)
                raise error
            warn_over_budget(step, self._planner.budget_bytes)
        budget = self._planner.budget_bytes
        if probe is not None and budget is not None and probe > budget:
            warn_probe_over_budget(probe, self._planner.measured_outside(key), budget)
        if joint is None and self._planner.graphs_planned == planned_before:
            self._settled.add(key)
            if key not in self._planner.steps and _trainable_grad_bytes(self._orig_mod):
                warn_nothing_planned()
        return result

    def _measure_outside(self, key: tuple, args: tuple, kwargs: dict, state: ModelState) -> int:
        """Under FSDP2: one probe step (forward and backward, then undone), its graphs at their
        leanest, measures what is allocated outside remat's graphs; the step's graphs are then
        planned together with it counted where it is held. Returns the probe's predicted peak
        (its plans simulated with what was measured)."""
        device = _device_of(self._orig_mod)
        frozen = self._planner.budget_bytes
        self._planner.lean_plans = True
        try:
            profile = probe_outside(
                self._orig_mod,
                lambda: self._run(key, args, kwargs),
                device,
                self._options.loss_reserve,
            )
        except InfeasibleBudgetError:
            self._abandon(key, state)
            raise
        finally:
            self._planner.lean_plans = False
        state.restore()
        outside = profile.peak
        self._planner.outside_profiles[key] = profile
        # A fraction is of the step's keep-all peak with what was just measured on top.
        self._planner.budget_bytes = frozen
        step = self._planner.steps.get(key)
        if step is None or not step.graphs:  # Dynamo compiled no block: the call warns
            return outside
        probe_peak = step.predicted_peak + outside
        if len(step.graphs) == 1:  # nothing to plan together: plan it afresh, reserve known
            self._planner.forget(key)
            self._planner.outside_profiles[key] = profile
            self._compiled = self._compile()
            return probe_peak
        try:
            joint = self._planner.plan_jointly(key)
        except InfeasibleBudgetError:
            self._abandon(key, state)
            raise
        if joint is None:
            return probe_peak
        if joint.worth_recompiling:
            self._joint[key] = self._compile()
        # The probe's plans joined as they ran, with what was measured placed where it was
        # held (and whatever stayed reserved on top): tighter than the sum of the two peaks.
        assert self._planner.budget_bytes is not None
        return joint.ran_peak + self._planner.budget_bytes - joint.budget

    def _abandon(self, key: tuple, state: ModelState) -> None:
        """Undo a call that cannot run within the budget: the model as before it, and no
        compiled code left that would run its plans (the next call plans again)."""
        state.restore()
        self._planner.forget(key)
        self._joint.pop(key, None)
        self._settled.discard(key)
        self._forget_eager(key)
        self._compiled = self._compile()

    def _forget_eager(self, key: tuple) -> None:
        for entry in [e for e in self._eager if e[0] == key]:
            del self._eager[entry]

    def _runs_eagerly(self, key: tuple, args: tuple, kwargs: dict) -> bool:
        """Whether a settled step runs the model as written (its eager step fits the budget:
        then nothing needs recomputing and no fx code runs): decided on its first settled call
        (remat.eager_peak), for plans run as fx code."""
        if self._inductor is not None or self._sharded is not None:
            return False  # Inductor's kernels may beat eager's; FSDP2 runs blocks on its own
        # Eager code runs whatever the modes say (train/eval, frozen layers), with no guard to
        # plan again: each set of modes is measured on its own.
        entry = (key, model_modes(self._orig_mod))
        decided = self._eager.get(entry)
        if decided is None:
            if profiler_enabled():
                return False  # measuring may need the CPU profiler: decided in a later call
            decided = self._eager[entry] = self._eager_fits(key, args, kwargs)
        return decided

    def _eager_fits(self, key: tuple, args: tuple, kwargs: dict) -> bool:
        step = self._planner.steps.get(key)
        budget = self._planner.budget_bytes
        if step is None or not step.graphs or budget is None:
            return False
        if any(g.over_budget for g in step.graphs):
            return False
        if not eager_candidate(self._orig_mod):
            return False
        reserve = engine_reserve(self._orig_mod) + (self._options.loss_reserve or 0)
        step.eager = eager_step_within(
            self._orig_mod, args, kwargs, _device_of(self._orig_mod), budget - reserve
        )
        step.runs_eagerly = step.eager.fits
        return step.runs_eagerly

    def _run_settled(self, key: tuple, args: tuple, kwargs: dict) -> Any:
        """A call of a step whose plans are made: it runs without recording what its graphs
        pass each other (that per-call bookkeeping costs as much as a small model's step).
        Should Dynamo compile a graph afresh in it (a guard failed), the graph is planned as in
        any call, and the next call is tracked again so that the step's record catches up."""
        self._planner.recording = False
        planned_before = self._planner.graphs_planned
        result = self._run(key, args, kwargs)
        if self._planner.graphs_planned != planned_before:
            self._settled.discard(key)
            self._forget_eager(key)
        return result

    def _run(self, key: tuple, args: tuple, kwargs: dict) -> Any:
        """One call of the compiled step: the joint plan's compile of it once there is one."""
        compiled = self._joint.get(key, self._compiled)
        self._planner.begin_call(key)
        first_call = key not in self._planner.steps
        breaks_before = break_reasons() if first_call else Counter()
        try:
            result = call_under_dynamo(compiled, args, kwargs)
        finally:
            self._planner.end_call()
        if first_call and key in self._planner.steps:
            new_breaks = break_reasons() - breaks_before
            self._planner.steps[key].graph_breaks = tuple(summarize_break(r) for r in new_breaks)
        return result

    @property
    def remat_plan(self) -> RematPlanReport | None:
        """The plan of the most recent step (None before the first training call)."""
        step = self._planner.steps.get(self._planner.current_key)
        if step is None or not step.graphs:
            return None
        return RematPlanReport.from_step(step, self._options)

    @property
    def remat_plans(self) -> dict[tuple, StepPlans]:
        """Every planned input signature -> its plans (a new shape or dtype plans again)."""
        return dict(self._planner.steps)

    # Checkpoints stay interchangeable with the original module's.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._orig_mod.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._orig_mod.load_state_dict(*args, **kwargs)

    def __repr__(self) -> str:
        return f"RematModule(budget={self._options.budget.describe()}, {self._orig_mod!r})"


def compile(  # noqa: A001 - the public name mirrors torch.compile
    model: nn.Module,
    budget: int | float | str,
    *,
    solver: str = "auto",
    time_limit: float | None = None,
    loss_reserve: int | str | None = None,
    timing: str = "estimate",
    progress: Callable[[str], None] | None = None,
    inner: str = "eager",
) -> RematModule:
    """Return `model` wrapped so each forward+backward peaks at no more than `budget` bytes.

    budget: int bytes, a size string ("512MiB", "1.5GB"), or a float in (0, 1]: that fraction of
        the step's predicted peak with nothing recomputed (NOT torch's activation_memory_budget,
        which is a fraction of saved activations).
    solver: "auto" (ILP with a time limit), "ilp", "sqrt" or "none".
    loss_reserve: bytes your loss code holds between forward and backward; default: nothing if
        the model returns a scalar loss, else the size of its differentiable outputs.
    timing: how op times are known: "estimate" (a roofline of the device: built-in rates and
        kernel slowdowns), "calibrate" (that roofline with this machine's rates and slowdowns,
        measured once per process: a few seconds) or "measure" (each op timed once on the
        device while planning).
    inner: how the planned graphs run: "eager" (fx code, which the plan fits exactly) or
        "inductor" (fused kernels; each graph's build is measured when compiled and re-planned
        until it fits its budget, else it runs as fx code).
    Planning happens on the first training call for each input signature; a budget below what
    any plan reaches raises remat.InfeasibleBudgetError there, naming the smallest feasible one.
    """
    from remat.solvers import solver_names

    if not isinstance(model, nn.Module):
        raise TypeError(f"remat.compile takes an nn.Module, got {type(model).__name__}")
    if solver != "auto" and solver not in solver_names():
        raise ValueError(f"unknown solver {solver!r}; choose auto, {', '.join(solver_names())}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    reserve = parse_reserve(loss_reserve)
    if timing not in _PRICES:
        raise ValueError(f"timing must be one of {', '.join(_PRICES)}, got {timing!r}")
    if inner not in INNER_NAMES:
        raise ValueError(f"inner must be one of {', '.join(INNER_NAMES)}, got {inner!r}")
    options = PlanOptions(parse_budget(budget), solver, time_limit, reserve, progress)
    return RematModule(model, options, timing, inner)


def _estimated_prices(gm: torch.fx.GraphModule, device: torch.device) -> dict:
    from remat.cost import estimate_costs

    return estimate_costs(gm, device)


def _measured_prices(gm: torch.fx.GraphModule, device: torch.device) -> dict:
    """Each op timed once on `device` (random data of the traced shapes): a better objective
    for the solver where the roofline misjudges ops, at the cost of running the step's ops."""
    from remat.cost import profile_ops

    with unset_fake_temporarily():
        return profile_ops(gm, device)


def _calibrated_prices(gm: torch.fx.GraphModule, device: torch.device) -> dict:
    """The roofline of this machine, measured once per process (remat.cost.calibrate)."""
    from remat.cost import estimate_costs
    from remat.cost.calibrate import calibrated_profile

    with unset_fake_temporarily():
        profile = calibrated_profile(device)
    return estimate_costs(gm, device, profile=profile)


_PRICES = {
    "estimate": _estimated_prices,
    "calibrate": _calibrated_prices,
    "measure": _measured_prices,
}


def _device_of(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _trainable_grad_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)


def _ran_over_budget(step: StepPlans, budget: int | None) -> bool:
    """A graph ran its lowest-peak plan because none fitted alone, and no joint plan covers
    the step as it ran (its graphs kept changing)."""
    over = any(g.over_budget for g in step.graphs) and not step.runs_joint_plan
    return over and budget is not None and step.predicted_peak > budget
