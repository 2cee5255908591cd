"""remat as a torch.compile backend: the core tests' models through
`torch.compile(model, backend="remat", options={...})`, with the rewritten graphs run as fx code
(inner="eager") and compiled by Inductor (inner="inductor")."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import remat
from remat.backend import last_backend
from remat.backend_options import BackendOptionError, BackendOptions
from remat.examples import ResidualMLP
from remat.measure import measure_peak
from remat.report import RematPlanReport
from remat.solvers import find_floor
from tests.model_cases import CASES, ModelCase
from tests.test_api import _assert_same_step, _fresh_inputs, _run, _train_step
from tests.test_api_behaviour import _broken_in_two

FAST_INDUCTOR_CASE = "in_place"
"""The one Inductor case the default run keeps (a cold Inductor cache makes any first compile
take ~25 s here; each further graph a few seconds)."""


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Every test compiles new instances of the same classes: without a reset Dynamo would hit
    # its recompile limit and run later cases eagerly, i.e. not through the backend at all.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


TIME_LIMIT = 1.0
"""Seconds for the solver (auto: 5): the budgets below leave it room, and CI time is short."""


def _compile(model: nn.Module, **options) -> nn.Module:
    return torch.compile(model, backend="remat", options={"time_limit": TIME_LIMIT, **options})


def _backend_error(call) -> Exception:
    """What the backend raised: Dynamo wraps it in BackendCompilerFailed."""
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        call()
    return failed.value.inner_exception


_budgets: dict[str, tuple[int, int]] = {}


def _floor_and_keep_all(case: ModelCase) -> tuple[int, int]:
    """(floor, keep-all peak) of the step in bytes, as test_api finds them: the keep-all plan's
    peak from one step through the backend at budget 1.0, and the floor search on its graph."""
    if case.name not in _budgets:
        torch._dynamo.reset()
        compiled = _compile(case.build(), budget=1.0, inner="eager")
        _train_step(compiled, case, *_fresh_inputs(case))
        backend = last_backend()
        (graph_plan,) = backend.planner.plans_for(backend.planner.current_key).graphs
        floor = find_floor(graph_plan.captured.graph, time_limit=2.0).bytes
        _budgets[case.name] = floor + graph_plan.held_elsewhere, remat.last_plans().keep_all_peak
    return _budgets[case.name]


def _middle(case: ModelCase) -> int:
    """Halfway between the floor and the keep-all peak: robust to the floor search's time limit
    (it may find a lower floor on one run than on another)."""
    floor, keep_all = _floor_and_keep_all(case)
    assert floor <= keep_all
    return floor + (keep_all - floor) // 2


def _check_at_budget(case: ModelCase, budget: int | float, inner: str) -> RematPlanReport:
    """One step through the backend: outputs, gradients and buffers equal eager's, and the
    measured peak of the step is within the budget."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    reference = case.build()
    model = copy.deepcopy(reference)
    compiled = _compile(model, budget=budget, inner=inner)
    args, kwargs = _fresh_inputs(case)
    ref_args, ref_kwargs = _fresh_inputs(case)
    out, _ = _run(compiled, case, args, kwargs)
    ref_out, _ = _run(reference, case, ref_args, ref_kwargs)
    _assert_same_step(model, reference, out, ref_out, args, ref_args)

    report = remat.last_plans()
    assert report is not None and len(report.graphs) == 1
    budget_bytes = report.step_budget_bytes
    if isinstance(budget, int):
        assert budget_bytes == budget
    assert report.predicted_peak <= budget_bytes
    measured = measure_peak(
        lambda: _train_step(compiled, case, args, kwargs),
        "cpu",
        warmup=1,
        setup=lambda: model.zero_grad(set_to_none=True),
    )
    assert measured.peak_bytes <= budget_bytes, (
        f"{case.name} ({inner}): measured {measured.peak_bytes} > budget {budget_bytes} "
        f"(predicted {report.predicted_peak})"
    )
    return report


