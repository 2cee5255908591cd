"""remat.compile runs the model as written where its eager step fits the budget
(remat.eager_peak); elsewhere it keeps running its plans."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import remat
from remat.examples import ResidualMLP
from remat.measure import measure_peak
from tests.model_cases import CASES

CPU = torch.device("cpu")


class MLPStep(nn.Module):
    """A residual MLP and its loss, with activations well above its weights."""

    def __init__(self, width: int = 32, depth: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.model = ResidualMLP(width, depth, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).square().mean()


def _mlp() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    return MLPStep(), (torch.randn(256, 32),)


def _calls(compiled: nn.Module, args: tuple, n: int) -> None:
    for _ in range(n):
        compiled(*args).backward()
        compiled.zero_grad(set_to_none=True)


def _peak(module: nn.Module, args: tuple) -> int:
    return measure_peak(
        lambda: module(*args).backward(), CPU, setup=lambda: module.zero_grad(set_to_none=True)
    ).peak_bytes


def test_a_step_with_nothing_to_recompute_runs_as_written() -> None:
    model, args = _mlp()
    reference = copy.deepcopy(model)
    # Eager's own peak, as the benchmarks' first budget: the plan keeps all there.
    compiled = remat.compile(model, budget=_peak(reference, args))
    _calls(compiled, args, 2)  # plans, settles
    # A profiled call does not decide (measuring a kernel then would end the user's trace).
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _calls(compiled, args, 1)
    assert compiled.remat_plan.eager_peak_bytes is None
    assert any(e.name == "aten::addmm" for e in prof.events())
    _calls(compiled, args, 1)  # decides
    report = compiled.remat_plan
    assert report.runs_eagerly and report.eager_peak_bytes <= report.step_budget_bytes
    assert "runs the model as written" in str(report)

    def planned(*_: object) -> None:
        raise AssertionError("the planned graphs ran")

    compiled._run_settled = planned
    compiled.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)
    compiled(*args).backward()
    reference(*args).backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert _peak(compiled, args) <= report.step_budget_bytes


class HoldsATemporary(nn.Module):
    """Eager code that keeps a large value its graph frees at once: `wide` lives in the frame
    until forward returns, through the second layer and the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        wide = torch.cat([h] * 16, dim=1)
        scale = wide.sum(dim=1, keepdim=True)
        out = self.fc2(h * scale)
        return out.square().mean()


def test_eager_code_that_holds_more_than_the_plan_keeps_the_plan() -> None:
    torch.manual_seed(0)
    model, args = HoldsATemporary(), (torch.randn(64, 64),)
    compiled = remat.compile(model, budget=1.0)
    _calls(compiled, args, 3)
    report = compiled.remat_plan
    assert not report.runs_eagerly
    assert report.eager_peak_bytes > report.step_budget_bytes
    assert "over the budget" in str(report)
    assert _peak(compiled, args) <= report.step_budget_bytes
    assert _peak(model, args) > report.step_budget_bytes  # eager would have broken it


def test_a_budget_below_the_eager_step_keeps_the_plan() -> None:
    model, args = _mlp()
    compiled = remat.compile(model, budget=round(0.6 * _peak(model, args)))
    _calls(compiled, args, 3)
    report = compiled.remat_plan
    assert any(g.recomputed for g in report.graphs)
    assert not report.runs_eagerly and report.eager_probed_bytes is None
    assert report.eager_peak_bytes > report.step_budget_bytes  # the fake step said no


def test_eager_runs_where_it_fits_though_the_plan_recomputes() -> None:
    # The partitioned graph's keep-all peak is above eager's here (batch norm's functional
    # running statistics): at eager's peak the plan must recompute, eager fits as it is.
    torch.manual_seed(0)
    model, args = NormAndDropout(), (torch.randn(256, 32),)
    compiled = remat.compile(model, budget=_peak(copy.deepcopy(model), args))
    _calls(compiled, args, 3)
    report = compiled.remat_plan
    assert report.keep_all_peak > report.step_budget_bytes
    assert any(g.recomputed for g in report.graphs)
    assert report.runs_eagerly and "the plan below does not run" in str(report)
    assert _peak(compiled, args) <= report.step_budget_bytes


def test_a_model_without_a_scalar_loss_keeps_its_plan() -> None:
    case = next(c for c in CASES if c.name == "mlp")
    model, args = case.build(), case.inputs()
    compiled = remat.compile(model, budget="1GiB")
    for _ in range(3):
        case.loss(compiled(*args)).backward()
    report = compiled.remat_plan
    assert not report.runs_eagerly and "no scalar loss" in report.eager_note


class WiderOnRealTensors(HoldsATemporary):
    """Takes a cheaper path on fake tensors than on real ones (as libraries that skip a mask
    only where they can read it do): the fake step fits, the real one does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch._subclasses.FakeTensor):
            return self.fc2(self.fc1(x)).square().mean()
        return super().forward(x)


def test_a_real_step_over_the_budget_warns_and_keeps_the_plan() -> None:
    torch.manual_seed(0)
    model, args = WiderOnRealTensors(), (torch.randn(64, 64),)
    compiled = remat.compile(model, budget=1.0)
    _calls(compiled, args, 2)
    with pytest.warns(RuntimeWarning, match="another path on real tensors"):
        _calls(compiled, args, 1)
    report = compiled.remat_plan
    assert not report.runs_eagerly
    assert report.eager_peak_bytes <= report.step_budget_bytes < report.eager_probed_bytes
    assert _peak(compiled, args) <= report.step_budget_bytes


class NormAndDropout(nn.Module):
    """Running statistics and random masks: what the deciding call's real step must undo."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 128), nn.BatchNorm1d(128), nn.Dropout(0.3))
        self.head = nn.Linear(128, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).square().mean()


def test_the_deciding_call_leaves_what_one_eager_step_would() -> None:
    torch.manual_seed(0)
    model, args = NormAndDropout(), (torch.randn(256, 32),)
    reference = copy.deepcopy(model)
    compiled = remat.compile(model, budget="64MiB")
    for module in (compiled, reference):
        torch.manual_seed(7)
        _calls(module, args, 3)
        module(*args).backward()  # gradients of the fourth step, beside the state of four
    assert compiled.remat_plan.runs_eagerly
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    for b, c in zip(model.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(b, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_step_run_as_written_stays_within_the_budget() -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = NormAndDropout().to(cuda)
    args = (torch.randn(256, 32, device=cuda),)
    budget = measure_peak(
        lambda: model(*args).backward(), cuda, setup=lambda: model.zero_grad(set_to_none=True)
    ).peak_bytes
    compiled = remat.compile(model, budget=budget + (1 << 20))
    _calls(compiled, args, 3)
    report = compiled.remat_plan
    assert report.runs_eagerly, str(report)
    peak = measure_peak(
        lambda: compiled(*args).backward(), cuda, setup=lambda: model.zero_grad(set_to_none=True)
    ).peak_bytes
    assert peak <= report.step_budget_bytes


def test_planning_under_the_users_profiler_is_refused_and_keeps_the_trace() -> None:
    # Shapes no other test uses: their layer norms' scratch is measured, not remembered.
    torch.manual_seed(0)
    model, args = MLPStep(24, 2, 72), (torch.randn(512, 24),)
    compiled = remat.compile(model, budget=0.7)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.ones(8).sum()
        with pytest.raises(remat.ProfilerRunningError, match="before you start profiling"):
            compiled(*args).backward()
    assert any(e.name == "aten::sum" for e in prof.events())
    _calls(compiled, args, 1)  # outside the profiler it plans
    assert compiled.remat_plan is not None
