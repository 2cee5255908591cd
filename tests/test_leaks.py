"""Nothing remat keeps outlives the model it was made for."""

from __future__ import annotations

import gc
import weakref

import torch

import remat
from remat.examples import ResidualMLP


def _train_step(compiled, x) -> None:  # type: ignore[no-untyped-def]
    compiled(x).square().mean().backward()


def test_a_compiled_model_its_graphs_and_plans_are_collected_when_dropped():
    torch.manual_seed(0)
    model = ResidualMLP(64, 4, 256)
    compiled = remat.compile(model, budget=0.6)
    _train_step(compiled, torch.randn(256, 64))
    (step,) = compiled.remat_plans.values()
    assert step.graphs, "the step was planned"
    refs = {
        "model": weakref.ref(model),
        "compiled": weakref.ref(compiled),
        "step": weakref.ref(step),
        **{f"graph {i}": weakref.ref(g.captured.graph) for i, g in enumerate(step.graphs)},
        **{f"plan {i}": weakref.ref(g.plan) for i, g in enumerate(step.graphs)},
    }
    del model, compiled, step
    torch._dynamo.reset()  # Dynamo's own cache holds compiled code until reset
    gc.collect()
    alive = sorted(name for name, ref in refs.items() if ref() is not None)
    assert not alive, f"still referenced after the model was dropped: {alive}"


def test_a_torch_compile_backend_its_graphs_and_plans_are_collected_when_dropped():
    from remat.backend import last_backend

    torch.manual_seed(0)
    torch._dynamo.reset()
    model = ResidualMLP(64, 4, 256)
    compiled = torch.compile(model, backend="remat", options={"budget": 0.6, "inner": "eager"})
    _train_step(compiled, torch.randn(256, 64))
    backend = last_backend()
    assert backend is not None and remat.last_plans() is not None, "the step was planned"
    plans = [g for step in backend.planner.steps.values() for g in step.graphs]
    assert plans, "the step was planned"
    refs = {
        "model": weakref.ref(model),
        "compiled": weakref.ref(compiled),
        "backend": weakref.ref(backend),
        **{f"graph {i}": weakref.ref(g.captured.graph) for i, g in enumerate(plans)},
        **{f"plan {i}": weakref.ref(g.plan) for i, g in enumerate(plans)},
    }
    del model, compiled, backend, plans
    torch._dynamo.reset()  # Dynamo's own cache holds compiled code until reset
    gc.collect()
    alive = sorted(name for name, ref in refs.items() if ref() is not None)
    assert not alive, f"still referenced after the model was dropped: {alive}"
    assert remat.last_plans() is None
