"""Measure a device for the roofline: its rates, and how far below the roofline some kernels run.

The roofline prices an op by its bytes and FLOPs at the device's streaming bandwidth and GEMM
rate. Kernels that do more work per byte than a copy run slower than that: random numbers
(dropout), transcendental functions (tanh-GELU, erf, exp) and the multi-pass normalizations. On
the CPU this project is developed on they take 1.5x to 30x what their bytes say
(`python -m benchmarks.kernel_slowdowns` prints the table), and a solver that believes the roofline
recomputes them as if they were nearly free. Each case below is timed on a tensor of `elements`
float32 values read from memory (caches flushed first, as a recomputation reads values made
long before); its slowdown is the measured time over its roofline time, and a profile multiplies
the roofline of every op of that name by it (never by less than 1: streaming ops are what the
roofline's bandwidth describes).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from remat.cost.estimate import estimate_costs
from remat.cost.timing import CPU_DEFAULT, DeviceProfile, profile_for
from remat.measure import synchronize

aten = torch.ops.aten

_ROW = 1024
"""Width of the rows the row-wise ops (softmax, layer norm) reduce over."""
_EVICT_BYTES = 64 << 20
"""Written between two timed runs: twice this machine's last-level cache (32 MiB), so a case
reads its inputs from memory, as a recomputation reads values made long before."""
_CHANNELS = 64
_BATCH = 8


@dataclass(frozen=True)
class KernelCase:
    """One op to time: its name in a profile (`traffic.kernel_name`) and its arguments."""

    name: str
    call: Callable[..., object]
    arguments: Callable[[int, torch.device], tuple[object, ...]]
    """Arguments over about `elements` float32 values on a device."""


def _rows(elements: int, device: torch.device) -> torch.Tensor:
    return torch.rand(max(1, elements // _ROW), _ROW, device=device)


def _images(elements: int, device: torch.device) -> torch.Tensor:
    side = max(1, math.isqrt(elements // (_BATCH * _CHANNELS)))
    return torch.rand(_BATCH, _CHANNELS, side, side, device=device)


def _one(n: int, device: torch.device) -> tuple[object, ...]:
    return (_rows(n, device),)


def _pair(n: int, device: torch.device) -> tuple[object, ...]:
    return _rows(n, device), _rows(n, device)


def _dropout(n: int, device: torch.device) -> tuple[object, ...]:
    return _rows(n, device), 0.1, True


def _dropout_backward(n: int, device: torch.device) -> tuple[object, ...]:
    grad = _rows(n, device)
    return grad, torch.rand_like(grad) > 0.1, 1 / 0.9


def _layer_norm(n: int, device: torch.device) -> tuple[object, ...]:
    x = _rows(n, device)
    return x, [_ROW], torch.rand(_ROW, device=device), torch.rand(_ROW, device=device), 1e-5


def _layer_norm_backward(n: int, device: torch.device) -> tuple[object, ...]:
    x, shape, weight, bias, eps = _layer_norm(n, device)
    _, mean, rstd = aten.native_layer_norm(x, shape, weight, bias, eps)
    return torch.rand_like(x), x, shape, mean, rstd, weight, bias, [True, True, True]


def _batch_norm(n: int, device: torch.device) -> tuple[object, ...]:
    x = _images(n, device)
    weight, bias = torch.rand(_CHANNELS, device=device), torch.rand(_CHANNELS, device=device)
    mean, var = torch.zeros(_CHANNELS, device=device), torch.ones(_CHANNELS, device=device)
    return x, weight, bias, mean, var, True, 0.1, 1e-5


def _batch_norm_backward(n: int, device: torch.device) -> tuple[object, ...]:
    x, weight, bias, mean, var, training, momentum, eps = _batch_norm(n, device)
    _, saved_mean, saved_invstd, _, _ = aten._native_batch_norm_legit_functional(
        x, weight, bias, mean, var, training, momentum, eps
    )
    return (
        torch.rand_like(x), x, weight, mean, var, saved_mean, saved_invstd, True, eps,
        [True, True, True],
    )  # fmt: skip


def _softmax(n: int, device: torch.device) -> tuple[object, ...]:
    return _rows(n, device), -1, False


def _softmax_backward(n: int, device: torch.device) -> tuple[object, ...]:
    grad, output = _pair(n, device)
    return grad, output, -1, torch.float32


def _gelu_tanh(x: torch.Tensor) -> object:
    return aten.gelu.default(x, approximate="tanh")


def _gelu_tanh_backward(grad: torch.Tensor, x: torch.Tensor) -> object:
    return aten.gelu_backward.default(grad, x, approximate="tanh")


CASES: tuple[KernelCase, ...] = (
    KernelCase("native_dropout", aten.native_dropout.default, _dropout),
    KernelCase("native_dropout_backward", aten.native_dropout_backward.default, _dropout_backward),
    KernelCase("gelu", aten.gelu.default, _one),
    KernelCase("gelu_backward", aten.gelu_backward.default, _pair),
    KernelCase("gelu:tanh", _gelu_tanh, _one),
    KernelCase("gelu_backward:tanh", _gelu_tanh_backward, _pair),
    KernelCase("silu", aten.silu.default, _one),
    KernelCase("silu_backward", aten.silu_backward.default, _pair),
    KernelCase("sigmoid", aten.sigmoid.default, _one),
    KernelCase("sigmoid_backward", aten.sigmoid_backward.default, _pair),
    KernelCase("tanh", aten.tanh.default, _one),
    KernelCase("tanh_backward", aten.tanh_backward.default, _pair),
    KernelCase("exp", aten.exp.default, _one),
    KernelCase("log", aten.log.default, _one),
    KernelCase("erf", aten.erf.default, _one),
    KernelCase("rsqrt", aten.rsqrt.default, _one),
    KernelCase("bernoulli", aten.bernoulli.p, lambda n, d: (_rows(n, d), 0.9)),
    KernelCase("_softmax", aten._softmax.default, _softmax),
    KernelCase("_softmax_backward_data", aten._softmax_backward_data.default, _softmax_backward),
    KernelCase("_log_softmax", aten._log_softmax.default, _softmax),
    KernelCase(
        "_log_softmax_backward_data", aten._log_softmax_backward_data.default, _softmax_backward
    ),
    KernelCase("native_layer_norm", aten.native_layer_norm.default, _layer_norm),
    KernelCase(
        "native_layer_norm_backward", aten.native_layer_norm_backward.default, _layer_norm_backward
    ),
    KernelCase(
        "_native_batch_norm_legit_functional",
        aten._native_batch_norm_legit_functional.default,
        _batch_norm,
    ),
    KernelCase(
        "native_batch_norm_backward", aten.native_batch_norm_backward.default, _batch_norm_backward
    ),
)


@dataclass(frozen=True)
class Slowdown:
    name: str
    roofline_s: float
    """The roofline's time for the case, per-op overhead left out."""
    measured_s: float

    @property
    def factor(self) -> float:
        return self.measured_s / self.roofline_s


