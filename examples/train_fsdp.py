"""Train a small GPT under FSDP2 with remat, one byte budget per rank (CPU, gloo).

    torchrun --nproc_per_node 2 examples/train_fsdp.py            # budget: 0.75 of plain FSDP2's
    torchrun --nproc_per_node 2 examples/train_fsdp.py --budget 14MiB --steps 20

`fully_shard` on each block and the root, then `remat.compile(model, budget=...)`: remat
compiles each block on its own, plans the blocks' graphs together, and reserves what FSDP2
and the eager code around the blocks hold (measured once, in a probe step). Each rank measures
plain FSDP2's peak for one step (forward + backward, the budget's measure), trains under remat
and prints its measured peak against the budget. On CUDA, pass --device cuda (NCCL).
"""

from __future__ import annotations

import argparse
import os
import time

import ranks  # examples/ranks.py, beside this script
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

import remat
from remat.budget import format_bytes, parse_budget
from remat.examples import GPT, GPTConfig


def main() -> None:
    args = _arguments()
    device = torch.device(args.device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        _train(args, rank, device)
    finally:
        dist.destroy_process_group()


def _sharded(config: GPTConfig, device: torch.device) -> GPT:
    torch.manual_seed(0)  # the same initial weights on every rank
    model = GPT(config).to(device)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def _train(args: argparse.Namespace, rank: int, device: torch.device) -> None:
    config = GPTConfig(vocab_size=256, block_size=args.seq, n_layer=4, n_head=4, n_embd=128)
    config = GPTConfig(**{**config.__dict__, "dropout": 0.0})
    data = torch.Generator().manual_seed(rank)  # each rank its own batches

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), generator=data)
        return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)

    tokens = batch()
    plain = _sharded(config, device)
    plain_peak = ranks.step_peak(plain, tokens, device)
    budget_bytes = parse_budget(args.budget).resolve(plain_peak)  # a fraction is of plain's
    del plain

    compiled = remat.compile(_sharded(config, device), budget=budget_bytes)
    optimizer = torch.optim.AdamW(compiled.parameters(), lr=1e-3)
    started = time.perf_counter()
    for step in range(args.steps):
        tokens = batch()
        optimizer.zero_grad(set_to_none=True)
        _, loss = compiled(*tokens)
        loss.backward()
        optimizer.step()
        if rank == 0 and step % 5 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    elapsed = time.perf_counter() - started
    peak = ranks.step_peak(compiled, tokens, device)
    plans = next(iter(compiled.remat_plans.values()))
    print(
        f"rank {rank}: plain FSDP2 peak {format_bytes(plain_peak)}, budget "
        f"{format_bytes(budget_bytes)}, remat peak {format_bytes(peak)} "
        f"({'within' if peak <= budget_bytes else 'OVER'} budget; {len(plans.graphs)} block "
        f"graphs planned together); {args.steps} steps in {elapsed:.1f}s",
        flush=True,
    )


def _arguments() -> argparse.Namespace:
    parser = ranks.parser(__doc__.splitlines()[0], default_budget="0.75")
    return ranks.parse(parser)


if __name__ == "__main__":
    main()
