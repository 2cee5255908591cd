"""The simulator on hand-built graphs, with every byte counted by hand."""

import pytest

from remat.ir import Op, Phase, RematGraph, Tensor
from remat.simulate import InvalidScheduleError, simulate


def _step_graph(reserve: int = 0) -> RematGraph:
    """x -> a -> b (forward, b returned); backward reads tangent g, a and b, makes grad gb."""
    tensors = (
        Tensor(0, "x", 0, None),
        Tensor(1, "a", 10, 0),
        Tensor(2, "b", 10, 1),
        Tensor(3, "g", 3, None),
        Tensor(4, "gb", 5, 2),
    )
    ops = (
        Op(0, "fa", "f", (0,), (1,), time=1.0, flops=7),
        Op(1, "fb", "f", (1,), (2,), time=2.0),
        Op(2, "bb", "b", (3, 1, 2), (4,), phase=Phase.BACKWARD, recomputable=False),
    )
    return RematGraph(
        ops,
        tensors,
        2,
        inputs=(0,),
        late_inputs=(3,),
        outputs=(2, 4),
        forward_outputs=(2,),
        boundary_reserve=reserve,
    )


def test_keep_all_counts_saved_values_tangent_and_outputs():
    sim = simulate(_step_graph(), [0, 1, 2], 2)
    assert sim.timeline == (10, 20, 28)
    assert sim.saved_bytes == 20
    assert sim.boundary_bytes == 23
    assert sim.peak == 28
    assert sim.saved == (1, 2)
    assert sim.recompute_time == 0


def test_recomputing_frees_the_value_across_the_boundary():
    sim = simulate(_step_graph(reserve=4), [0, 1, 0, 2], 2)
    assert sim.saved == (2,)
    assert sim.saved_bytes == 10
    assert sim.boundary_bytes == 10 + 3 + 4
    assert sim.timeline == (10, 20, 23, 28)
    assert sim.recompute_time == 1.0
    assert sim.recompute_flops == 7


def test_views_keep_their_base_alive_and_cost_nothing():
    tensors = (
        Tensor(0, "x", 0, None),
        Tensor(1, "a", 8, 0),
        Tensor(2, "view", 0, 1, alias_of=1),
        Tensor(3, "c", 4, 2),
    )
    ops = (Op(0, "a", "f", (0,), (1,)), Op(1, "v", "view", (1,), (2,)), Op(2, "c", "f", (2,), (3,)))
    graph = RematGraph(ops, tensors, 3, inputs=(0,))
    sim = simulate(graph, [0, 1, 2], 3)
    assert sim.timeline == (8, 8, 12)


def test_transient_bytes_count_only_while_the_op_runs():
    tensors = (Tensor(0, "x", 0, None), Tensor(1, "a", 8, 0))
    ops = (Op(0, "a", "f", (0,), (1,), transient_bytes=100),)
    sim = simulate(RematGraph(ops, tensors, 1, inputs=(0,)), [0], 1)
    assert sim.timeline == (108,)


@pytest.mark.parametrize(
    ("schedule", "boundary", "message"),
    [
        ([1, 0, 2], 2, "before any op produced it"),
        ([0, 2, 1], 1, "reads 'b' before any op produced it"),
        ([0, 1], 2, "never run"),
        ([0, 1, 2], 3, "late input"),
        ([0, 1, 2, 2], 2, "may not be recomputed run more than once: bb"),
    ],
)
def test_invalid_schedules_are_rejected(schedule, boundary, message):
    with pytest.raises(InvalidScheduleError, match=message):
        simulate(_step_graph(), schedule, boundary)


def test_forward_output_must_come_from_the_forward_part():
    with pytest.raises(InvalidScheduleError, match="before the boundary"):
        simulate(_step_graph(), [0, 1, 2], 1)
