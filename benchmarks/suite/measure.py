"""First call, gradient check, peak and interleaved timing: the same for every method.

- first call: seeded, from zeroed gradients; its wall time includes any compilation, and its
  gradients are compared with eager's (`ok`);
- settle: three unmeasured calls, so the peak is that of the code the timing runs (remat.compile
  settles a step after a call that plans nothing new, the third where Dynamo compiles it twice,
  and decides on the next whether it runs the model as written; never while a profiler records);
- peak: remat.measure_peak (CPU: the profiler's allocation events; CUDA: max_memory_allocated),
  one profiled warm-up call, gradients freed before every call;
- time: one untimed round over all methods, then `rounds` rounds, each timing one step of every
  method (remat.time_step), in an order rotated every round, so drift and load hit all alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import remat
from benchmarks.suite.candidate import Candidate, Failed, describe_error, flops_of, max_grad_error

SETTLE_CALLS = 3
"""Unmeasured calls between the first and the peak's: what runs from then on is measured."""


@dataclass(frozen=True)
class Prepared:
    """A candidate that ran: its first call, gradient error, peak and facts."""

    candidate: Candidate
    first_call_s: float
    grad_error: float
    peak: remat.PeakMeasurement
    recompute_flops: int | None
    facts: dict[str, Any] = field(default_factory=dict)


def _step(candidate: Candidate, inputs: tuple) -> Callable[[], None]:
    module = candidate.module
    return lambda: module(*inputs).backward()


def _zero(candidate: Candidate) -> Callable[[], None]:
    return lambda: candidate.owner.zero_grad(set_to_none=True)


def prepare(
    candidate: Candidate,
    inputs: tuple,
    device: torch.device,
    reference: dict[str, torch.Tensor] | None,
    eager_flops: int | None,
    peak_repeats: int = 1,
) -> Prepared | Failed:
    """Run the first call, check gradients against `reference`, measure the peak."""
    _zero(candidate)()
    torch.manual_seed(0)
    started = time.perf_counter()
    try:
        _step(candidate, inputs)()
        remat.measure.synchronize(device)
    except Exception as error:  # any method may fail at any setting: that is a result
        source = getattr(error, "inner_exception", None) or error  # unwrap torch.compile's
        floor = getattr(source, "floor", None)  # remat.InfeasibleBudgetError
        return Failed(
            candidate.method,
            candidate.setting,
            candidate.budget_bytes,
            describe_error(error) + _with_note(candidate.note),
            {} if floor is None else {"floor": floor},
        )
    first_call_s = time.perf_counter() - started
    grad_error = 0.0 if reference is None else max_grad_error(candidate.owner, reference)
    facts = candidate.facts()
    if facts.get("compiled") is False:
        return Failed(
            candidate.method,
            candidate.setting,
            candidate.budget_bytes,
            "the backend never ran: Dynamo did not compile the step",
            facts,
        )
    for _ in range(SETTLE_CALLS):
        _zero(candidate)()
        _step(candidate, inputs)()
    peak = remat.measure_peak(
        _step(candidate, inputs), device, repeats=peak_repeats, setup=_zero(candidate)
    )
    facts = candidate.facts()  # as the step now runs (remat may run it as written)
    flops = facts.get("recompute_flops")
    if candidate.plain_pytorch and eager_flops is not None:
        _zero(candidate)()
        flops = flops_of(_step(candidate, inputs)) - eager_flops
    return Prepared(candidate, first_call_s, grad_error, peak, flops, facts)


def _with_note(note: str) -> str:
    return f"; {note}" if note else ""


def time_interleaved(
    prepared: list[Prepared], inputs: tuple, device: torch.device, rounds: int
) -> list[list[float]]:
    """Per prepared method (same order), the step times of `rounds` interleaved rounds."""
    samples: list[list[float]] = [[] for _ in prepared]
    steps = [_step(p.candidate, inputs) for p in prepared]
    zeros = [_zero(p.candidate) for p in prepared]
    for index in range(len(prepared)):  # warm-up round, untimed
        zeros[index]()
        steps[index]()
    count = len(prepared)
    for round_index in range(rounds):
        for offset in range(count):
            index = (round_index + offset) % count
            timing = remat.time_step(steps[index], device, warmup=0, repeats=1, setup=zeros[index])
            samples[index].append(timing.median_s)
    return samples
