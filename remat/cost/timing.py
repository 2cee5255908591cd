"""Device profiles and the roofline that turns (FLOPs, bytes) into estimated seconds.

time = max(flops / peak_flops(dtype), bytes_moved / mem_bandwidth) * slowdown(op)
       + per_op_overhead

The built-in profiles are *attainable* rates, not datasheet peaks: big GEMMs reach about 70% of
the tensor-core peak and streaming kernels about 80% of the memory bandwidth, so the GPU profiles
scale their datasheet numbers by those factors. The CPU default describes a 2-core AVX2 x86 VM (the
machine this project is developed on); `remat.cost.calibrate.calibrate_cpu()` measures the one
you have.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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
    slowdowns: tuple[tuple[str, float], ...] = ()
    """(aten op name, factor): ops whose kernels run that many times their roofline time
    (random numbers, transcendental functions, normalizations: remat/cost/calibrate.py)."""

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
        for name, factor in self.slowdowns:
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"DeviceProfile.slowdowns[{name!r}] must be > 0, got {factor}")

    def slowdown(self, op_name: str) -> float:
        """How many times its roofline time an op of this name takes (1 if not listed)."""
        return self._slowdown_table.get(op_name, 1.0)

    @functools.cached_property
    def _slowdown_table(self) -> dict[str, float]:
        # Looked up once per priced node: built once per profile, not per call.
        return dict(self.slowdowns)

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
        self,
        flops: int,
        bytes_moved: int,
        dtype: torch.dtype,
        *,
        tf32: bool = False,
        op_name: str | None = None,
    ) -> float:
        """Estimated seconds for one launched op (of aten name `op_name`, if known)."""
        compute = flops / self.peak_flops(dtype, tf32=tf32) if flops else 0.0
        memory = bytes_moved / self.mem_bandwidth
        factor = 1.0 if op_name is None else self.slowdown(op_name)
        return max(compute, memory) * factor + self.per_op_overhead


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
    # `python -m benchmarks.kernel_slowdowns` on the same machine, 2 threads:
    # benchmarks/results/kernel-slowdowns-cpu-2026-12-03.json (tests check they agree).
    slowdowns=(
        ("native_dropout", 26.0),
        ("native_dropout_backward", 3.3),
        ("gelu", 1.7),
        ("gelu_backward", 1.8),
        ("gelu:tanh", 3.7),
        ("gelu_backward:tanh", 2.6),
        ("silu", 1.1),
        ("silu_backward", 1.0),
        ("sigmoid", 1.0),
        ("sigmoid_backward", 1.0),
        ("tanh", 6.0),
        ("tanh_backward", 1.0),
        ("exp", 2.2),
        ("log", 2.6),
        ("erf", 3.0),
        ("rsqrt", 1.0),
        ("bernoulli", 24.4),
        ("_softmax", 1.7),
        ("_softmax_backward_data", 1.0),
        ("_log_softmax", 1.9),
        ("_log_softmax_backward_data", 1.3),
        ("native_layer_norm", 1.6),
        ("native_layer_norm_backward", 1.8),
        ("_native_batch_norm_legit_functional", 4.2),
        ("native_batch_norm_backward", 1.5),
    ),
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
