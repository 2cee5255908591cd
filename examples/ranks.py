"""What the distributed examples share: the command line, the process group, the model and its
batches, the per-rank peak, and the training run that is compared with the plain engine."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

import remat
from remat.budget import format_bytes, parse_budget
from remat.examples import GPT, GPTConfig

Tokens = tuple[torch.Tensor, torch.Tensor]


def parser(description: str, default_budget: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument(
        "--budget", default=default_budget, help="bytes, '12MiB', or a fraction of plain"
    )
    arguments.add_argument("--steps", type=int, default=10)
    arguments.add_argument("--batch", type=int, default=4)
    arguments.add_argument("--seq", type=int, default=128)
    arguments.add_argument("--device", default="cpu")
    return arguments


def parse(arguments: argparse.ArgumentParser) -> argparse.Namespace:
    """Parsed, with a budget like "0.7" read as a fraction (of plain's measured peak)."""
    parsed = arguments.parse_args()
    if parsed.budget.replace(".", "", 1).isdigit() and "." in parsed.budget:
        parsed.budget = float(parsed.budget)
    return parsed


def run_ranks(
    args: argparse.Namespace, train: Callable[[argparse.Namespace, int, torch.device], None]
) -> None:
    """`train(args, rank, device)` in the process group torchrun set up (NCCL on CUDA)."""
    device = torch.device(args.device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        train(args, rank, device)
    finally:
        dist.destroy_process_group()


def gpt(args: argparse.Namespace, device: torch.device) -> GPT:
    """The examples' small GPT (4 x 128, vocab 256, no dropout), the same weights on every rank."""
    config = GPTConfig(vocab_size=256, block_size=args.seq, n_layer=4, n_head=4, n_embd=128)
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**config.__dict__, "dropout": 0.0})).to(device)


def batches(args: argparse.Namespace, rank: int, device: torch.device) -> Callable[[], Tokens]:
    """Random token batches, each rank its own."""
    data = torch.Generator().manual_seed(rank)

    def batch() -> Tokens:
        tokens = torch.randint(0, 256, (args.batch, args.seq + 1), generator=data)
        return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)

    return batch


def step_peak(model: torch.nn.Module, tokens: Tokens, device: torch.device) -> int:
    """Per-rank peak of a steady step (forward + backward of the loss): two warm-up calls (DDP
    rebuilds its buckets on the second one, freeing buffers the CPU profiler never saw made)."""

    def step() -> None:
        model(*tokens)[1].backward()

    def setup() -> None:
        model.zero_grad(set_to_none=True)

    return remat.measure_peak(step, device, warmup=2, setup=setup).peak_bytes


def compare_with_plain(
    args: argparse.Namespace,
    rank: int,
    device: torch.device,
    engine: str,
    wrapped: Callable[[], torch.nn.Module],
    compile_model: Callable[[torch.nn.Module, int], torch.nn.Module] | None = None,
) -> None:
    """Measure the plain engine's per-rank peak on a fresh `wrapped()` model, train another
    under remat with a budget resolved against it (`remat.compile`, or `compile_model(model,
    budget_bytes)`), and print the remat peak."""
    batch = batches(args, rank, device)
    tokens = batch()
    plain_peak = step_peak(wrapped(), tokens, device)
    budget_bytes = parse_budget(args.budget).resolve(plain_peak)  # a fraction is of plain's
    if compile_model is None:
        compiled = remat.compile(wrapped(), budget=budget_bytes)
    else:
        compiled = compile_model(wrapped(), budget_bytes)
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
    peak = step_peak(compiled, tokens, device)
    if hasattr(compiled, "remat_plans"):
        graphs = len(next(iter(compiled.remat_plans.values())).graphs)
    else:  # the torch.compile backend: what its last step ran
        graphs = len(remat.last_plans().graphs)
    print(
        f"rank {rank}: plain {engine} peak {format_bytes(plain_peak)}, budget "
        f"{format_bytes(budget_bytes)}, remat peak {format_bytes(peak)} "
        f"({'within' if peak <= budget_bytes else 'OVER'} budget; {graphs} graphs planned "
        f"together); {args.steps} steps in {elapsed:.1f}s",
        flush=True,
    )
