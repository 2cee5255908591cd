"""Hugging Face transformers models by type name, randomly initialised (nothing is downloaded).

`hf_model("gpt2")` builds the model type's default configuration with a task head (causal LM,
masked LM, seq2seq LM or image classification) and `hf_inputs` makes a batch for it, labels
included, so the model returns its own loss. `size="tiny"` shrinks the configuration to a few
layers of a few dozen channels: what the tests run. Used by the tests, the benchmarks and
`remat analyze hf:TYPE`. transformers is imported only when a model is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class HfFamily:
    task: str
    """"causal-lm", "masked-lm", "seq2seq-lm" or "image-classification"."""
    tiny: dict[str, Any] = field(default_factory=dict)
    """Config overrides of the tests' tiny size."""


_DECODER_TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 256,
}
_ENCODER_TINY = {**_DECODER_TINY, "type_vocab_size": 2}
_VISION_TINY = {"num_labels": 10}

FAMILIES: dict[str, HfFamily] = {
    "gpt2": HfFamily(
        "causal-lm",
        {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512, "n_positions": 256},
    ),
    "llama": HfFamily("causal-lm", {**_DECODER_TINY, "num_key_value_heads": 2}),
    "mistral": HfFamily("causal-lm", {**_DECODER_TINY, "num_key_value_heads": 2}),
    "qwen2": HfFamily("causal-lm", {**_DECODER_TINY, "num_key_value_heads": 2}),
    "gpt_neox": HfFamily("causal-lm", _DECODER_TINY),
    "bert": HfFamily("masked-lm", _ENCODER_TINY),
    "roberta": HfFamily("masked-lm", {**_ENCODER_TINY, "max_position_embeddings": 258}),
    "distilbert": HfFamily(
        "masked-lm",
        {"n_layers": 2, "dim": 64, "n_heads": 4, "hidden_dim": 128, "vocab_size": 512},
    ),
    "t5": HfFamily(
        "seq2seq-lm",
        {
            "num_layers": 2,
            "d_model": 64,
            "num_heads": 4,
            "d_kv": 16,
            "d_ff": 128,
            "vocab_size": 512,
            "decoder_start_token_id": 0,
        },
    ),
    "bart": HfFamily(
        "seq2seq-lm",
        {
            "encoder_layers": 2,
            "decoder_layers": 2,
            "d_model": 64,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "vocab_size": 512,
            "max_position_embeddings": 256,
        },
    ),
    "vit": HfFamily(
        "image-classification",
        {
            **_VISION_TINY,
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "image_size": 32,
            "patch_size": 8,
        },
    ),
    "swin": HfFamily(
        "image-classification",
        {
            **_VISION_TINY,
            "image_size": 32,
            "patch_size": 2,
            "embed_dim": 16,
            "depths": [1, 1],
            "num_heads": [2, 4],
            "window_size": 4,
        },
    ),
    "convnext": HfFamily(
        "image-classification",
        {
            **_VISION_TINY,
            "image_size": 32,
            "hidden_sizes": [16, 32],
            "depths": [1, 1],
            "num_stages": 2,
        },
    ),
    "resnet": HfFamily(
        "image-classification",
        {**_VISION_TINY, "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1]},
    ),
}

_NO_ATTENTION = frozenset({"convnext", "resnet"})

_AUTO_CLASSES = {
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "image-classification": "AutoModelForImageClassification",
}


def hf_config(model_type: str, size: str = "default", **overrides: Any) -> Any:
    """The model type's configuration: its defaults, the tests' tiny size, plus `overrides`."""
    family = _family(model_type)
    import transformers

    settings = dict(family.tiny) if size == "tiny" else {}
    if size not in ("tiny", "default"):
        raise ValueError(f"size must be 'tiny' or 'default', got {size!r}")
    settings.update(overrides)
    return transformers.AutoConfig.for_model(model_type, **settings)


def hf_model(
    model_type: str,
    size: str = "default",
    *,
    attn_implementation: str | None = "sdpa",
    **overrides: Any,
) -> nn.Module:
    """A randomly initialised model of `model_type` with its task head, in training mode.

    `attn_implementation` applies to models with attention ("sdpa", "eager"); None: the
    model's default."""
    import transformers

    config = hf_config(model_type, size, **overrides)
    task = _family(model_type).task
    auto = getattr(transformers, _AUTO_CLASSES[task])
    attention = (
        {}
        if task == "image-classification" and model_type in _NO_ATTENTION
        else {"attn_implementation": attn_implementation}
    )
    model = auto.from_config(config, **attention)
    return model.train()


def hf_inputs(
    model: nn.Module, batch: int = 2, seq: int = 64, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch for `model` (from `hf_model`), with labels: the model returns its loss."""
    config = model.config
    task = _family(config.model_type).task
    generator = torch.Generator().manual_seed(seed)
    if task == "image-classification":
        size = getattr(config, "image_size", 224)
        channels = getattr(config, "num_channels", 3)
        pixels = torch.randn(batch, channels, size, size, generator=generator)
        labels = torch.randint(0, config.num_labels, (batch,), generator=generator)
        return {"pixel_values": pixels, "labels": labels}
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    if task == "seq2seq-lm":
        labels = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
        return {"input_ids": ids, "labels": labels}
    return {"input_ids": ids, "labels": ids.clone()}


def _family(model_type: str) -> HfFamily:
    if model_type not in FAMILIES:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def with_per_block_checkpointing(model: nn.Module) -> nn.Module:
    """`model` with each repeated block checkpointed, the manual option remat is held against:
    HF's activation (gradient) checkpointing, non-reentrant, where the model supports it, else
    `torch.utils.checkpoint` around every block of its ModuleLists of two or more blocks
    (ResNet's and ConvNeXt's stages). Changes `model` in place and returns it."""
    if getattr(model, "supports_gradient_checkpointing", False):
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the name from transformers 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return model
    blocks = [
        block
        for module in model.modules()
        if isinstance(module, nn.ModuleList) and len(module) >= 2
        for block in module
    ]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ModuleList of blocks to checkpoint")
    for block in blocks:
        block.forward = _checkpointed(block.forward)
    return model


def _checkpointed(forward: Any) -> Any:
    from torch.utils.checkpoint import checkpoint

    def run(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
