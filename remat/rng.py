"""RNG replay: a recomputed random op (dropout) draws exactly what its first execution drew.

The forward captures the generator state just before the random op runs and saves it for the
backward; a recomputation sets that state, runs the op, and puts the generator back where it
was, so the user's random stream is the same as in eager.
"""

from __future__ import annotations

from typing import Any

import torch


def capture_rng_state(device: str) -> torch.Tensor:
    """The default generator's state for `device` (a few bytes on CUDA, ~5 KiB on CPU)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return torch.get_rng_state()
    return _device_module(dev).get_rng_state(dev)


def _set_rng_state(device: str, state: torch.Tensor) -> None:
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_rng_state(state)
    else:
        _device_module(dev).set_rng_state(state, dev)


def _device_module(dev: torch.device) -> Any:
    module = getattr(torch, dev.type, None)
    if module is None or not hasattr(module, "get_rng_state"):
        raise NotImplementedError(f"remat cannot replay random ops on device {dev.type!r}")
    return module


class RandomOp:
    """Forward form of a random op: takes the captured state (unused) and runs the op as is."""

    def __init__(self, op: torch._ops.OpOverload) -> None:
        self.op = op
        self.__name__ = f"remat_random_{op.__name__.replace('.', '_')}"

    def __call__(self, state: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.op(*args, **kwargs)


class ReplayRandomOp:
    """Recompute form: runs the op from the captured state, then restores the generator."""

    def __init__(self, op: torch._ops.OpOverload, device: str) -> None:
        self.op = op
        self.device = device
        self.__name__ = f"remat_replay_{op.__name__.replace('.', '_')}"

    def __call__(self, state: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        current = capture_rng_state(self.device)
        _set_rng_state(self.device, state)
        try:
            return self.op(*args, **kwargs)
        finally:
            _set_rng_state(self.device, current)
