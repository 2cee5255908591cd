"""Memory fake tensors do not show, measured on the device: scratch and real output storage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

import remat
from remat.workspace import measure_storage_bytes, measure_workspaces

CPU = torch.device("cpu")


def _traced(fn, *shapes):
    return make_fx(fn, tracing_mode="fake")(*(torch.randn(s) for s in shapes))


def test_a_loss_that_returns_a_view_of_a_larger_buffer_is_sized_by_its_real_storage():
    # CPU mse_loss returns a 0-d view of the squared-error tensor: 4 bytes by its fake tensor.
    graph = _traced(lambda a, b: torch.ops.aten.mse_loss(a, b, 1), (8, 16), (8, 16))
    sizes = {node.name: size for node, size in measure_storage_bytes(graph, CPU).items()}
    real = torch.ops.aten.mse_loss(torch.randn(8, 16), torch.randn(8, 16), 1)
    assert sizes == {"mse_loss": real.untyped_storage().nbytes()}
    assert sizes["mse_loss"] > 4


def test_ops_whose_storage_matches_their_fake_tensor_are_left_out():
    graph = _traced(lambda a, w: (a @ w).sum(), (8, 16), (16, 4))
    assert measure_storage_bytes(graph, CPU) == {}


def test_scratch_is_measured_for_expanded_inputs():
    # An expanded (stride-0) input cannot be filled through its view; it must still measure.
    graph = _traced(lambda a, b: torch.ops.aten.mse_loss(a.expand(8, 16), b, 1), (1, 16), (8, 16))
    measured = measure_workspaces(graph, CPU)
    assert [node.name for node in measured] == ["mse_loss"]


class _MseStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.net(x), target)


def test_an_mse_loss_step_is_predicted_to_the_bytes_and_keeps_its_budget():
    torch.manual_seed(0)
    model = _MseStep()
    x, target = torch.randn(64, 32), torch.randn(64, 32)
    step = remat.compile(model, budget=1.0, solver="none")
    step(x, target).backward()
    peak = remat.measure_peak(
        lambda: step(x, target).backward(), CPU, setup=lambda: model.zero_grad(set_to_none=True)
    )
    plan = step.remat_plan
    assert peak.peak_bytes <= plan.step_budget_bytes
    # The loss's 8 KiB buffer is counted: without it the prediction was 8 KiB short.
    assert abs(peak.peak_bytes - plan.predicted_peak) <= 8


def test_the_measurement_caches_forget_the_oldest_calls_beyond_their_size() -> None:
    from remat.workspace import _Lru

    made = []
    cache: _Lru[int] = _Lru(2)
    for key in ["a", "b", "a", "c", "b"]:
        cache.get((key,), lambda key=key: made.append(key) or len(made))
    # "a" was used again before "c" came, so "b" was the one forgotten and is made again
    assert made == ["a", "b", "c", "b"]
    assert len(cache) == 2
