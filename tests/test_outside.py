"""remat.outside: what a probe step measured outside the graphs, put where the step holds it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from solvers.factories import chain

from remat.outside import OutsideProfile, placed_outside


def two_graphs() -> list:
    return [replace(chain(2), name="a"), replace(chain(2), name="b")]


PROFILE = OutsideProfile(during=(10, 20, 30, 40), before=(1, 2, 50, 3, 4))
"""Runs: a's forward, b's forward, (the loss stretch: 50), b's backward, a's backward."""


def test_each_graph_carries_what_is_held_outside_while_it_runs() -> None:
    a, b = PROFILE.applied(two_graphs())
    # b's backward: 30 outside while it runs, plus its own gradient (100), no longer held to
    # the step's end (its output gradient comes from outside: among the 30); a's backward: the
    # stretch before it (3) holds b's gradient until FSDP2 has reduce-scattered it (+100), then
    # a's own gradient (+100) and its output gradient, which b's backward made (+100).
    assert {op.transient_bytes for op in b.ops[b.boundary :]} == {130}
    assert {op.transient_bytes for op in a.ops[a.boundary :]} == {303}
    # A forward op may be recomputed in the backward: it carries the larger of the two.
    assert {op.transient_bytes for op in b.ops[: b.boundary]} == {130}
    assert {op.transient_bytes for op in a.ops[: a.boundary]} == {303}
    # The loss stretch is held at the boundary, in place of what capture guessed; gradients are
    # no longer outputs, output gradients no longer held from the boundary.
    assert (a.boundary_reserve, a.backward_reserve) == (b.boundary_reserve, 0) == (50, 0)
    assert a.outputs == a.forward_outputs == ()
    assert all(a.tensors[t].bytes == 0 for t in a.late_inputs)


def test_a_loss_the_caller_computes_is_held_from_the_boundary_to_the_end() -> None:
    profile = replace(PROFILE, caller_loss=7)
    a, _ = profile.applied(two_graphs())
    assert (a.boundary_reserve, a.backward_reserve) == (57, 7)
    assert profile.peak == PROFILE.peak + 7


def test_a_profile_that_does_not_match_the_step_is_not_placed() -> None:
    graphs = two_graphs()
    three_runs = OutsideProfile(during=(1, 2, 3), before=(0, 0, 0, 0))
    assert placed_outside(graphs, three_runs) is graphs
    assert placed_outside(graphs, None) is graphs
    assert placed_outside(graphs, PROFILE) is not graphs


def test_a_profile_needs_one_stretch_more_than_runs() -> None:
    with pytest.raises(ValueError, match="stretches"):
        OutsideProfile(during=(1, 2), before=(0, 0))
