"""fx code calling aten kernels directly (remat.fx_direct)."""

from __future__ import annotations

import torch
import torch.fx as fx

from remat.fx_direct import direct_call_graph
from remat.torch_internals import boxed_codegen


def _graph_module() -> fx.GraphModule:
    def f(a, b):
        c = torch.ops.aten.mm.default(a, b)
        d = torch.ops.aten.mm.default(c, b)
        return torch.ops.aten.add.Tensor(torch.ops.aten.relu.default(d), 1.0), c

    return fx.symbolic_trace(f)


def test_direct_call_graph_gives_the_same_results_without_going_through_torch_ops():
    gm = _graph_module()
    before = gm.code
    fast = fx.GraphModule(gm, direct_call_graph(gm.graph))
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    for ours, theirs in zip(fast(a, b), gm(a, b), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert "torch.ops.aten" in before and "torch.ops.aten" not in fast.code
    assert fast.code.count("= remat_kernels_aten_mm_default(") == 2  # one global per op
    assert gm.code == before  # the graph it was made from is left alone


def test_direct_call_graph_keeps_the_boxed_calling_convention():
    gm = _graph_module()
    gm.graph.set_codegen(boxed_codegen())
    fast = fx.GraphModule(gm, direct_call_graph(gm.graph))
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    args = [a, b]
    out = fast(args)
    assert args == []  # the boxed code clears its argument list once read
    torch.testing.assert_close(out[1], a @ b)
