"""Planning time, plan cost and proven gap vs depth, on captured HF GPT-2 training steps.

    python -m benchmarks.planning_layers                        # 12 24 48 96 layers
    python -m benchmarks.planning_layers --layers 12 --fractions 0.5
    python -m benchmarks.planning_layers --layers 12 --fractions 0.5 --time-limit 15 --shipped-only
    python -m benchmarks.planning_layers --table benchmarks/results/planning-layers-cpu-<date>.json

Each depth is captured once (transformers GPT-2, 256 wide, 4 heads, vocab 8192, batch 2 x 256
tokens, random init; CPU) and planned by `auto` at fractions of its keep-all peak, with the
time limit the issue sets (5 s at 12 layers, growing with depth to 30 s at 96), once as shipped
and once without the repeated-blocks search (`templates=False`). Rows: planning seconds, the
plan's recompute time as a share of the step, the proven gap, and the plan's source. Writes the
rows to JSON and a plot (planning time, recompute and gap against depth) beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from remat.analysis.step import capture_step
from remat.budget import InfeasibleBudgetError
from remat.hf import hf_inputs, hf_model
from remat.ir import RematGraph
from remat.solvers import keep_all_plan, solve

RESULTS = Path(__file__).parent / "results"


def time_limit(layers: int) -> float:
    """5 s at 12 layers, proportional to depth, at most 30 s (96 layers)."""
    return min(30.0, 5.0 * layers / 12)


def captured(layers: int) -> RematGraph:
    torch.manual_seed(0)
    model = hf_model("gpt2", n_layer=layers, n_embd=256, n_head=4, vocab_size=8192,
                     n_positions=256)  # fmt: skip
    step = capture_step(model, (), hf_inputs(model, batch=2, seq=256))
    (graph,) = step.rematgraphs
    return graph


def row(
    graph: RematGraph, layers: int, fraction: float, templates: bool, limit: float | None = None
) -> dict[str, object]:
    keep_all = keep_all_plan(graph).predicted_peak
    budget = int(keep_all * fraction)
    limit = time_limit(layers) if limit is None else limit
    found: dict[str, object] = {
        "layers": layers, "ops": len(graph.ops), "fraction": fraction,
        "templates": templates, "time_limit_s": limit,
    }  # fmt: skip
    start = time.perf_counter()
    try:
        plan = solve(graph, budget, "auto", time_limit=limit, templates=templates)
    except InfeasibleBudgetError as error:
        found.update(planning_s=round(time.perf_counter() - start, 2), status="infeasible")
        found["floor_fraction"] = round(error.floor / keep_all, 4)
        return found
    found.update(
        planning_s=round(time.perf_counter() - start, 2),
        status=plan.status.value,
        recompute_pct=round(100 * plan.recompute_time / graph.total_time, 2),
        gap_pct=None if plan.gap is None else round(100 * plan.gap, 1),
        peak_over_budget=round(plan.predicted_peak / budget, 4),
        source=plan.notes[0] if plan.notes else "",
    )
    return found


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r["fraction"] for r in rows})
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for fraction in fractions:
        for templates, style in ((True, "-o"), (False, "--x")):
            chosen = [r for r in rows if r["fraction"] == fraction and r["templates"] == templates
                      and "recompute_pct" in r]  # fmt: skip
            if not chosen:
                continue
            layers = [r["layers"] for r in chosen]
            label = f"{fraction:g} of keep-all" + ("" if templates else ", no templates")
            axes[0].plot(layers, [r["planning_s"] for r in chosen], style, label=label)
            axes[1].plot(layers, [r["recompute_pct"] for r in chosen], style, label=label)
            gaps = [r["gap_pct"] for r in chosen]
            axes[2].plot(layers, [g if g is not None else float("nan") for g in gaps], style,
                         label=label)  # fmt: skip
    titles = ("planning time (s)", "recompute (% of step time)", "proven gap (%)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xlabel("GPT-2 layers")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(rows: list[dict[str, object]]) -> str:
    """Markdown: per depth and budget, recompute and gap with and without the template search."""
    lines = [
        "| layers | ops | budget | limit s | recompute % | gap % | recompute %, no templates "
        "| gap %, no templates | plan from |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keyed = {(r["layers"], r["fraction"], r["templates"]): r for r in rows}
    for (layers, fraction, templates), with_t in keyed.items():
        if not templates:
            continue
        without = keyed.get((layers, fraction, False), {})

        def cell(r: dict[str, object], key: str) -> str:
            value = r.get(key, r.get("status", ""))
            return "n/a" if value is None else str(value)

        source = str(with_t.get("source", ""))
        source = "template" if source.startswith("template") else source.split(":")[0]
        lines.append(
            f"| {layers} | {with_t['ops']} | {fraction:g} | {with_t['time_limit_s']:g} "
            f"| {cell(with_t, 'recompute_pct')} | {cell(with_t, 'gap_pct')} "
            f"| {cell(without, 'recompute_pct')} | {cell(without, 'gap_pct')} | {source} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 24, 48, 96])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.35, 0.5, 0.7, 0.9])
    parser.add_argument(
        "--time-limit", type=float, help="seconds per solve at every depth (default: the issue's)"
    )
    parser.add_argument(
        "--shipped-only", action="store_true", help="skip the templates=False solves"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "planning-layers-cpu.json")
    parser.add_argument(
        "--table", type=Path, help="print the markdown table and plot of a results file, then exit"
    )
    args = parser.parse_args()
    if args.table is not None:
        rows = json.loads(args.table.read_text())["rows"]
        plot(rows, args.table.with_suffix(".png"))
        print(table(rows))
        return
    torch.set_num_threads(1)
    rows = []
    for layers in args.layers:
        started = time.perf_counter()
        graph = captured(layers)
        print(f"{layers} layers: {len(graph.ops)} ops, captured in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        for fraction in args.fractions:
            for templates in (True,) if args.shipped_only else (True, False):
                rows.append(row(graph, layers, fraction, templates, args.time_limit))
                print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python -m benchmarks.planning_layers " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread, python {platform.python_version()}",
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(table(rows))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
