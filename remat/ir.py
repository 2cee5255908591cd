"""The solver-facing intermediate representation: plain frozen dataclasses, no torch.

Time lives on ops, bytes live on tensors (Rockmate's split): an `Op` is one computation with an
estimated time; a `Tensor` is one value with the bytes of storage it owns. A view owns no bytes
and names the tensor whose storage it shares, so aliases never count twice.

The reference order (`RematGraph.ops`) is the step as eager would run it: every forward op, then
every backward op. A schedule is a sequence of op ids in execution order; an op that appears
more than once is recomputed.

A `Plan` is a schedule with what the simulator found for it (`Simulation`, made by
remat.simulate), so what reads a plan never replays it again.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field


class Phase(enum.Enum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True)
class Tensor:
    id: int
    name: str
    bytes: int
    """Bytes of storage this tensor allocates; 0 for a view of another tensor."""
    producer: int | None
    """Id of the op that computes it; None for a graph input."""
    alias_of: int | None = None
    """Id of the tensor that owns the storage this one views (always a storage owner)."""


@dataclass(frozen=True)
class Op:
    id: int
    """Position in the reference order."""
    name: str
    kind: str
    """What it computes, e.g. 'aten.mm'; for reports only."""
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    time: float = 0.0
    """Estimated seconds for one execution."""
    flops: int = 0
    phase: Phase = Phase.FORWARD
    recomputable: bool = True
    random: bool = False
    """Draws random numbers: a recomputation must replay the first execution's RNG state."""
    transient_bytes: int = 0
    """Bytes allocated while it runs and freed right after (outputs nobody reads, workspace)."""
    module_path: str = ""


@dataclass(frozen=True)
class RematGraph:
    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    boundary: int
    """Index in `ops` of the first backward op (== len(ops) for a graph with no backward)."""
    inputs: tuple[int, ...] = ()
    """Tensors that exist before the step starts (parameters, user inputs): not counted."""
    late_inputs: tuple[int, ...] = ()
    """Tensors handed in at the boundary (output gradients): counted from the boundary on."""
    outputs: tuple[int, ...] = ()
    """Tensors that must exist at the end of the step (forward outputs, parameter gradients)."""
    forward_outputs: tuple[int, ...] = ()
    """Outputs that must exist when the forward part ends (subset of `outputs`)."""
    boundary_reserve: int = 0
    """Bytes the caller holds between forward and backward (its loss computation)."""
    backward_reserve: int = 0
    """Bytes the caller holds from the boundary to the end (the loss and its seed gradient)."""
    name: str = "graph"

    def __post_init__(self) -> None:
        for index, op in enumerate(self.ops):
            if op.id != index:
                raise ValueError(f"op {op.name!r} has id {op.id} but sits at position {index}")
        for index, tensor in enumerate(self.tensors):
            if tensor.id != index:
                raise ValueError(f"tensor {tensor.name!r} has id {tensor.id}, expected {index}")
        if not 0 <= self.boundary <= len(self.ops):
            raise ValueError(f"boundary {self.boundary} outside 0..{len(self.ops)}")

    def storage_of(self, tensor_id: int) -> int:
        alias = self.tensors[tensor_id].alias_of
        return tensor_id if alias is None else alias

    @property
    def total_time(self) -> float:
        return sum(op.time for op in self.ops)


class PlanStatus(enum.Enum):
    OPTIMAL = "optimal"
    """The solver proved no cheaper plan exists under its model."""
    FEASIBLE = "feasible"
    """Within budget; the solver stopped before proving optimality (see the gap)."""
    HEURISTIC = "heuristic"
    """Within budget; made by a heuristic that proves nothing."""


@dataclass(frozen=True)
class Simulation:
    """What the simulator (remat.simulate.simulate) found for one schedule of one graph."""

    peak: int
    peak_step: int
    """Index in the schedule where the peak happens (-1: at the boundary, between the parts)."""
    timeline: tuple[int, ...]
    """Live bytes at each step of the schedule."""
    boundary_bytes: int
    """Live bytes between forward and backward, late inputs and the caller's reserve included."""
    saved_bytes: int
    """Storage allocated in the forward part and still live when the backward part starts."""
    saved: tuple[int, ...]
    """Tensors produced in the forward part whose value is read in the backward or returned."""
    time: float
    recompute_time: float
    recompute_flops: int
    graph_ref: weakref.ReferenceType[RematGraph] | None = field(
        default=None, compare=False, repr=False
    )
    """The graph simulated, held weakly: a plan carrying its simulation keeps no graph alive."""

    def of(self, graph: RematGraph) -> bool:
        """Whether this is a simulation of `graph`, that very object (an equal graph made
        elsewhere, e.g. a recapture whose measured op times differ, may score differently)."""
        return self.graph_ref is not None and self.graph_ref() is graph

    def __getstate__(self) -> dict[str, object]:
        # A weak reference does not pickle; a copy is a simulation of no graph in particular.
        return {**self.__dict__, "graph_ref": None}


@dataclass(frozen=True)
class Plan:
    """One result type for every solver."""

    schedule: tuple[int, ...]
    """Op ids in execution order; repeats are recomputations."""
    boundary: int
    """Index in `schedule` where the backward part starts."""
    solver: str
    status: PlanStatus
    budget: int | None
    predicted_peak: int
    recompute_time: float
    """Estimated seconds spent on executions beyond each op's first."""
    recompute_flops: int
    lower_bound: float | None = None
    """Proven lower bound on `recompute_time` under the solver's model, when it has one."""
    solve_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    simulation: Simulation | None = field(default=None, compare=False, repr=False)
    """What the simulator found for this plan on the graph it was made for (`simulation.of`
    tells which); None on a candidate scored only by the fast replay. Read it through
    remat.simulate.simulation_of, which replays the plan when it is for another graph."""

    @property
    def gap(self) -> float | None:
        """Relative gap between this plan's recompute time and the proven bound."""
        if self.lower_bound is None:
            return None
        if self.recompute_time <= 0:
            return 0.0
        return max(0.0, (self.recompute_time - self.lower_bound) / self.recompute_time)


def schedule_cost(graph: RematGraph, schedule: Sequence[int]) -> tuple[float, int]:
    """(time, flops) of the executions in `schedule` beyond each op's first."""
    seen: set[int] = set()
    time, flops = 0.0, 0
    for op_id in schedule:
        if op_id in seen:
            time += graph.ops[op_id].time
            flops += graph.ops[op_id].flops
        seen.add(op_id)
    return time, flops
