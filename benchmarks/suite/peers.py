"""The methods remat is compared with, each built on a fresh copy of the same model.

- eager: keep everything.
- checkpoint-block: torch.utils.checkpoint (use_reentrant=False) around every block.
- checkpoint-sqrt: checkpoint_sequential over the model's sequential view, sqrt(n) segments.
- torch-budget: torch.compile with AOTAutograd's min-cut partitioner under
  torch._functorch.config.activation_memory_budget, running the partitioned graphs as plain fx
  code; the same backend family as remat.compile, whose rewritten graphs also run as fx code.
  This is exactly torch's `aot_eager` backend (boxed_nop compilers, min-cut partitioner), with
  the partitioner call wrapped to scope the budget and to count the FLOPs it adds.
- torch-budget-inductor: torch.compile(backend="inductor") under the same knob.
- hf-checkpoint: a Hugging Face model's own `gradient_checkpointing_enable` (non-reentrant
  torch.utils.checkpoint around every layer; the hf suite).
- rockmate: `rockmate.Rockmate(model, inputs, budget=bytes)` where the package imports.

The knob is scoped with `torch._functorch.config.patch(...)` around torch's own partitioner
call, never set globally. Each setting gets its own backend object, so Dynamo (which guards on
the backend) never reuses one setting's compiled graph for another's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from benchmarks.suite.candidate import Candidate, Failed, describe_error, graph_flops, wrap_blocks
from benchmarks.suite.workloads import Loss, TrainStep, Workload

TORCH_BUDGET = "torch-budget"
TORCH_BUDGET_INDUCTOR = "torch-budget-inductor"
HF_CHECKPOINT = "hf-checkpoint"


def eager(workload: Workload, base: nn.Module) -> Candidate:
    model = copy.deepcopy(base)
    return Candidate(
        "eager", "keep all", None, workload.step_module(model), model, plain_pytorch=True
    )


class Checkpointed(nn.Module):
    """torch.utils.checkpoint around one block (non-reentrant)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: Any) -> Any:
        return checkpoint(self.block, *args, use_reentrant=False)


def checkpoint_block(workload: Workload, base: nn.Module) -> Candidate:
    model = copy.deepcopy(base)
    paths = workload.blocks(model)
    wrap_blocks(model, paths, Checkpointed)
    return Candidate(
        "checkpoint-block",
        f"{len(paths)} blocks checkpointed",
        None,
        workload.step_module(model),
        model,
        plain_pytorch=True,
    )


def hf_checkpoint(workload: Workload, base: nn.Module) -> Candidate:
    """Hugging Face's gradient checkpointing, as its docs recommend it (non-reentrant).

    transformers 5 renamed `gradient_checkpointing_enable` (now a deprecated alias) to
    `activation_checkpointing_enable`; the same call either way."""
    model = copy.deepcopy(base)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return Candidate(
        HF_CHECKPOINT,
        f"use_reentrant=False, {len(workload.blocks(model))} layers",
        None,
        workload.step_module(model),
        model,
        plain_pytorch=True,
    )


class SequentialCheckpoint(nn.Module):
    """checkpoint_sequential over a chain of stages, then the loss."""

    def __init__(self, stages: list[nn.Module], segments: int, loss: Loss) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.segments = segments
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = checkpoint_sequential(list(self.stages), self.segments, x, use_reentrant=False)
        return self.loss(out, target)


def checkpoint_sqrt(workload: Workload, base: nn.Module) -> Candidate:
    model = copy.deepcopy(base)
    stages = workload.stages(model)
    segments = max(1, round(math.sqrt(len(stages))))
    return Candidate(
        "checkpoint-sqrt",
        f"{segments} segments over {len(stages)} stages",
        None,
        SequentialCheckpoint(stages, segments, workload.loss),
        model,
        plain_pytorch=True,
    )


