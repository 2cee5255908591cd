"""The step as written, measured: can remat let the model run eagerly?

Where the budget admits the model's own step, no plan beats it: eager recomputes nothing, and
remat's graphs, even with nothing recomputed, run as Python-dispatched fx code through
AOTAutograd's wrappers (a few percent slower than eager on CPU). But the eager step is not the
graph remat simulated (Python holds a value until its name goes out of scope, autograd
accumulates gradients its own way), so it is measured: the forward and the backward of its
scalar loss run once on fake copies of the parameters, buffers and inputs (no memory, no
arithmetic) under a tracker that counts every new storage as the allocator rounds it, plus what
fake tensors do not show (remat.workspace: a kernel's scratch, a result that holds a larger
buffer), measured on the device as for the graphs. That errs high only (autograd sums two
gradients of one value in place on real tensors, out of place on fake ones) but code may branch
on fake tensors, so where it fits, one real step under the same tracker decides."""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from remat.budget import format_bytes
from remat.fx_nodes import allocated_bytes
from remat.measure import measure_peak, tensors_in, written_arguments
from remat.model_state import ModelState
from remat.torch_internals import (
    FakeTensorMode,
    TorchDispatchMode,
    tree_map,
    unset_fake_temporarily,
)
from remat.workspace import call_scratch_bytes, call_storage_bytes


@dataclass(frozen=True)
class EagerPeak:
    """The eager step's peak in bytes above what existed before it, or why it is unknown."""

    peak_bytes: int | None
    """On fake tensors (`measure_eager_step`)."""
    reason: str = ""
    """Why the step could not be measured (None peak): for the plan's report."""
    probed_bytes: int | None = None
    """Measured by the allocator in one real step (`probe_eager_step`), where the fake one fit."""
    budget_bytes: int | None = None
    """What it had to fit (`eager_step_within`)."""

    @property
    def fits(self) -> bool:
        """The real step was measured within the budget."""
        probed, budget = self.probed_bytes, self.budget_bytes
        return probed is not None and budget is not None and probed <= budget


class _PeakTracker(TorchDispatchMode):
    """Counts the storages the ops it sees allocate, at their real sizes, and the peak: live
    bytes after each op plus that op's scratch. The count is kept as storages come and go; a
    storage an op writes into (an out= kernel may resize it) is counted again after it."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.peak = 0
        self.live = 0
        """Bytes held now: tracked storages, and the Python numbers passed for tensors to ops
        autograd records (which may save them)."""
        self._storages: dict[int, tuple[weakref.ref, int, int]] = {}
        """id -> (the storage, bytes its real counterpart holds beyond it, bytes counted)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        known = {id(t.untyped_storage()) for t in tensors_in((args, kwargs))}
        fresh = [t for t in tensors_in(output) if id(t.untyped_storage()) not in known]
        with unset_fake_temporarily():
            scratch = call_scratch_bytes(func, args, kwargs, output, self.device)
            real = call_storage_bytes(func, args, kwargs, output, self.device)
        for tensor in fresh:
            storage = tensor.untyped_storage()
            self._track(storage, max(0, real - storage.nbytes()) if real is not None else 0)
        for tensor in tensors_in(written_arguments(func, args, kwargs)):
            self._recount(tensor.untyped_storage())
        wrapped = _wrapped_number_bytes(func, args, kwargs) if self.device.type == "cpu" else 0
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors_in((args, kwargs))):
            self.live += wrapped  # autograd may keep it for the backward: held to the end
            wrapped = 0
        self.peak = max(self.peak, self.live + scratch + wrapped)
        return output

    def _track(self, storage: torch.UntypedStorage, extra: int) -> None:
        key = id(storage)
        if key in self._storages:
            return
        counted = allocated_bytes(storage.nbytes() + extra, self.device)
        ref = weakref.ref(storage, lambda _, k=key: self._free(k))
        self._storages[key] = (ref, extra, counted)
        self.live += counted

    def _recount(self, storage: torch.UntypedStorage) -> None:
        entry = self._storages.get(id(storage))
        if entry is not None:
            ref, extra, counted = entry
            now = allocated_bytes(storage.nbytes() + extra, self.device)
            self._storages[id(storage)] = (ref, extra, now)
            self.live += now - counted

    def _free(self, key: int) -> None:
        entry = self._storages.pop(key, None)
        if entry is not None:
            self.live -= entry[2]


_NUMBER_BYTES = {bool: 1, int: 8, float: 8, complex: 16}


def _wrapped_number_bytes(func: Any, args: tuple, kwargs: dict) -> int:
    """Bytes of the 0-d CPU tensors made for Python numbers passed where `func` takes a tensor
    (`x * 0.5`). They are made before dispatch and handed to modes as numbers, so no mode sees
    them, and autograd may keep one until the backward (a product's factor)."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return 0
    total = 0
    for position, argument in enumerate(schema.arguments):
        if argument.kwarg_only:
            value = kwargs.get(argument.name)
        elif position < len(args):
            value = args[position]
        else:
            value = kwargs.get(argument.name)
        if isinstance(argument.type, torch.TensorType):
            total += _NUMBER_BYTES.get(type(value), 0)
    return total


def eager_candidate(module: nn.Module) -> bool:
    """Whether eager code could run the step instead of remat's plans: no DDP engine (whose
    buckets the plans reserve room for) wraps the module."""
    from torch.nn.parallel import DistributedDataParallel

    return not any(isinstance(m, DistributedDataParallel) for m in module.modules())


def model_modes(module: nn.Module) -> tuple[bool, ...]:
    """What changes the eager step without changing its inputs: each module's training flag and
    each parameter's requires_grad."""
    return (
        *(m.training for m in module.modules()),
        *(p.requires_grad for p in module.parameters()),
    )


