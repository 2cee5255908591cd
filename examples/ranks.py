"""What the distributed examples share: their command line and the per-rank peak they report."""

from __future__ import annotations

import argparse

import torch

import remat


def step_peak(
    model: torch.nn.Module, tokens: tuple[torch.Tensor, ...], device: torch.device
) -> int:
    """Per-rank peak of a steady step (forward + backward of the loss): two warm-up calls (DDP
    rebuilds its buckets on the second one, freeing buffers the CPU profiler never saw made)."""

    def step() -> None:
        model(*tokens)[1].backward()

    def setup() -> None:
        model.zero_grad(set_to_none=True)

    return remat.measure_peak(step, device, warmup=2, setup=setup).peak_bytes


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
