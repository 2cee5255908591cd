"""Bytes moved, roofline times, device profiles and measured per-op times."""

from __future__ import annotations

import math
import operator
from dataclasses import replace

import pytest
import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from remat.cost import (
    CPU_DEFAULT,
    H100,
    H200,
    DeviceProfile,
    NodeCost,
    OpKind,
    calibrate_cpu,
    classify,
    estimate_costs,
    profile_for,
    profile_ops,
)

aten = torch.ops.aten
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")


def _node(gm: fx.GraphModule, target: object) -> fx.Node:
    (node,) = [n for n in gm.graph.nodes if n.target is target]
    return node


def _fake_graph(fn, *args) -> fx.GraphModule:
    return make_fx(fn, tracing_mode="fake")(*args)


def test_mm_bytes_and_roofline_time_are_exact() -> None:
    m, k, n = 8, 16, 32
    gm = _fake_graph(torch.mm, torch.randn(m, k), torch.randn(k, n))
    profile = replace(CPU_DEFAULT, fp32_flops=1e9, mem_bandwidth=1e9, per_op_overhead=1e-6)
    cost = estimate_costs(gm, "cpu", profile=profile)[_node(gm, aten.mm.default)]
    assert cost.bytes_read == (m * k + k * n) * 4
    assert cost.bytes_written == m * n * 4
    flops, moved = 2 * m * k * n, (m * k + k * n + m * n) * 4
    assert cost.time_s == pytest.approx(max(flops / 1e9, moved / 1e9) + 1e-6, rel=1e-12)
    memory_bound = replace(profile, fp32_flops=1e15)
    cost = estimate_costs(gm, "cpu", profile=memory_bound)[_node(gm, aten.mm.default)]
    assert cost.time_s == pytest.approx(moved / 1e9 + 1e-6, rel=1e-12)


def test_views_getitem_and_placeholders_cost_nothing() -> None:
    def f(x):
        y = x.t().reshape(-1).view(4, 6).expand(2, 4, 6).detach()
        values, indices = torch.max(y, dim=2)
        return values, indices

    gm = _fake_graph(f, torch.randn(6, 4))
    costs = estimate_costs(gm, "cpu")
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            assert costs[node] == NodeCost(0, 0, 0, 0.0)
        elif classify(node) is OpKind.VIEW:
            assert costs[node].bytes_written == 0 and costs[node].time_s == 0.0
    max_node = _node(gm, aten.max.dim)
    assert costs[max_node].bytes_written == 2 * 4 * 4 + 2 * 4 * 8  # float values, int64 indices
    assert costs[max_node].bytes_read == 24 * 4  # the expanded input once per distinct element


def test_unsafe_view_is_a_view() -> None:
    graph = fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = torch.empty(4, 6, device="meta")
    view = graph.call_function(aten._unsafe_view.default, (x, [24]))
    view.meta["val"] = torch.empty(24, device="meta")
    graph.output(view)
    assert classify(view) is OpKind.VIEW
    assert estimate_costs(fx.GraphModule({}, graph), "cpu")[view].bytes_written == 0


def test_broadcast_input_is_read_once_per_element() -> None:
    gm = _fake_graph(lambda x, s: x + s.expand(64, 64), torch.randn(64, 64), torch.randn(1, 1))
    cost = estimate_costs(gm, "cpu")[_node(gm, aten.add.Tensor)]
    assert cost.bytes_read == 64 * 64 * 4 + 4
    assert cost.bytes_written == 64 * 64 * 4


def test_in_place_writes_its_target_once() -> None:
    gm = _fake_graph(lambda x, y: x.add_(y), torch.randn(10), torch.randn(10))
    cost = estimate_costs(gm, "cpu")[_node(gm, aten.add_.Tensor)]
    assert (cost.bytes_read, cost.bytes_written) == (80, 40)


def test_allocation_and_like_ops_read_no_data() -> None:
    def f(x):
        return torch.empty(100), torch.ones_like(x)

    gm = _fake_graph(f, torch.randn(10))
    costs = estimate_costs(gm, "cpu")
    empty = _node(gm, aten.empty.memory_format)
    ones = _node(gm, aten.ones_like.default)
    assert classify(empty) is OpKind.ALLOC
    assert costs[empty] == NodeCost(0, 0, 0, CPU_DEFAULT.per_op_overhead)
    assert (costs[ones].bytes_read, costs[ones].bytes_written) == (0, 40)


def test_peak_flops_depend_on_dtype_and_tf32() -> None:
    assert H100.peak_flops(torch.bfloat16) == H100.peak_flops(torch.float16)
    assert H100.peak_flops(torch.float8_e4m3fn) > H100.peak_flops(torch.bfloat16)
    assert H100.peak_flops(torch.bfloat16) > H100.peak_flops(torch.float32, tf32=True)
    assert H100.peak_flops(torch.float32, tf32=True) > H100.peak_flops(torch.float32)
    assert H200.mem_bandwidth > H100.mem_bandwidth
    assert CPU_DEFAULT.peak_flops(torch.float32, tf32=True) == CPU_DEFAULT.fp32_flops


