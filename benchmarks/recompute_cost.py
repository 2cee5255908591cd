"""How well remat's recompute-time estimates match the step: `python -m benchmarks.recompute_cost`.

For each workload, remat.compile plans the step at budgets below the keep-all peak, with op
times from the roofline (`timing="estimate"`: the built-in profile), from the roofline of this
machine measured at the run's thread count (`timing="calibrate"`) and measured once per op
(`timing="measure"`).
The plan's estimated recompute time (summed over the step's graphs) is set against two
measurements: (1) in the step: the time the step spends inside remat's `remat::recompute`
profiler ranges (remat.recompute_ranges: the recomputed ops as the step runs them, on the
step's own tensors), median over profiled steps; (2) by difference: the plan's step time less
that of remat at budget 1.0 (the same fx code with nothing recomputed), timed in interleaved
rounds so drift hits every variant alike. (1) is what the plan's recomputation costs in the
step, with the profiler's per-op overhead in it; (2) also holds what recomputing changes
around it (memory reuse, caches) and, on a shared machine, most of the noise.

Writes benchmarks/results/recompute-cost-<device>-<date>.json and prints one line per plan.
Step times on a shared 2-core machine are noisy: read the spread (the quartiles of the
difference between paired rounds) beside each figure.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import remat
from remat.examples import GPT, GPTConfig, SmallResNet
from remat.examples.cnn import ResNetConfig
from remat.measure import time_step
from remat.recompute_ranges import recompute_seconds

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.7, 0.5)
TIMINGS = ("estimate", "calibrate", "measure")


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], nn.Module]
    step: Callable[[nn.Module], None]


def _gpt() -> Workload:
    config = GPTConfig(vocab_size=2048, block_size=256, n_layer=4, n_head=4, n_embd=256)
    tokens = torch.randint(
        0, config.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0)
    )
    return Workload(
        "gpt 4x256, batch 8x256",
        lambda: GPT(config),
        lambda model: model(tokens).float().square().mean().backward(),
    )


def _resnet() -> Workload:
    config = ResNetConfig(widths=(32, 64, 128), blocks_per_stage=2, num_classes=10)
    images = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return Workload(
        "resnet 32-64-128 x2, batch 16x64^2",
        lambda: SmallResNet(config),
        lambda model: model(images).square().mean().backward(),
    )


@dataclass(frozen=True)
class Row:
    workload: str
    budget: float
    timing: str
    estimated_ms: float
    measured_ms: float
    measured_q1_ms: float
    measured_q3_ms: float
    ratio: float | None
    """Estimated over measured (None where the measured difference is not above zero)."""
    recompute_gflop: float
    in_step_ms: float
    """Median over profiled steps of the time spent in remat's recompute ranges."""
    in_step_q1_ms: float
    in_step_q3_ms: float
    in_step_ratio: float | None
    """Estimated over in_step_ms (None where nothing was recomputed)."""


def _estimated(compiled: remat.RematModule) -> tuple[float, float]:
    """The step's plans: estimated recompute seconds and recompute FLOPs, summed over graphs."""
    graphs = [g for step in compiled.remat_plans.values() for g in step.graphs]
    seconds = sum(g.plan.recompute_time for g in graphs)
    return seconds, sum(g.plan.recompute_flops for g in graphs) / 1e9


def _in_step(compiled: nn.Module, model: nn.Module, workload: Workload, steps: int) -> list[float]:
    """Seconds each of `steps` profiled steps spent in remat's recompute ranges."""
    seconds = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            workload.step(compiled)
        seconds.append(recompute_seconds(prof.events()))
    return seconds


def run(workload: Workload, rounds: int) -> list[Row]:
    torch.manual_seed(0)
    reference = workload.build()
    variants: dict[tuple[float, str], tuple[nn.Module, nn.Module]] = {}
    for fraction in (1.0, *FRACTIONS):
        for timing in TIMINGS if fraction < 1.0 else ("estimate",):
            torch._dynamo.reset()
            model = copy.deepcopy(reference)
            compiled = remat.compile(model, budget=fraction, timing=timing, time_limit=10.0)
            workload.step(compiled)
            variants[(fraction, timing)] = (compiled, model)
    samples: dict[tuple[float, str], list[float]] = {key: [] for key in variants}
    for _ in range(rounds):
        for key, (compiled, model) in variants.items():
            timing = time_step(
                lambda c=compiled: workload.step(c),
                "cpu",
                warmup=1,
                repeats=1,
                setup=lambda m=model: m.zero_grad(set_to_none=True),
            )
            samples[key].append(timing.median_s)
    base = samples[(1.0, "estimate")]
    rows = []
    for (fraction, timing), (compiled, _) in variants.items():
        if fraction == 1.0:
            continue
        differences = [a - b for a, b in zip(samples[(fraction, timing)], base, strict=True)]
        q1, median, q3 = statistics.quantiles(differences, n=4)
        estimated, gflop = _estimated(compiled)
        ratio = estimated / median if median > 0 else None
        in_step = _in_step(compiled, variants[(fraction, timing)][1], workload, rounds)
        s_q1, s_median, s_q3 = statistics.quantiles(in_step, n=4)
        row = Row(
            workload.name,
            fraction,
            timing,
            estimated * 1e3,
            median * 1e3,
            q1 * 1e3,
            q3 * 1e3,
            ratio,
            gflop,
            s_median * 1e3,
            s_q1 * 1e3,
            s_q3 * 1e3,
            estimated / s_median if s_median > 0 else None,
        )
        rows.append(row)
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        in_step_shown = f"{row.in_step_ratio:.2f}" if row.in_step_ratio is not None else "n/a"
        print(
            f"{workload.name}: budget {fraction} timing={timing}: estimated {row.estimated_ms:.1f}"
            f" ms; in the step {row.in_step_ms:.1f} ms [{row.in_step_q1_ms:.1f}, "
            f"{row.in_step_q3_ms:.1f}], estimated/in-step {in_step_shown}; by difference "
            f"{row.measured_ms:.1f} ms [{row.measured_q1_ms:.1f}, {row.measured_q3_ms:.1f}], "
            f"estimated/difference {shown}; {gflop:.2f} GFLOP",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for workload in (_gpt(), _resnet()) for row in run(workload, args.rounds)]
    date = dt.date.today().isoformat()
    out = args.out or RESULTS / f"recompute-cost-cpu-{date}.json"
    meta = {
        "date": date,
        "torch": torch.__version__,
        "threads": 1,
        "rounds": args.rounds,
        "command": "python -m benchmarks.recompute_cost",
    }
    out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
