"""How well remat's recompute-time estimates match the step: `python -m benchmarks.recompute_cost`.

For each workload, remat.compile plans the step at budgets below the keep-all peak, with op
times from the roofline (`timing="estimate"`) and measured once per op (`timing="measure"`).
The plan's estimated recompute time (summed over the step's graphs) is set against the measured
one: the plan's median step time less the median step time of remat at budget 1.0 (the same fx
code with nothing recomputed), timed in interleaved rounds so drift hits every variant alike.

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

import remat
from remat.examples import GPT, GPTConfig, SmallResNet
from remat.examples.cnn import ResNetConfig
from remat.measure import time_step

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.7, 0.5)
TIMINGS = ("estimate", "measure")


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


def _estimated(compiled: remat.RematModule) -> tuple[float, float]:
    """The step's plans: estimated recompute seconds and recompute FLOPs, summed over graphs."""
    graphs = [g for step in compiled.remat_plans.values() for g in step.graphs]
    seconds = sum(g.plan.recompute_time for g in graphs)
    return seconds, sum(g.plan.recompute_flops for g in graphs) / 1e9


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
        )
        rows.append(row)
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(
            f"{workload.name}: budget {fraction} timing={timing}: estimated {row.estimated_ms:.1f}"
            f" ms, measured {row.measured_ms:.1f} ms [{row.measured_q1_ms:.1f}, "
            f"{row.measured_q3_ms:.1f}], estimated/measured {shown}, {gflop:.2f} GFLOP",
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
