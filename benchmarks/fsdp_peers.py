"""remat vs FSDP2's checkpointing, per rank: `python -m benchmarks.fsdp_peers [--out FILE]`.

Spawns 2 ranks (gloo, CPU). The model: remat's GPT example (6 blocks x 256, vocab 2048, no
dropout), batch 8 x 256 tokens per rank, `fully_shard` on each block and the root. Per rank,
measured in one run, one after the other:

- plain FSDP2;
- per-block checkpointing (torchtitan's "full" activation checkpointing: each block under
  `torch.utils.checkpoint`, applied before `fully_shard`);
- selective checkpointing (SAC: each block under `torch.utils.checkpoint` with a policy that
  saves matmul and attention outputs, torchtitan's op-level save list);
- `remat.compile` at each checkpointing's peak (the largest over the ranks) as its budget, and
  at 0.8 of plain FSDP2's; a budget below remat's floor is recorded with the floor it names;
- the torch.compile backend in torchtitan's pattern (each block `.compile(backend=b)`, one
  remat backend for the step) at each checkpointing's peak;
- for each remat run, the seconds of its first three training calls (compiles, the probe step
  that measures what FSDP2 holds, recompiles under the joint plan): the first-call cost.

The training step is nanoGPT's (`logits, loss = model(x, y); loss.backward()`: the logits
stay alive through the backward, as remat assumes of a caller); `--drop-logits` trains with
`model(x, y)[1].backward()` instead (HF Trainer and torchtitan free the logits first).
Peak: `remat.measure_peak` (forward + backward, the budget's measure). Time: median of 7
steps of each, timed round-robin (one step of each per round, ranks in step), so drift falls
on all alike.
Gradients of each run against plain FSDP2's (relative error, max over parameters). Results: a
JSON list per rank, and a table on rank 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

import remat
from remat.examples import GPT, GPTConfig
from remat.measure import measure_peak

WORLD = 2
CONFIG = GPTConfig(vocab_size=2048, block_size=256, n_layer=6, n_head=8, n_embd=256, dropout=0.0)
BATCH = 8
SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
}


class Checkpointed(nn.Module):
    """A block whose forward runs under torch.utils.checkpoint (with `context_fn` if given)."""

    def __init__(self, block: nn.Module, context_fn: Callable | None = None) -> None:
        super().__init__()
        self.block = block
        self._context = {"context_fn": context_fn} if context_fn is not None else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False, **self._context)


def _save_matmuls(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    if op in SAVED_OPS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _sac_context() -> object:
    return create_selective_checkpoint_contexts(_save_matmuls)


def _model(wrap: str = "none") -> GPT:
    torch.manual_seed(0)  # the same initial weights on every rank and in every run
    model = GPT(CONFIG)
    if wrap == "block":
        model.blocks = nn.ModuleList(Checkpointed(b) for b in model.blocks)
    elif wrap == "sac":
        model.blocks = nn.ModuleList(Checkpointed(b, _sac_context) for b in model.blocks)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def _step(
    model: nn.Module, tokens: tuple[torch.Tensor, torch.Tensor], drop_logits: bool
) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        if drop_logits:  # HF Trainer's and torchtitan's loops: the logits go before backward
            model(*tokens)[1].backward()
            return
        logits, loss = model(*tokens)  # nanoGPT's loop: the logits stay alive through backward
        loss.backward()

    return step


def _peak_and_grads(
    model: nn.Module, tokens: tuple[torch.Tensor, torch.Tensor], drop_logits: bool
) -> dict:
    step = _step(model, tokens, drop_logits)
    # zero_grad inside the step frees last step's gradients: setup frees them before it
    peak = measure_peak(step, "cpu", warmup=2, setup=lambda: model.zero_grad(set_to_none=True))
    step()
    grads = [p.grad.full_tensor() for p in model.parameters()]
    return {"peak": peak.peak_bytes, "grads": grads}


def _backend_model(budget: int) -> nn.Module:
    """torchtitan's pattern: the sharded model with each block compiled on its own, one remat
    backend for the step's budget."""
    model = _model()
    backend = remat.backend(budget=budget, inner="eager")
    for block in model.blocks:
        block.compile(backend=backend)
    return model


def _first_calls(
    model: nn.Module, tokens: tuple[torch.Tensor, torch.Tensor], drop_logits: bool
) -> list[float]:
    """Seconds of each of the first three training calls (ranks in step)."""
    step = _step(model, tokens, drop_logits)
    seconds = []
    for _ in range(3):
        dist.barrier()
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def _interleaved_times(steps: dict[str, Callable[[], None]], rounds: int = 7) -> dict[str, float]:
    """Median seconds per step of each, timed round-robin (one step of each per round), so
    the machine's drift over the run falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            dist.barrier()
            started = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in samples.items()}


def _agreed_max(value: int) -> int:
    """The largest of the ranks' values: one budget for every rank."""
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _grad_error(reference: list[torch.Tensor], grads: list[torch.Tensor]) -> float:
    return max(((a - b).norm() / a.norm()).item() for a, b in zip(reference, grads, strict=True))


