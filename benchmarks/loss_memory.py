"""What common losses hold, measured: the peak of `loss(outputs).backward()` in output sizes.

remat cannot see a loss computed outside the model; its default `loss_reserve` is sized from
this table (`remat.capture.LOSS_TEMPORARIES`). Run: `python -m benchmarks.loss_memory`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from remat.measure import measure_peak

BATCH, TOKENS, VOCAB = 4, 128, 1024


def losses() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, VOCAB, (BATCH * TOKENS,), generator=generator)
    target = torch.randn(BATCH, TOKENS, VOCAB, generator=generator)
    return {
        "cross_entropy": lambda z: F.cross_entropy(z.view(-1, VOCAB), labels),
        "cross_entropy, label_smoothing=0.1": lambda z: F.cross_entropy(
            z.view(-1, VOCAB), labels, label_smoothing=0.1
        ),
        "mse_loss": lambda z: F.mse_loss(z, target),
        "square().mean()": lambda z: z.square().mean(),
        "sum()": lambda z: z.sum(),
    }


def peak_in_outputs(loss: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The loss's forward+backward peak over the outputs it reads, in multiples of their bytes
    (the outputs' gradient included, the outputs themselves not)."""
    outputs = torch.randn(BATCH, TOKENS, VOCAB, requires_grad=True)

    def step() -> None:
        loss(outputs).backward()

    def setup() -> None:
        outputs.grad = None

    peak = measure_peak(step, "cpu", setup=setup).peak_bytes
    return peak / (outputs.numel() * outputs.element_size())


def main() -> None:
    print("loss                                 peak / output bytes (gradient included)")
    for name, loss in losses().items():
        print(f"{name:36s} {peak_in_outputs(loss):.2f}")


if __name__ == "__main__":
    main()
