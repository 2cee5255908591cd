"""remat.compile end to end, as a user runs it: same results as eager, peak within budget."""

from __future__ import annotations

import copy

import pytest
import torch

import remat
from remat.measure import measure_peak
from remat.solvers import find_floor
from tests.model_cases import CASES, ModelCase

REL_TOL = 1e-5


def _train_step(model, case: ModelCase, args, kwargs):
    out = model(*args, **kwargs)
    loss = case.loss(out)
    loss.backward()
    return out, loss


def _run(model, case, args, kwargs, seed: int = 1234):
    torch.manual_seed(seed)
    return _train_step(model, case, args, kwargs)


def _assert_close(actual, expected, what: str) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    error = ((actual - expected).abs().max() / scale).item()
    assert error <= REL_TOL, f"{what}: relative error {error:.2e}"


def _assert_same_step(model, reference, out, ref_out, inputs, ref_inputs) -> None:
    flat, ref_flat = torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(ref_out)
    assert len(flat) == len(ref_flat)
    for a, b in zip(flat, ref_flat, strict=True):
        if isinstance(b, torch.Tensor):
            _assert_close(a.detach(), b.detach(), "output")
        else:
            assert a == b
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if q.grad is not None:
            _assert_close(p.grad, q.grad, f"grad of {name}")
    for (name, b), ref_b in zip(model.named_buffers(), reference.buffers()):
        _assert_close(b.double(), ref_b.double(), f"buffer {name}")
    for x, ref_x in zip(inputs, ref_inputs):
        if isinstance(x, torch.Tensor) and x.requires_grad:
            _assert_close(x.grad, ref_x.grad, "input grad")


def _fresh_inputs(case: ModelCase):
    return case.inputs(), case.kwargs()


def _budgets(case: ModelCase) -> tuple[int, int, int]:
    """(floor, a budget halfway to the keep-all peak, keep-all peak) of the step, in bytes."""
    torch.manual_seed(0)
    model = remat.compile(case.build(), budget=1.0)
    args, kwargs = _fresh_inputs(case)
    _train_step(model, case, args, kwargs)
    report = model.remat_plan
    (graph_plan,) = model.remat_plans[model._planner.current_key].graphs
    floor = find_floor(graph_plan.captured.graph).bytes + graph_plan.held_elsewhere
    keep_all = report.keep_all_peak
    return floor, floor + (keep_all - floor) // 2, keep_all


def _check_at_budget(case: ModelCase, budget: int) -> remat.RematModule:
    torch.manual_seed(0)
    reference = case.build()
    model = copy.deepcopy(reference)
    compiled = remat.compile(model, budget=budget)
    args, kwargs = _fresh_inputs(case)
    ref_args, ref_kwargs = _fresh_inputs(case)
    out, _ = _run(compiled, case, args, kwargs)
    ref_out, _ = _run(reference, case, ref_args, ref_kwargs)
    _assert_same_step(model, reference, out, ref_out, args, ref_args)
    assert compiled.remat_plan.predicted_peak <= budget

    measured = measure_peak(
        lambda: _train_step(compiled, case, args, kwargs),
        "cpu",
        warmup=1,
        setup=lambda: model.zero_grad(set_to_none=True),
    )
    predicted = compiled.remat_plan.predicted_peak
    assert abs(predicted - measured.peak_bytes) <= 0.10 * measured.peak_bytes, (
        f"{case.name}: simulated {predicted} vs measured {measured.peak_bytes}"
    )
    assert measured.peak_bytes <= budget, (
        f"{case.name}: measured {measured.peak_bytes} > budget {budget} "
        f"(predicted {compiled.remat_plan.predicted_peak})"
    )
    return compiled


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_results_as_eager_and_peak_within_budget(case: ModelCase):
    floor, middle, keep_all = _budgets(case)
    assert floor <= middle <= keep_all
    for budget in (middle, floor):
        _check_at_budget(case, budget)


def test_recomputed_dropout_replays_its_masks(monkeypatch):
    """A plan that recomputes everything it can: dropout runs again in the backward."""
    import remat.solvers as solvers
    from remat.solvers._common import make_plan
    from remat.solvers.lazy import schedule_from_kept

    def recompute_all(graph, budget, **_):
        order, boundary = schedule_from_kept(graph, ())
        return make_plan(graph, order, boundary, solver="test", budget=budget)

    monkeypatch.setattr(solvers, "solve", recompute_all)
    case = next(c for c in CASES if c.name == "gpt_dropout")
    torch.manual_seed(0)
    reference = case.build()
    model = copy.deepcopy(reference)
    compiled = remat.compile(model, budget=1.0)
    args, kwargs = _fresh_inputs(case)
    out, _ = _run(compiled, case, args, kwargs)
    ref_out, _ = _run(reference, case, *_fresh_inputs(case))
    _assert_same_step(model, reference, out, ref_out, args, args)
    assert any(g.replayed_random_ops for g in compiled.remat_plan.graphs)