def budgeted_aot_eager(budget: float, counts: dict[str, int]) -> Callable:
    """torch's aot_eager backend with the partitioner run under `activation_memory_budget`."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.debugging import boxed_nop
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    def partition(joint, joint_inputs, **kwargs):
        counts["joint"] = counts.get("joint", 0) + graph_flops(joint)
        with torch._functorch.config.patch(activation_memory_budget=budget):
            forward, backward = min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)
        counts["partitioned"] = (
            counts.get("partitioned", 0) + graph_flops(forward) + graph_flops(backward)
        )
        return forward, backward

    return aot_autograd(
        fw_compiler=boxed_nop,
        bw_compiler=boxed_nop,
        partition_fn=partition,
        keep_inference_input_mutations=True,
    )


def torch_budget(workload: Workload, base: nn.Module, budget: float) -> Candidate:
    model = copy.deepcopy(base)
    counts: dict[str, int] = {}
    compiled = torch.compile(
        workload.step_module(model), backend=budgeted_aot_eager(budget, counts)
    )

    def facts() -> dict[str, Any]:
        if "joint" not in counts:
            return {"recompute_flops": None}
        return {"recompute_flops": counts["partitioned"] - counts["joint"]}

    return Candidate(
        TORCH_BUDGET,
        f"activation_memory_budget={budget:g}",
        None,
        _Compiled(compiled),
        model,
        facts=facts,
    )


def budgeted_inductor(budget: float) -> Callable:
    """Inductor (torch.compile's default backend) with its partitioner under the knob."""

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
        from torch._inductor.compile_fx import compile_fx

        # Caches off: a cached artifact of another budget must not stand in for this one.
        with (
            torch._functorch.config.patch(
                activation_memory_budget=budget, enable_autograd_cache=False
            ),
            torch._inductor.config.patch(fx_graph_cache=False),
        ):
            return compile_fx(gm, example_inputs)

    return backend


def torch_budget_inductor(workload: Workload, base: nn.Module, budget: float) -> Candidate:
    model = copy.deepcopy(base)
    compiled = torch.compile(workload.step_module(model), backend=budgeted_inductor(budget))
    return Candidate(
        TORCH_BUDGET_INDUCTOR,
        f"activation_memory_budget={budget:g}",
        None,
        _Compiled(compiled),
        model,
        note="recompute FLOPs not counted inside Inductor's kernels",
    )


class _Compiled(nn.Module):
    """A torch.compile'd step with Dynamo's recompile limit raised for its calls only.

    Every method compiles the same model class, so one code object collects an entry per
    compiled copy; Dynamo's default limit (8) would make the later copies silently run eagerly.
    """

    def __init__(self, compiled: Callable) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, *args: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=256, accumulated_recompile_limit=4096):
            return self.compiled(*args)


def rockmate(
    workload: Workload, base: nn.Module, inputs: tuple, budget_bytes: int
) -> Candidate | Failed:
    """Rockmate at a byte budget, or the exact reason it does not run here."""
    setting = f"budget={budget_bytes} bytes"
    try:
        from rockmate import Rockmate
    except Exception as error:  # the PyPI wheels fail at import; record how
        return Failed(
            "rockmate",
            setting,
            budget_bytes,
            f"import rockmate: {describe_error(error)}" + _version_note(),
        )
    model = copy.deepcopy(base)
    step: TrainStep = workload.step_module(model)
    try:
        wrapped = Rockmate(step, inputs, budget=budget_bytes)
    except Exception as error:
        return Failed("rockmate", setting, budget_bytes, f"Rockmate(...): {describe_error(error)}")
    return Candidate("rockmate", setting, budget_bytes, wrapped, model)


def _version_note() -> str:
    from importlib import metadata

    try:
        versions = [f"{name} {metadata.version(name)}" for name in ("rockmate", "rkgb")]
    except metadata.PackageNotFoundError:
        return " (not installed: pip install rockmate)"
    return f" ({', '.join(versions)} from PyPI)"
