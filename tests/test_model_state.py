"""remat.model_state: a call's effects on buffers and random generators, undone."""

from __future__ import annotations

import torch
from torch import nn

from remat.model_state import ModelState


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5))


def test_running_statistics_updated_eagerly_are_put_back() -> None:
    # Eager batch norm updates its running statistics inside the kernel, leaving their
    # version counters as they were: the counters alone would miss them.
    model = _model()
    before = [b.clone() for b in model.buffers()]
    state = ModelState.save(model)
    model(torch.randn(32, 8))
    assert not torch.equal(model[1].running_mean, before[0])
    state.restore()
    for buffer, saved in zip(model.buffers(), before, strict=True):
        assert torch.equal(buffer, saved)


def test_the_call_draws_the_same_random_numbers_again() -> None:
    model, x = _model(), torch.randn(32, 8)
    state = ModelState.save(model)
    first = model(x)
    state.restore()
    assert torch.equal(model(x), first)  # same dropout mask, same statistics
