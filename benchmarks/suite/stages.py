"""Sequential views of the example models, for `checkpoint_sequential` (checkpoint-sqrt).

Each view is a list of single-argument modules sharing the model's parameters; run in order they
compute exactly the model's forward. The U-Net's long skips travel along the chain in the value
each stage passes on, `(x, skips)`, so a segment boundary keeps the skips made so far, as any
checkpointing of a U-Net must.
"""

from __future__ import annotations

import torch
from torch import nn

from remat.examples import GPT, ResidualMLP, SmallResNet, UNet, ViT


class _Call(nn.Module):
    """A stage that applies `fn(owner, x)`: a piece of the owner's forward."""

    def __init__(self, owner: nn.Module, fn, name: str) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn
        self.name = name

    def forward(self, x):
        return self.fn(self.owner, x)

    def extra_repr(self) -> str:
        return self.name


def _gpt_embed(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(idx.shape[1], device=idx.device)
    return model.drop(model.wte(idx) + model.wpe(positions))


def gpt_stages(model: GPT) -> list[nn.Module]:
    head = _Call(model, lambda m, x: m.lm_head(m.ln_f(x)), "ln_f + lm_head")
    return [_Call(model, _gpt_embed, "embeddings"), *model.blocks, head]


def mlp_stages(model: ResidualMLP) -> list[nn.Module]:
    residual = [_Call(layer, lambda m, x: x + m(x), "x + layer(x)") for layer in model.layers]
    return [*residual, model.head]


def resnet_stages(model: SmallResNet) -> list[nn.Module]:
    head = _Call(model, lambda m, x: m.head(x.mean(dim=(2, 3))), "pool + head")
    return [model.stem, *model.layers, head]


def vit_stages(model: ViT) -> list[nn.Module]:
    head = _Call(model, lambda m, x: m.head(m.norm(x)[:, 0]), "norm + head")
    return [model.embed, *model.blocks, head]


def _unet_down(index: int):
    def run(model: UNet, state):
        x, skips = state
        x = model.down[index](x)
        return model.pool(x), (*skips, x)

    return run


def _unet_up(index: int):
    def run(model: UNet, state):
        x, skips = state
        x = model.fuse[index](torch.cat([model.up[index](x), skips[-1]], dim=1))
        return x, skips[:-1]

    return run


def unet_stages(model: UNet) -> list[nn.Module]:
    chain: list[nn.Module] = [_Call(model, lambda m, x: (x, ()), "start")]
    chain += [_Call(model, _unet_down(i), f"down.{i}") for i in range(len(model.down))]
    chain.append(_Call(model, lambda m, s: (m.bottom(s[0]), s[1]), "bottom"))
    chain += [_Call(model, _unet_up(i), f"up.{i}") for i in range(len(model.up))]
    chain.append(_Call(model, lambda m, s: m.out(s[0]), "out"))
    return chain
