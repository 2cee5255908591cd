"""remat's torch.compile backend vs torch.compile's own activation_memory_budget, at matched peak.

    python -m benchmarks.backend_vs_torch [--quick] [--device cpu] [--repeats 7] [--threads 1]

For a GPT-style model and a CNN (remat.examples), and each PyTorch activation_memory_budget in
--torch-budgets (a fraction of saved activations between "recompute all" and the default
partition, patched with torch._functorch.config.patch around the compiling call only):

1. torch.compile(model) (Inductor, default partitioner under that knob): compile time (first
   step), measured step peak, step time;
2. torch.compile(model, backend="remat", options={"budget": <1.'s measured peak in bytes>}):
   the same three, and whether our measured peak stayed within the budget we were given.

Both run the same inputs and are measured the same way (remat.measure_peak: the allocator's own
records; remat.time_step, interleaved repetitions, median); each compiles with an empty Inductor
cache, so compile times are cold for both. Writes
<out>/backend-vs-torch-<device>-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import remat
from benchmarks.core import Workload
from remat.examples import GPT, GPTConfig, ResNetConfig, SmallResNet

TORCH_BUDGETS = (1.0, 0.5, 0.1)


class LossOnly(torch.nn.Module):
    """GPT returning only its loss, as a training step uses it: a returned logits tensor would
    get a materialized zero gradient from AOTAutograd, in torch.compile's step as in ours."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.model(idx, targets)[1]


def workloads(quick: bool) -> list[Workload]:
    gpt = GPTConfig(
        vocab_size=2048,
        block_size=128,
        n_layer=2 if quick else 4,
        n_head=4,
        n_embd=128 if quick else 256,
        dropout=0.1,
    )

    def tokens(device: torch.device) -> tuple:
        generator = torch.Generator(device).manual_seed(0)
        idx = torch.randint(0, gpt.vocab_size, (8, 128), device=device, generator=generator)
        return idx, torch.roll(idx, -1, 1)

    def images(device: torch.device) -> tuple:
        generator = torch.Generator(device).manual_seed(0)
        size = 32 if quick else 64
        return (torch.randn(16, 3, size, size, device=device, generator=generator),)

    def classify(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, torch.arange(out.shape[0], device=out.device) % out.shape[1])

    widths = (16, 32) if quick else (16, 32, 64)
    return [
        Workload("gpt", lambda: LossOnly(GPT(gpt)), tokens, lambda loss: loss),
        Workload(
            "cnn",
            lambda: SmallResNet(ResNetConfig(widths=widths, blocks_per_stage=1, num_classes=10)),
            images,
            classify,
        ),
    ]


def _step(model: Callable, workload: Workload, args: tuple) -> Callable[[], None]:
    def run() -> None:
        workload.loss(model(*args)).backward()

    return run


@dataclass
class _Variant:
    name: str
    module: torch.nn.Module
    compiled: Callable
    compile_s: float = 0.0
    peak: int = 0
    times: list[float] | None = None
    error: str | None = None


def _first_step(variant: _Variant, workload: Workload, args: tuple, torch_budget: float | None):
    """Compile on the first call; PyTorch's knob is patched around that call only. Each
    variant compiles with an empty Inductor cache (on disk and in memory), so compile_s is a
    cold compile for both, not a cache hit of an earlier row's identical kernels."""
    from torch._inductor.utils import fresh_cache

    knob = {} if torch_budget is None else {"activation_memory_budget": torch_budget}
    started = time.perf_counter()
    torch.manual_seed(1)
    with fresh_cache(), torch._functorch.config.patch(**knob):
        _step(variant.compiled, workload, args)()
    variant.compile_s = time.perf_counter() - started


