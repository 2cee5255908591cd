"""Real steps beside the predictions: eager, remat at each budget, torch's own knob.

Every point is measured the one way remat measures (remat.measure_peak, remat.time_step): one
forward + backward on a fresh copy of the model, gradients set to None before each call.
PyTorch's `activation_memory_budget` is a fraction of *saved activations* between "recompute
all" (0) and the default partition (1), not of the step's peak: its points are placed by the
peak they reach, next to remat's budgets, never matched to them by value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from remat.analysis.core import Analysis, ProgressFn, accepts_time_limit
from remat.analysis.points import SKIPPED, MeasuredPoint, Measurements
from remat.analysis.step import step_loss
from remat.analysis.target import Target
from remat.measure import measure_peak, resolve_device, time_step
from remat.torch_internals import dynamo_reset, functorch_config

TORCH_BUDGETS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class _Run:
    peak: int
    seconds: float


def _measure(net: torch.nn.Module, owner: torch.nn.Module, target: Target, repeats: int) -> _Run:
    device = resolve_device(_device_of(target))

    def step() -> None:
        step_loss(net(*target.args, **target.kwargs)).backward()

    def reset() -> None:
        owner.zero_grad(set_to_none=True)

    peak = measure_peak(step, device, warmup=1, setup=reset).peak_bytes
    timing = time_step(step, device, warmup=1, repeats=repeats, setup=reset)
    return _Run(peak, timing.median_s)


def _device_of(target: Target) -> torch.device:
    for tensor in (*target.model.parameters(), *target.model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _guarded(kind: str, setting: str, run: Callable[[], MeasuredPoint]) -> MeasuredPoint:
    try:
        return run()
    except Exception as error:  # a failing peer is a result, not a crash
        first = (str(error).strip().splitlines() or [""])[0]
        return MeasuredPoint(kind, setting, error=f"{type(error).__name__}: {first}"[:300])


def measure_remat(
    target: Target, analysis: Analysis, repeats: int = 3, progress: ProgressFn | None = None
) -> Measurements:
    """The eager step, and one remat.compile run per feasible budget of `analysis`."""
    import remat

    say = progress or (lambda label, done, total: None)
    total = 1 + len(analysis.budgets)
    say("measuring eager", 0, total)
    eager = _guarded("eager", "keep all", lambda: _eager_point(target, repeats))
    points = []
    options = analysis.options
    limit = options.time_limit if accepts_time_limit(options.solver) else None
    for done, result in enumerate(analysis.budgets, start=1):
        say(f"measuring remat at {result.label}", done, total)
        if not result.feasible:
            points.append(MeasuredPoint("remat", result.label, error=SKIPPED))
            continue

        def run(budget: int = result.budget_bytes, label: str = result.label) -> MeasuredPoint:
            model = copy.deepcopy(target.model)
            net = remat.compile(model, budget=budget, solver=options.solver, time_limit=limit)
            measured = _measure(net, model, target, repeats)
            plan = net.remat_plan
            predicted = plan.predicted_peak if plan is not None else None
            return MeasuredPoint("remat", label, measured.peak, measured.seconds, predicted)

        points.append(_guarded("remat", result.label, run))
    device = resolve_device(_device_of(target))
    return Measurements(str(device), _method(device), eager, tuple(points))


def _eager_point(target: Target, repeats: int) -> MeasuredPoint:
    model = copy.deepcopy(target.model)
    measured = _measure(model, model, target, repeats)
    return MeasuredPoint("eager", "keep all", measured.peak, measured.seconds)


def measure_torch(
    target: Target,
    budgets: tuple[float, ...] = TORCH_BUDGETS,
    *,
    backend: str = "inductor",
    repeats: int = 3,
    progress: ProgressFn | None = None,
) -> tuple[MeasuredPoint, ...]:
    """torch.compile at each `activation_memory_budget`, scoped with config.patch per run.

    Resets Dynamo's caches before each run, so no compiled graph of another setting is reused.
    """
    say = progress or (lambda label, done, total: None)
    points = []
    for done, value in enumerate(budgets):
        say(f"measuring torch.compile, activation_memory_budget={value:g}", done, len(budgets))

        def run(value: float = value) -> MeasuredPoint:
            dynamo_reset()
            with functorch_config.patch(activation_memory_budget=value):
                model = copy.deepcopy(target.model)
                net = torch.compile(model, backend=backend)
                measured = _measure(net, model, target, repeats)
            return MeasuredPoint("torch", f"{value:g}", measured.peak, measured.seconds)

        points.append(_guarded("torch", f"{value:g}", run))
    dynamo_reset()
    return tuple(points)


def measure(
    target: Target,
    analysis: Analysis,
    *,
    remat_budgets: bool = True,
    torch_budgets: tuple[float, ...] = (),
    torch_backend: str = "inductor",
    repeats: int = 3,
    progress: ProgressFn | None = None,
) -> Measurements:
    """The eager baseline, plus remat at the analysis's budgets and/or torch's knob."""
    if remat_budgets:
        result = measure_remat(target, analysis, repeats, progress)
    else:
        eager = _guarded("eager", "keep all", lambda: _eager_point(target, repeats))
        device = resolve_device(_device_of(target))
        result = Measurements(str(device), _method(device), eager)
    if not torch_budgets:
        return result
    points = measure_torch(
        target, torch_budgets, backend=torch_backend, repeats=repeats, progress=progress
    )
    return replace(result, torch=points, torch_backend=torch_backend)


def _method(device: torch.device) -> str:
    if device.type == "cpu":
        return "torch.profiler CPU allocation events (remat.measure_peak); median step time"
    return f"max_memory_allocated on {device.type} (remat.measure_peak); median step time"
