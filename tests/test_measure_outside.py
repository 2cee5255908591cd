"""remat.measure.OutsideTracker: the bytes allocated outside remat's graphs, run by run (what
remat.compile's FSDP2 probe and the backend's measured step count)."""

from __future__ import annotations

import torch

from remat.measure import OutsideTracker, untracked


def test_a_storage_emptied_before_and_refilled_in_the_step_is_counted():
    """FSDP2 keeps each block's unsharded parameters from step to step, resized to 0 between
    uses and refilled by resizing and writing into them: the write makes it the step's."""
    kept = torch.empty(1024)
    kept.untyped_storage().resize_(0)
    untouched = torch.ones(1024)
    with OutsideTracker() as tracker:
        kept.untyped_storage().resize_(1024 * 4)
        kept.copy_(torch.ones(1024))
        assert tracker.live == 1024 * 4
        untouched.sum()  # read, not written: memory from before the step
        assert tracker.live == 1024 * 4
        kept.untyped_storage().resize_(0)  # freed again after use
        assert tracker.live == 0
    # at the copy: the refilled storage and the ones copied into it
    assert tracker.profile().before == (2 * 1024 * 4,)


def test_remats_graph_runs_step_aside_and_split_the_profile():
    graph = untracked(lambda x: x.exp().exp())  # its intermediate is not outside
    with OutsideTracker() as tracker:
        x = torch.ones(256)  # 1 KiB outside
        y = graph(x)
        del y
        torch.ones(512).sum()  # 2 KiB and its 4-byte sum, freed at once
    profile = tracker.profile()
    assert profile.during == (1024,)
    assert profile.before == (1024, 1024 + 2048 + 4)


def test_a_frozen_tracker_counts_nothing_more():
    with OutsideTracker() as tracker:
        kept = torch.ones(256)
        tracker.freeze()
        more = torch.ones(4096)
        assert tracker.profile().before == (1024,)
        assert tracker.live == 0
    del kept, more


def test_dynamo_compiles_under_the_tracker():
    """The tracker ignores compile internals: Dynamo hands the frame to its backend instead of
    running it eagerly (it would under a plain dispatch mode)."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: x.sin() + 1, backend=counting)
    with OutsideTracker():
        compiled(torch.ones(8))
    torch._dynamo.reset()
    assert len(graphs) == 1
