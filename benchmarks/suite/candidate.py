"""What every method hands the runner: a module to call, or the reason it could not be built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from remat.cost import node_flops


@dataclass(frozen=True)
class Candidate:
    """One method at one setting, ready for its first (compiling) call."""

    method: str
    setting: str
    """What was asked, in the method's own terms ("activation_memory_budget=0.5", ...)."""
    budget_bytes: int | None
    module: nn.Module
    """Called as module(x, target) -> scalar loss; .backward() completes the step."""
    owner: nn.Module
    """The model whose parameters receive the gradients (zeroed before every call)."""
    plain_pytorch: bool = False
    """Runs as ordinary eager PyTorch (no compiler): FLOPs are counted by FlopCounterMode."""
    facts: Callable[[], dict[str, Any]] = dict
    """Method-specific facts read after the first call (plan, recompute FLOPs, ...)."""
    note: str = ""


@dataclass(frozen=True)
class Failed:
    """A method that could not be built or run at a setting; it still gets a row."""

    method: str
    setting: str
    budget_bytes: int | None
    note: str
    facts: dict[str, Any] = field(default_factory=dict)


def describe_error(error: BaseException) -> str:
    """The exception's type and the first line of its message (for a backend that failed
    inside torch.compile, the backend's own exception)."""
    inner = getattr(error, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(error).__name__} <- {describe_error(inner)}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def graph_flops(gm: fx.GraphModule) -> int:
    """FLOPs of one run of an fx graph of aten ops (remat's cost model's formulas)."""
    return sum(node_flops(node) for node in gm.graph.nodes if node.op == "call_function")


def flops_of(run: Callable[[], object]) -> int:
    """FLOPs an eager step performs, counted by PyTorch's FlopCounterMode (CPU's fused attention
    included, which it counts as 0 by itself: remat's counts include it)."""
    from torch.utils.flop_counter import FlopCounterMode

    from remat.cost.flops import counter_mapping

    with FlopCounterMode(display=False, custom_mapping=counter_mapping()) as counter:
        run()
    return int(counter.get_total_flops())


def wrap_blocks(model: nn.Module, paths: list[str], wrapper: Callable[[nn.Module], nn.Module]):
    """Replace each submodule at `paths` by wrapper(submodule), in place."""
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, wrapper(getattr(parent, name)))
    return model


def max_grad_error(model: nn.Module, reference: dict[str, torch.Tensor]) -> float:
    """Largest ||g - g_ref|| / ||g_ref|| over parameters (a missing gradient counts as inf)."""
    worst = 0.0
    for name, param in _named_params(model).items():
        expected = reference.get(name)
        if expected is None:
            continue
        if param.grad is None:
            return float("inf")
        scale = expected.norm().item() or 1.0
        worst = max(worst, (param.grad - expected).norm().item() / scale)
    return worst


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.detach().clone()
        for name, p in _named_params(model).items()
        if p.grad is not None
    }


def _named_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters by name as in the unwrapped model (checkpoint wrappers add '.block')."""
    return {name.replace(".block.", "."): p for name, p in model.named_parameters()}
