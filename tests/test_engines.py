"""What distributed engines hold outside remat's graphs: plain DDP nothing; a DDP set up in a
way remat has not measured is refused rather than run over budget; remat.compile and the
backend measure what FSDP2 holds (issue 13). The
2-rank runs are in test_distributed_ddp.py and test_distributed_fsdp.py."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import remat
from remat.engines import engine_reserve

fsdp = pytest.importorskip("torch.distributed.fsdp")


def _block() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())


def _sharded() -> nn.Module:
    model = nn.Sequential(_block(), _block(), nn.Linear(16, 4))
    for block in model[:2]:
        fsdp.fully_shard(block)
    fsdp.fully_shard(model)
    return model


def test_compile_trains_an_fsdp2_model_block_by_block_counting_what_fsdp2_holds(
    process_group,
):
    """One rank: each sharded block is its own graph (even torch.nn's Sequential), what the
    eager rest holds is measured and counted in the step's peak, and the gradients are plain
    FSDP2's."""
    torch.manual_seed(0)
    plain = _sharded()
    torch.manual_seed(0)
    compiled = remat.compile(_sharded(), budget=1.0)
    batch = torch.randn(64, 16)
    for model in (plain, compiled):
        model(batch).square().mean().backward()
    for a, b in zip(plain.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    step = next(iter(compiled.remat_plans.values()))
    assert len(step.graphs) == 2
    outside = step.outside_bytes
    assert "held outside the graphs" in str(compiled.remat_plan)
    assert 0 < outside <= step.predicted_peak <= compiled._planner.budget_bytes


def test_the_backend_tells_a_graph_traced_from_fsdp2_modules(process_group):
    """Dynamo records each node's module classes, and a block compiled on its own is the
    frame's `self`: either sharded by FSDP2 makes the backend measure what FSDP2 holds."""
    from remat.engines import traced_from_fsdp2

    model = _sharded()
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(16, 4)))
    assert not traced_from_fsdp2(gm, {"self": nn.Linear(16, 4)})
    assert traced_from_fsdp2(gm, {"self": model[0]})
    for node in gm.graph.nodes:
        node.meta["nn_module_stack"] = {"L__self___0": ("0", type(model[0]))}
    assert traced_from_fsdp2(gm, {})


def test_an_unsharded_model_is_accepted():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    compiled = remat.compile(model, budget=1.0)
    compiled(torch.randn(8, 16)).sum().backward()
    assert compiled.remat_plan is not None


def test_plain_ddp_reserves_nothing(process_group):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    assert engine_reserve(model) == 0
    assert engine_reserve(DDP(model)) == 0


def test_ddp_with_a_communication_hook_is_refused(process_group):
    """A hook (e.g. fp16 compression) allocates copies of each bucket during the backward,
    which remat has not measured; it may be registered after remat.compile, so the planner's
    reserve (engine_reserve, called when a graph is planned) is where it is refused."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    ddp = DDP(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)))
    ddp.register_comm_hook(dist.group.WORLD, default_hooks.fp16_compress_hook)
    with pytest.raises(remat.UnsupportedModelError, match="communication hook"):
        engine_reserve(nn.Sequential(ddp))
