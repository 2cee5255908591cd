"""FSDP2 under remat.compile: each sharded block compiled on its own, the rest measured.

Dynamo cannot trace a model's loop over `fully_shard`ed blocks: FSDP2's hooks are
dynamo-disabled, and a break inside a loop makes Dynamo skip the whole frame. So remat does what
torchtitan does by hand: it compiles each sharded block's `forward` separately (each with its
own backend, so each block is its own graph in the step and gets its own plan) and runs the
root's own code (embeddings, head, loss) and FSDP2's hooks eagerly around them. The blocks'
graphs are planned together as one step (aot.Planner.plan_jointly), as DDP's buckets are.

What remat does not plan is measured: once per input signature a probe step (forward and
backward, then the model's state and gradients put back) counts, op by op (a dispatch mode
that steps aside while remat's graphs run), the peak of the bytes allocated outside them:
FSDP2's all-gathered parameters of the blocks in flight (prefetch included), its
reduce-scatter buffers and sharded gradients, and the root's eager activations, graph run by
graph run (remat.outside.OutsideProfile). None of it depends on the plan (the same hooks and
eager code run whatever the blocks recompute), so the joint plan counts it where it is held;
where the probe's runs do not match the step's graphs, its peak is reserved from the budget.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from remat.capture import LOSS_TEMPORARIES
from remat.engines import UnsupportedModelError, fsdp_module_type
from remat.measure import measure_outside, untracked
from remat.outside import OutsideProfile
from remat.torch_internals import dynamo_config, tree_leaves


def sharded_units(model: nn.Module) -> list[nn.Module]:
    """The modules remat compiles one by one: the outermost `fully_shard`ed modules below the
    root, in registration order; the root itself when it is the only sharded module."""
    fsdp = fsdp_module_type()
    if fsdp is None:
        return []
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, fsdp):
                units.append(child)
            else:
                visit(child)

    visit(model)
    if not units and isinstance(model, fsdp):
        units.append(model)
    return units


def check_units(units: Sequence[nn.Module], inner: str) -> None:
    """Raise UnsupportedModelError for what remat.compile cannot yet run under FSDP2."""
    if inner != "eager":
        raise UnsupportedModelError(
            f'inner="{inner}" is not supported with FSDP2 yet (its builds are fitted graph by '
            'graph, not with the step planned whole); use the default inner="eager"'
        )
    for unit in units:
        if getattr(unit, "_compiled_call_impl", None) is not None or hasattr(unit, "_orig_mod"):
            raise UnsupportedModelError(
                f"{type(unit).__name__} is already compiled (torch.compile or .compile()): "
                "remat.compile compiles each sharded block itself; pass the blocks uncompiled, "
                "or keep compiling each block and pass one remat backend for the step: "
                "backend = remat.backend(budget=...); block.compile(backend=backend)"
            )


@dataclass(frozen=True)
class ShardedUnits:
    """The sharded blocks of a model, each compiled on its own."""

    model: nn.Module
    units: tuple[nn.Module, ...]

    def compile(self, fresh_backend: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """A callable running the model with each unit's forward compiled by a backend Dynamo
        has not seen (so each unit compiles afresh, as its own graph)."""
        compiled = tuple(
            untracked(torch.compile(unit.forward, backend=fresh_backend(), dynamic=False))
            for unit in self.units
        )
        return functools.partial(self._call, compiled)

    def _call(self, compiled: Sequence[Callable[..., Any]], *args: Any, **kwargs: Any) -> Any:
        # Many units share one forward's code: Dynamo keeps one cache entry per unit there,
        # and past its limit it would run the blocks eagerly, unplanned: fail instead.
        limit = max(64, 4 * len(self.units))
        with (
            dynamo_config.patch(
                recompile_limit=limit,
                accumulated_recompile_limit=max(256, 4 * limit),
                fail_on_recompile_limit_hit=True,
            ),
            _installed(self.units, compiled),
        ):
            return self.model(*args, **kwargs)


_NO_INSTANCE_FORWARD = object()
"""A unit whose forward is its class's (the usual case): on exit, the attribute is deleted."""


class _installed:
    """Within: each unit's forward is its compiled one; on exit, what it was before."""

    def __init__(self, units: Sequence[nn.Module], compiled: Sequence[Callable[..., Any]]):
        self._units, self._compiled = units, compiled

    def __enter__(self) -> None:
        self._before = [u.__dict__.get("forward", _NO_INSTANCE_FORWARD) for u in self._units]
        for unit, forward in zip(self._units, self._compiled, strict=True):
            unit.forward = forward

    def __exit__(self, *exc: object) -> None:
        for unit, before in zip(self._units, self._before, strict=True):
            if before is _NO_INSTANCE_FORWARD:
                del unit.forward
            else:
                unit.forward = before


def probe_outside(
    model: nn.Module,
    run_forward: Callable[[], Any],
    device: torch.device,
    loss_reserve: int | None = None,
) -> OutsideProfile:
    """Run one forward (`run_forward`) and the backward of its loss, measuring what is
    allocated outside remat's graphs; the parameters' gradients are put back afterwards (the
    caller restores buffers and random state). A model that returns no loss is differentiated
    directly; the loss its caller computes is then `loss_reserve` bytes, by default
    LOSS_TEMPORARIES output-sized temporaries (as for one graph, remat.capture)."""
    grads = [(p, p.grad) for p in model.parameters()]
    outputs: list[int] = []
    try:
        profile = measure_outside(lambda: outputs.append(backward_of(run_forward())), device)
    finally:
        for parameter, grad in grads:
            parameter.grad = grad
    if loss_reserve is not None:
        return replace(profile, caller_loss=loss_reserve)
    return replace(profile, caller_loss=LOSS_TEMPORARIES * sum(outputs))


def backward_of(output: Any) -> int:
    """The backward a training loop runs on `output`: of its loss when it holds one (a scalar
    tensor, a `loss` entry, a scalar in a tuple), else of every differentiable output
    with gradients of ones (expanded: they allocate nothing). Returns the bytes of the
    outputs differentiated directly (0 after a loss)."""
    loss = _loss_in(output)
    if loss is not None:
        loss.backward()
        return 0
    outputs = [t for t in _tensors(output) if t.requires_grad]
    if not outputs:
        return 0
    ones = [torch.ones((), dtype=t.dtype, device=t.device).expand_as(t) for t in outputs]
    torch.autograd.backward(outputs, ones)
    return sum(t.numel() * t.element_size() for t in outputs)


def _loss_in(output: Any) -> torch.Tensor | None:
    """The output itself, its `loss` entry, or the first of its tuple's elements (HF returns
    `(loss, logits)`, nanoGPT-style models `(logits, loss)`), if it is a differentiable scalar."""
    candidates: list[Any] = [output]
    if isinstance(output, Mapping):
        candidates.append(output.get("loss"))
    elif isinstance(output, tuple):
        candidates.extend(output)
    for candidate in candidates:
        if (
            isinstance(candidate, torch.Tensor)
            and candidate.requires_grad
            and candidate.numel() == 1
        ):
            return candidate
    return None


def _tensors(output: Any) -> Iterator[torch.Tensor]:
    return (leaf for leaf in tree_leaves(output) if isinstance(leaf, torch.Tensor))
