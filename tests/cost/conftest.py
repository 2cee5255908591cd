"""Joint forward+backward graphs for cost tests, traced under fake tensors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import fx, nn
from torch._functorch.aot_autograd import aot_module
from torch._functorch.partitioners import default_partition


def aot_joint_graph(module: nn.Module, *inputs: torch.Tensor) -> fx.GraphModule:
    """The joint graph AOTAutograd builds for `module(*inputs)`, caught in the partitioner."""
    joints: list[fx.GraphModule] = []

    def partition(joint: fx.GraphModule, joint_inputs: object, **kwargs: object):
        joints.append(joint)
        return default_partition(joint, joint_inputs, **kwargs)

    def keep(gm: fx.GraphModule, _inputs: object) -> fx.GraphModule:
        return gm

    compiled = aot_module(module, fw_compiler=keep, bw_compiler=keep, partition_fn=partition)
    compiled(*inputs)
    assert len(joints) == 1
    return joints[0]


@pytest.fixture
def joint_graph() -> Callable[..., fx.GraphModule]:
    return aot_joint_graph
