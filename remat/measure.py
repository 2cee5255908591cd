"""The one way remat, its users and its benchmarks measure a step: peak bytes and wall time.

Peak = the most bytes allocated at any moment during the step minus what was allocated when it
began, read from the allocator's own records:

- accelerators (CUDA, ...): `max_memory_allocated() - memory_allocated()` around the step, after
  `reset_peak_memory_stats()`, with the device synchronized on both sides;
- CPU: the PyTorch profiler's allocation events (`profile_memory=True`), replayed in time order.

The CPU profiler only knows the sizes of blocks allocated while some profiler was recording, so
`measure_peak` profiles the warm-up calls too; but a block allocated before `measure_peak` was
called and freed during the step leaves no record, and the CPU peak then reads high. Free such
memory in `setup` (e.g. `model.zero_grad(set_to_none=True)`), which runs before each call,
outside the measurement.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from remat.cpu_profiler import (
    ProfilerRunningError,
    allocation_events,
    cpu_memory_profiler,
    own_profiler_running,
)
from remat.outside import OutsideProfile
from remat.torch_internals import (
    TorchDispatchMode,
    current_dispatch_mode,
    pop_mode_temporarily,
    profiler_enabled,
    tree_leaves,
)

Step = Callable[[], object]


@dataclass(frozen=True)
class PeakMeasurement:
    peak_bytes: int
    """Largest peak above the baseline over the measured calls (>= 0)."""
    baseline_bytes: int | None
    """Bytes allocated on the device when the measured call began; None on CPU, whose
    allocator keeps no running total outside the profiler."""
    device: torch.device
    method: str
    """How the numbers were read, for reports."""
    samples: tuple[int, ...] = ()
    """Peak of each measured call, in order."""


@dataclass(frozen=True)
class StepTiming:
    median_s: float
    min_s: float
    max_s: float
    samples: tuple[float, ...]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device`, or the current accelerator when there is one, else CPU; with an index if any."""
    if device is None:
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        device = accelerator if accelerator is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type != "cpu":
        _check_accelerator(device)
        if device.index is None:
            device = torch.device(device.type, torch.accelerator.current_device_index())
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the queued work on `device`; nothing to wait for on CPU."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def _check_accelerator(device: torch.device) -> None:
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None or accelerator.type != device.type:
        raise ValueError(
            f"cannot measure on {device}: the available accelerator is {accelerator}; "
            f"pass device='cpu' or the accelerator's device"
        )


def measure_peak(
    step: Step,
    device: torch.device | str | None = None,
    *,
    warmup: int = 1,
    repeats: int = 1,
    setup: Callable[[], object] | None = None,
) -> PeakMeasurement:
    """Peak bytes `step()` allocates on `device` above what was allocated when it started.

    `warmup` calls run first, unmeasured (a first call may compile or cache); then `repeats`
    measured calls, and the largest peak is reported. `setup`, if given, runs before every call
    outside the measurement. The step's return value is dropped after each call. `device=None`
    means the current accelerator when one is available, else CPU: pass the step's device.
    """
    _check_counts(warmup, repeats)
    device = resolve_device(device)
    if device.type == "cpu" and profiler_enabled() and not own_profiler_running():
        raise ProfilerRunningError(
            "remat.measure_peak reads CPU memory from the profiler's allocation events and "
            "cannot run while another torch.profiler session records (starting a second one "
            "ends the first): measure outside it. remat measures kernels' scratch memory this "
            "way when it plans, on the first training call of each input shape: run that call "
            "before you start profiling."
        )
    for _ in range(warmup):
        if device.type == "cpu":
            # Profiled too, so the CPU allocator learns the size of every block the warm-up
            # leaves alive and records it when the measured call frees it (as CUDA would).
            with cpu_memory_profiler():
                _call(step, setup)
        else:
            _call(step, setup)
    reader = _cpu_peak if device.type == "cpu" else _accelerator_peak
    samples, baseline = [], None
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()  # free cycles left by earlier calls before reading the baseline
        peak, baseline = reader(step, device)
        samples.append(peak)
    method = (
        "torch.profiler CPU allocation events"
        if device.type == "cpu"
        else f"torch.accelerator max_memory_allocated ({device.type})"
    )
    return PeakMeasurement(
        peak_bytes=max(samples),
        baseline_bytes=baseline,
        device=device,
        method=method,
        samples=tuple(samples),
    )


def _check_counts(warmup: int, repeats: int) -> None:
    if warmup < 0 or repeats < 1:
        raise ValueError(
            f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}"
        )


def _call(step: Step, setup: Callable[[], object] | None) -> None:
    if setup is not None:
        setup()
    step()


def _accelerator_peak(step: Step, device: torch.device) -> tuple[int, int]:
    synchronize(device)
    torch.accelerator.reset_peak_memory_stats(device)
    baseline = torch.accelerator.memory_allocated(device)
    result = step()
    synchronize(device)
    peak = torch.accelerator.max_memory_allocated(device) - baseline
    del result
    return max(peak, 0), baseline


def _cpu_peak(step: Step, device: torch.device) -> tuple[int, None]:
    with cpu_memory_profiler() as prof:
        result = step()
    del result
    events = sorted(allocation_events(prof, device), key=lambda event: event[0])
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak, None


