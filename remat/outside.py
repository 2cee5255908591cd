"""Memory held outside a step's graphs, by where in the step it is held (no torch).

A probe step (remat.fsdp) measures, op by op, the bytes allocated outside remat's graphs: while
each graph runs (what is live then stays put: nothing outside runs meanwhile) and at the peak of
each stretch of eager code between graph runs (FSDP2's all-gathers and reduce-scatters, the
root's layers, the loss). `OutsideProfile.applied` puts those bytes where they are held in the
step's graphs, so a joint plan counts them at the right moments rather than adding their peak
to the graphs' peak:

- each op of graph k's forward carries, as transient bytes, the most held outside while that
  forward runs or just before it, and, since a forward op may be recomputed in the backward,
  while graph k's backward runs;
- each op of graph k's backward carries the most held outside while it runs or just before it
  (the stretch after the step's last backward is counted with graph 0's backward), and the
  gradients graph k returns: FSDP2 reduce-scatters and frees them right after its backward, so
  they are no longer counted as held to the step's end, only until the next backward starts;
- the stretch between the last forward and the first backward (the loss, its backward, the
  model's head) is held at the step's boundary: it replaces the graphs' `boundary_reserve`,
  which their capture guessed from their outputs (a block's output is no loss); a loss the
  caller computes outside the model (the probe differentiates the outputs directly) is held
  from the boundary to the end;
- a graph's output gradient (made by the next graph's backward) is held while its backward
  runs, not from the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from remat.ir import RematGraph

OUTSIDE_NOTE = "; with what the probe step measured outside the graphs, where it is held"


@dataclass(frozen=True)
class OutsideProfile:
    """What a probe step measured outside the graphs, in the order the graphs ran."""

    during: tuple[int, ...]
    """Bytes live outside while each graph run executes (forward runs, then backward runs)."""
    before: tuple[int, ...]
    """Peak bytes live outside in the eager stretch before each run, and after the last one
    (one more entry than `during`)."""
    caller_loss: int = 0
    """Bytes the caller's own loss adds, which the probe did not run (the model returned no
    loss): held from the step's boundary to its end."""

    def __post_init__(self) -> None:
        if len(self.before) != len(self.during) + 1:
            raise ValueError(f"{len(self.before)} stretches for {len(self.during)} graph runs")

    @property
    def peak(self) -> int:
        """The most held outside at any moment of the step."""
        return max((*self.during, *self.before), default=0) + self.caller_loss

    def fits(self, graphs: int) -> bool:
        """Whether the probe saw `graphs` graphs run as a step: each forward once, in order,
        then each backward once (the order `step_graph.combine` lays them out in)."""
        return graphs > 0 and len(self.during) == 2 * graphs

    def applied(self, graphs: Sequence[RematGraph]) -> list[RematGraph]:
        """`graphs` with what is held outside put where it is held (see the module's doc)."""
        if not self.fits(len(graphs)):
            raise ValueError(f"the probe ran {len(self.during)} graph runs, not {len(graphs)} x 2")
        k = len(graphs)
        returned = [_bytes(g, _backward_outputs(g)) for g in graphs]
        # A graph's output gradient comes from the next graph's backward (the last graph's
        # from the eager code, measured): held while its backward runs, not from the boundary.
        late = [_bytes(g, g.late_inputs) if i < k - 1 else 0 for i, g in enumerate(graphs)]
        forward = [max(self.before[i], self.during[i]) for i in range(k)]
        backward = [0] * k
        for run in range(k, 2 * k):
            graph = 2 * k - 1 - run  # backward runs go from the last graph to the first
            # The stretch before this run follows the previous backward, whose gradients live
            # until FSDP2 has reduce-scattered them; the loss stretch is held at the boundary.
            stretch = self.before[run] + returned[graph + 1] if run > k else 0
            backward[graph] = returned[graph] + late[graph] + max(stretch, self.during[run])
        backward[0] = max(backward[0], self.before[2 * k] + returned[0])
        return [
            _with_outside(g, max(forward[i], backward[i]), backward[i], self._held_at(k))
            for i, g in enumerate(graphs)
        ]

    def _held_at(self, graphs: int) -> tuple[int, int]:
        """(bytes held at the boundary, bytes held from it to the end) by the caller."""
        return self.before[graphs] + self.caller_loss, self.caller_loss


def _backward_outputs(graph: RematGraph) -> tuple[int, ...]:
    forward = set(graph.forward_outputs)
    return tuple(t for t in graph.outputs if t not in forward)


def _bytes(graph: RematGraph, tensors: Sequence[int]) -> int:
    return sum(graph.tensors[t].bytes for t in tensors)


def _with_outside(
    graph: RematGraph, forward: int, backward: int, caller: tuple[int, int]
) -> RematGraph:
    """`graph` with `forward`/`backward` bytes held while its forward/backward ops run and the
    caller's `(boundary, backward)` reserves in place of the ones its capture guessed. Its
    gradients are no longer held to the step's end (FSDP2 frees them once reduce-scattered)
    and its output gradient no longer from the boundary: `backward` counts them."""
    ops = tuple(
        replace(
            op, transient_bytes=op.transient_bytes + (backward if i >= graph.boundary else forward)
        )
        for i, op in enumerate(graph.ops)
    )
    late = set(graph.late_inputs)
    tensors = tuple(replace(t, bytes=0) if t.id in late else t for t in graph.tensors)
    return replace(
        graph,
        ops=ops,
        tensors=tensors,
        outputs=graph.forward_outputs,
        boundary_reserve=caller[0],
        backward_reserve=caller[1],
    )


def placed_outside(
    graphs: Sequence[RematGraph], profile: OutsideProfile | None
) -> Sequence[RematGraph]:
    """`graphs` with `profile` applied where it fits them; else `graphs` itself (the caller
    then reserves the profile's peak)."""
    if profile is None or not profile.fits(len(graphs)):
        return graphs
    return profile.applied(graphs)
