"""Run a measurement on several CPU ranks (gloo), as torchrun would, and collect each rank's
result: what the distributed tests share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

WORLD = 2


def on_ranks(measure: Callable[..., dict], folder: Path, *args: Any) -> list[dict]:
    """`measure(rank, *args)` in each of WORLD spawned processes joined in one gloo group (a
    module-level function: it is pickled); their results, in rank order."""
    mp.spawn(_rank, args=(measure, str(folder), args), nprocs=WORLD)
    return [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(WORLD)]


def _rank(rank: int, measure: Callable[..., dict], folder: str, args: tuple) -> None:
    store = f"file://{Path(folder, 'store')}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=WORLD)
    try:
        Path(folder, f"rank{rank}.json").write_text(json.dumps(measure(rank, *args)))
    finally:
        dist.destroy_process_group()


def grad_error(reference: nn.Module, model: nn.Module) -> float:
    """The largest relative error of `model`'s gradients against `reference`'s, parameter by
    parameter (both after a backward)."""
    return max(
        ((a.grad - b.grad).norm() / a.grad.norm()).item()
        for a, b in zip(reference.parameters(), model.parameters(), strict=True)
    )