def _grad_error(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    """Largest gradient difference over the largest reference gradient, all parameters: a
    parameter whose own gradient is near zero (cancellation) does not dominate."""
    pairs = [(p.grad, q.grad) for p, q in zip(model.parameters(), reference.parameters())]
    pairs = [(a, b) for a, b in pairs if b is not None]
    scale = max(b.abs().max().item() for _, b in pairs)
    return max((a - b).abs().max().item() for a, b in pairs) / max(scale, 1e-30)


def _measure(variants: list[_Variant], workload, args, device, repeats: int) -> None:
    for v in variants:
        v.peak = remat.measure_peak(
            _step(v.compiled, workload, args),
            device,
            setup=lambda v=v: v.module.zero_grad(set_to_none=True),
        ).peak_bytes
        v.times = []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for v in variants:
            v.module.zero_grad(set_to_none=True)
            timing = remat.time_step(_step(v.compiled, workload, args), device, warmup=0, repeats=1)
            v.times.append(timing.median_s)


def compare(workload: Workload, torch_budget: float, device, repeats: int, base) -> dict:
    """One matched pair: torch.compile at `torch_budget`, then remat at the peak it measured."""
    torch._dynamo.reset()
    args = workload.inputs(device)
    reference = copy.deepcopy(base)
    torch.manual_seed(1)
    _step(reference, workload, args)()
    theirs_module = copy.deepcopy(base)
    theirs = _Variant("torch", theirs_module, torch.compile(theirs_module))
    _first_step(theirs, workload, args, torch_budget)
    theirs_error = _grad_error(theirs_module, reference)
    budget = remat.measure_peak(
        _step(theirs.compiled, workload, args),
        device,
        setup=lambda: theirs_module.zero_grad(set_to_none=True),
    ).peak_bytes
    ours_module = copy.deepcopy(base)
    options = {"budget": budget, "inner": "inductor"}
    ours = _Variant(
        "remat", ours_module, torch.compile(ours_module, backend="remat", options=options)
    )
    row: dict = {"model": workload.name, "torch_budget": torch_budget, "budget_bytes": budget}
    try:
        _first_step(ours, workload, args, None)
    except torch._dynamo.exc.BackendCompilerFailed as failed:
        row["remat_error"] = str(failed.inner_exception)
        _measure([theirs], workload, args, device, repeats)
        return row | _summary("torch", theirs, theirs_error)
    ours_error = _grad_error(ours_module, reference)
    report = remat.last_plans()
    _measure([theirs, ours], workload, args, device, repeats)
    row |= _summary("torch", theirs, theirs_error) | _summary("remat", ours, ours_error)
    row |= {
        "remat_within_budget": ours.peak <= budget,
        "remat_predicted_peak": report.predicted_peak if report else None,
        "graphs": len(report.graphs) if report else None,
        "solver_status": [g.status for g in report.graphs] if report else None,
        "recompute_flops": sum(g.recompute_flops for g in report.graphs) if report else None,
        "time_ratio": row["remat_step_s"] / row["torch_step_s"],
        "inner_checks": [c.__dict__ for c in _inner_checks()],
    }
    return row


def _inner_checks() -> list:
    from remat.backend import last_backend

    backend = last_backend()
    return list(backend.inner_checks) if backend is not None else []


def _summary(prefix: str, v: _Variant, grad_error: float) -> dict:
    assert v.times is not None
    return {
        f"{prefix}_peak": v.peak,
        f"{prefix}_step_s": statistics.median(v.times),
        f"{prefix}_step_spread": [min(v.times), max(v.times)],
        f"{prefix}_compile_s": v.compile_s,
        f"{prefix}_grad_rel_error": grad_error,
    }


def eager_row(workload: Workload, device, repeats: int, base) -> dict:
    model = copy.deepcopy(base)
    args = workload.inputs(device)
    v = _Variant("eager", model, model)
    _measure([v], workload, args, device, repeats)
    return {
        "model": workload.name,
        "eager_peak": v.peak,
        "eager_step_s": statistics.median(v.times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--torch-budgets", default=",".join(map(str, TORCH_BUDGETS)))
    parser.add_argument("--models", default="gpt,cnn")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for every method (the suite's 1)"
    )
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw_argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch_budgets = [float(b) for b in args.torch_budgets.split(",")]
    rows, eager = [], []
    for workload in workloads(args.quick):
        if workload.name not in args.models.split(","):
            continue
        torch.manual_seed(0)
        base = workload.build().to(device)
        eager.append(eager_row(workload, device, args.repeats, base))
        print(json.dumps(eager[-1]), flush=True)
        for torch_budget in torch_budgets:
            rows.append(compare(workload, torch_budget, device, args.repeats, base))
            print(json.dumps(rows[-1]), flush=True)
    stamp = dt.date.today().isoformat()
    out = Path(args.out) / f"backend-vs-torch-{device.type}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(["python -m benchmarks.backend_vs_torch", *raw_argv]),
        "device": device.type,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": stamp,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg(),
    }
    out.write_text(json.dumps({"meta": meta, "eager": eager, "rows": rows}, indent=1))
    print(markdown_table(rows, eager))
    return 0


def markdown_table(rows: list[dict], eager: list[dict]) -> str:
    mib = 2**20
    eager_by_model = {e["model"]: e for e in eager}
    lines = [
        "| model | torch knob | torch peak = our budget | torch step | torch compile "
        "| remat peak | within budget | remat step | remat / torch | remat compile |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = eager_by_model.get(r["model"])
        if e is not None and r is rows[[x["model"] for x in rows].index(r["model"])]:
            lines.append(
                f"| {r['model']} (eager) | - | {e['eager_peak'] / mib:.1f} MiB "
                f"| {e['eager_step_s'] * 1e3:.0f} ms | - | - | - | - | - | - |"
            )
        theirs = (
            f"| {r['model']} | {r['torch_budget']:g} | {r['budget_bytes'] / mib:.1f} MiB "
            f"| {r['torch_step_s'] * 1e3:.0f} ms | {r['torch_compile_s']:.0f} s "
        )
        if "remat_error" in r:
            lines.append(theirs + f"| infeasible: {r['remat_error'][:60]} | - | - | - | - |")
            continue
        lines.append(
            theirs
            + f"| {r['remat_peak'] / mib:.1f} MiB | {'yes' if r['remat_within_budget'] else 'NO'} "
            f"| {r['remat_step_s'] * 1e3:.0f} ms | {r['time_ratio']:.2f}x "
            f"| {r['remat_compile_s']:.0f} s |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
