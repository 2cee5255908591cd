"""A graph Dynamo hands the backend once and the step runs several times (a block with a graph
break, blocks compiled one by one: the parameters are inputs, so one graph serves every
block). Each run holds its own values for its backward: each is its own graph of the step.

Before, one plan served every run and the backend counted it once: at half the eager peak this
model ran at the eager peak with no error."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import remat
from remat.backend import RematBackend
from remat.gradient_links import gradient_links
from remat.measure import measure_peak


class BrokenBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.up(x))
        torch._dynamo.graph_break()
        return x + torch.tanh(self.down(torch.tanh(hidden)))


class Stack(nn.Module):
    def __init__(self, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(BrokenBlock(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).square().mean().backward()


def _peak(model: nn.Module, x: torch.Tensor, params: nn.Module) -> int:
    return measure_peak(
        lambda: _step(model, x),
        "cpu",
        warmup=1,
        repeats=1,
        setup=lambda: params.zero_grad(set_to_none=True),
    ).peak_bytes


def _trained(fraction: float) -> tuple[int, int, RematBackend, nn.Module, nn.Module]:
    torch.manual_seed(0)
    model, x = Stack(), torch.randn(256, 64)
    eager_peak = _peak(model, x, model)
    budget = int(fraction * eager_peak)
    backend = remat.backend(budget=budget, inner="eager", time_limit=1.0)
    compiled = torch.compile(model, backend=backend)
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        _step(compiled, x)
    return eager_peak, budget, backend, model, compiled


def test_every_run_of_a_repeated_graph_is_a_graph_of_the_step():
    """Two graphs from Dynamo, six runs a step: six graphs planned, each with its own plan,
    and the step's prediction bounds what it measures."""
    eager_peak, _, backend, model, compiled = _trained(2.0)
    report = backend.last_plans
    assert report is not None and len(report.graphs) == 6
    x = torch.randn(256, 64)
    assert _peak(compiled, x, model) <= report.predicted_peak


def test_a_repeated_graph_never_runs_over_the_budget_silently():
    """At 0.9 of the eager peak the step either measures within the budget or is refused (the
    whole step's floor named): never the eager peak with no error, as before."""
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a first step over budget warns
            _, budget, backend, model, compiled = _trained(0.9)
    except (remat.InfeasibleBudgetError, torch._dynamo.exc.BackendCompilerFailed) as raised:
        error = getattr(raised, "inner_exception", raised)  # Dynamo wraps the backend's
        assert isinstance(error, remat.InfeasibleBudgetError), raised
        assert error.floor > error.budget
        return
    assert _peak(compiled, torch.randn(256, 64), model) <= budget


def test_what_passes_between_the_graphs_is_counted_once():
    """The step's floor with what run time showed of the tensors passed between the graphs
    (remat.gradient_links) is below the eager peak; counted apart (each graph's outputs to the
    step's end, each gradient twice) it was above it. Printed for `pytest -s` (docs/backend.md)."""
    from remat.backend_step import WholeStep
    from remat.solvers import find_floor
    from remat.step_graph import combine

    eager_peak, _, backend, _, _ = _trained(2.0)
    whole: WholeStep = backend.whole_step
    step = list(whole.ledger.step)
    graphs = [g.captured.graph for g in step]
    links = gradient_links([g.io for g in step])
    apart = find_floor(combine(graphs).graph, 10.0).plan.predicted_peak
    linked = find_floor(combine(graphs, links=links).graph, 10.0).plan.predicted_peak
    print(
        f"\n{len(graphs)} graphs: eager peak {eager_peak} B, whole-step floor counted apart "
        f"{apart} B, with {len(links)} links {linked} B"
    )
    assert linked < eager_peak < apart
