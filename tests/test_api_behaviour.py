"""remat.compile's contracts beyond equal results: errors, re-planning, no-grad, graph breaks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import remat
from remat.examples import ResidualMLP
from remat.measure import measure_peak


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return ResidualMLP(64, 4, 128)


def _step(model, x):
    out = model(x)
    out.square().mean().backward()
    return out


def test_infeasible_budget_names_the_floor_and_leaves_the_model_usable():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = remat.compile(model, budget=1000)
    x = torch.randn(32, 64)
    with pytest.raises(remat.InfeasibleBudgetError) as caught:
        _step(compiled, x)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.floor > 1000
    assert f"pass budget >= {error.floor}" in str(error)
    assert "KiB" in str(error)
    # Nothing half-done: parameters untouched, no gradients, and the same call fails the same way.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(remat.InfeasibleBudgetError):
        _step(compiled, x)
    # At the floor it names, the step runs.
    ok = remat.compile(_mlp(), budget=error.floor)
    _step(ok, x)
    assert ok.remat_plan.predicted_peak <= error.floor


@pytest.mark.parametrize("budget", [0, -1, 1.5, float("nan"), "3 furlongs"])
def test_bad_budgets_fail_at_compile_time(budget):
    with pytest.raises(remat.BudgetError):
        remat.compile(_mlp(), budget=budget)


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(ValueError, match="sqrt"):
        remat.compile(_mlp(), budget=0.5, solver="magic")


def test_no_grad_and_eval_run_the_plain_forward():
    model = _mlp()
    compiled = remat.compile(model, budget=0.5)
    x = torch.randn(8, 64)
    with torch.no_grad():
        out = compiled(x)
    assert torch.equal(out, model(x).detach())
    assert compiled.remat_plans == {}
    compiled.eval()
    with torch.inference_mode():
        compiled(x)
    assert compiled.remat_plans == {}


def test_a_new_input_shape_plans_again_and_reuses_the_old_plan():
    compiled = remat.compile(_mlp(), budget=0.7)
    _step(compiled, torch.randn(512, 64))
    _step(compiled, torch.randn(256, 64))
    _step(compiled, torch.randn(512, 64))
    plans = compiled.remat_plans
    assert len(plans) == 2
    assert all(len(step.graphs) == 1 for step in plans.values())


class _Scaled(nn.Module):
    """An MLP whose forward reads a Python attribute: changing it fails Dynamo's guard."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _mlp()
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_a_settled_step_runs_unrecorded_and_a_recompile_in_it_is_tracked_again():
    reference = _Scaled()
    model = copy.deepcopy(reference)
    compiled = remat.compile(model, budget=0.7)
    x = torch.randn(512, 64)
    settled_before, recording_after = [], []
    for scale in (1.0, 1.0, 1.0, 3.0, 3.0, 3.0):
        reference.scale = model.scale = scale
        reference.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        settled_before.append(bool(compiled._settled))
        _step(reference, x)
        _step(compiled, x)
        recording_after.append(compiled._planner.recording)
        for ours, theirs in zip(_grads(model), _grads(reference), strict=True):
            torch.testing.assert_close(ours, theirs)
    # Planned in call 1, settled after call 2; call 4 recompiles (the guard on `scale`) and
    # is planned as it runs, so call 5 is tracked again and call 6 is settled.
    assert settled_before == [False, False, True, True, False, True]
    assert recording_after == [True, True, False, False, True, False]
    (step,) = compiled.remat_plans.values()
    assert len(step.graphs) == 1  # the recompiled graph replaced the first in the record