class OutsideTracker(TorchDispatchMode):
    """Tracks the storages the ops it sees allocate, and after every op the bytes they hold:
    the bytes live that were allocated outside remat's graphs, whose runs step off the mode
    stack (`outside_tracking_paused`). Sizes are read after each op, not at allocation, because
    FSDP2 frees and refills its all-gather buffers by resizing their storages in place."""

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, weakref.ref] = {}
        self._stretch_peak = 0
        self._during: list[int] = []
        self._before: list[int] = []
        self._frozen: OutsideProfile | None = None

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        # Dynamo then still runs (and compiles) its code while the tracker is on the stack,
        # instead of falling back to eager: remat's graphs step aside as they run.
        return True

    def freeze(self) -> None:
        """Stop counting: `profile()` is what was measured until now; later ops pass through."""
        self._frozen = self.profile()
        self._storages.clear()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        if self._frozen is not None:
            return output
        inputs = {id(t.untyped_storage()) for t in tensors_in((args, kwargs))}
        for tensor in tensors_in(output):
            storage = tensor.untyped_storage()
            if id(storage) not in inputs:  # allocated by this op
                self._track(storage)
        # A storage made before the tracker started and written here is the step's too:
        # FSDP2 keeps each block's unsharded parameters from step to step, emptied by resizing
        # their storage to 0 and refilled (resized, then written by its all-gather's copy-out).
        for tensor in tensors_in(written_arguments(func, args, kwargs)):
            self._track(tensor.untyped_storage())
        self._stretch_peak = max(self._stretch_peak, self.live)
        return output

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key not in self._storages:
            self._storages[key] = weakref.ref(storage, lambda _, k=key: self._forget(k))

    def graph_runs(self) -> None:
        """One of remat's graphs starts running: the eager stretch before it ends here."""
        if self._frozen is not None:
            return
        live = self.live
        self._before.append(max(self._stretch_peak, live))
        self._during.append(live)
        self._stretch_peak = live

    def profile(self) -> OutsideProfile:
        """What was held outside, run by run (remat.outside)."""
        if self._frozen is not None:
            return self._frozen
        return OutsideProfile(tuple(self._during), (*self._before, self._stretch_peak))

    @property
    def live(self) -> int:
        storages = (ref() for ref in self._storages.values())
        return sum(storage.nbytes() for storage in storages if storage is not None)

    def _forget(self, key: int) -> None:
        self._storages.pop(key, None)


@contextlib.contextmanager
def outside_tracking_paused() -> Iterator[None]:
    """Within, an active OutsideTracker is off the mode stack: what runs is remat's own graph."""
    tracker = current_dispatch_mode()
    if not isinstance(tracker, OutsideTracker):
        yield
        return
    tracker.graph_runs()
    with pop_mode_temporarily():
        yield


def untracked(run: Callable[..., Any]) -> Callable[..., Any]:
    """`run` with an active OutsideTracker off the mode stack while it runs (one of remat's
    graphs: Dynamo runs no compiled code under a dispatch mode); a boxed callable stays boxed."""

    def paused(*args: Any, **kwargs: Any) -> Any:
        with outside_tracking_paused():
            return run(*args, **kwargs)

    paused._boxed_call = getattr(run, "_boxed_call", False)  # type: ignore[attr-defined]
    return paused


def measure_outside(step: Step, device: torch.device) -> OutsideProfile:
    """Run `step()` once and measure the bytes it allocates outside remat's graphs (the
    model's eager code, a distributed engine's buffers, the loss), graph run by graph run.
    Memory allocated before the step is not counted, whoever frees it. `device` is
    synchronized around it."""
    gc.collect()
    synchronize(device)
    tracker = OutsideTracker()
    with tracker:
        result = step()
    synchronize(device)
    del result
    return tracker.profile()


def written_arguments(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> list:
    """The arguments `func` writes into (in-place and out= arguments), per its schema."""
    schema = getattr(func, "_schema", None)
    if schema is None or not schema.is_mutable:
        return []
    written = []
    for index, argument in enumerate(schema.arguments):
        alias = argument.alias_info
        if alias is None or not alias.is_write:
            continue
        if index < len(args):
            written.append(args[index])
        elif kwargs and argument.name in kwargs:
            written.append(kwargs[argument.name])
    return written


def tensors_in(tree: Any) -> Iterator[torch.Tensor]:
    """The tensors among the leaves of `tree` (nested lists, tuples, dicts, outputs)."""
    return (leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor))


def time_step(
    step: Step,
    device: torch.device | str | None = None,
    *,
    warmup: int = 2,
    repeats: int = 5,
    setup: Callable[[], object] | None = None,
) -> StepTiming:
    """Wall time of `step()`: `warmup` unmeasured calls, then `repeats` timed ones.

    The device is synchronized before and after each timed call, so queued GPU work is counted;
    `setup` runs before every call, outside the timing.
    """
    _check_counts(warmup, repeats)
    device = resolve_device(device)
    for _ in range(warmup):
        _call(step, setup)
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return StepTiming(
        median_s=statistics.median(samples),
        min_s=min(samples),
        max_s=max(samples),
        samples=tuple(samples),
    )
