"""Copies tracing adds and eager does not make (remat.redundant_copies)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

import remat
from remat.analysis.step import capture_step
from remat.measure import measure_peak
from remat.redundant_copies import drop_redundant_clones


def _clones(gm: torch.fx.GraphModule) -> int:
    return sum(node.target is torch.ops.aten.clone.default for node in gm.graph.nodes)


def test_a_clone_of_an_intermediate_goes_and_the_result_is_unchanged() -> None:
    def step(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.relu(x)
        return (torch.sigmoid(h.clone()) * 2,)

    x = torch.randn(4, 5)
    gm = make_fx(step)(x)
    assert _clones(gm) == 1
    assert drop_redundant_clones(gm) == 1 and _clones(gm) == 0
    torch.testing.assert_close(gm(x)[0], step(x)[0], rtol=0, atol=0)


def test_clones_that_something_could_tell_apart_stay() -> None:
    def step(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.relu(x)
        returned = h.clone()  # an output: its aliasing was settled before the partition
        viewed = torch.tanh(x).clone().view(-1)  # an output is a view of it
        laid_out = h.t().clone(memory_format=torch.contiguous_format).view(-1)
        written = torch.sigmoid(h).clone()
        written.add_(1.0)  # written into after the copy
        of_input = x.clone()  # a graph input's copy
        return returned, viewed, laid_out, written, of_input

    x = torch.randn(4, 5)
    gm = make_fx(step)(x)
    before = _clones(gm)
    assert before == 5
    assert drop_redundant_clones(gm) == 0 and _clones(gm) == before


class ZeroDropout(nn.Module):
    """Llama-style: dropout configured off still goes through F.dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(torch.tanh(self.fc1(x)), p=0.0, training=self.training)
        return x + F.dropout(self.fc2(h), p=0.0, training=self.training)


def test_zero_dropout_costs_no_copy_in_the_captured_step() -> None:
    torch.manual_seed(0)
    model = ZeroDropout().train()
    x = torch.randn(16, 32, requires_grad=True)
    (graph,) = capture_step(model, (x,)).rematgraphs
    kinds = [op.kind for op in graph.ops]
    assert "aten.clone" not in kinds and "aten.tanh" in kinds


def test_with_zero_dropout_remat_keeping_everything_is_no_larger_than_eager() -> None:
    torch.manual_seed(0)
    model = ZeroDropout().train()
    x = torch.randn(512, 32)
    compiled = remat.compile(model, budget=1.0)

    def step(runner: nn.Module) -> None:
        runner(x).square().mean().backward()

    setup = lambda: model.zero_grad(set_to_none=True)  # noqa: E731
    eager = measure_peak(lambda: step(model), "cpu", setup=setup).peak_bytes
    ours = measure_peak(lambda: step(compiled), "cpu", setup=setup).peak_bytes
    assert ours <= eager, (ours, eager)