def test_cuda_prices_bf16_below_tf32_below_fp32() -> None:
    def mm_time(dtype: torch.dtype) -> float:
        a = torch.randn(1024, 1024, dtype=dtype)
        gm = _fake_graph(torch.mm, a, a)
        return estimate_costs(gm, "cuda", profile=H100)[_node(gm, aten.mm.default)].time_s

    fp32 = mm_time(torch.float32)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        tf32 = mm_time(torch.float32)
        a = torch.randn(64, 64)
        gm = _fake_graph(torch.mm, a, a)
        fast_tf32 = replace(CPU_DEFAULT, tf32_flops=1e15)  # only a CUDA profile may use it
        cpu_under_tf32 = estimate_costs(gm, "cpu", profile=fast_tf32)[_node(gm, aten.mm.default)]
    finally:
        torch.set_float32_matmul_precision(previous)
    assert mm_time(torch.bfloat16) < tf32 < fp32
    assert fp32 == pytest.approx(2 * 1024**3 / H100.fp32_flops + H100.per_op_overhead)
    # TF32 is a CUDA tensor-core mode: CPU prices ignore the setting
    assert cpu_under_tf32 == estimate_costs(gm, "cpu")[_node(gm, aten.mm.default)]


def test_profile_for_device() -> None:
    assert profile_for("cpu") is CPU_DEFAULT
    assert profile_for(torch.device("cpu")) is CPU_DEFAULT
    with pytest.raises(ValueError, match="DeviceProfile"):
        profile_for("meta")


@no_cuda
def test_profile_for_cuda_without_a_gpu_assumes_h100() -> None:
    assert profile_for("cuda") is H100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_profile_for_visible_cuda_device() -> None:
    assert profile_for("cuda").device_type == "cuda"


def test_device_profile_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="mem_bandwidth"):
        replace(CPU_DEFAULT, mem_bandwidth=0.0)
    with pytest.raises(ValueError, match="per_op_overhead"):
        replace(CPU_DEFAULT, per_op_overhead=-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        NodeCost(flops=-1, bytes_read=0, bytes_written=0, time_s=0.0)


def test_calibrate_cpu_returns_a_usable_profile() -> None:
    profile = calibrate_cpu(matmul_size=64, copy_bytes=1 << 20, repeats=1, kernel_elements=4096)
    assert isinstance(profile, DeviceProfile) and profile.device_type == "cpu"
    assert profile.slowdowns and all(factor >= 1 for _, factor in profile.slowdowns)
    for rate in (profile.fp32_flops, profile.fp64_flops, profile.bf16_flops, profile.mem_bandwidth):
        assert math.isfinite(rate) and rate > 0
    assert 0 < profile.per_op_overhead < 1e-2


def test_every_node_of_a_joint_graph_is_priced(joint_graph) -> None:
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.Dropout(0.5),
        nn.GELU(),
        nn.LayerNorm(16),
        nn.Linear(16, 4),
    )
    gm = joint_graph(model, torch.randn(4, 8, requires_grad=True))
    costs = estimate_costs(gm, "cpu")
    assert list(costs) == list(gm.graph.nodes)
    compute = [n for n in gm.graph.nodes if classify(n) is OpKind.COMPUTE]
    assert compute and all(costs[n].time_s >= CPU_DEFAULT.per_op_overhead for n in compute)
    assert all(costs[n].bytes_written > 0 for n in compute)


def test_profile_ops_measures_launched_ops(joint_graph) -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    gm = joint_graph(model, torch.randn(16, 32, requires_grad=True))
    estimated = estimate_costs(gm, "cpu")
    measured = profile_ops(gm, "cpu", repeats=2)
    for node in gm.graph.nodes:
        assert measured[node].flops == estimated[node].flops
        if classify(node) is OpKind.COMPUTE:
            assert 0 < measured[node].time_s < 1.0
        else:
            assert measured[node].time_s == 0.0


def test_profile_ops_leaves_inputs_and_rng_alone() -> None:
    def f(x, y):
        x.add_(y)
        return torch.rand(3) + x

    x, y = torch.zeros(3), torch.ones(3)
    gm = _fake_graph(f, x, y)
    before = torch.random.get_rng_state()
    profile_ops(gm, "cpu", [x, y], warmup=1, repeats=2)
    assert torch.equal(x, torch.zeros(3))
    assert torch.equal(torch.random.get_rng_state(), before)


_SEEN_SCALES: list[float] = []


@torch.library.custom_op("remat_test::scale_probe", mutates_args=())
def _scale_probe(x: torch.Tensor) -> torch.Tensor:
    _SEEN_SCALES.append(x.abs().max().item())
    return x.clone()


@_scale_probe.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def test_profile_ops_times_every_op_on_unit_scale_inputs() -> None:
    # 40 matmuls of N(0, 1) 64 x 64 weights would grow the scale by 8 each: inf long before the
    # last op. Kernels take other paths on such values; the timed run keeps them near unit.
    def f(x, *weights):
        for w in weights:
            x = x @ w
        return torch.ops.remat_test.scale_probe(x)

    gm = _fake_graph(f, torch.randn(64, 64), *(torch.randn(64, 64) for _ in range(40)))
    _SEEN_SCALES.clear()
    profile_ops(gm, "cpu", warmup=0, repeats=1)
    assert _SEEN_SCALES and all(math.isfinite(s) and s < 10.0 for s in _SEEN_SCALES)
