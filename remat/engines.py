"""What distributed engines hold during a step outside remat's graphs: reserved, or refused.

The budget is per rank and counts what the engine allocates while the step runs (DESIGN.md).

DDP (`DistributedDataParallel`, default arguments) reserves nothing, as measured per rank
(gloo, 2 ranks, docs/distributed.md): its gradient buckets are allocated when it is built (and
once more when it rebuilds them at the start of the second training call, before any of the
step's memory is live), so they sit outside the step like the parameters; the backward copies
each gradient into its bucket and the all-reduced bucket back, in place. The gradients
themselves are what remat already counts for every trainable parameter. A communication hook or
DDP's `mixed_precision` allocates copies remat has not measured: refused.

FSDP2 (`fully_shard`) all-gathers each block's parameters around its forward and backward and
reduce-scatters its gradients, outside the graphs remat plans: `remat.compile` compiles each
sharded block on its own and measures what FSDP2 and the eager code around the blocks hold
(remat.fsdp). The torch.compile backend sees only the blocks' graphs: it measures what is
held around them in the second step the training loop runs (remat.backend_probe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch.fx as fx
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from remat.torch_internals import active_ddp_module


class UnsupportedModelError(ValueError):
    """The model runs under an engine whose memory remat cannot bound (the message says which)."""


_DDP_UNMEASURED = (
    "remat has not measured what it allocates during the step (per-bucket copies), so the "
    "budget could be exceeded; use DDP without it with remat"
)


def engine_reserve(model: nn.Module) -> int:
    """Bytes the engine running `model` holds during the step outside remat's graphs, withheld
    from the budget: none for a plain module or plain DDP (see the module's docstring). Raises
    UnsupportedModelError for an engine set up in a way remat has not measured."""
    for module in model.modules():
        if isinstance(module, DistributedDataParallel):
            _check_ddp(module)
    return 0


def _check_ddp(ddp: DistributedDataParallel) -> None:
    if ddp._comm_hooks:
        raise UnsupportedModelError(f"DDP has a communication hook: {_DDP_UNMEASURED}")
    if ddp.mixed_precision is not None:
        raise UnsupportedModelError(f"DDP has mixed_precision set: {_DDP_UNMEASURED}")


def traced_from_fsdp2(gm: fx.GraphModule, frame_locals: Mapping[str, Any]) -> bool:
    """Whether Dynamo traced `gm` from FSDP2-sharded modules: one among its nodes' module
    classes, or among the compiled frame's locals (a block compiled on its own is `self`)."""
    classes = [
        module_class
        for node in gm.graph.nodes
        for _, module_class in (node.meta.get("nn_module_stack") or {}).values()
        if isinstance(module_class, type)
    ]
    classes += [type(value) for value in frame_locals.values() if isinstance(value, nn.Module)]
    return bool(_fsdp2_types(classes))


def check_backend_graph() -> None:
    """What the torch.compile backend refuses: a DDP set up in a way remat has not measured
    (engine_reserve). DDP's bucket graphs are planned one by one on the first step, then
    together (remat.backend_step); FSDP2's blocks are measured (remat.backend_probe)."""
    ddp = active_ddp_module()
    if ddp is not None:
        _check_ddp(ddp)


def fsdp_module_type() -> type | None:
    """FSDP2's module class, which `fully_shard` mixes into what it shards; None without it."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed support
        return None
    return FSDPModule


def _fsdp2_types(classes: Iterable[type]) -> list[str]:
    fsdp = fsdp_module_type()
    if fsdp is None:
        return []
    return sorted({c.__name__ for c in classes if issubclass(c, fsdp)})
