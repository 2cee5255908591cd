"""The model families every end-to-end test runs: small enough for a CPU test run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from remat.examples import GPT, GPTConfig, ResidualMLP, ResNetConfig, SmallResNet, UNet


@dataclass(frozen=True)
class ModelCase:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[Any, ...]]
    loss: Callable[[Any], torch.Tensor]
    kwargs: Callable[[], dict[str, Any]] = dict


class DictOutputs(nn.Module):
    """Several outputs in a dict, with a tuple, a non-tensor and a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.head_a = nn.Linear(64, 8)
        self.head_b = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> dict[str, Any]:
        h = self.encoder(x)
        a = self.head_a(h) * scale
        return {"a": a, "pair": (self.head_b(h), a.detach()), "note": "ok", "n": x.shape[0]}


class InPlace(nn.Module):
    """In-place activations, += on the residual, and a mul_ on a fresh tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).relu_()
        g = self.fc2(h)
        g += h
        g.mul_(0.5)
        return self.fc3(torch.sigmoid_(g))


class PartlyFrozen(nn.Module):
    """A frozen embedding-like first layer and a trainable rest; the input needs grad too."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(32, 64)
        self.frozen.requires_grad_(False)
        self.body = ResidualMLP(64, 3, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.tanh(self.frozen(x)) * x.mean())


def _gpt_tiny() -> GPT:
    return GPT(
        GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.2)
    )


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 128, (4, 32), generator=generator)
    return idx, torch.roll(idx, -1, dims=1)


CASES = [
    ModelCase(
        "mlp",
        lambda: ResidualMLP(64, 4, 128),
        lambda: (torch.randn(32, 64, generator=torch.Generator().manual_seed(1)),),
        lambda out: out.square().mean(),
    ),
    ModelCase(
        "cnn_batchnorm",
        lambda: SmallResNet(ResNetConfig(widths=(8, 16), blocks_per_stage=1, num_classes=10)),
        lambda: (torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)),),
        lambda out: F.cross_entropy(out, torch.arange(out.shape[0]) % 10),
    ),
    ModelCase("gpt_dropout", _gpt_tiny, _tokens, lambda out: out[1]),
    ModelCase(
        "unet_skips",
        lambda: UNet(channels=3, base=4, depth=2, classes=2),
        lambda: (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)),),
        lambda out: out.square().mean(),
    ),
    ModelCase(
        "dict_outputs",
        DictOutputs,
        lambda: (torch.randn(16, 32, generator=torch.Generator().manual_seed(5)),),
        lambda out: out["a"].square().mean() + out["pair"][0].abs().mean(),
        lambda: {"scale": 0.5},
    ),
    ModelCase(
        "in_place",
        InPlace,
        lambda: (torch.randn(16, 32, generator=torch.Generator().manual_seed(6)),),
        lambda out: out.square().mean(),
    ),
    ModelCase(
        "frozen_params",
        PartlyFrozen,
        lambda: (torch.randn(16, 32, generator=torch.Generator().manual_seed(7)).requires_grad_(),),
        lambda out: out.square().mean(),
    ),
]
