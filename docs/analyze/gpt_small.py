"""The model of docs/analyze.md: a 4-layer GPT-style decoder (remat.examples.GPT), random init.

    remat analyze docs/analyze/gpt_small.py:build --input "randint(512,(8,256))" ...

forward(idx, targets) returns (logits, loss); remat analyze back-propagates the loss.
"""

import torch

from remat.examples import GPT, GPTConfig


def build() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=128, dropout=0.1)
    return GPT(config)
