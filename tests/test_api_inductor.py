"""remat.compile(..., inner="inductor"): planned graphs fused by Inductor, fitted to the budget."""

from __future__ import annotations

import copy

import pytest
import torch

import remat
from remat.measure import measure_peak
from tests.model_cases import CASES
from tests.test_api import _assert_same_step, _budgets, _fresh_inputs, _run, _train_step

CASE = next(c for c in CASES if c.name == "in_place")
"""A model Inductor compiles in seconds here (a cold Inductor cache costs ~25 s once)."""


def test_inductor_runs_the_plan_with_eagers_results_within_budget():
    torch._dynamo.reset()
    _, budget, _ = _budgets(CASE)
    torch.manual_seed(0)
    reference = CASE.build()
    model = copy.deepcopy(reference)
    compiled = remat.compile(model, budget=budget, inner="inductor")
    args, kwargs = _fresh_inputs(CASE)
    ref_args, ref_kwargs = _fresh_inputs(CASE)
    out, _ = _run(compiled, CASE, args, kwargs)
    ref_out, _ = _run(reference, CASE, ref_args, ref_kwargs)
    _assert_same_step(model, reference, out, ref_out, args, ref_args)

    (check,) = compiled._inductor.checks
    assert check.inner == "inductor", check  # a fused build fitted, not the fx fallback
    assert check.expected_peak <= check.allowed_bytes
    measured = measure_peak(
        lambda: _train_step(compiled, CASE, args, kwargs),
        "cpu",
        warmup=1,
        setup=lambda: model.zero_grad(set_to_none=True),
    )
    assert measured.peak_bytes <= budget, f"measured {measured.peak_bytes} > budget {budget}"


def test_an_unknown_inner_compiler_is_refused_at_compile_time():
    with pytest.raises(ValueError, match="inner must be one of inductor, eager"):
        remat.compile(CASE.build(), budget=0.5, inner="tvm")
