"""Distributed engines whose memory remat cannot yet see: refused, never run over budget.

FSDP2 (`fully_shard`) all-gathers each block's parameters around its forward and backward and
reduce-scatters its gradients, outside the graphs remat plans: unsharded parameters and their
gradients are allocated during the step, on top of any plan. Until remat counts them (or
reserves them), a budget could be exceeded without a word, so a sharded model is refused with
what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx as fx
from torch import nn


class UnsupportedModelError(ValueError):
    """The model runs under an engine whose memory remat cannot bound (the message says which)."""


_FSDP2_ADVICE = (
    "remat does not yet count what FSDP2 holds during the step (each block's all-gathered "
    "parameters and unsharded gradients), so its budget could be exceeded; train the sharded "
    "model with per-block torch.utils.checkpoint (or HF's gradient checkpointing), or use "
    "remat on an unsharded model"
)


def check_model(model: nn.Module) -> None:
    """Raise UnsupportedModelError if `model` or a submodule is sharded by FSDP2."""
    sharded = _fsdp2_types(type(m) for m in model.modules())
    if sharded:
        raise UnsupportedModelError(f"{sharded[0]} is sharded by fully_shard: {_FSDP2_ADVICE}")


def engine_reserve(model: nn.Module) -> int:
    """Bytes the engine running `model` holds during the step outside remat's graphs, withheld
    from the budget (none for a plain module)."""
    return 0


def check_graph(gm: fx.GraphModule) -> None:
    """Raise UnsupportedModelError if Dynamo traced `gm` from FSDP2-sharded modules."""
    classes = (
        module_class
        for node in gm.graph.nodes
        for _, module_class in (node.meta.get("nn_module_stack") or {}).values()
        if isinstance(module_class, type)
    )
    sharded = _fsdp2_types(classes)
    if sharded:
        raise UnsupportedModelError(f"the graph comes from {sharded[0]}: {_FSDP2_ADVICE}")


def _fsdp2_types(classes: Iterable[type]) -> list[str]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed support
        return []
    return sorted({c.__name__ for c in classes if issubclass(c, FSDPModule)})
