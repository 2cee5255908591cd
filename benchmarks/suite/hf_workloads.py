"""The hf suite's models: real Hugging Face architectures from `remat.hf`, random init.

Every method runs `HfStep(model)`: forward(x, labels) calls the model with its own labels and
returns the loss the model computes (`model(input_ids=x, labels=labels).loss`), so the loss's
memory is counted the same way for everyone. Sizes are chosen so that activations, not
parameters or their gradients, dominate the step's peak: a vocabulary of 8192 (the embedding
gradient and the logits stay small next to the layers' activations), dropout off (so every
method's gradients can be compared with eager's; remat replays dropout masks anyway), no KV
cache. `quick` takes a few tenths of a second a step on one core of the development machine,
`full` a few seconds, `tiny` milliseconds (the harness's own tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from benchmarks.suite.workloads import Workload
from remat.hf import hf_config, hf_inputs, hf_model

SIZES = ("tiny", "quick", "full")
VOCAB = 8192


class HfStep(nn.Module):
    """A Hugging Face model with labels: forward(x, labels) returns the model's own loss."""

    def __init__(self, model: nn.Module, input_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_name: x, "labels": labels}).loss


@dataclass(frozen=True)
class HfSpec:
    """One model of the suite: a `remat.hf` type, its config per size, and its batch."""

    name: str
    model_type: str
    what: str
    """How the architecture is usually called ("GPT-2", "ViT-S-like", ...)."""
    config: Callable[[str], dict[str, Any]]
    """size -> config overrides of the type's default config."""
    batch: dict[str, int]
    seq: dict[str, int] = field(default_factory=dict)
    """Tokens per sequence by size; empty for vision models (the image makes the tokens)."""


def _layers(size: str) -> tuple[int, int]:
    """(layers, hidden size) of a size: 12 x 384 full, 4 x 256 quick, 2 x 32 tiny."""
    return {"tiny": (2, 32), "quick": (4, 256), "full": (12, 384)}[size]


def _heads(width: int) -> int:
    return max(2, width // 64)


def _gpt2(size: str) -> dict[str, Any]:
    layers, width = _layers(size)
    return {"n_layer": layers, "n_embd": width, "n_head": _heads(width), "vocab_size": VOCAB}


def _llama(size: str) -> dict[str, Any]:
    layers, width = _layers(size)
    heads = _heads(width)
    return {
        "num_hidden_layers": layers,
        "hidden_size": width,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": 8 * width // 3 // 16 * 16,
        "vocab_size": VOCAB,
    }


def _bert(size: str) -> dict[str, Any]:
    layers, width = _layers(size)
    return {
        "num_hidden_layers": layers,
        "hidden_size": width,
        "num_attention_heads": _heads(width),
        "intermediate_size": 4 * width,
        "vocab_size": VOCAB,
    }


def _vit(size: str) -> dict[str, Any]:
    layers, width = _layers(size)
    image, patch = (32, 8) if size == "tiny" else (224, 16)
    return {
        "num_hidden_layers": layers,
        "hidden_size": width,
        "num_attention_heads": _heads(width),
        "intermediate_size": 4 * width,
        "image_size": image,
        "patch_size": patch,
        "num_labels": 1000,
    }


def _t5(size: str) -> dict[str, Any]:
    layers, width = _layers(size)
    return {
        "num_layers": layers,
        "num_decoder_layers": layers,
        "d_model": width,
        "num_heads": _heads(width),
        "d_kv": 64 if size != "tiny" else 16,
        "d_ff": 4 * width,
        "vocab_size": VOCAB,
        "decoder_start_token_id": 0,  # T5Config's default lacks it; labels are shifted by it
    }


TOKENS = {"tiny": 16, "quick": 256, "full": 512}
SPECS: dict[str, HfSpec] = {
    "gpt2": HfSpec("gpt2", "gpt2", "GPT-2", _gpt2, {"tiny": 1, "quick": 2, "full": 2}, TOKENS),
    "llama": HfSpec("llama", "llama", "Llama", _llama, {"tiny": 1, "quick": 2, "full": 2}, TOKENS),
    "bert": HfSpec("bert", "bert", "BERT (masked LM)", _bert, {"tiny": 1, "quick": 2, "full": 2},
                   TOKENS),
    "vit": HfSpec("vit", "vit", "ViT-S-like", _vit, {"tiny": 1, "quick": 4, "full": 8}),
    "t5": HfSpec("t5", "t5", "T5 (encoder-decoder)", _t5, {"tiny": 1, "quick": 2, "full": 2},
                 TOKENS),
}  # fmt: skip


def build_model(spec: HfSpec, size: str) -> nn.Module:
    """The model at `size`, dropout off and no KV cache (seed the global generator first)."""
    defaults = hf_config(spec.model_type)
    overrides = {
        name: 0.0
        for name in dir(defaults)
        if ("dropout" in name or "pdrop" in name)
        and not name.startswith("_")
        and isinstance(getattr(defaults, name, None), float)
    }
    if hasattr(defaults, "use_cache"):
        overrides["use_cache"] = False
    return hf_model(spec.model_type, **overrides, **spec.config(size))


def _inputs(spec: HfSpec, size: str, model_config: Any) -> Callable[[torch.device], tuple]:
    """(x, labels) from remat.hf.hf_inputs, the same tensors for every method."""

    def inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        holder = SimpleNamespace(config=model_config)  # hf_inputs reads only the config
        made = hf_inputs(holder, spec.batch[size], spec.seq.get(size, 1), seed=0)  # type: ignore[arg-type]
        x = made["pixel_values"] if "pixel_values" in made else made["input_ids"]
        return x.to(device), made["labels"].to(device)

    return inputs


def _checkpointed_layers(model: nn.Module) -> list[str]:
    """Paths of the layers HF's gradient checkpointing wraps (its checkpointing layers)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [name for name, m in model.named_modules() if isinstance(m, GradientCheckpointingLayer)]


def workload(name: str, size: str) -> Workload:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    spec = SPECS[name]
    config = spec.config(size)
    model_config = hf_config(spec.model_type, **config)
    batch = spec.batch[size]
    shape = f"batch {batch} x {spec.seq[size]} tokens" if spec.seq else f"batch {batch} images"
    settings = ", ".join(f"{k}={v}" for k, v in config.items())
    input_name = "input_ids" if spec.seq else "pixel_values"
    return Workload(
        name,
        f"{spec.what} (hf:{spec.model_type} {settings}), {shape}",
        lambda: build_model(spec, size),
        _inputs(spec, size, model_config),
        None,
        _checkpointed_layers,
        step=lambda model: HfStep(model, input_name),
    )


def hf_workloads(size: str, names: tuple[str, ...] | None = None) -> list[Workload]:
    unknown = set(names or ()) - set(SPECS)
    if unknown:
        raise ValueError(f"unknown hf model(s) {sorted(unknown)}; choose from {sorted(SPECS)}")
    chosen = names or tuple(SPECS)
    return [workload(name, size) for name in chosen]
