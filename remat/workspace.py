"""Memory that fake tensors do not show, measured once per distinct call on the device.

- Scratch: a convolution's oneDNN (CPU) or cuDNN (CUDA) implementation allocates blocked copies
  and workspaces beside its outputs; losses, norms' backwards and fused attention allocate
  temporaries. Their size depends on shapes and the kernel picked, so it is measured, not
  guessed: the call is run once on random data of the traced shapes, and its peak above its
  outputs is its transient bytes.
- Output storage: some kernels return a small result as a view of a larger buffer (CPU
  `mse_loss` returns a 0-d view of the squared-error tensor), so the result holds more bytes
  than its fake tensor's storage says. Ops whose output is smaller than an input are run once
  and their real storage size recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Generic, TypeVar

import torch
import torch.fx as fx

from remat.measure import measure_peak, tensors_in
from remat.torch_internals import OpOverload, unset_fake_temporarily

_aten = torch.ops.aten
_MEASURED_OPS = {
    _aten.convolution.default,
    _aten._convolution.default,
    _aten.convolution_backward.default,
    _aten.mse_loss.default,
    _aten.mse_loss_backward.default,
    _aten.native_batch_norm_backward.default,
    _aten.native_layer_norm.default,
    _aten.native_layer_norm_backward.default,
    # Dropout's mask is widened to the value's dtype on CPU (a value-sized temporary), softmax
    # with masking and the embedding backward's index sort allocate beside their outputs.
    _aten.native_dropout.default,
    _aten.native_dropout_backward.default,
    _aten._safe_softmax.default,
    _aten.embedding.default,
    _aten.embedding_dense_backward.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_flash_attention_backward.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_efficient_attention_backward.default,
}
"""Ops measured for scratch memory (others were measured to allocate only their outputs)."""

_CACHE_SIZE = 512
"""Distinct (op, shapes, device) calls remembered per cache: a model has a few dozen; a process
that compiles many models forgets the oldest instead of growing without bound."""

_V = TypeVar("_V")


class _Lru(Generic[_V]):
    """A dict of at most `size` entries that forgets the least recently used one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, _V] = OrderedDict()

    def get(self, key: tuple, make: Callable[[], _V]) -> _V:
        """The value for `key`, made (and remembered) on first use."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = self._entries[key] = make()
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


_cache: _Lru[int] = _Lru(_CACHE_SIZE)
_storage_cache: _Lru[int | None] = _Lru(_CACHE_SIZE)


def measure_workspaces(joint: fx.GraphModule, device: torch.device) -> Mapping[fx.Node, int]:
    """Transient bytes of every convolution node of `joint`, measured on `device`."""
    result: dict[fx.Node, int] = {}
    # The partitioner runs under AOTAutograd's fake mode; the measurement needs real tensors.
    with unset_fake_temporarily():
        for node in joint.graph.nodes:
            if node.op == "call_function" and node.target in _MEASURED_OPS:
                args, kwargs = _values(node)
                result[node] = call_scratch_bytes(
                    node.target, args, kwargs, node.meta.get("val"), device
                )
    return result


def measure_storage_bytes(joint: fx.GraphModule, device: torch.device) -> Mapping[fx.Node, int]:
    """Real storage bytes of every single-output node whose result is smaller than one of its
    inputs and, run on `device`, turns out to hold a larger buffer than its fake tensor."""
    result: dict[fx.Node, int] = {}
    with unset_fake_temporarily():
        for node in joint.graph.nodes:
            if node.op != "call_function":
                continue
            args, kwargs = _values(node)
            real = call_storage_bytes(node.target, args, kwargs, node.meta.get("val"), device)
            if real is not None:
                result[node] = real
    return result


def call_scratch_bytes(
    target: object, args: Sequence[object], kwargs: Mapping[str, object], outputs: object,
    device: torch.device,
) -> int:  # fmt: skip
    """Transient bytes of one call of `target` on (fake or real) `args` giving `outputs`: 0 for
    an op measured to allocate only its outputs, else measured once per distinct call."""
    if target not in _MEASURED_OPS:
        return 0
    key = _key(target, device, args, kwargs)
    return _cache.get(key, partial(_measure, target, args, kwargs, outputs, device))


def call_storage_bytes(
    target: object, args: Sequence[object], kwargs: Mapping[str, object], output: object,
    device: torch.device,
) -> int | None:  # fmt: skip
    """Real storage bytes of a call's single result where, run on `device`, it holds a larger
    buffer than its fake tensor says; None where it does not (or cannot: views, random ops)."""
    if not _may_hide_storage(target, args, kwargs, output):
        return None
    key = _key(target, device, args, kwargs)
    make = partial(_real_storage_bytes, target, args, kwargs, output, device)
    return _storage_cache.get(key, make)


def _values(node: fx.Node) -> tuple[tuple, dict]:
    """The node's arguments with each node replaced by its traced (fake) value."""

    def value(arg: object) -> object:
        if isinstance(arg, fx.Node):
            return arg.meta.get("val")
        if isinstance(arg, (list, tuple)):
            return type(arg)(value(a) for a in arg)
        return arg

    return value(node.args), {k: value(v) for k, v in node.kwargs.items()}


