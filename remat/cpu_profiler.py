"""The CPU profiler as remat.measure uses it: allocation events, with Kineto's noise kept off
the terminal, and a count of the sessions it runs (a second session started inside one ends it).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

import torch
from torch.profiler import ProfilerActivity, profile


class ProfilerRunningError(RuntimeError):
    """A CPU memory measurement was asked for while a profiler remat did not start records."""


@contextlib.contextmanager
def cpu_memory_profiler() -> Iterator[profile]:
    """The CPU memory profiler, with what it writes to the process's stderr from C++ (Kineto's
    "profiler_start" lines, the allocator's note on blocks from before profiling) kept out of
    the user's terminal; anything else written there meanwhile is passed on when it stops."""
    global _own_profilers
    _own_profilers += 1
    try:
        with (
            _stderr_filtered(_PROFILER_NOISE),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            yield prof
    finally:
        _own_profilers -= 1


_own_profilers = 0
"""measure_peak's CPU profilers running: one started inside another ends it, which a warm-up
call's (whose records are not read) survives; a user's profiler would lose its trace."""


_PROFILER_NOISE = re.compile(
    r"profiler_start|profiler_stop|Completed Stage|Memory block of unknown size"
)


@contextlib.contextmanager
def _stderr_filtered(noise: re.Pattern[str]) -> Iterator[None]:
    """Send file descriptor 2 (C++ writes below Python's sys.stderr) to a temporary file; on
    exit, write back the lines that do not match `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not noise.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def allocation_events(prof: profile, device: torch.device) -> Iterator[tuple[int, int]]:
    """(start ns, signed bytes) of every allocation and free on `device` the profiler saw."""
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(reversed(event.children))  # pre-order, so equal timestamps keep tree order
        fields = event.typed[1]
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == device.type:
            yield event.start_time_ns, fields.alloc_size


def own_profiler_running() -> bool:
    """Whether the profiler that records now is one `cpu_memory_profiler` started."""
    return _own_profilers > 0
