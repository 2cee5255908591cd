"""remat.fsdp: which modules are compiled one by one, and the probe's backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import remat
from remat.fsdp import backward_of, sharded_units

fsdp = pytest.importorskip("torch.distributed.fsdp")


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


HF_LAYERS = {"gpt2": "transformer.h", "llama": "model.layers"}


def _hf_sharded(name: str) -> nn.Module:
    from remat.hf import hf_model

    torch.manual_seed(0)
    sizes = {
        "gpt2": dict(n_layer=3, n_embd=128, n_head=4),
        "llama": dict(
            num_hidden_layers=3, hidden_size=128, num_attention_heads=4, intermediate_size=512
        ),
    }
    model = hf_model(name, vocab_size=2048, **sizes[name])  # fmt: skip
    model.config.use_cache = False
    for layer in model.get_submodule(HF_LAYERS[name]):
        fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    return model


@pytest.mark.parametrize("name", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_a_transformers_model_sharded_per_layer_trains_within_budget(process_group, name):
    """Model code remat did not write (keyword inputs, ModelOutput, dropout in GPT-2), one rank:
    every layer its own graph, the measured peak within the budget, plain FSDP2's gradients
    (the same dropout masks: the probe step puts the generator back)."""
    pytest.importorskip("transformers")
    from remat.measure import measure_peak

    ids = torch.randint(0, 2048, (4, 128), generator=torch.Generator().manual_seed(1))

    def peak(model: nn.Module) -> int:
        def step() -> None:
            model(input_ids=ids, labels=ids).loss.backward()

        setup = lambda: model.zero_grad(set_to_none=True)  # noqa: E731
        return measure_peak(step, "cpu", warmup=2, setup=setup).peak_bytes

    plain = _hf_sharded(name)
    budget = int(0.7 * peak(plain))
    compiled = remat.compile(_hf_sharded(name), budget=budget)
    assert peak(compiled) <= budget
    for model in (plain, compiled):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        model(input_ids=ids, labels=ids).loss.backward()
    for a, b in zip(plain.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a.grad.full_tensor(), b.grad.full_tensor(), rtol=1e-5, atol=1e-6)
    step = next(iter(compiled.remat_plans.values()))
    assert len(step.graphs) == 3 and step.runs_joint_plan
    assert step.outside_bytes > 0 and step.predicted_peak <= budget


def _two_sharded_blocks() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    for block in model:
        fsdp.fully_shard(block)
    return fsdp.fully_shard(model)


def test_inductor_under_fsdp2_is_refused_saying_what_runs(process_group):
    with pytest.raises(remat.UnsupportedModelError, match='inner="eager"'):
        remat.compile(_two_sharded_blocks(), budget=1.0, inner="inductor")


def test_blocks_the_user_compiled_are_refused(process_group):
    model = _two_sharded_blocks()
    model[0].compile()
    with pytest.raises(remat.UnsupportedModelError, match="already compiled"):
        remat.compile(model, budget=1.0)
