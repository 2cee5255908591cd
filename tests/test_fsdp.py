"""remat.fsdp: which modules are compiled one by one, and the probe's backward."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from remat.fsdp import backward_of, sharded_units

fsdp = pytest.importorskip("torch.distributed.fsdp")


@pytest.fixture
def process_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_outermost_sharded_modules_below_the_root_are_the_units(process_group):
    inner = nn.Linear(4, 4)
    block = nn.Sequential(inner, nn.ReLU())
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(block), nn.Linear(4, 4))
    fsdp.fully_shard(inner)
    fsdp.fully_shard(block)
    fsdp.fully_shard(model)
    assert sharded_units(model) == [block]


def test_a_sharded_root_alone_is_its_own_unit(process_group):
    model = nn.Linear(4, 4)
    fsdp.fully_shard(model)
    assert sharded_units(model) == [model]
    assert sharded_units(nn.Linear(4, 4)) == []


@pytest.mark.parametrize(
    "wrap",
    [lambda logits, loss: loss, lambda logits, loss: (logits, loss),
     lambda logits, loss: (loss, logits), lambda logits, loss: {"logits": logits, "loss": loss}],
    ids=["scalar", "(logits, loss)", "(loss, logits)", "dict"],
)  # fmt: skip
def test_the_probe_differentiates_the_loss_a_model_returns(wrap):
    weight = torch.randn(4, 3, requires_grad=True)
    inputs = torch.randn(2, 4)
    logits = inputs @ weight
    assert backward_of(wrap(logits, logits.square().mean())) == 0
    (expected,) = torch.autograd.grad((inputs @ weight).square().mean(), weight)
    torch.testing.assert_close(weight.grad, expected)  # the loss's alone, not the logits'


def test_without_a_loss_the_outputs_are_differentiated_and_their_bytes_returned():
    weight = torch.randn(4, 3, requires_grad=True)
    outputs = torch.ones(2, 4) @ weight
    assert backward_of((outputs, torch.zeros(5))) == outputs.numel() * 4
    torch.testing.assert_close(weight.grad, torch.full((4, 3), 2.0))
