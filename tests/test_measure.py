"""measure_peak and time_step: exact bytes on CPU from the profiler's allocation records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from remat.measure import PeakMeasurement, StepTiming, measure_peak, resolve_device, time_step

MIB = 1 << 20
FLOATS_4MIB = 1 << 20  # 1 Mi float32 = 4 MiB
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
no_accelerator = pytest.mark.skipif(
    torch.accelerator.is_available(), reason="checks the CPU-only default"
)


def _two_live_tensors(device: str = "cpu"):
    def step():
        a = torch.empty(FLOATS_4MIB, device=device)
        b = torch.empty(FLOATS_4MIB, device=device)
        return a, b

    return step


def test_cpu_allocator_reports_exact_nbytes() -> None:
    result = measure_peak(_two_live_tensors(), "cpu")
    assert isinstance(result, PeakMeasurement)
    assert result.peak_bytes == 8 * MIB
    assert result.baseline_bytes is None
    assert result.device == torch.device("cpu")
    assert result.samples == (8 * MIB,)


def test_freed_temporary_is_not_counted_twice() -> None:
    def step():
        a = torch.empty(FLOATS_4MIB)
        del a
        small = torch.empty(3)  # 12 bytes: the CPU allocator does not round
        return torch.empty(FLOATS_4MIB), small

    assert measure_peak(step, "cpu").peak_bytes == 4 * MIB + 12


def test_memory_alive_before_the_step_is_not_counted() -> None:
    resident = torch.ones(4 * FLOATS_4MIB)
    assert measure_peak(_two_live_tensors(), "cpu").peak_bytes == 8 * MIB
    del resident


def test_freeing_the_previous_calls_output_is_recorded() -> None:
    # As on CUDA: the block the last call left alive is part of the baseline, and freeing it
    # before allocating its replacement nets to zero.
    holder: dict[str, torch.Tensor] = {}

    def step():
        holder.pop("previous", None)
        holder["previous"] = torch.empty(FLOATS_4MIB)

    assert measure_peak(step, "cpu", warmup=1).peak_bytes == 0


def test_warmup_runs_outside_the_measurement() -> None:
    cache: list[torch.Tensor] = []

    def step():
        if not cache:  # a first call that compiles and caches
            cache.append(torch.empty(4 * FLOATS_4MIB))
        return torch.empty(FLOATS_4MIB)

    assert measure_peak(step, "cpu", warmup=1).peak_bytes == 4 * MIB
    cache.clear()
    assert measure_peak(step, "cpu", warmup=0).peak_bytes == 20 * MIB


def test_repeats_and_setup() -> None:
    calls: list[str] = []

    def step():
        calls.append("step")
        return torch.empty(256)

    result = measure_peak(step, "cpu", warmup=1, repeats=2, setup=lambda: calls.append("setup"))
    assert calls == ["setup", "step"] * 3
    assert result.samples == (1024, 1024) and result.peak_bytes == 1024


def test_mlp_backward_peak_is_plausible() -> None:
    torch.manual_seed(0)
    width, batch, depth = 256, 128, 4
    model = nn.Sequential(
        *[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth)]
    )
    x = torch.randn(batch, width)

    def step():
        model(x).sum().backward()

    result = measure_peak(step, "cpu", setup=lambda: model.zero_grad(set_to_none=True))
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    activation = batch * width * 4
    saved = 2 * depth * activation  # each block saves its Linear input and ReLU output
    # All parameter gradients exist at the end; at most every saved activation plus a couple
    # of temporaries can be alive with them.
    assert grads < result.peak_bytes <= grads + saved + 2 * activation


def test_bad_counts_and_devices_are_rejected() -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure_peak(lambda: None, "cpu", repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_step(lambda: None, "cpu", warmup=-1)


@no_accelerator
def test_default_device_without_accelerator_is_cpu() -> None:
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="accelerator"):
        measure_peak(lambda: None, "cuda")


def test_time_step_counts_calls_and_orders_stats() -> None:
    calls = []
    timing = time_step(
        lambda: calls.append(1), "cpu", warmup=2, repeats=5, setup=lambda: calls.append(0)
    )
    assert isinstance(timing, StepTiming)
    assert calls == [0, 1] * 7
    assert len(timing.samples) == 5
    assert 0 <= timing.min_s <= timing.median_s <= timing.max_s


@needs_cuda
def test_cuda_peak_is_exact_for_allocator_sized_blocks() -> None:
    result = measure_peak(_two_live_tensors("cuda"), "cuda")
    assert result.peak_bytes == 8 * MIB
    assert result.baseline_bytes is not None and result.device.type == "cuda"


@needs_cuda
def test_cuda_mlp_backward_and_timing() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)).cuda()
    x = torch.randn(128, 256, device="cuda")

    def step():
        model(x).sum().backward()

    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    result = measure_peak(step, "cuda", setup=lambda: model.zero_grad(set_to_none=True))
    assert result.peak_bytes >= grads
    assert time_step(step, "cuda", repeats=3).min_s > 0


def test_cpu_measurement_prints_nothing_of_the_profiler_and_keeps_the_steps_own_output():
    import subprocess
    import sys

    script = (
        "import sys, torch, remat\n"
        "def step():\n"
        "    print('from the step', file=sys.stderr)\n"
        "    return torch.ones(1000) + 1\n"
        "remat.measure_peak(step, 'cpu', warmup=1, repeats=2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "profiler" not in result.stderr + result.stdout
    assert "CPUAllocator" not in result.stderr
    assert result.stderr.count("from the step") == 3


def test_the_cpu_peak_refuses_to_run_inside_another_profiler() -> None:
    # Starting a second CPU profiler session ends the first: the user's trace would be lost.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with pytest.raises(RuntimeError, match="run that call before you start profiling"):
            measure_peak(lambda: torch.ones(4), "cpu")
        torch.ones(8).sum()
    assert any(e.name == "aten::sum" for e in prof.events())


def test_timing_runs_inside_a_profiler() -> None:
    # Only the CPU peak needs a profiler of its own; timing a profiled step is fine.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):
        timing = time_step(lambda: torch.ones(4), "cpu", warmup=0, repeats=1)
    assert len(timing.samples) == 1
