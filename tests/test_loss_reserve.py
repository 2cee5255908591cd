"""A loss computed outside the model: remat's default reserve covers what common losses hold."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import remat
import remat.capture
from remat.measure import measure_peak

VOCAB = 1024


def _model() -> nn.Module:
    """A model that returns logits wider than its activations: its loss's temporaries count."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                         nn.Linear(128, VOCAB))  # fmt: skip


LOSSES = {
    "cross_entropy": lambda out, y: F.cross_entropy(out, y),
    "mse": lambda out, y: F.mse_loss(out, torch.zeros_like(out)),
    "square_mean": lambda out, y: out.square().mean(),
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_the_default_loss_reserve_keeps_a_step_with_an_outside_loss_within_budget(loss_name):
    torch._dynamo.reset()
    loss = LOSSES[loss_name]
    x, y = torch.randn(512, 64), torch.randint(0, VOCAB, (512,))
    model = _model()
    compiled = remat.compile(model, budget=1.0)

    def step() -> None:
        loss(compiled(x), y).backward()

    step()
    budget = compiled.remat_plan.step_budget_bytes
    measured = measure_peak(step, "cpu", setup=lambda: model.zero_grad(set_to_none=True))
    assert measured.peak_bytes <= budget, f"measured {measured.peak_bytes} > budget {budget}"


def test_one_output_sized_reserve_would_not_have_been_enough(monkeypatch):
    """The check above can fail: with the former default (one temporary), it does."""
    monkeypatch.setattr(remat.capture, "LOSS_TEMPORARIES", 1)
    with pytest.raises(AssertionError, match="measured"):
        test_the_default_loss_reserve_keeps_a_step_with_an_outside_loss_within_budget("square_mean")
