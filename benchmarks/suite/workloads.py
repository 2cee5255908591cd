"""The benchmark's models: five families, each at three sizes, with their loss and their blocks.

Every method runs the same `TrainStep` (model + loss in one module, so the loss's memory is
counted the same way for everyone) on the same inputs. A workload also names the model's blocks
(what `checkpoint-block` wraps) and gives a sequential view over them (what `checkpoint-sqrt`
segments), since only some of the models are an `nn.Sequential`.

Sizes: `full` takes about a second a step on one core of the development machine, `quick`
about a fifth of that, `tiny` a few milliseconds (the harness's own tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.suite import stages
from remat.examples import (
    GPT,
    GPTConfig,
    ResidualMLP,
    ResNetConfig,
    SmallResNet,
    UNet,
    ViT,
    ViTConfig,
)

SIZES = ("tiny", "quick", "full")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainStep(nn.Module):
    """`model` followed by its loss: forward(x, target) returns the scalar loss."""

    def __init__(self, model: nn.Module, loss: Loss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(self.model(x), target)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[], nn.Module]
    """The model, randomly initialised (seed the global generator first)."""
    inputs: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    """(x, target), the same tensors for every method."""
    loss: Loss | None
    """None: the model computes its own loss, and `step` makes the step module."""
    blocks: Callable[[nn.Module], list[str]]
    """Dotted paths of the blocks `checkpoint-block` wraps."""
    stages: Callable[[nn.Module], list[nn.Module]] | None = None
    """The model as a chain of single-argument stages (checkpoint_sequential's input); None:
    the model has no such view (the hf suite does not run checkpoint-sqrt)."""
    step: Callable[[nn.Module], nn.Module] | None = None
    """model -> module called as (x, target) -> scalar loss; None: TrainStep(model, loss)."""

    def step_module(self, model: nn.Module) -> nn.Module:
        if self.step is not None:
            return self.step(model)
        if self.loss is None:
            raise ValueError(f"workload {self.name} has neither a loss nor a step")
        return TrainStep(model, self.loss)


def _generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(0)


def _token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def _mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, target)


def _children(path: str) -> Callable[[nn.Module], list[str]]:
    return lambda model: [
        f"{path}.{name}" for name, _ in model.get_submodule(path).named_children()
    ]


def gpt(size: str) -> Workload:
    layers, width, batch, seq, vocab = {
        "tiny": (2, 16, 2, 16, 64),
        "quick": (3, 128, 4, 128, 4096),
        "full": (4, 256, 4, 256, 4096),
    }[size]
    config = GPTConfig(vocab, seq, layers, max(2, width // 64), width, dropout=0.0)

    def inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, vocab, (batch, seq + 1), device=device, generator=_generator(device))
        return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()

    return Workload(
        "gpt",
        f"GPT decoder, {layers} layers x {width}, vocab {vocab}, batch {batch} x {seq} tokens",
        lambda: GPT(config),
        inputs,
        _token_loss,
        _children("blocks"),
        stages.gpt_stages,
    )


def mlp(size: str) -> Workload:
    width, depth, rows = {"tiny": (16, 4, 8), "quick": (256, 8, 256), "full": (512, 8, 384)}[size]

    def inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = _generator(device)
        x = torch.randn(rows, width, device=device, generator=g)
        return x, torch.randn(rows, width, device=device, generator=g)

    return Workload(
        "mlp",
        f"residual MLP, {depth} blocks x {width} (hidden {4 * width}), batch {rows}",
        lambda: ResidualMLP(width, depth, 4 * width),
        inputs,
        _mse,
        _children("layers"),
        stages.mlp_stages,
    )


def _images(batch: int, side: int, classes: int):
    def inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = _generator(device)
        x = torch.randn(batch, 3, side, side, device=device, generator=g)
        return x, torch.randint(0, classes, (batch,), device=device, generator=g)

    return inputs


def resnet(size: str) -> Workload:
    widths, batch, side = {
        "tiny": ((8, 16), 4, 8),
        "quick": ((16, 32, 64), 16, 32),
        "full": ((32, 64, 128), 16, 48),
    }[size]
    config = ResNetConfig(widths=widths, blocks_per_stage=2, num_classes=100)
    return Workload(
        "resnet_bn",
        f"ResNet (BatchNorm), widths {widths}, 2 blocks/stage, batch {batch} x {side}^2",
        lambda: SmallResNet(config),
        _images(batch, side, 100),
        F.cross_entropy,
        _children("layers"),
        stages.resnet_stages,
    )


def unet(size: str) -> Workload:
    base, batch, side = {"tiny": (4, 2, 16), "quick": (16, 4, 64), "full": (16, 8, 112)}[size]

    def inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = _generator(device)
        x = torch.randn(batch, 3, side, side, device=device, generator=g)
        return x, torch.randn(batch, 2, side, side, device=device, generator=g)

    def blocks(model: nn.Module) -> list[str]:
        return [*_children("down")(model), "bottom", *_children("fuse")(model)]

    return Workload(
        "unet",
        f"U-Net with long skips, base {base}, depth 3, batch {batch} x {side}^2",
        lambda: UNet(3, base, 3, 2),
        inputs,
        _mse,
        blocks,
        stages.unet_stages,
    )


def vit(size: str) -> Workload:
    dim, depth, heads, batch, side, patch = {
        "tiny": (16, 2, 2, 2, 8, 4),
        "quick": (96, 4, 3, 16, 32, 4),
        "full": (192, 6, 3, 32, 64, 8),
    }[size]
    config = ViTConfig(side, patch, 3, 100, dim, depth, heads)
    return Workload(
        "vit",
        f"ViT, {depth} blocks x {dim}, {config.num_patches} patches + cls, batch {batch}",
        lambda: ViT(config),
        _images(batch, side, 100),
        F.cross_entropy,
        _children("blocks"),
        stages.vit_stages,
    )


FAMILIES: dict[str, Callable[[str], Workload]] = {
    "gpt": gpt,
    "mlp": mlp,
    "resnet_bn": resnet,
    "unet": unet,
    "vit": vit,
}


def workloads(size: str, names: tuple[str, ...] | None = None) -> list[Workload]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    unknown = set(names or ()) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; choose from {sorted(FAMILIES)}")
    return [FAMILIES[name](size) for name in (names or tuple(FAMILIES))]