SLOW_EAGER_CASES = ("unet_skips", "mlp")
"""unet: its convolutions' workspaces are measured on first sight (~15 s here). mlp: its floor
is its keep-all peak, and the graph-break, batch-size and callable tests below run its
ResidualMLP through the backend anyway. Both kept out of the default run for time."""


def _eager_param(case: ModelCase):
    marks = (pytest.mark.slow,) if case.name in SLOW_EAGER_CASES else ()
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_eager_param(c) for c in CASES])
def test_eager_inner_matches_eager_within_budget(case: ModelCase):
    _check_at_budget(case, _middle(case), "eager")


def _inductor_param(case: ModelCase):
    marks = () if case.name == FAST_INDUCTOR_CASE else (pytest.mark.slow,)
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_inductor_param(c) for c in CASES])
def test_inductor_inner_matches_eager_within_budget(case: ModelCase):
    """Inductor's code, measured when compiled and again here, within the budget."""
    budget = _middle(case)
    report = _check_at_budget(case, budget, "inductor")
    backend = last_backend()
    assert backend is not None and backend.options.inner == "inductor"
    (check,) = backend.inner_checks
    assert check.allowed_bytes == budget
    if case.name == FAST_INDUCTOR_CASE:  # the default run's case runs Inductor's code, no fallback
        assert check.inner == "inductor", check
    # The report states what the compiled code measured, not the unfused plan's figure.
    assert report.graphs[0].predicted_peak == check.expected_peak <= budget


