"""Kernels priced above their roofline: the cases, their names, the built-in CPU slowdowns."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from remat.cost import CPU_DEFAULT, estimate_costs, measure_slowdowns
from remat.cost.calibrate import CASES, profile_slowdowns
from remat.cost.traffic import OpKind, classify, kernel_name

aten = torch.ops.aten
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_every_case_is_named_as_the_estimate_looks_it_up() -> None:
    """A case's name is what `kernel_name` gives the op it times (else its slowdown would
    never be applied)."""
    for case in CASES:
        arguments = case.arguments(4096, torch.device("cpu"))
        traced = make_fx(lambda *args, case=case: case.call(*args), tracing_mode="fake")(*arguments)
        names = {kernel_name(n) for n in traced.graph.nodes if classify(n) is OpKind.COMPUTE}
        assert names == {case.name}, case.name
    assert len({case.name for case in CASES}) == len(CASES)


def _gelu(approximate: str):
    return lambda t: aten.gelu.default(t, approximate=approximate)


def test_gelu_variants_have_their_own_names() -> None:
    x = torch.randn(4, 8)
    for approximate, name in (("none", "gelu"), ("tanh", "gelu:tanh")):
        traced = make_fx(_gelu(approximate), tracing_mode="fake")(x)
        (node,) = [n for n in traced.graph.nodes if n.op == "call_function"]
        assert kernel_name(node) == name


def test_a_slowdown_multiplies_the_roofline_of_ops_of_that_name_only() -> None:
    x = torch.randn(64, 256)
    traced = make_fx(lambda t: torch.tanh(t) + 1, tracing_mode="fake")(x)
    plain = replace(CPU_DEFAULT, slowdowns=())
    slowed = replace(CPU_DEFAULT, slowdowns=(("tanh", 5.0),))
    before = estimate_costs(traced, "cpu", profile=plain)
    after = estimate_costs(traced, "cpu", profile=slowed)
    overhead = CPU_DEFAULT.per_op_overhead
    for node in traced.graph.nodes:
        if node.target is aten.tanh.default:
            assert after[node].time_s - overhead == pytest.approx(
                5 * (before[node].time_s - overhead)
            )
        else:
            assert after[node].time_s == before[node].time_s
    with pytest.raises(ValueError, match="slowdowns"):
        replace(CPU_DEFAULT, slowdowns=(("tanh", 0.0),))


def test_dropout_in_a_joint_graph_is_priced_with_its_slowdown(joint_graph) -> None:
    gm = joint_graph(nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.1)), torch.randn(8, 16))
    costs = estimate_costs(gm, "cpu")
    plain = estimate_costs(gm, "cpu", profile=replace(CPU_DEFAULT, slowdowns=()))
    (dropout,) = [n for n in gm.graph.nodes if kernel_name(n) == "native_dropout"]
    overhead = CPU_DEFAULT.per_op_overhead
    factor = CPU_DEFAULT.slowdown("native_dropout")
    assert factor > 1
    assert costs[dropout].time_s - overhead == pytest.approx(
        factor * (plain[dropout].time_s - overhead)
    )


def test_measured_slowdowns_are_positive_and_kept_at_least_one() -> None:
    found = measure_slowdowns("cpu", elements=4096, repeats=1, rounds=1, cases=CASES[:3])
    assert [each.name for each in found] == [case.name for case in CASES[:3]]
    assert all(each.roofline_s > 0 and each.measured_s > 0 for each in found)
    assert all(factor >= 1 for _, factor in profile_slowdowns(found))
    with pytest.raises(ValueError, match="rounds"):
        measure_slowdowns("cpu", rounds=0)


def test_the_built_in_cpu_slowdowns_are_the_latest_recorded_measurement() -> None:
    """CPU_DEFAULT's slowdowns come from `python -m benchmarks.kernel_slowdowns`."""
    recorded = sorted(RESULTS.glob("kernel-slowdowns-cpu-*.json"))
    assert recorded, "no kernel-slowdowns-cpu-*.json: run python -m benchmarks.kernel_slowdowns"
    latest = json.loads(recorded[-1].read_text())
    assert dict(CPU_DEFAULT.slowdowns) == latest["slowdowns"]
    assert {case["op"] for case in latest["cases"]} == {case.name for case in CASES}
