"""Device profiles and the roofline that turns (FLOPs, bytes) into estimated seconds.

time = max(flops / peak_flops(dtype), bytes_moved / mem_bandwidth) + per_op_overhead

The built-in profiles are *attainable* rates, not datasheet peaks: big GEMMs reach about 70% of
the tensor-core peak and streaming kernels about 80% of the memory bandwidth, so the GPU profiles
scale their datasheet numbers by those factors. The CPU default describes a 2-core AVX2 x86 VM (the
machine this project is developed on); `calibrate_cpu()` measures the one you have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

_COMPUTE_EFFICIENCY = 0.7
_BANDWIDTH_EFFICIENCY = 0.8


@dataclass(frozen=True)
class DeviceProfile:
    """Attainable rates of one device, in FLOP/s and bytes/s; matmul-class peaks per dtype."""

    name: str
    device_type: str
    fp32_flops: float
    """float32 without TF32 (IEEE): the CUDA-core rate on GPUs."""
    tf32_flops: float
    """float32 matmuls and convolutions allowed to use TF32 tensor cores."""
    bf16_flops: float
    fp16_flops: float
    fp64_flops: float
    fp8_flops: float
    mem_bandwidth: float
    """Bytes per second, counting reads and writes together."""
    per_op_overhead: float
    """Seconds every launched op costs on top of its roofline time (dispatch, kernel launch)."""

    def __post_init__(self) -> None:
        for field_name in (
            "fp32_flops",
            "tf32_flops",
            "bf16_flops",
            "fp16_flops",
            "fp64_flops",
            "fp8_flops",
            "mem_bandwidth",
        ):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"DeviceProfile.{field_name} must be a positive rate, got {value}")
        if not (math.isfinite(self.per_op_overhead) and self.per_op_overhead >= 0):
            raise ValueError(
                f"DeviceProfile.per_op_overhead must be >= 0 seconds, got {self.per_op_overhead}"
            )

    def peak_flops(self, dtype: torch.dtype, *, tf32: bool = False) -> float:
        """FLOP/s of a matmul-class op whose inputs have `dtype`."""
        if dtype == torch.float32:
            return self.tf32_flops if tf32 else self.fp32_flops
        if dtype in (torch.float64, torch.complex128):
            return self.fp64_flops
        if dtype == torch.bfloat16:
            return self.bf16_flops
        if dtype == torch.float16:
            return self.fp16_flops
        if dtype.is_floating_point and dtype.itemsize == 1:
            return self.fp8_flops
        return self.fp32_flops

    def roofline(
        self, flops: int, bytes_moved: int, dtype: torch.dtype, *, tf32: bool = False
    ) -> float:
        """Estimated seconds for one launched op."""
        compute = flops / self.peak_flops(dtype, tf32=tf32) if flops else 0.0
        memory = bytes_moved / self.mem_bandwidth
        return max(compute, memory) + self.per_op_overhead


def _datasheet_gpu(
    name: str,
    *,
    fp32: float,
    tf32: float,
    bf16: float,
    fp64: float,
    fp8: float,
    bandwidth: float,
    overhead: float = 5e-6,
) -> DeviceProfile:
    """A CUDA profile from dense datasheet peaks, scaled to attainable rates."""
    c, b = _COMPUTE_EFFICIENCY, _BANDWIDTH_EFFICIENCY
    return DeviceProfile(
        name=name,
        device_type="cuda",
        fp32_flops=fp32 * c,
        tf32_flops=tf32 * c,
        bf16_flops=bf16 * c,
        fp16_flops=bf16 * c,
        fp64_flops=fp64 * c,
        fp8_flops=fp8 * c,
        mem_bandwidth=bandwidth * b,
        per_op_overhead=overhead,
    )


# Dense (no sparsity) SXM datasheet numbers.
H100 = _datasheet_gpu(
    "H100 SXM",
    fp32=67e12,
    tf32=494.7e12,
    bf16=989.4e12,
    fp64=66.9e12,
    fp8=1978.9e12,
    bandwidth=3.35e12,
)
H200 = _datasheet_gpu(
    "H200 SXM",
    fp32=67e12,
    tf32=494.7e12,
    bf16=989.4e12,
    fp64=66.9e12,
    fp8=1978.9e12,
    bandwidth=4.8e12,
)
A100 = _datasheet_gpu(
    "A100 SXM 80GB",
    fp32=19.5e12,
    tf32=156e12,
    bf16=312e12,
    fp64=19.5e12,
    fp8=312e12,  # no FP8 tensor cores: FP8 GEMMs run no faster than bf16
    bandwidth=2.039e12,
)

CPU_DEFAULT = DeviceProfile(
    # Measured on a quiet 2-core AMD EPYC (AVX2, no AVX-512/AMX) KVM guest, torch 2.13 CPU
    # build, 1024^2 GEMMs: fp32 67-95 GFLOP/s, fp64 37-43, bf16/fp16 0.8-3 (no native half GEMM,
    # a slow fallback); 64 MiB copy 17-32 GB/s (read + write); ~2.3 us per tiny eager op.
    name="cpu (2-core x86 AVX2 default)",
    device_type="cpu",
    fp32_flops=64e9,
    tf32_flops=64e9,
    bf16_flops=1e9,
    fp16_flops=1e9,
    fp64_flops=32e9,
    fp8_flops=1e9,
    mem_bandwidth=24e9,
    per_op_overhead=4e-6,
)


def profile_for(device: torch.device | str) -> DeviceProfile:
    """The built-in profile for `device`; CUDA picks by the visible card's name, else H100."""
    device = torch.device(device)
    if device.type == "cpu":
        return CPU_DEFAULT
    if device.type == "cuda":
        return _cuda_profile(device)
    raise ValueError(
        f"no built-in cost profile for device type {device.type!r}; pass "
        f"profile=DeviceProfile(...) with its rates (see remat.cost.timing.CPU_DEFAULT)"
    )


def _cuda_profile(device: torch.device) -> DeviceProfile:
    # Pricing a CUDA graph is possible without a GPU (fake tensors): then assume an H100.
    if not torch.cuda.is_available():
        return H100
    index = device.index if device.index is not None else torch.cuda.current_device()
    name = torch.cuda.get_device_name(index).upper()
    if "H200" in name:  # also GH200, whose HBM3e bandwidth is H200-class
        return H200
    if "A100" in name:
        return A100
    return H100


def tf32_enabled(*, convolution: bool) -> bool:
    """Whether float32 matmuls (or convolutions) may use TF32 under torch's current settings."""
    if convolution:
        conv = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and hasattr(conv, "fp32_precision"):
            return conv.fp32_precision == "tf32"
        return bool(torch.backends.cudnn.allow_tf32)
    return torch.get_float32_matmul_precision() != "highest"


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
    *, matmul_size: int = 1024, copy_bytes: int = 64 << 20, repeats: int = 5
) -> DeviceProfile:
    """Time a matmul per dtype, a large copy and a tiny op on this CPU, once; return a profile.

    Takes one to two seconds at the defaults; each rate is the best of `repeats` runs, so a
    machine busy with other work reads slower than it is, not faster. Half-precision matmuls are
    timed at a quarter of `matmul_size`: on CPUs without native half GEMMs they run ~50x slower
    than fp32.
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
    return replace(
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
    )