def test_entry_point_resolves_by_name_without_importing_remat():
    code = textwrap.dedent(
        """
        import sys, torch
        from torch._dynamo.backends.registry import lookup_backend
        assert "remat" in torch._dynamo.list_backends(), torch._dynamo.list_backends()
        assert "remat" not in sys.modules
        backend = lookup_backend("remat")
        print(backend.__module__, backend.__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["remat.backend", "compile_with_options"]


def test_remat_backend_callable_is_a_torch_compile_backend():
    case = next(c for c in CASES if c.name == "mlp")
    torch.manual_seed(0)
    reference = case.build()
    model = copy.deepcopy(reference)
    backend = remat.backend(budget=1.0, inner="eager", solver="sqrt")
    assert "budget=1.0" in repr(backend) and "inner='eager'" in repr(backend)
    compiled = torch.compile(model, backend=backend)
    args, kwargs = _fresh_inputs(case)
    out, _ = _run(compiled, case, args, kwargs)
    ref_out, _ = _run(reference, case, *_fresh_inputs(case))
    _assert_same_step(model, reference, out, ref_out, args, args)
    assert last_backend() is backend
    assert backend.last_plans is not None
    assert backend.last_plans.graphs[0].solver == "sqrt"


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"budget": 0.5, "inline": True}, ["'inline'", "budget", "solver", "time_limit", "inner"]),
        ({"budget": 0.5, "inner": "tvm"}, ["'tvm'", "inductor", "eager"]),
        ({"budget": 0.5, "solver": "magic"}, ["'magic'", "ilp", "sqrt", "none", "auto"]),
        ({"budget": 0.5, "time_limit": 0}, ["time_limit", "positive"]),
        ({"inner": "eager"}, ["needs a budget", "GiB"]),
    ],
)
def test_bad_options_name_the_valid_ones(options, names):
    with pytest.raises(BackendOptionError) as error:
        BackendOptions.parse(options)
    for name in names:
        assert name in str(error.value)


@pytest.mark.parametrize("budget", [0, -1, 1.5, float("nan"), "3 parsecs"])
def test_bad_budgets_are_budget_errors(budget):
    with pytest.raises(remat.BudgetError):
        remat.backend(budget=budget)


def test_errors_reach_the_user_through_torch_compile():
    model = ResidualMLP(16, 1, 32)
    x = torch.randn(4, 16)
    missing = _backend_error(lambda: torch.compile(model, backend="remat")(x).sum().backward())
    assert isinstance(missing, BackendOptionError) and "needs a budget" in str(missing)
    torch._dynamo.reset()
    unknown = _backend_error(lambda: _compile(model, budget=0.5, bogus=1)(x).sum().backward())
    assert isinstance(unknown, BackendOptionError) and "valid options: budget" in str(unknown)
    torch._dynamo.reset()
    with_mode = torch.compile(model, backend="remat", mode="max-autotune")
    mode = _backend_error(lambda: with_mode(x).sum().backward())
    assert isinstance(mode, BackendOptionError) and "no mode" in str(mode)


def test_budget_below_the_floor_names_it_and_the_floor_is_met():
    case = next(c for c in CASES if c.name == FAST_INDUCTOR_CASE)
    compiled = _compile(case.build(), budget=1, inner="eager")
    args, kwargs = _fresh_inputs(case)
    error = _backend_error(lambda: _train_step(compiled, case, args, kwargs))
    assert isinstance(error, remat.InfeasibleBudgetError), error
    # The solver's word on the floor survives the backend: proven, or the lowest peak found.
    assert "proven minimum" in str(error) or "lowest peak found" in str(error)
    floor = error.floor
    assert f"pass budget >= {floor}" in str(error) and "KiB" in str(error)
    _check_at_budget(case, floor, "eager")
    torch._dynamo.reset()
    compiled = _compile(case.build(), budget=1, inner="inductor")
    error = _backend_error(lambda: _train_step(compiled, case, args, kwargs))
    assert isinstance(error, remat.InfeasibleBudgetError) and error.floor == floor


class Broken(nn.Module):
    """Two residual MLPs with a graph break between them."""

    def __init__(self) -> None:
        super().__init__()
        self.first = ResidualMLP(64, 3, 256)
        self.second = ResidualMLP(64, 3, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        torch._dynamo.graph_break()
        return self.second(h)


def _step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).square().mean().backward()


def _assert_same_grads(model: nn.Module, reference: nn.Module) -> None:
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def _graph_break_step(inner: str) -> None:
    torch.manual_seed(0)
    reference = Broken()
    model = copy.deepcopy(reference)
    compiled = _compile(model, budget=0.8, inner=inner)
    x = torch.randn(512, 64)
    _step(compiled, x)
    _step(reference, x)
    _assert_same_grads(model, reference)
    first = remat.last_plans()
    assert first is not None and len(first.graphs) == 2
    assert first.graphs[1].budget_bytes < first.step_budget_bytes  # graph 0 holds some
    assert first.predicted_peak <= first.step_budget_bytes
    # From the second step on, the step's graphs run under a plan made for them together,
    # within the budget resolved on the whole step (the first step's graphs each resolved 0.8
    # on what was known when they were planned, never more).
    measured = measure_peak(
        lambda: _step(compiled, x), "cpu", warmup=1, setup=lambda: model.zero_grad(set_to_none=True)
    )
    report = remat.last_plans()
    assert len(report.graphs) == 2 and report.step_budget_bytes >= first.step_budget_bytes
    assert any(g.recomputed for g in report.graphs)  # 0.8 is not keep-all
    joint = last_backend().whole_step.joints[-1]
    assert report.predicted_peak == joint.peak <= report.step_budget_bytes
    assert measured.peak_bytes <= report.step_budget_bytes, (measured.peak_bytes, str(report))
    assert abs(measured.peak_bytes - joint.peak) <= 0.05 * measured.peak_bytes


def test_graph_break_plans_each_graph_and_the_step_stays_within_budget():
    _graph_break_step("eager")


@pytest.mark.slow
def test_graph_break_with_inductor_stays_within_budget():
    _graph_break_step("inductor")


def _two_batch_sizes(inner: str) -> None:
    torch.manual_seed(0)
    reference = ResidualMLP(64, 3, 256)
    model = copy.deepcopy(reference)
    compiled = _compile(model, budget=0.8, inner=inner)
    keep_all: dict[int, int] = {}
    plans_made = []
    for batch in (256, 128, 256, 128):
        x = torch.randn(batch, 64)
        model.zero_grad(set_to_none=True), reference.zero_grad(set_to_none=True)
        _step(compiled, x)
        _step(reference, x)
        _assert_same_grads(model, reference)
        report = remat.last_plans()
        assert report is not None
        assert keep_all.setdefault(batch, report.keep_all_peak) == report.keep_all_peak
        if len(plans_made) in (1, 2):  # the dynamic graph's plans, each measured once
            measured = measure_peak(
                lambda x=x: _step(compiled, x),
                "cpu",
                warmup=1,
                setup=lambda: model.zero_grad(set_to_none=True),
            )
            assert measured.peak_bytes <= report.step_budget_bytes, (batch, measured, str(report))
        steps = last_backend().planner.steps.values()
        plans_made.append(sum(len(step.graphs) for step in steps))
    assert keep_all[128] < keep_all[256]
    # Batch 256 is planned for Dynamo's static graph, and again when the dynamic graph Dynamo
    # makes for the second size first sees it; after that, every size reuses its plan.
    assert plans_made[0] == 1 and plans_made[1] == 2
    assert plans_made[3] == plans_made[2] <= 3


def test_a_second_batch_size_gets_its_own_plan():
    _two_batch_sizes("eager")


@pytest.mark.slow
def test_a_second_batch_size_gets_its_own_plan_with_inductor():
    _two_batch_sizes("inductor")


def _whole_step_floor(x: torch.Tensor) -> int:
    """The floor of BrokenInTwo's step planned whole, as remat.compile names it."""
    torch._dynamo.reset()
    with pytest.raises(remat.InfeasibleBudgetError) as refused:
        _step(remat.compile(_broken_in_two(), budget=1000, time_limit=TIME_LIMIT), x)
    torch._dynamo.reset()
    return refused.value.floor


def test_a_graph_broken_step_runs_its_whole_plan_from_the_second_step():
    """Graph by graph, the first step cannot fit a budget near the whole step's floor (graph 0
    takes what graph 1 needs): it runs its lowest-peak plan and says so; the step's graphs are
    then planned together and every later step runs within the budget, with eager's results."""
    x = torch.randn(256, 64)
    budget = int(1.05 * _whole_step_floor(x))
    model, reference = _broken_in_two(), _broken_in_two()
    compiled = _compile(model, budget=budget, inner="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step(compiled, x)
    assert any("graph-broken step" in str(w.message) for w in caught)
    first = remat.last_plans()
    assert first.predicted_peak > budget  # what the warning was about
    _step(reference, x)
    for run in (compiled, reference):
        run.zero_grad(set_to_none=True) if run is reference else model.zero_grad(set_to_none=True)
        _step(run, x)
    _assert_same_grads(model, reference)
    torch.testing.assert_close(model.norm.running_mean, reference.norm.running_mean)
    report = remat.last_plans()
    assert len(report.graphs) == 2 and report.predicted_peak <= budget
    measured = measure_peak(
        lambda: _step(compiled, x), "cpu", setup=lambda: model.zero_grad(set_to_none=True)
    )
    assert measured.peak_bytes <= budget, (measured.peak_bytes, str(report))


def test_a_graph_broken_step_below_its_whole_floor_is_refused_with_that_floor():
    """Refused at every step with a floor above the budget: on the first step by the graph
    that cannot fit beside the ones before it, later by the whole step planned together (here
    both name the same floor: with the gradients seen passing between the graphs counted once,
    remat.gradient_links, the step's floor is graph 0's with what the others hold)."""
    x = torch.randn(256, 64)
    budget = int(0.7 * _whole_step_floor(x))  # remat.compile's floor, made before any backward
    compiled = _compile(_broken_in_two(), budget=budget, inner="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(3):
            with pytest.raises(
                (remat.InfeasibleBudgetError, torch._dynamo.exc.BackendCompilerFailed)
            ) as refused:
                _step(compiled, x)
            error = getattr(refused.value, "inner_exception", refused.value)
            assert isinstance(error, remat.InfeasibleBudgetError)
            assert error.floor > budget