def measure_eager_step(
    module: nn.Module, args: tuple, kwargs: dict, device: torch.device
) -> EagerPeak:
    """Run `module(*args, **kwargs)` and the backward of its scalar loss once on fake tensors
    and return the step's peak; the module, its state and the random generators are left as
    they were. A module that returns no scalar loss, or that fake tensors cannot run, gets a
    reason instead of a peak."""
    attributes = [(m, dict(vars(m))) for m in module.modules()]
    try:
        with torch.random.fork_rng(devices=_cuda_indices(module)):
            return _fake_step(module, args, kwargs, device)
    except Exception as error:  # noqa: BLE001 - any failure means: not measured, run the plan
        return EagerPeak(None, f"the fake-tensor run failed: {type(error).__name__}: {error}")
    finally:
        # A module that caches a value on itself (a rotary table, a mask) keeps no fake tensor.
        for submodule, before in attributes:
            vars(submodule).clear()
            vars(submodule).update(before)


def eager_step_within(
    module: nn.Module, args: tuple, kwargs: dict, device: torch.device, budget: int
) -> EagerPeak:
    """The eager step measured against `budget`: on fake tensors, then, where that fits, once
    for real (`probe_eager_step`), which decides; a real step over the budget warns."""
    fake = dataclasses.replace(
        measure_eager_step(module, args, kwargs, device), budget_bytes=budget
    )
    if fake.peak_bytes is None or fake.peak_bytes > budget:
        return fake
    probed = probe_eager_step(module, args, kwargs, device)
    if probed > budget:
        warnings.warn(
            f"remat: one step of the model as written, run to see whether it fits the budget "
            f"{format_bytes(budget)} (on fake tensors it peaked at {format_bytes(fake.peak_bytes)})"
            f", peaked at {format_bytes(probed)}: its code takes another path on real tensors. "
            "Its effects were undone, and the step runs remat's plan from now on.",
            RuntimeWarning,
            stacklevel=2,
        )
    return dataclasses.replace(fake, probed_bytes=probed)


def probe_eager_step(module: nn.Module, args: tuple, kwargs: dict, device: torch.device) -> int:
    """Run the eager step once for real (the forward and the backward of its scalar loss) under
    the same tracker and return its peak, then undo it: gradients, buffers and random
    generators are left as they were. Python code may branch on fake tensors (a library that
    skips an all-ones mask only where it can read it), so the fake step only says whether this
    one may run within the budget; this one decides. On CPU the tracker alone measures it (the
    allocator's count there needs the profiler, which the caller may be running)."""
    state = ModelState.save(module)
    params = list(module.parameters())
    grads = [p.grad for p in params]
    for param in params:
        param.grad = None  # fresh gradients, as on fake tensors; the old ones stay referenced
    tracker = _PeakTracker(device)

    def step() -> None:
        with tracker:
            (loss,) = _losses(module(*args, **kwargs))
            loss.backward()

    try:
        if device.type == "cpu":
            step()
            return tracker.peak
        # An accelerator's allocator keeps its own count without a profiler: the larger of
        # the two is taken (kernels' workspaces the tracker does not see, backward threads).
        return max(measure_peak(step, device, warmup=0).peak_bytes, tracker.peak)
    finally:
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        state.restore()


def _losses(output: Any) -> list[torch.Tensor]:
    """The output's differentiable tensors when there is one and it is a scalar, else none."""
    losses = [t for t in tensors_in(output) if t.requires_grad]
    return losses if len(losses) == 1 and losses[0].dim() == 0 else []


def _fake_step(module: nn.Module, args: tuple, kwargs: dict, device: torch.device) -> EagerPeak:
    mode = FakeTensorMode(allow_non_fake_inputs=False)

    def fake(value: Any) -> Any:
        return mode.from_tensor(value) if isinstance(value, torch.Tensor) else value

    state = {n: fake(p) for n, p in module.named_parameters(remove_duplicate=False)}
    state |= {n: fake(b) for n, b in module.named_buffers(remove_duplicate=False)}
    fake_args, fake_kwargs = tree_map(fake, (args, kwargs))
    tracker = _PeakTracker(device)
    with mode, tracker:
        output = torch.func.functional_call(module, state, fake_args, fake_kwargs)
        losses = _losses(output)
        if not losses:
            return EagerPeak(None, "the model returns no scalar loss (its loss runs outside)")
        losses[0].backward()
        return EagerPeak(tracker.peak)


def _cuda_indices(module: nn.Module) -> list[int]:
    tensors = (*module.parameters(), *module.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})