def _worker(rank: int, store: str, out: str, drop_logits: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    # Every remat run compiles the same Block.forward afresh: past Dynamo's default limit of
    # 8 cache entries per code object it would run the blocks eagerly (no remat, no error).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 256
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    try:
        data = torch.randint(
            0, CONFIG.vocab_size, (BATCH, CONFIG.block_size + 1),
            generator=torch.Generator().manual_seed(rank),
        )  # fmt: skip
        tokens = (data[:, :-1].contiguous(), data[:, 1:].contiguous())
        models = {name: _model(wrap) for name, wrap in _PEERS.items()}
        runs = {name: _peak_and_grads(m, tokens, drop_logits) for name, m in models.items()}
        budgets = {
            f"remat at {peer}'s peak": _agreed_max(runs[peer]["peak"])
            for peer in ("checkpoint per block", "selective checkpoint (SAC)")
        }
        budgets["remat at 0.8 of plain FSDP2's peak"] = int(
            0.8 * _agreed_max(runs["plain FSDP2"]["peak"])
        )
        for peer in ("checkpoint per block", "selective checkpoint (SAC)"):
            budgets[f"remat backend at {peer}'s peak"] = budgets[f"remat at {peer}'s peak"]
        refused = {}
        for name, budget in budgets.items():
            compiled = (
                _backend_model(budget)
                if "backend" in name
                else remat.compile(_model(), budget=budget)
            )
            try:
                first_calls = _first_calls(compiled, tokens, drop_logits)
                result = _peak_and_grads(compiled, tokens, drop_logits)
            except remat.InfeasibleBudgetError as error:
                refused[name] = {"rank": rank, "run": name, "budget": budget, "floor": error.floor}
                continue
            models[name] = compiled
            result["budget"] = budget
            result["first_calls_s"] = first_calls
            if hasattr(compiled, "remat_plans"):
                result["outside"] = next(iter(compiled.remat_plans.values())).outside_bytes
            runs[name] = result
        steps = {name: _step(m, tokens, drop_logits) for name, m in models.items()}
        times = _interleaved_times(steps)
        for name, seconds in times.items():
            runs[name]["time_s"] = seconds
        reference = runs["plain FSDP2"]["grads"]
        rows = []
        for name, result in runs.items():
            row = {k: v for k, v in result.items() if k != "grads"}
            row["grad_error"] = _grad_error(reference, result["grads"])
            rows.append({"rank": rank, "run": name, **row})
        rows.extend(refused.values())
        Path(out, f"rank{rank}.json").write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


_PEERS = {
    "plain FSDP2": "none",
    "checkpoint per block": "block",
    "selective checkpoint (SAC)": "sac",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--drop-logits",
        action="store_true",
        help="train with `model(x, y)[1].backward()` (the logits freed before the backward)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spawn_args = (str(Path(tmp, "store")), tmp, args.drop_logits)
        mp.spawn(_worker, args=spawn_args, nprocs=WORLD)
        rows = [
            row for r in range(WORLD) for row in json.loads(Path(tmp, f"rank{r}.json").read_text())
        ]
    mib = 2**20
    plain = {row["rank"]: row for row in rows if row["run"] == "plain FSDP2"}
    print(
        f"{'run':<44} {'rank':>4} {'peak MiB':>9} {'budget':>8} {'time':>7} {'grad err':>9}"
        "  first 3 calls, s"
    )
    for row in rows:
        budget = f"{row['budget'] / mib:8.2f}" if "budget" in row else " " * 8
        if "floor" in row:
            print(f"{row['run']:<44} {row['rank']:>4} refused: floor {row['floor'] / mib:.2f} MiB")
            continue
        ratio = row["time_s"] / plain[row["rank"]]["time_s"]
        first = " ".join(f"{t:.1f}" for t in row.get("first_calls_s", ()))
        print(
            f"{row['run']:<44} {row['rank']:>4} {row['peak'] / mib:9.2f} {budget} "
            f"{ratio:6.2f}x {row['grad_error']:9.1e}  {first}"
        )
    if args.out:
        meta = {"device": "cpu", "world": WORLD, "torch": torch.__version__, "batch": BATCH}
        meta["loop"] = "drop logits" if args.drop_logits else "nanoGPT (logits held)"
        meta["model"] = {k: v for k, v in CONFIG.__dict__.items()}
        args.out.write_text(json.dumps({"setup": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
