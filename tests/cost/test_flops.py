"""FLOPs per node come from torch's registered formulas, with exact counts."""

from __future__ import annotations

import logging
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils.flop_counter import FlopCounterMode

from remat.cost import estimate_costs, node_flops
from remat.cost import flops as flops_module

aten = torch.ops.aten


def _nodes(gm: fx.GraphModule, target: object) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.target is target]


def test_mm_counts_two_m_k_n() -> None:
    m, k, n = 3, 5, 7
    gm = make_fx(torch.mm, tracing_mode="fake")(torch.randn(m, k), torch.randn(k, n))
    (mm,) = _nodes(gm, aten.mm.default)
    assert node_flops(mm) == 2 * m * k * n
    assert estimate_costs(gm, "cpu")[mm].flops == 2 * m * k * n


def test_bmm_and_addmm() -> None:
    def f(a, b, bias, x, w):
        return torch.bmm(a, b), torch.addmm(bias, x, w)

    args = (
        torch.randn(2, 3, 4),
        torch.randn(2, 4, 5),
        torch.randn(6),
        torch.randn(3, 4),
        torch.randn(4, 6),
    )
    gm = make_fx(f, tracing_mode="fake")(*args)
    (bmm,) = _nodes(gm, aten.bmm.default)
    (addmm,) = _nodes(gm, aten.addmm.default)
    assert node_flops(bmm) == 2 * 2 * 3 * 4 * 5
    assert node_flops(addmm) == 2 * 3 * 4 * 6


def test_joint_graph_total_matches_flop_counter_mode(joint_graph) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
        nn.Dropout(0.1),
        nn.LayerNorm(10),
    )
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    gm = joint_graph(model, x)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    costs = estimate_costs(gm, "cpu")
    assert sum(c.flops for c in costs.values()) == counter.get_total_flops() > 0


def test_linear_backward_is_three_matmuls(joint_graph) -> None:
    # forward x@W^T, backward dX and dW: three matmuls of the same size (bias add is free)
    batch, d_in, d_out = 4, 8, 16
    gm = joint_graph(nn.Linear(d_in, d_out), torch.randn(batch, d_in, requires_grad=True))
    total = sum(c.flops for c in estimate_costs(gm, "cpu").values())
    assert total == 3 * 2 * batch * d_in * d_out


def test_ops_without_formula_views_and_getitem_count_zero() -> None:
    def f(x):
        y = torch.relu(x).t()
        values, _ = torch.max(y, dim=0)
        return values

    gm = make_fx(f, tracing_mode="fake")(torch.randn(4, 6))
    for node in gm.graph.nodes:
        assert node_flops(node) == 0
    assert _nodes(gm, operator.getitem)


def test_symbolic_shapes_use_their_hints() -> None:
    gm = make_fx(torch.mm, tracing_mode="symbolic")(torch.randn(6, 5), torch.randn(5, 7))
    (mm,) = _nodes(gm, aten.mm.default)
    assert isinstance(mm.meta["val"].shape[0], torch.SymInt)
    flops = node_flops(mm)
    assert type(flops) is int and flops == 2 * 6 * 5 * 7


def test_cpu_attention_uses_flash_formulas() -> None:
    def f(q, k, v):
        out = F.scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out.sum(), (q, k, v))

    b, h, s, d = 2, 3, 16, 8
    args = [torch.randn(b, h, s, d, requires_grad=True) for _ in range(3)]
    gm = make_fx(f, tracing_mode="fake")(*args)
    fwd = _nodes(gm, aten._scaled_dot_product_flash_attention_for_cpu.default)
    bwd = _nodes(gm, aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
    assert len(fwd) == len(bwd) == 1
    matmul = 2 * b * h * s * s * d  # one (s x d) @ (d x s) per head
    assert node_flops(fwd[0]) == 2 * matmul  # QK^T and PV
    assert node_flops(bwd[0]) == 5 * matmul  # dV, dP, dQ, dK, and the recomputed QK^T


def test_flop_counter_mapping_counts_cpu_attention_as_node_flops_do() -> None:
    """Eager steps counted by FlopCounterMode (the benchmarks' peers) and remat's graphs must
    count CPU's fused attention alike, or a peer's recompute looks cheaper than it is."""
    b, h, s, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False, custom_mapping=flops_module.counter_mapping()) as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    matmul = 2 * b * h * s * s * d
    assert counter.get_total_flops() == 7 * matmul  # 2 forward, 5 backward, as above


def test_unreadable_arguments_give_zero_and_warn(caplog, monkeypatch) -> None:
    monkeypatch.setattr(flops_module, "_warned", set())  # the warning is once per op per process
    graph = fx.Graph()
    a, b = graph.placeholder("a"), graph.placeholder("b")  # no meta['val']
    mm = graph.call_function(aten.mm.default, (a, b))
    graph.output(mm)
    with caplog.at_level(logging.WARNING, logger="remat.cost.flops"):
        assert node_flops(mm) == 0
    assert "aten.mm.default" in caplog.text
