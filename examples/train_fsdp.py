"""Train a small GPT under FSDP2 with remat, one byte budget per rank (CPU, gloo).

    torchrun --nproc_per_node 2 examples/train_fsdp.py            # budget: 0.75 of plain FSDP2's
    torchrun --nproc_per_node 2 examples/train_fsdp.py --budget 14MiB --steps 20
    torchrun --nproc_per_node 2 examples/train_fsdp.py --backend  # torchtitan's pattern

`fully_shard` on each block and the root, then `remat.compile(model, budget=...)`: remat
compiles each block on its own, plans the blocks' graphs together, and reserves what FSDP2
and the eager code around the blocks hold (measured once, in a probe step). Each rank measures
plain FSDP2's peak for one step (forward + backward, the budget's measure), trains under remat
and prints its measured peak against the budget. On CUDA, pass --device cuda (NCCL).

With --backend, torchtitan's pattern instead: each block compiled on its own with one remat
torch.compile backend for the step (`block.compile(backend=remat.backend(budget=...))`); the
second step measures what FSDP2 and the root hold, the step runs its joint plan from the third.
"""

from __future__ import annotations

import argparse

import ranks  # examples/ranks.py, beside this script
import torch
from torch.distributed.fsdp import fully_shard

import remat


def main() -> None:
    parser = ranks.parser(__doc__.splitlines()[0], default_budget="0.75")
    parser.add_argument(
        "--backend", action="store_true", help="compile each block with one remat backend"
    )
    ranks.run_ranks(ranks.parse(parser), _train)


def _blocks_compiled(model: torch.nn.Module, budget_bytes: int) -> torch.nn.Module:
    backend = remat.backend(budget=budget_bytes, inner="eager")
    for block in model.blocks:
        block.compile(backend=backend)
    return model


def _train(args: argparse.Namespace, rank: int, device: torch.device) -> None:
    def wrapped() -> torch.nn.Module:
        model = ranks.gpt(args, device)
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model

    compile_model = _blocks_compiled if args.backend else None
    ranks.compare_with_plain(args, rank, device, "FSDP2", wrapped, compile_model)


if __name__ == "__main__":
    main()
