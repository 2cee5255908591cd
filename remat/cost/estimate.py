"""Price every node of a joint fx graph from its fake values: FLOPs, bytes, roofline time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from remat.cost.flops import node_flops, node_value
from remat.cost.timing import DeviceProfile, profile_for, tf32_enabled
from remat.cost.traffic import OpKind, classify, kernel_name, node_bytes
from remat.torch_internals import OpOverload

_CONVOLUTIONS = frozenset(
    {
        "convolution",
        "_convolution",
        "convolution_backward",
        "cudnn_convolution",
        "convolution_overrideable",
    }
)


@dataclass(frozen=True)
class NodeCost:
    """Cost of one execution of one fx node."""

    flops: int
    bytes_read: int
    bytes_written: int
    """Bytes of tensor data the op writes (fresh outputs and in-place targets); 0 for views."""
    time_s: float
    """Estimated seconds (roofline + per-op overhead), or measured by `profile_ops`."""

    def __post_init__(self) -> None:
        if min(self.flops, self.bytes_read, self.bytes_written) < 0 or self.time_s < 0:
            raise ValueError(f"costs must be non-negative, got {self}")

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


ZERO_COST = NodeCost(flops=0, bytes_read=0, bytes_written=0, time_s=0.0)


def estimate_costs(
    gm: fx.GraphModule, device: torch.device | str, *, profile: DeviceProfile | None = None
) -> dict[fx.Node, NodeCost]:
    """Cost of every node in `gm` (placeholders, outputs and views included, at zero).

    Needs `node.meta['val']` on call_function nodes (fake tensors, as AOTAutograd and
    `make_fx(tracing_mode='fake')` leave them); runs nothing. Symbolic sizes are priced at their
    hints. `profile` defaults to the built-in one for `device` (see `profile_for`).
    """
    profile = profile_for(device) if profile is None else profile
    # TF32 is a CUDA tensor-core mode; torch's flags are read once, at pricing time.
    on_cuda = profile.device_type == "cuda"
    tf32 = _Tf32(
        matmul=on_cuda and tf32_enabled(convolution=False),
        convolution=on_cuda and tf32_enabled(convolution=True),
    )
    return {node: _node_cost(node, profile, tf32) for node in gm.graph.nodes}


@dataclass(frozen=True)
class _Tf32:
    matmul: bool
    convolution: bool


def _node_cost(node: fx.Node, profile: DeviceProfile, tf32: _Tf32) -> NodeCost:
    kind = classify(node)
    if kind in (OpKind.NONE, OpKind.METADATA, OpKind.VIEW):
        return ZERO_COST
    flops = node_flops(node)
    read, written = node_bytes(node, kind)
    uses_tf32 = tf32.convolution if _is_convolution(node) else tf32.matmul
    seconds = profile.roofline(
        flops, read + written, compute_dtype(node), tf32=uses_tf32, op_name=kernel_name(node)
    )
    return NodeCost(flops=flops, bytes_read=read, bytes_written=written, time_s=seconds)


def _is_convolution(node: fx.Node) -> bool:
    target = node.target
    return isinstance(target, OpOverload) and target.overloadpacket.__name__ in _CONVOLUTIONS


def compute_dtype(node: fx.Node) -> torch.dtype:
    """The dtype an op computes in: its first floating-point tensor input, else its output."""
    for arg in node.all_input_nodes:
        value = node_value(arg)
        if isinstance(value, torch.Tensor) and value.dtype.is_floating_point:
            return value.dtype
    value = node.meta.get("val")
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, torch.Tensor):
        return value.dtype
    return torch.float32
