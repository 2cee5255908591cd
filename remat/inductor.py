"""Inductor as remat's inner compiler: the rewritten forward and backward become fused kernels.

`inductor_compilers(gm, example_inputs)` gives the AOTAutograd compilers torch.compile's own
Inductor backend uses for that Dynamo graph (`compile_fx_forward` / `compile_fx_backward` around
`compile_fx_inner`: same static-input indices, graph id, user-visible outputs, boxed calls) and
Inductor's decomposition table; only the partition is remat's.

Inductor is a memory planner of its own: it fuses, inlines pointwise ops into their readers
(which keeps their inputs alive instead of their output), reuses buffers and may reorder. remat
keeps its plan's memory by two means:

1. Scoped settings (`scoped_config`, patched around remat's own Inductor calls only, never set
   globally): `fallback_random=True` (random ops run PyTorch's kernels on the default generator,
   so dropout masks equal eager's and a recomputed random op replays the forward's generator
   state); `reorder_for_peak_memory=False` (Inductor's reordering optimizes its
   own estimate and can move a recomputation away from the use it was placed before); and
   horizontal fusion only of nodes adjacent in the schedule (`PlanKeepingChoices`: fusing two
   consumers far apart pulls the later one's inputs forward; Inductor's own cut-off is 64 nodes,
   which still fuses recomputations of different regions). A saved value the backward no longer
   reads (only a dead view read it) is dropped from the backward's inputs, which frees it at
   once: Inductor frees an input after its last read, and one never read, never.
   Inductor's layout optimization (channels-last convolutions) stays on: its copies are not in
   the plan but are measured (2.); with it off, Inductor's CPU convolution gradients differed
   from eager's by ~4e-4 of the largest gradient on the benchmark CNN (on: ~3e-6, as
   torch.compile's), and torch.compile's own CNN speed relies on it.
2. Measurement (`measure_excess`): the compiled forward+backward and the plan's fx modules run
   once each on the same zero inputs; the difference of their measured peaks is what Inductor
   adds to the plan. The backend re-plans with that much withheld (see remat.backend).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch._inductor.choices import InductorChoices

from remat.cpu_profiler import allocation_events, cpu_memory_profiler
from remat.inner import InnerCompilers, run_as_fx
from remat.measure import synchronize

SCOPED_CONFIG: dict[str, Any] = {
    "fallback_random": True,
    "reorder_for_peak_memory": False,
    "realize_reads_threshold": 1,
}
"""torch._inductor.config values patched around each of remat's Inductor calls."""

HORIZONTAL_FUSION_DISTANCE = 1
"""Horizontal fusion only of nodes at most this far apart in the schedule (Inductor: 64)."""


class PlanKeepingChoices(InductorChoices):
    """Inductor's heuristics, except that consumers far apart in the schedule are not fused."""

    @staticmethod
    def can_fuse_horizontal(scheduler: Any, node1: Any, node2: Any, shared_data_score: int) -> bool:
        distance = max(
            abs(node1.min_order - node2.max_order), abs(node2.min_order - node1.max_order)
        )
        if distance > HORIZONTAL_FUSION_DISTANCE:
            return False
        return InductorChoices.can_fuse_horizontal(scheduler, node1, node2, shared_data_score)

    def uuid(self) -> str:
        """Part of Inductor's cache key (config.inductor_choices_class)."""
        return f"remat.PlanKeepingChoices/{HORIZONTAL_FUSION_DISTANCE}"


@contextlib.contextmanager
def scoped_config() -> Iterator[None]:
    """remat's Inductor settings, for the calls made inside this block only."""
    from torch._inductor import config
    from torch._inductor.virtualized import V

    patch = {**SCOPED_CONFIG, "inductor_choices_class": PlanKeepingChoices}
    with config.patch(patch), V.set_choices_handler(PlanKeepingChoices()):
        yield


