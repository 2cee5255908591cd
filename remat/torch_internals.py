"""Every private torch API remat uses but Inductor's, each with what it is for.

remat plugs into Dynamo and AOTAutograd where torch offers no public hook: the partition step
of AOTAutograd, fake tensors, the op overload types. These names change between torch
releases; keeping them here (and Inductor's in `remat.inductor`) means a new torch breaks
one module, not twenty. remat is tested on torch `TESTED_TORCH`; on another version it says so
once, when first used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

# Op types: what an fx node calls (an ATen overload, or a higher-order op such as a wrapped
# SDPA or a checkpointed region), and the RNG replay a recomputed random op needs.
from torch._C import FunctionSchema

# Dynamo: graph-break reasons for the report, its config (recompile limit, logger methods it
# may drop), the error it wraps a backend's exceptions in, and its caches' reset.
from torch._dynamo import config as dynamo_config
from torch._dynamo import reset as dynamo_reset
from torch._dynamo.exc import BackendCompilerFailed
from torch._dynamo.utils import counters as dynamo_counters

# AOTAutograd: the joint forward+backward trace with a partition hook, the boxed calling
# convention of compiled forwards, torch's own budget knob (compared against in analyses),
# the roles of graph inputs and outputs, and how the default partitioner splits outputs.
from torch._functorch import config as functorch_config
from torch._functorch._aot_autograd.descriptors import (
    SavedForBackwardsAOTOutput,
    SavedForBackwardsNoVcCheckAOTOutput,
    TangentAOTInput,
)
from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func
from torch._functorch.partitioners import _extract_fwd_bwd_outputs as split_joint_outputs

# Fake tensors: the joint graph's values are fake; workspaces and storage sizes are measured
# on real tensors of the same shapes, outside the fake mode.
from torch._guards import detect_fake_mode
from torch._ops import HigherOrderOperator, OpOverload
from torch._prims.rng_prims import run_and_save_rng_state, run_with_rng_state
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily

# Profiler: remat's recompute ranges (remat.recompute_ranges) open only while one records.
from torch.autograd import _profiler_enabled as profiler_enabled

# Symbolic shapes: a size hint for a symbolic dimension, when pricing a dynamic-shape graph.
from torch.fx.experimental.symbolic_shapes import optimization_hint

# Dispatch modes: the probe step that measures what FSDP2 and a model's eager code allocate
# outside remat's graphs (remat.measure.OutsideTracker) sees every op's outputs through a mode,
# and steps off the mode stack while remat's compiled graphs run (Dynamo does not run compiled
# code under a user dispatch mode).
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._python_dispatch import _get_current_dispatch_mode as current_dispatch_mode
from torch.utils._python_dispatch import _pop_mode_temporarily as pop_mode_temporarily

# Pytrees: the leaves of a model's nested inputs and outputs (HF ModelOutput included).
from torch.utils._pytree import tree_leaves, tree_map

TESTED_TORCH = "2.13.0"
"""The torch release remat's tests run on (pinned in pyproject.toml)."""

_warned: list[str] = []

__all__ = [
    "FakeTensorMode",
    "TorchDispatchMode",
    "pop_mode_temporarily",
    "current_dispatch_mode",
    "BackendCompilerFailed",
    "active_ddp_module",
    "queue_backward_callback",
    "in_backward",
    "kernel_of",
    "boxed_codegen",
    "codegen_of",
    "FunctionSchema",
    "HigherOrderOperator",
    "OpOverload",
    "SavedForBackwardsAOTOutput",
    "SavedForBackwardsNoVcCheckAOTOutput",
    "TESTED_TORCH",
    "aot_module_simplified",
    "check_torch_version",
    "detect_fake_mode",
    "dynamo_config",
    "dynamo_counters",
    "dynamo_frame_locals",
    "dynamo_reset",
    "functorch_config",
    "is_primal",
    "is_tangent",
    "make_boxed_func",
    "optimization_hint",
    "profiler_enabled",
    "run_and_save_rng_state",
    "run_with_rng_state",
    "split_joint_outputs",
    "tree_leaves",
    "tree_map",
    "unset_fake_temporarily",
]


def check_torch_version(version: str | None = None) -> bool:
    """Warn once per process when torch is not the tested release; True when it is."""
    found = (version or torch.__version__).split("+")[0]
    if found == TESTED_TORCH:
        return True
    if found not in _warned:
        _warned.append(found)
        warnings.warn(
            f"remat is tested with torch {TESTED_TORCH}; this is torch {found}. remat uses "
            "torch internals (Dynamo, AOTAutograd, Inductor) that change between releases: "
            f"if planning or rewriting fails, install torch=={TESTED_TORCH}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def dynamo_frame_locals() -> dict[str, Any]:
    """The local variables of the frame Dynamo is compiling (empty outside a compile): where
    the backend finds the modules whose parameters a graph's gradients belong to."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except (ImportError, AttributeError, AssertionError, IndexError):
        return {}
    return dict(getattr(tx, "f_locals", None) or {}) if tx is not None else {}


def boxed_codegen() -> Any:
    """fx code generation for a graph that takes its arguments as one list and clears it once
    read (AOTAutograd's boxed convention), so a saved value is freed at its last use."""
    return fx.graph._BoxedCodeGen()


def codegen_of(graph: fx.Graph) -> Any:
    """The code generation a graph has (fx keeps it private)."""
    return graph._codegen


def kernel_of(op: OpOverload) -> Any:
    """The C-level callable an OpOverload's `__call__` forwards to, with the same dispatch."""
    return op._op


def queue_backward_callback(callback: Any) -> None:
    """Run `callback` once the backward pass now running has finished (FSDP2 finishes its own
    step the same way): where the backend's probe step ends."""
    torch.autograd.Variable._execution_engine.queue_callback(callback)


def in_backward() -> bool:
    """Whether the autograd engine is running a backward pass on this thread."""
    return torch._C._current_graph_task_id() != -1


def active_ddp_module() -> Any:
    """The DistributedDataParallel module whose forward Dynamo is compiling, if any (its
    DDPOptimizer then hands the backend one graph per gradient bucket)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel._get_active_ddp_module()


def _input_role(node: fx.Node) -> Any:
    """AOTAutograd's descriptor of a joint graph's placeholder (what the input is)."""
    return node.meta.get("desc") if node.op == "placeholder" else None


def is_tangent(node: fx.Node) -> bool:
    """A joint graph input that is the gradient of one of the forward's outputs."""
    return isinstance(_input_role(node), TangentAOTInput)


def is_primal(node: fx.Node) -> bool:
    """A joint graph input of the forward (a parameter, buffer or user input)."""
    role = _input_role(node)
    return role is not None and not isinstance(role, TangentAOTInput)


def runs_on_fake_tensors(args: Sequence[Any]) -> bool:
    """Whether compiled code is being run on fake tensors (DDPOptimizer runs each bucket's
    graph so at compile time), read from its first tensor argument: a real run's arguments
    are all real. Cheaper per call than detect_fake_mode, which walks every argument."""
    for value in args:
        if isinstance(value, torch.Tensor):
            return isinstance(value, FakeTensor)
    return detect_fake_mode(args) is not None
