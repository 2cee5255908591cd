"""The core pass's contracts, measured on the model families of the tests at benchmark sizes.

    python -m benchmarks.core [--quick] [--device cpu] [--out benchmarks/results]

For each model: eager's measured peak and step time; remat at budget 1.0 (nothing recomputed:
runtime overhead) and at two budgets between the floor and the keep-all peak. Each row records
the budget, predicted and measured peak (remat.measure_peak), the simulator's error, the step
time ratio to eager (median of interleaved repetitions), planning time and the solver's status.
Writes <out>/core-<device>-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import remat
from remat.examples import GPT, GPTConfig, ResidualMLP, ResNetConfig, SmallResNet, UNet
from remat.solvers import find_floor


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.device], tuple]
    loss: Callable[[object], torch.Tensor]


def _gpt(quick: bool) -> Workload:
    config = GPTConfig(
        vocab_size=4096,
        block_size=256,
        n_layer=4 if quick else 8,
        n_head=4,
        n_embd=256,
        dropout=0.1,
    )

    def inputs(device):
        idx = torch.randint(
            0,
            config.vocab_size,
            (8, 256),
            device=device,
            generator=torch.Generator(device).manual_seed(0),
        )
        return idx, torch.roll(idx, -1, 1)

    return Workload("gpt", lambda: GPT(config), inputs, lambda out: out[1])


def workloads(quick: bool) -> list[Workload]:
    def randn(*shape):
        return lambda device: (
            torch.randn(*shape, device=device, generator=torch.Generator(device).manual_seed(0)),
        )

    def classify(out):
        return F.cross_entropy(out, torch.arange(out.shape[0], device=out.device) % out.shape[1])

    return [
        Workload(
            "mlp",
            lambda: ResidualMLP(512, 8 if quick else 16, 2048),
            randn(512, 512),
            lambda out: out.square().mean(),
        ),
        Workload(
            "resnet_bn",
            lambda: SmallResNet(ResNetConfig(widths=(32, 64, 128), num_classes=100)),
            randn(32, 3, 64, 64),
            classify,
        ),
        _gpt(quick),
        Workload(
            "unet", lambda: UNet(3, 16, 3, 2), randn(8, 3, 64, 64), lambda out: out.square().mean()
        ),
    ]


def _step(model, loss, args):
    def run():
        loss(model(*args)).backward()

    return run


def _max_rel_grad_error(model, reference) -> float:
    return max(
        ((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-12)).item()
        for p, q in zip(model.parameters(), reference.parameters())
        if q.grad is not None
    )


def _measure(workload: Workload, budget, device, repeats: int, base) -> dict:
    """One remat configuration beside eager: peaks, interleaved timings, plan facts."""
    eager = copy.deepcopy(base)
    model = copy.deepcopy(base)
    args = workload.inputs(device)
    started = time.perf_counter()
    compiled = remat.compile(model, budget=budget)
    torch.manual_seed(1)
    _step(compiled, workload.loss, args)()
    compile_s = time.perf_counter() - started
    torch.manual_seed(1)
    _step(eager, workload.loss, args)()
    grad_error = _max_rel_grad_error(model, eager)
    report = compiled.remat_plan
    peaks = {}
    for name, net, owner in (("eager", eager, eager), ("remat", compiled, model)):
        peaks[name] = remat.measure_peak(
            _step(net, workload.loss, args),
            device,
            setup=lambda owner=owner: owner.zero_grad(set_to_none=True),
        ).peak_bytes
    times = {"eager": [], "remat": []}
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for name, net, owner in (("eager", eager, eager), ("remat", compiled, model)):
            owner.zero_grad(set_to_none=True)
            times[name].append(
                remat.time_step(
                    _step(net, workload.loss, args), device, warmup=0, repeats=1
                ).median_s
            )
    eager_s, remat_s = statistics.median(times["eager"]), statistics.median(times["remat"])
    return {
        "model": workload.name,
        "budget_arg": budget,
        "budget_bytes": report.step_budget_bytes,
        "keep_all_predicted": report.keep_all_peak,
        "predicted_peak": report.predicted_peak,
        "measured_peak": peaks["remat"],
        "eager_peak": peaks["eager"],
        "within_budget": peaks["remat"] <= report.step_budget_bytes,
        "sim_error": report.predicted_peak / peaks["remat"] - 1,
        "eager_step_s": eager_s,
        "remat_step_s": remat_s,
        "time_ratio": remat_s / eager_s,
        "time_spread": [min(times["remat"]), max(times["remat"])],
        "compile_s": compile_s,
        "plan_s": sum(g.plan_s for g in report.graphs),
        "ops": sum(g.ops for g in report.graphs),
        "solver_status": [g.status for g in report.graphs],
        "gap": [g.gap for g in report.graphs],
        "recompute_flops": sum(g.recompute_flops for g in report.graphs),
        "grad_rel_error": grad_error,
    }


def _budgets(workload: Workload, device, base) -> tuple[int, int, int]:
    probe = remat.compile(copy.deepcopy(base), budget=1.0)
    _step(probe, workload.loss, workload.inputs(device))()
    (graph_plan,) = probe.remat_plans[probe._planner.current_key].graphs
    floor = find_floor(graph_plan.captured.graph).bytes + graph_plan.held_elsewhere
    keep_all = probe.remat_plan.keep_all_peak
    return floor, floor + (keep_all - floor) // 3, floor + 2 * (keep_all - floor) // 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for workload in workloads(args.quick):
        torch.manual_seed(0)
        base = workload.build().to(device)
        _, low, high = _budgets(workload, device, base)
        for budget in (1.0, high, low):
            row = _measure(workload, budget, device, args.repeats, base)
            rows.append(row)
            print(json.dumps(row), flush=True)
    stamp = dt.date.today().isoformat()
    out = Path(args.out) / f"core-{device.type}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python -m benchmarks.core" + (" --quick" if args.quick else ""),
        "device": device.type,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": stamp,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown_table(rows))
    return 0


def markdown_table(rows: list[dict]) -> str:
    mib = 2**20
    lines = [
        "| model | budget | predicted | measured | eager peak | sim error | time vs eager "
        "| plan s | solver |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['budget_bytes'] / mib:.1f} MiB | {r['predicted_peak'] / mib:.1f} "
            f"| {r['measured_peak'] / mib:.1f} | {r['eager_peak'] / mib:.1f} "
            f"| {r['sim_error']:+.1%} | {r['time_ratio']:.2f}x | {r['plan_s']:.1f} "
            f"| {'/'.join(r['solver_status'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
