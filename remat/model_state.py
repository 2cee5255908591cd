"""What a training call changes besides its outputs, saved so the call can run again as if once.

A step that Dynamo splits into graphs is first run with plans made graph by graph; when those
break the budget, remat plans the step whole and runs the call again. For that second run to be
the only one the model sees, the buffers the forward updates in place (BatchNorm's running
statistics, step counters) and the random generators (dropout masks) are put back first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelState:
    buffers: tuple[tuple[torch.Tensor, torch.Tensor, int], ...]
    """(buffer, copy of its value, its version counter when copied)."""
    cpu_rng: torch.Tensor
    cuda_rng: tuple[tuple[int, torch.Tensor], ...]

    @classmethod
    def save(cls, model: nn.Module) -> ModelState:
        buffers = tuple(
            (buffer, buffer.detach().clone(), buffer._version) for buffer in model.buffers()
        )
        devices = sorted(
            {t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.is_cuda}
        )
        cuda_rng = tuple((index, torch.cuda.get_rng_state(index)) for index in devices)
        return cls(buffers, torch.get_rng_state(), cuda_rng)

    @property
    def nbytes(self) -> int:
        return sum(copy.numel() * copy.element_size() for _, copy, _ in self.buffers)

    def restore(self) -> None:
        """Put back the buffers the call changed and the generators' states."""
        with torch.no_grad():
            for buffer, copy, version in self.buffers:
                # A kernel that updates a buffer it was passed (batch norm's running statistics,
                # run eagerly) leaves its version as it was: the values are compared too.
                if buffer._version != version or not torch.equal(buffer, copy):
                    buffer.copy_(copy)
        torch.set_rng_state(self.cpu_rng)
        for index, state in self.cuda_rng:
            torch.cuda.set_rng_state(state, index)