def measure_slowdowns(
    device: torch.device | str = "cpu",
    profile: DeviceProfile | None = None,
    *,
    elements: int = 1 << 21,
    repeats: int = 5,
    rounds: int = 3,
    cases: tuple[KernelCase, ...] = CASES,
) -> list[Slowdown]:
    """Time each case on `device` against its roofline under `profile` (the device's built-in
    one by default), slowdowns already in it ignored: the median of `repeats` runs in each of
    `rounds` passes over all cases (a burst of other work on the machine hits one pass), with
    the caches flushed before every run."""
    if elements < 1 or repeats < 1 or rounds < 1:
        raise ValueError("measure_slowdowns needs elements, repeats and rounds >= 1")
    device = torch.device(device)
    base = replace(profile or profile_for(device), slowdowns=())
    scratch = torch.empty(_EVICT_BYTES // 4, device=device)
    arguments = [case.arguments(elements, device) for case in cases]
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for case, args, times in zip(cases, arguments, samples, strict=True):
            case.call(*args)  # warm-up: lazy initialisation, the allocator
            for _ in range(repeats):
                scratch.fill_(1.0)  # out of the caches, as a value made long before is
                synchronize(device)
                start = time.perf_counter()
                case.call(*args)
                synchronize(device)
                times.append(time.perf_counter() - start)
    return [
        Slowdown(
            case.name,
            _roofline_seconds(case, args, device, base),
            max(statistics.median(times) - base.per_op_overhead, 1e-9),
        )
        for case, args, times in zip(cases, arguments, samples, strict=True)
    ]


def _roofline_seconds(
    case: KernelCase, arguments: tuple[object, ...], device: torch.device, profile: DeviceProfile
) -> float:
    traced = make_fx(lambda *args: case.call(*args), tracing_mode="fake")(*arguments)
    costs = estimate_costs(traced, device, profile=profile)
    seconds = sum(cost.time_s - profile.per_op_overhead for cost in costs.values() if cost.time_s)
    if not seconds > 0:
        raise RuntimeError(f"the roofline prices {case.name} at 0 s; the case is miswritten")
    return seconds


def profile_slowdowns(found: list[Slowdown]) -> tuple[tuple[str, float], ...]:
    """The measured slowdowns as a profile holds them: rounded, at least 1."""
    return tuple((each.name, max(1.0, round(each.factor, 1))) for each in found)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy init and page faults
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def _matmul_rate(dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    return 2 * size**3 / _best_seconds(lambda: torch.mm(a, b), repeats)


def calibrate_cpu(
    *,
    matmul_size: int = 1024,
    copy_bytes: int = 64 << 20,
    repeats: int = 5,
    kernel_elements: int | None = 1 << 21,
) -> DeviceProfile:
    """Time a matmul per dtype, a large copy and a tiny op on this CPU, once, and the kernel
    cases (`measure_slowdowns`, unless `kernel_elements` is None); return a profile.

    Takes a few seconds at the defaults; each rate is the best of `repeats` runs, so a machine
    busy with other work reads slower than it is, not faster. Half-precision matmuls are timed
    at a quarter of `matmul_size`: on CPUs without native half GEMMs they run ~50x slower than
    fp32.
    """
    if matmul_size < 16 or copy_bytes < 1 << 16 or repeats < 1:
        raise ValueError(
            "calibrate_cpu needs matmul_size >= 16, copy_bytes >= 64 KiB, repeats >= 1"
        )
    half_size = max(16, matmul_size // 4)
    fp32 = _matmul_rate(torch.float32, matmul_size, repeats)
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    bandwidth = 2 * src.nbytes / _best_seconds(lambda: dst.copy_(src), repeats)
    one, other = torch.ones(1), torch.ones(1)
    tiny_ops = 100
    overhead = _best_seconds(lambda: [torch.add(one, other) for _ in range(tiny_ops)], repeats)
    bf16 = _matmul_rate(torch.bfloat16, half_size, repeats)
    rates = replace(
        CPU_DEFAULT,
        name=f"cpu (calibrated, {torch.get_num_threads()} threads)",
        fp32_flops=fp32,
        tf32_flops=fp32,
        fp64_flops=_matmul_rate(torch.float64, matmul_size, repeats),
        bf16_flops=bf16,
        fp16_flops=_matmul_rate(torch.float16, half_size, repeats),
        fp8_flops=bf16,
        mem_bandwidth=bandwidth,
        per_op_overhead=overhead / tiny_ops,
        slowdowns=(),
    )
    if kernel_elements is None:
        return rates
    found = measure_slowdowns("cpu", rates, elements=kernel_elements, repeats=repeats)
    return replace(rates, slowdowns=profile_slowdowns(found))


def calibrated_profile(device: torch.device | str) -> DeviceProfile:
    """This device measured once per process: `calibrate_cpu()` on a CPU (rates and slowdowns);
    on another device its built-in profile with the slowdowns measured there."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _calibrated(str(device))


@functools.cache
def _calibrated(device: str) -> DeviceProfile:
    if torch.device(device).type == "cpu":
        return calibrate_cpu()
    base = profile_for(device)
    found = measure_slowdowns(device, base)
    return replace(
        base, name=f"{base.name} (slowdowns measured)", slowdowns=profile_slowdowns(found)
    )
