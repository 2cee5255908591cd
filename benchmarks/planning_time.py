"""Planning time vs graph size on synthetic GPT-like training steps (no torch needed).

    python benchmarks/planning_time.py                       # 500 .. 10k ops, auto and sqrt
    python benchmarks/planning_time.py --sizes 2000 --solvers auto ilp --out results/x.json

Each row: ops, solver, budget (fraction of the keep-all peak), wall-clock planning time, status,
recompute overhead (% of the step's time), peak / budget and the gap to the proven bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import GptShape, gpt_like  # noqa: E402

from remat.budget import InfeasibleBudgetError  # noqa: E402
from remat.solvers import keep_all_plan, solve  # noqa: E402

OPS_PER_LAYER = 28


def measure(ops: int, solver: str, fraction: float) -> dict[str, object]:
    graph = gpt_like(GptShape(layers=max(1, round(ops / OPS_PER_LAYER))))
    budget = int(keep_all_plan(graph).predicted_peak * fraction)
    start = time.perf_counter()
    row: dict[str, object] = {"ops": len(graph.ops), "solver": solver, "budget_fraction": fraction}
    try:
        plan = solve(graph, budget, solver)
    except InfeasibleBudgetError as error:
        row.update(planning_s=round(time.perf_counter() - start, 3), status="infeasible")
        row["floor_fraction"] = round(error.floor / keep_all_plan(graph).predicted_peak, 4)
        return row
    row.update(
        planning_s=round(time.perf_counter() - start, 3),
        status=plan.status.value,
        overhead_pct=round(100 * plan.recompute_time / graph.total_time, 3),
        peak_over_budget=round(plan.predicted_peak / budget, 4),
        gap_pct=None if plan.gap is None else round(100 * plan.gap, 2),
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000])
    parser.add_argument("--solvers", nargs="+", default=["auto", "sqrt"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "planning_time.json"
    )
    args = parser.parse_args()
    rows = []
    for ops in args.sizes:
        for fraction in args.fractions:
            for solver in args.solvers:
                row = measure(ops, solver, fraction)
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python benchmarks/planning_time.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
