"""Measured per-op times: run the graph once on the real device and time every op.

A refinement of the roofline where it matters (small ops dominated by overhead, memory-bound ops
whose real bandwidth differs from the profile's). FLOPs and bytes still come from the estimate;
only `time_s` is replaced.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import fx

from remat.cost.estimate import NodeCost, estimate_costs
from remat.cost.flops import as_int
from remat.cost.timing import DeviceProfile
from remat.cost.traffic import OpKind, classify
from remat.measure import synchronize
from remat.torch_internals import OpOverload, tree_leaves, tree_map

_TIMED = (OpKind.COMPUTE, OpKind.ALLOC)


def profile_ops(
    gm: fx.GraphModule,
    device: torch.device | str,
    example_inputs: Sequence[object] | None = None,
    *,
    warmup: int = 1,
    repeats: int = 3,
    profile: DeviceProfile | None = None,
) -> dict[fx.Node, NodeCost]:
    """`estimate_costs(gm, device)` with `time_s` of every launched op measured on `device`.

    `example_inputs` are the graph's flattened placeholders (they are cloned, never mutated);
    None makes random ones from the placeholders' fake values (integer inputs are zeros, so index
    inputs stay in range). Each op is timed `repeats` times after `warmup` runs and priced at the
    median; ops that mutate an argument are timed on clones. The global RNG state is restored.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    device = torch.device(device)
    costs = estimate_costs(gm, device, profile=profile)
    if example_inputs is None:
        inputs = [_materialize(node, device) for node in gm.graph.find_nodes(op="placeholder")]
    else:
        inputs = [_clone(value) for value in tree_leaves(example_inputs)]
    timer = _OpTimer(gm, device, warmup, repeats)
    rng_devices = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=rng_devices, device_type=device.type), torch.no_grad():
        timer.run(*inputs)
    return {
        node: replace(cost, time_s=timer.seconds.get(node, cost.time_s))
        for node, cost in costs.items()
    }


def _clone(value: object) -> object:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _materialize(node: fx.Node, device: torch.device) -> object:
    fake = node.meta.get("val")
    if not isinstance(fake, torch.Tensor):
        if fake is None:
            raise ValueError(f"placeholder {node.name} has no meta['val']; pass example_inputs")
        return as_int(fake) if isinstance(fake, torch.SymInt) else fake
    shape = [as_int(s) for s in fake.shape]
    stride = [as_int(s) for s in fake.stride()]
    real = torch.empty_strided(shape, stride, dtype=fake.dtype, device=device)
    if fake.dtype.is_floating_point or fake.dtype.is_complex:
        return real.normal_()
    return real.zero_()


class _OpTimer(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, device: torch.device, warmup: int, repeats: int) -> None:
        super().__init__(gm)
        self.device = device
        self.warmup = warmup
        self.repeats = repeats
        self.seconds: dict[fx.Node, float] = {}

    def run_node(self, n: fx.Node) -> object:
        if classify(n) not in _TIMED:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        mutates = isinstance(n.target, OpOverload) and n.target._schema.is_mutable
        samples = []
        for index in range(self.warmup + self.repeats):
            # A mutating op runs on fresh clones so the real run below sees the real inputs.
            call_args, call_kwargs = tree_map(_clone, (args, kwargs)) if mutates else (args, kwargs)
            synchronize(self.device)
            start = time.perf_counter()
            n.target(*call_args, **call_kwargs)
            synchronize(self.device)
            if index >= self.warmup:
                samples.append(time.perf_counter() - start)
        self.seconds[n] = statistics.median(samples)
        result = super().run_node(n)
        if not mutates:
            rescale_to_unit(result)
        return result


def rescale_to_unit(value: object) -> None:
    """Refill the floating tensors of an op's output with values uniform in [0, 1), in place.

    Random inputs and weights are N(0, 1), so each matmul would multiply the scale by the
    square root of its inner size and a few layers on reach huge values or inf, where kernels
    take other paths (CPU's tanh-GELU runs 1.6x slower on inputs of scale 16 than of scale 1).
    A trained network keeps its activations near unit scale; so does this run, op by op.
    [0, 1) is inside every common op's domain (a probability, a square root's, a logarithm's
    but for 0, arcsine's), so no later op fails on what it reads."""
    for tensor in tree_leaves(value):
        if isinstance(tensor, torch.Tensor) and tensor.dtype.is_floating_point:
            tensor.uniform_()