def _may_hide_storage(
    target: object, args: Sequence[object], kwargs: Mapping[str, object], output: object
) -> bool:
    if not isinstance(target, OpOverload):
        return False
    if target.is_view or torch.Tag.nondeterministic_seeded in target.tags:
        return False
    if not isinstance(output, torch.Tensor):
        return False
    fake = output.untyped_storage().nbytes()
    return any(t.untyped_storage().nbytes() > fake for t in tensors_in((args, kwargs)))


def _real_storage_bytes(
    target: Callable, args: Sequence[object], kwargs: Mapping[str, object], output: torch.Tensor,
    device: torch.device,
) -> int | None:  # fmt: skip
    """The output's real storage bytes, or None when it matches the fake tensor's."""
    real_args, real_kwargs = _real(args, device), _real(kwargs, device)
    with torch.no_grad():
        result = target(*real_args, **real_kwargs)
    real = result.untyped_storage().nbytes()
    return real if real != output.untyped_storage().nbytes() else None


def _key(
    target: object, device: torch.device, args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple:
    def describe(arg: object) -> object:
        if isinstance(arg, torch.Tensor):
            return (tuple(arg.shape), tuple(arg.stride()), arg.dtype)
        if isinstance(arg, (list, tuple)):
            return tuple(describe(a) for a in arg)
        return arg if isinstance(arg, (int, float, bool, str, type(None))) else repr(arg)

    return (target, str(device), describe(args), describe(tuple(kwargs.items())))


def _real(value: object, device: torch.device) -> object:
    """`value` (a tree of fake or real tensors) with every tensor replaced by random data of its
    layout on `device`."""
    if isinstance(value, torch.Tensor):
        # Fill the flat storage: expanded (stride-0) layouts cannot be written through the view.
        span = 1 + sum((size - 1) * stride for size, stride in zip(value.shape, value.stride()))
        flat = torch.empty(span if value.numel() else 0, dtype=value.dtype, device=device)
        flat = flat.normal_() if flat.is_floating_point() else flat.zero_()
        return flat.as_strided(value.shape, value.stride())
    if isinstance(value, (list, tuple)):
        return type(value)(_real(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _real(v, device) for k, v in value.items()}
    return value


def _measure(
    target: Callable, args: Sequence[object], kwargs: Mapping[str, object], outputs: object,
    device: torch.device,
) -> int:  # fmt: skip
    real_args, real_kwargs = _real(args, device), _real(kwargs, device)
    output_bytes = sum(t.untyped_storage().nbytes() for t in tensors_in(outputs))
    with torch.no_grad():
        peak = measure_peak(lambda: target(*real_args, **real_kwargs), device, warmup=1)
    return max(0, peak.peak_bytes - output_bytes)
