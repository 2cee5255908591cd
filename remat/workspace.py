"""Measured scratch memory of ops whose workspace depends on the backend's algorithm choice.

A convolution's oneDNN (CPU) or cuDNN (CUDA) implementation allocates blocked copies and
workspaces beside its outputs; their size depends on shapes, strides and the algorithm picked,
so it is measured, not guessed: each distinct call is run once on random data of the traced
shapes, and its peak above the outputs is its transient bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import unset_fake_temporarily

from remat.measure import measure_peak

_MEASURED_OPS = {
    torch.ops.aten.convolution.default,
    torch.ops.aten._convolution.default,
    torch.ops.aten.convolution_backward.default,
}

_cache: dict[tuple, int] = {}


def measure_workspaces(joint: fx.GraphModule, device: torch.device) -> Mapping[fx.Node, int]:
    """Transient bytes of every convolution node of `joint`, measured on `device`."""
    result: dict[fx.Node, int] = {}
    # The partitioner runs under AOTAutograd's fake mode; the measurement needs real tensors.
    with unset_fake_temporarily():
        for node in joint.graph.nodes:
            if node.op == "call_function" and node.target in _MEASURED_OPS:
                key = _key(node, device)
                if key not in _cache:
                    _cache[key] = _measure(node, device)
                result[node] = _cache[key]
    return result


def _key(node: fx.Node, device: torch.device) -> tuple:
    def describe(arg: object) -> object:
        if isinstance(arg, fx.Node):
            value = arg.meta.get("val")
            if isinstance(value, torch.Tensor):
                return (tuple(value.shape), tuple(value.stride()), value.dtype)
            return repr(value)
        if isinstance(arg, (list, tuple)):
            return tuple(describe(a) for a in arg)
        return arg

    return (node.target, str(device), describe(node.args), describe(tuple(node.kwargs.items())))


def _real(value: object, device: torch.device) -> object:
    if isinstance(value, torch.Tensor):
        data = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=device)
        return data.normal_() if data.is_floating_point() else data.zero_()
    return value


def _measure(node: fx.Node, device: torch.device) -> int:
    def materialize(arg: object) -> object:
        if isinstance(arg, fx.Node):
            return _real(arg.meta.get("val"), device)
        if isinstance(arg, (list, tuple)):
            return type(arg)(materialize(a) for a in arg)
        return arg

    args = materialize(node.args)
    kwargs = {k: materialize(v) for k, v in node.kwargs.items()}
    outputs = node.meta.get("val")
    output_bytes = sum(
        v.untyped_storage().nbytes()
        for v in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))
        if isinstance(v, torch.Tensor)
    )
    with torch.no_grad():
        peak = measure_peak(lambda: node.target(*args, **kwargs), device, warmup=1).peak_bytes
    return max(0, peak - output_bytes)