def test_an_input_hinted_dynamic_by_other_compiled_code_is_planned_static():
    # AOTAutograd marks tensors that came out of a graph traced with dynamic sizes (a user's
    # batch that went through another torch.compile'd model); the hint is not remat's.
    model = _mlp()
    reference = copy.deepcopy(model)
    x = torch.randn(512, 64)
    x._dynamo_propagated_dynamic_indices = {0}
    compiled = remat.compile(model, budget=0.7)
    _step(compiled, x)
    _step(reference, x)
    for ours, theirs in zip(_grads(model), _grads(reference), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert x._dynamo_propagated_dynamic_indices == {0}  # the caller's tensor as it was


def test_an_input_marked_dynamic_is_refused_with_the_way_out():
    compiled = remat.compile(_mlp(), budget=0.7)
    x = torch.randn(512, 64)
    torch._dynamo.mark_dynamic(x, 0)
    with pytest.raises(ValueError, match="marked dynamic.*remat.backend"):
        _step(compiled, x)


def test_a_fraction_is_resolved_once_and_a_smaller_last_batch_fits_those_bytes():
    model = _mlp()
    compiled = remat.compile(model, budget=0.5)
    _step(compiled, torch.randn(512, 64))
    first = compiled.remat_plan.step_budget_bytes
    assert first == pytest.approx(0.5 * compiled.remat_plan.keep_all_peak, abs=1)
    last_batch = torch.randn(200, 64)
    _step(compiled, last_batch)
    report = compiled.remat_plan
    assert report.step_budget_bytes == first  # not 0.5 of the smaller step's peak
    measured = measure_peak(
        lambda: _step(compiled, last_batch), "cpu", setup=lambda: model.zero_grad(set_to_none=True)
    )
    assert measured.peak_bytes <= first
    with pytest.raises(remat.InfeasibleBudgetError, match="smallest feasible budget"):
        _step(compiled, torch.randn(4096, 64))  # held to the first shape's bytes, too few here


def test_module_api_is_preserved():
    model = _mlp()
    compiled = remat.compile(model, budget=0.5)
    assert list(compiled.parameters()) == list(model.parameters())
    assert compiled.state_dict().keys() == model.state_dict().keys()
    assert "budget=0.5 of the keep-all peak" in repr(compiled)


def test_plan_states_budget_in_bytes_and_as_fraction():
    compiled = remat.compile(_mlp(), budget=0.6)
    _step(compiled, torch.randn(512, 64))
    text = str(compiled.remat_plan)
    report = compiled.remat_plan
    assert f"{report.step_budget_bytes} bytes" in text
    assert "of the keep-all peak" in text
    assert report.budget_fraction == pytest.approx(0.6, abs=0.01)
    assert "solver auto" in text and "gap" in text


class DataDependent(nn.Module):
    """A Python branch on a tensor's value: Dynamo splits the step into several graphs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.b = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = h * 2 if h.mean() > 0 else h - 1
        return self.b(h)


def test_graph_breaks_still_give_eager_results_within_budget():
    torch.manual_seed(0)
    model = DataDependent()
    reference = copy.deepcopy(model)
    budget = int(3.3 * 2**20)
    compiled = remat.compile(model, budget=budget)
    x = torch.randn(1024, 64)
    _step(compiled, x)
    _step(reference, x)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)
    report = compiled.remat_plan
    assert len(report.graphs) == 2
    assert "2 graph(s)" in str(report)
    assert any("Data-dependent branching" in reason for reason in report.graph_breaks)
    measured = measure_peak(
        lambda: _step(compiled, x), "cpu", setup=lambda: model.zero_grad(set_to_none=True)
    )
    assert measured.peak_bytes <= budget


def test_lower_budget_never_gives_a_higher_measured_peak():
    x = torch.randn(64, 64)
    probe = remat.compile(_mlp(), budget=1.0)
    _step(probe, x)
    keep_all = probe.remat_plan.keep_all_peak
    floor = None
    with pytest.raises(remat.InfeasibleBudgetError) as caught:
        _step(remat.compile(_mlp(), budget=1), x)
    floor = caught.value.floor
    budgets = [floor + (keep_all - floor) * k // 5 for k in range(6)]
    peaks = []
    for budget in budgets:
        model = _mlp()
        compiled = remat.compile(model, budget=budget)
        measured = measure_peak(
            lambda compiled=compiled: _step(compiled, x),
            "cpu",
            setup=lambda model=model: model.zero_grad(set_to_none=True),
        )
        assert measured.peak_bytes <= budget
        peaks.append(measured.peak_bytes)
    assert peaks == sorted(peaks), list(zip(budgets, peaks))
    assert peaks[0] < peaks[-1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_within_budget_and_equal_to_eager():
    torch.manual_seed(0)
    model = ResidualMLP(256, 6, 1024).cuda()
    reference = copy.deepcopy(model)
    x = torch.randn(512, 256, device="cuda")
    compiled = remat.compile(model, budget=0.5)
    _step(compiled, x)
    _step(reference, x)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    budget = compiled.remat_plan.step_budget_bytes
    measured = measure_peak(
        lambda: _step(compiled, x), "cuda", setup=lambda: model.zero_grad(set_to_none=True)
    )
    assert measured.peak_bytes <= budget


@pytest.mark.parametrize("timing", ["measure", "calibrate"])
def test_measured_op_times_plan_a_step_with_eager_results(timing):
    model = _mlp()
    reference = copy.deepcopy(model)
    compiled = remat.compile(model, budget=0.6, timing=timing)
    x = torch.randn(512, 64)
    _step(compiled, x)
    _step(reference, x)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)
    (graph_plan,) = compiled.remat_plans[compiled._planner.current_key].graphs
    assert sum(op.time for op in graph_plan.captured.graph.ops) > 0
    with pytest.raises(ValueError, match="estimate, calibrate, measure"):
        remat.compile(_mlp(), budget=0.5, timing="guess")


class BrokenInTwo(nn.Module):
    """Two residual stacks with a graph break between them, BatchNorm in the first."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(64)
        self.a = ResidualMLP(64, 4, 128)
        self.b = ResidualMLP(64, 4, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(self.norm(x))
        torch._dynamo.graph_break()
        return self.b(h)


def _broken_in_two() -> BrokenInTwo:
    torch.manual_seed(0)
    return BrokenInTwo()


FAST = 1.0
"""Solver seconds for the graph-broken tests: their floors are the same as with the default."""


def test_graph_broken_step_is_planned_whole_and_run_again_when_greedy_plans_break_the_budget():
    torch._dynamo.reset()
    x = torch.randn(256, 64)
    with pytest.raises(remat.InfeasibleBudgetError) as refused:
        _step(remat.compile(_broken_in_two(), budget=1000, time_limit=FAST), x)
    model, reference = _broken_in_two(), _broken_in_two()
    budget = int(1.05 * refused.value.floor)
    compiled = remat.compile(model, budget=budget, time_limit=FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step(compiled, x)
    _step(reference, x)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)
    # The call ran once as far as the model can tell: BatchNorm's statistics moved once.
    torch.testing.assert_close(model.norm.running_mean, reference.norm.running_mean)
    assert model.norm.num_batches_tracked.item() == 1
    (step,) = compiled.remat_plans.values()
    assert len(step.graphs) == 2 and step.runs_joint_plan
    # Planned graph by graph, this budget was out of reach: the call ran again, planned whole.
    assert step.joint.ran_over_budget and step.joint.peak <= budget
    # If the discarded first forward may itself have gone above the budget, the user was told.
    said = any("first call's forward" in str(w.message) for w in caught)
    assert said == (step.joint.ran_forward_peak > budget)
    assert compiled.remat_plan.predicted_peak == step.joint.peak
    measured = measure_peak(
        lambda: _step(compiled, x), "cpu", setup=lambda: model.zero_grad(set_to_none=True)
    )
    assert measured.peak_bytes <= budget


def _refused_floor(budget: int) -> int:
    """The floor a graph-broken step's refusal names; the model is left as it was."""
    torch._dynamo.reset()
    x = torch.randn(256, 64)
    model = _broken_in_two()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = remat.compile(model, budget=budget, time_limit=FAST)
    with pytest.raises(remat.InfeasibleBudgetError, match="2 graphs planned together") as e:
        _step(compiled, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # No compiled code is left to run the refused plans: the next call refuses too.
    with pytest.raises(remat.InfeasibleBudgetError):
        _step(compiled, x)
    return e.value.floor


def test_graph_broken_step_refusal_names_the_whole_steps_floor_and_leaves_the_model_as_it_was():
    floor = _refused_floor(200_000)
    ok = remat.compile(_broken_in_two(), budget=floor, time_limit=FAST)
    _step(ok, torch.randn(256, 64))
    assert ok.remat_plan.predicted_peak <= floor


@pytest.mark.slow
def test_graph_broken_step_floor_is_the_same_whatever_the_budget():
    """Planned graph by graph, the floor named depended on the budget asked (each graph's
    share); planned whole, it does not (tests/test_step_graph.py checks the planner alone)."""
    assert _refused_floor(200_000) == _refused_floor(400_000)


class _Untraced(nn.Module):
    """A forward Dynamo will not trace: every call runs eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 8)

    @torch._dynamo.disable
    def forward(self, x):
        return self.layer(x)


def test_a_training_call_with_nothing_planned_says_the_budget_does_not_hold():
    torch._dynamo.reset()
    compiled = remat.compile(_Untraced(), budget=0.5)
    with pytest.warns(RuntimeWarning, match="nothing planned: the budget does not hold"):
        _step(compiled, torch.randn(4, 8))
    assert compiled.remat_plan is None
