"""Small, self-contained models for the demo, the tests and the benchmarks (random init)."""

from remat.examples.cnn import ResNetConfig, SmallResNet
from remat.examples.gpt import GPT, GPTConfig
from remat.examples.mlp import ResidualMLP
from remat.examples.unet import UNet
from remat.examples.vit import ViT, ViTConfig

__all__ = [
    "GPT",
    "GPTConfig",
    "ResNetConfig",
    "ResidualMLP",
    "SmallResNet",
    "UNet",
    "ViT",
    "ViTConfig",
]
