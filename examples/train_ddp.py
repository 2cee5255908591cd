"""Train a small GPT under DDP with remat, one byte budget per rank (CPU, gloo).

    torchrun --nproc_per_node 2 examples/train_ddp.py            # budget: 0.7 of plain DDP's
    torchrun --nproc_per_node 2 examples/train_ddp.py --budget 12MiB --steps 20

Each rank measures plain DDP's peak for one step (forward + backward, the budget's measure),
then trains the same model under `remat.compile(DDP(model), budget=...)` and prints its
measured peak against the budget. On CUDA, pass --device cuda (NCCL).
"""

from __future__ import annotations

import argparse
import os
import time

import ranks  # examples/ranks.py, beside this script
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import remat
from remat.budget import format_bytes, parse_budget
from remat.examples import GPT, GPTConfig


def main() -> None:
    args = _arguments()
    device = torch.device(args.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        _train(args, rank, device)
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace, rank: int, device: torch.device) -> None:
    config = GPTConfig(vocab_size=256, block_size=args.seq, n_layer=4, n_head=4, n_embd=128)
    config = GPTConfig(**{**config.__dict__, "dropout": 0.0})
    torch.manual_seed(0)  # the same initial weights on every rank
    model = GPT(config).to(device)
    data = torch.Generator().manual_seed(rank)  # each rank its own batches

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), generator=data)
        return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)

    tokens = batch()
    plain_model = GPT(config).to(device)
    plain_model.load_state_dict(model.state_dict())
    plain = DDP(plain_model, bucket_cap_mb=args.bucket_mb)
    plain_peak = ranks.step_peak(plain, tokens, device)
    budget = parse_budget(args.budget)
    budget_bytes = budget.resolve(plain_peak)  # a fraction is of plain DDP's measured peak
    del plain, plain_model

    compiled = remat.compile(DDP(model, bucket_cap_mb=args.bucket_mb), budget=budget_bytes)
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
    graphs = len(next(iter(compiled.remat_plans.values())).graphs)
    print(
        f"rank {rank}: plain DDP peak {format_bytes(plain_peak)}, budget "
        f"{format_bytes(budget_bytes)}, remat peak {format_bytes(peak)} "
        f"({'within' if peak <= budget_bytes else 'OVER'} budget; {graphs} graphs planned "
        f"together); {args.steps} steps in {elapsed:.1f}s",
        flush=True,
    )


def _arguments() -> argparse.Namespace:
    parser = ranks.parser(__doc__.splitlines()[0], default_budget="0.7")
    parser.add_argument("--bucket-mb", type=float, default=1.0)
    return ranks.parse(parser)


if __name__ == "__main__":
    main()
