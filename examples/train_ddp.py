"""Train a small GPT under DDP with remat, one byte budget per rank (CPU, gloo).

    torchrun --nproc_per_node 2 examples/train_ddp.py            # budget: 0.7 of plain DDP's
    torchrun --nproc_per_node 2 examples/train_ddp.py --budget 12MiB --steps 20

Each rank measures plain DDP's peak for one step (forward + backward, the budget's measure),
then trains the same model under `remat.compile(DDP(model), budget=...)` and prints its
measured peak against the budget. On CUDA, pass --device cuda (NCCL).
"""

from __future__ import annotations

import argparse

import ranks  # examples/ranks.py, beside this script
import torch
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    parser = ranks.parser(__doc__.splitlines()[0], default_budget="0.7")
    parser.add_argument("--bucket-mb", type=float, default=1.0)
    ranks.run_ranks(ranks.parse(parser), _train)


def _train(args: argparse.Namespace, rank: int, device: torch.device) -> None:
    def wrapped() -> DDP:
        return DDP(ranks.gpt(args, device), bucket_cap_mb=args.bucket_mb)

    ranks.compare_with_plain(args, rank, device, "DDP", wrapped)


if __name__ == "__main__":
    main()
