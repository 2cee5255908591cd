"""Planning time vs graph size: remat's ILP and PyTorch's min-cut partitioner on the same graphs.

Each model (a deep residual MLP or a GPT of narrow width, so that only the graph is big) is
traced once by AOTAutograd, whose partition hook receives the joint forward+backward graph. On
that graph it times

- torch: `min_cut_rematerialization_partition` under activation_memory_budget=0.5 (its knapsack
  runs whenever the knob is below 1), on a copy of the joint graph;
- remat: capture + pricing (RematGraph from the joint, estimated costs, measured convolution
  workspaces), the ILP solve at half of remat's keep-all peak (a different 0.5: a fraction of
  the step's peak, not of the saved activations), and the rewrite into forward/backward modules,

then hands AOTAutograd remat's modules. No training step is timed: planning only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from remat.budget import InfeasibleBudgetError
from remat.capture import capture_joint
from remat.cost import estimate_costs
from remat.examples import GPT, GPTConfig, ResidualMLP
from remat.rewrite import rewrite
from remat.solvers import keep_all_plan, solve
from remat.workspace import measure_workspaces

TORCH_KNOB = 0.5
REMAT_FRACTION = 0.5


@dataclass(frozen=True)
class PlanningPoint:
    family: str
    layers: int
    fx_nodes: int
    """Nodes of the joint graph both partitioners receive (placeholders included)."""
    remat_ops: int
    torch_partition_s: float
    remat_capture_s: float
    remat_solve_s: float
    remat_rewrite_s: float
    remat_total_s: float
    status: str
    gap: float | None
    time_limit: float
    remat_budget: str
    """"0.5 of keep-all", or "floor" where that is below remat's floor."""


def _mlp(layers: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return ResidualMLP(16, layers, 64), (torch.randn(256, 16),)


def _gpt(layers: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    config = GPTConfig(64, 32, layers, 2, 16, dropout=0.0)
    return GPT(config), (torch.randint(0, 64, (8, 32)),)


FAMILIES: dict[str, Callable[[int], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp": _mlp,
    "gpt": _gpt,
}


class _Loss(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(*inputs).float().square().mean(),)


def plan_point(family: str, layers: int, time_limit: float) -> PlanningPoint:
    """Trace `family` at `layers` and time both partitioners on its joint graph."""
    from torch._dynamo.backends.debugging import boxed_nop
    from torch._functorch.aot_autograd import aot_module_simplified

    torch.manual_seed(0)
    model, inputs = FAMILIES[family](layers)
    found: dict[str, Any] = {}

    def partition(joint, joint_inputs, *, num_fwd_outputs: int, **kwargs: Any):
        found.update(_time_torch(joint, joint_inputs, num_fwd_outputs, kwargs))
        remat_found, modules = _time_remat(joint, num_fwd_outputs, time_limit)
        found.update(remat_found)
        return modules

    # AOTAutograd straight on the module (no Dynamo): tracing a 300-layer Python loop with
    # Dynamo takes minutes and is not what either partitioner is timed on.
    compiled = aot_module_simplified(
        _Loss(model), list(inputs), fw_compiler=boxed_nop, bw_compiler=boxed_nop,
        partition_fn=partition,
    )  # fmt: skip
    compiled(*inputs)[0].backward()
    return PlanningPoint(family=family, layers=layers, time_limit=time_limit, **found)


def _time_torch(joint, joint_inputs, num_fwd_outputs: int, kwargs: dict) -> dict[str, Any]:
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    copied = copy.deepcopy(joint)
    nodes = len(joint.graph.nodes)
    started = time.perf_counter()
    with torch._functorch.config.patch(activation_memory_budget=TORCH_KNOB):
        min_cut_rematerialization_partition(
            copied, joint_inputs, num_fwd_outputs=num_fwd_outputs, **kwargs
        )
    return {"fx_nodes": nodes, "torch_partition_s": time.perf_counter() - started}


def _time_remat(joint, num_fwd_outputs: int, time_limit: float):
    device = torch.device("cpu")
    started = time.perf_counter()
    captured = capture_joint(
        joint,
        num_fwd_outputs,
        estimate_costs(joint, device),
        workspaces=measure_workspaces(joint, device),
        name="planning",
    )
    captured_at = time.perf_counter()
    budget = int(REMAT_FRACTION * keep_all_plan(captured.graph).predicted_peak)
    label = f"{REMAT_FRACTION:g} of keep-all"
    try:
        plan = solve(captured.graph, budget, "ilp", time_limit=time_limit)
    except InfeasibleBudgetError as error:  # below the floor: plan at the floor instead
        label = "floor"
        plan = solve(captured.graph, error.floor, "ilp", time_limit=time_limit)
    solved_at = time.perf_counter()
    rewritten = rewrite(joint, captured, plan, num_fwd_outputs)
    done = time.perf_counter()
    found = {
        "remat_ops": len(captured.graph.ops),
        "remat_capture_s": captured_at - started,
        "remat_solve_s": solved_at - captured_at,
        "remat_rewrite_s": done - solved_at,
        "remat_total_s": done - started,
        "status": plan.status.value,
        "gap": plan.gap,
        "remat_budget": label,
    }
    return found, (rewritten.forward, rewritten.backward)


def planning_sweep(
    sizes: dict[str, tuple[int, ...]], time_limit: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    points = []
    for family, layer_counts in sizes.items():
        for layers in layer_counts:
            point = plan_point(family, layers, time_limit)
            log(
                f"planning {family} x{layers}: {point.fx_nodes} fx nodes, torch "
                f"{point.torch_partition_s:.2f} s, remat {point.remat_total_s:.2f} s "
                f"(solve {point.remat_solve_s:.2f} s, {point.status})"
            )
            points.append(asdict(point))
    return points