def inductor_compilers(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> InnerCompilers:
    """Inductor's forward/backward/inference compilers for the Dynamo graph `gm`.

    The joint graph is traced without decompositions, as for the fx inner, so remat plans the
    same graph either way (the simulator's memory model is exact on it; a decomposed graph
    would count every intermediate Inductor fuses away). Each rewritten module is decomposed
    with Inductor's table just before Inductor compiles it."""
    from torch._inductor import compile_fx as cfx
    from torch._inductor.decomposition import select_decomp_table

    extra = cfx.create_compiler_config_extra(gm)
    num_outputs = cfx.get_num_model_outputs(gm)
    num_inputs = len(example_inputs)
    with scoped_config():
        table = dict(select_decomp_table())

    def forward_or_inference(is_inference: bool) -> Callable[[fx.GraphModule, Sequence], Any]:
        def compile_forward(module: fx.GraphModule, inputs: Sequence[Any]) -> Any:
            with scoped_config():
                return cfx.compile_fx_forward(
                    decompose(module, inputs, table),
                    inputs,
                    num_orig_model_outputs=num_outputs,
                    num_example_inputs=num_inputs,
                    compiler_config_extra=extra,
                    inner_compile=cfx.compile_fx_inner,
                    is_inference=is_inference,
                )

        return compile_forward

    def compile_backward(module: fx.GraphModule, inputs: Sequence[Any]) -> Any:
        unused = _drop_unused_inputs(module)
        inputs = [x for i, x in enumerate(inputs) if i not in unused]
        # AOTAutograd may compile the backward lazily, at the first backward call: scope again.
        with scoped_config():
            compiled = cfx.compile_fx_backward(
                decompose(module, inputs, table),
                inputs,
                compiler_config_extra=extra,
                inner_compile=cfx.compile_fx_inner,
            )
        return _without(compiled, unused) if unused else compiled

    return InnerCompilers(
        forward=forward_or_inference(False),
        backward=compile_backward,
        inference=forward_or_inference(True),
        defers_tangents=False,
    )


def decompose(
    gm: fx.GraphModule, example_inputs: Sequence[Any], table: dict[Any, Callable]
) -> fx.GraphModule:
    """`gm` retraced with the decompositions `table`, placeholders keeping their names (Inductor
    tells tangents from saved values by name) and nodes their source metadata."""
    from torch._dynamo.utils import detect_fake_mode
    from torch.fx.experimental.proxy_tensor import make_fx

    def run(*args: Any) -> Any:
        return fx.Interpreter(gm).run(*args)

    fake_mode = detect_fake_mode(example_inputs)
    with (
        fake_mode if fake_mode is not None else contextlib.nullcontext(),
        torch.fx.traceback.preserve_node_meta(),
        torch._dispatch.python.enable_python_dispatcher(),
    ):
        traced = make_fx(run, decomposition_table=table, record_module_stack=True)(*example_inputs)
    old = list(gm.graph.find_nodes(op="placeholder"))
    new = list(traced.graph.find_nodes(op="placeholder"))
    for before, after in zip(old, new, strict=True):
        after.target = before.target
        after._rename(before.name)
    traced.recompile()
    return traced


@contextlib.contextmanager
def compile_context(example_inputs: Sequence[Any]) -> Iterator[None]:
    """What torch.compile's Inductor backend holds around AOTAutograd (compile_fx): the fake
    mode of the inputs, a tracing context, the Python dispatcher, effect tokens unlifted; and
    the backward compiled at once, so it can be measured before the graph first runs."""
    from torch._dynamo.utils import detect_fake_mode
    from torch._functorch import config as functorch_config
    from torch._inductor import config
    from torch._inductor.virtualized import V

    fake_mode = detect_fake_mode(example_inputs) or torch._subclasses.FakeTensorMode(
        allow_non_fake_inputs=True
    )
    tracing = torch._guards.TracingContext.try_get() or torch._guards.TracingContext(fake_mode)
    with (
        scoped_config(),
        V.set_fake_mode(fake_mode),
        torch._guards.tracing(tracing),
        torch._dispatch.python.enable_python_dispatcher(),
        functorch_config.patch(
            unlift_effect_tokens=True,
            selective_decompose=config.selective_decompose,
            force_non_lazy_backward_lowering=True,
        ),
    ):
        yield


def fx_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of a rewritten module to measure against (Inductor's passes edit theirs)."""
    with torch._subclasses.fake_tensor.unset_fake_temporarily():
        return copy.deepcopy(gm)


def measure_excess(
    forward_fx: fx.GraphModule,
    backward_fx: fx.GraphModule,
    forward: Callable[[list[Any]], Any],
    backward: Callable[[list[Any]], Any],
    example_inputs: tuple[Sequence[Any], Sequence[Any]],
    device: torch.device,
) -> tuple[int, int]:
    """Bytes the compiled forward's and backward's peaks lie above the plan's fx modules'.

    Both run on the same zero-filled inputs, the forward's outputs held through the backward as
    the caller holds them, the generator state restored afterwards. What the caller holds
    during each phase is the same for both, so each difference is what Inductor adds to that
    phase's simulated peak in the real step."""
    primals = [_zeros_like(x) for x in example_inputs[0]]
    bw_inputs = list(backward_fx.graph.find_nodes(op="placeholder"))
    num_saved = sum(not n.name.startswith("tangents") for n in bw_inputs)
    tangents = [_zeros_like(x) for x in example_inputs[1][num_saved:]]

    def phases(fw: Callable, bw: Callable) -> tuple[Callable, Callable]:
        held: list[Any] = []

        def run_forward() -> None:
            held[:] = list(fw(list(primals)))

        def run_backward() -> None:
            args = held[len(held) - num_saved :]  # the backward clears it: saved values die
            del held[len(held) - num_saved :]  # at their last use, as in the real step
            args.extend(t.clone() for t in tangents)
            bw(args)
            held.clear()

        return run_forward, run_backward

    fx_phases = phases(run_as_fx(forward_fx, ()), run_as_fx(backward_fx, ()))
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), torch.no_grad():
        compiled = _phase_peaks(*phases(forward, backward), device)
        planned = _phase_peaks(*fx_phases, device)
    return compiled[0] - planned[0], compiled[1] - planned[1]


def _phase_peaks(
    run_forward: Callable[[], None], run_backward: Callable[[], None], device: torch.device
) -> tuple[int, int]:
    """Peak bytes above the start during the forward, and during the backward (which starts
    with the forward's outputs live), read from the allocator's records as remat.measure does.
    A first, unmeasured run lets caches (and the CPU profiler's block sizes) settle."""
    if device.type != "cpu":
        run_forward(), run_backward()
        synchronize(device)
        torch.accelerator.reset_peak_memory_stats(device)
        base = torch.accelerator.memory_allocated(device)
        run_forward()
        synchronize(device)
        forward_peak = torch.accelerator.max_memory_allocated(device) - base
        torch.accelerator.reset_peak_memory_stats(device)
        run_backward()
        synchronize(device)
        return forward_peak, torch.accelerator.max_memory_allocated(device) - base
    with cpu_memory_profiler():
        run_forward(), run_backward()
    with cpu_memory_profiler() as prof:
        run_forward()
        with torch.profiler.record_function(_BACKWARD_MARK):
            run_backward()
    events = list(prof.profiler.kineto_results.experimental_event_tree())
    marks = [e.start_time_ns for e in _walk(events) if e.name == _BACKWARD_MARK]
    live = 0
    peaks = [0, 0]
    for start, size in sorted(allocation_events(prof, device)):
        live += size
        phase = int(bool(marks) and start >= marks[0])
        peaks[phase] = max(peaks[phase], live)
    return peaks[0], peaks[1]


_BACKWARD_MARK = "remat::calibrate_backward"


def _walk(events: list[Any]) -> Iterator[Any]:
    stack = list(events)
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        yield event


def _zeros_like(value: Any) -> Any:
    """A real zero tensor with `value`'s layout (a fake tensor's too); non-tensors as they are."""
    if not isinstance(value, torch.Tensor):
        return value
    with torch._subclasses.fake_tensor.unset_fake_temporarily():
        return torch.empty_strided(
            tuple(value.shape), tuple(value.stride()), dtype=value.dtype, device=value.device
        ).zero_()


def _drop_unused_inputs(gm: fx.GraphModule) -> frozenset[int]:
    """Remove the placeholders nothing live reads; return their positions."""
    gm.graph.eliminate_dead_code()
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    unused = frozenset(i for i, node in enumerate(placeholders) if not node.users)
    for i in unused:
        gm.graph.erase_node(placeholders[i])
    gm.recompile()
    return unused


def _without(compiled: Callable, unused: frozenset[int]) -> Callable:
    """Boxed call of `compiled` with the arguments at `unused` dropped (and so freed) first."""

    def run(args: list[Any]) -> Any:
        kept = [x for i, x in enumerate(args) if i not in unused]
        args.clear()
        return compiled(kept)

    run._boxed_call = True  # type: ignore[attr-defined]
    return run
