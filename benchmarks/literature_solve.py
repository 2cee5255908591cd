"""The literature's graphs x {0.9, 0.8} budgets: our `ilp` against the Moccasin-style baseline.

    python benchmarks/literature_solve.py                         # ours, 60 s per instance
    python benchmarks/literature_solve.py --method moccasin --time-limit 600
    python benchmarks/literature_solve.py --graphs random_layered_n100 --fractions 0.8

`ours` is remat.graphs.solve_literature (heuristics + relaxation bound + local search + CP-SAT,
see ilp.py); its 60 s include loading the file. Every schedule is re-scored by
remat.graphs.score_schedule and recorded (`order`, the file's node ids) for the tests.
`moccasin` re-implements the published method on the same model: CP-SAT over retention intervals
with 2 intervals per node, phase 1 minimising the peak until it fits (from keep-all), phase 2
minimising the cost from phase 1's solution; no heuristics, no relaxation.
Columns: cost overhead (% of the sum of all node costs), peak / budget, wall seconds, the gap
between the cost and the proven lower bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from remat.budget import InfeasibleBudgetError
from remat.graphs import (
    literature_budget,
    load_literature_graph,
    node_order,
    proven_infeasible,
    read_networkx,
    score_schedule,
    solve_literature,
    topo_peak,
)
from remat.ir import Plan, PlanStatus, RematGraph
from remat.solvers._common import make_plan
from remat.solvers.cpsat import run_cpsat
from remat.solvers.ilp_model import RetentionModel
from remat.solvers.ilp_problem import build_problem

GRAPHS = Path(__file__).resolve().parents[2] / "shared" / "remat-graphs"
NAMES = [
    "vgg16_train", "vgg19_train", "mobilenet_train", "resnet50_train", "fcn_8_vgg_train",
    "segnet_train", "vgg_unet_train", "random_layered_n100", "random_layered_n250",
    "random_layered_n500", "random_layered_n1000",
]  # fmt: skip


@dataclass(frozen=True)
class _Search:
    workers: int
    seed: int = 0


def moccasin_style(graph: RematGraph, budget: int, time_limit: float, workers: int) -> Plan | None:
    """The published two-phase CP-SAT method on our model (2 retention intervals per node)."""
    start = time.perf_counter()
    problem = build_problem(graph, copies=2, recompute_backward=False)
    config = _Search(workers)
    reach = RetentionModel(problem, problem.capacity(budget), minimize="reach")
    first = run_cpsat(reach, config, time_limit, tuple(range(len(graph.ops))), lambda _: None)
    if first.schedule is None or first.objective != 0:
        return None
    left = time_limit - (time.perf_counter() - start)
    cost = RetentionModel(problem, problem.capacity(budget))
    second = run_cpsat(cost, config, left, first.schedule, lambda _: None)
    run = second if second.schedule is not None else first
    plan = make_plan(graph, run.schedule or (), run.boundary, solver="moccasin-style")
    bound = problem.seconds(second.bound) if second.bound not in (None, float("inf")) else None
    status = PlanStatus.OPTIMAL if second.optimal else PlanStatus.FEASIBLE
    return replace(plan, status=status, lower_bound=bound, solve_s=time.perf_counter() - start)


def row(name: str, fraction: float, method: str, time_limit: float, workers: int) -> dict:
    """One instance: the plan's figures, its order re-scored by remat.graphs.score_schedule."""
    path = GRAPHS / f"{name}.json"
    graph = load_literature_graph(path)
    budget = literature_budget(graph, fraction)
    start = time.perf_counter()
    result: dict[str, object] = {"graph": name, "fraction": fraction, "method": method}
    try:
        if method == "ours":
            plan: Plan | None = solve_literature(path, fraction, time_limit, workers=workers)
            # remat.graphs.LITERATURE_CONFIG: copies=3, local_copies=5
        else:
            plan = moccasin_style(graph, budget, time_limit, workers)
    except InfeasibleBudgetError as error:
        seconds = round(time.perf_counter() - start, 2)
        floor = round(error.floor / topo_peak(graph), 4)
        reason = proven_infeasible(graph, budget)
        status = f"infeasible (floor {floor} topo_peak" + (
            f"; proven: {reason})" if reason else ")"
        )
        return {**result, "status": status, "solve_s": seconds}
    seconds = time.perf_counter() - start
    if plan is None:
        return {**result, "status": "no plan", "solve_s": round(seconds, 2)}
    order = node_order(graph, plan.schedule)
    score = score_schedule(read_networkx(path), order)
    if score.peak != plan.predicted_peak or score.cost != graph.total_time + plan.recompute_time:
        raise RuntimeError(f"{name} at {fraction}: the README's scorer disagrees: {score}")
    return {
        **result,
        "overhead_pct": round(100 * plan.recompute_time / graph.total_time, 3),
        "peak_over_budget": round(plan.predicted_peak / budget, 4),
        "solve_s": round(seconds, 2),
        "gap_pct": None if plan.gap is None else round(100 * plan.gap, 1),
        "lower_bound_pct": None
        if plan.lower_bound is None
        else round(100 * plan.lower_bound / graph.total_time, 3),
        "status": plan.status.value,
        "executions": len(plan.schedule),
        "order": order,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", nargs="+", default=NAMES)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.9, 0.8])
    parser.add_argument("--method", choices=["ours", "moccasin"], default="ours")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--note", default="", help="recorded as is: e.g. the machine's load")
    parser.add_argument(
        "--merge", action="store_true", help="replace these instances' rows in --out, keep the rest"
    )
    args = parser.parse_args()
    rows = []
    print(f"{'graph':22} {'B':>4} {'overhead':>9} {'peak/B':>7} {'solve s':>8} {'gap':>7}  status")
    for name in args.graphs:
        for fraction in args.fractions:
            item = row(name, fraction, args.method, args.time_limit, args.workers)
            rows.append(item)
            gap = "-" if item.get("gap_pct") is None else f"{item['gap_pct']}%"
            print(
                f"{name:22} {fraction:>4} {item.get('overhead_pct', '-')!s:>8}% "
                f"{item.get('peak_over_budget', '-')!s:>7} {item['solve_s']:>8} {gap:>7}  "
                f"{item['status']}",
                flush=True,
            )
    if args.out:
        commands = ["python benchmarks/literature_solve.py " + shlex.join(sys.argv[1:])]
        if args.merge and args.out.exists():  # replace the rerun instances, keep the others
            old = json.loads(args.out.read_text())
            commands = [*old.get("commands", [old.get("command")]), *commands]
            done = {(r["graph"], r["fraction"]) for r in rows}
            kept = [r for r in old["rows"] if (r["graph"], r["fraction"]) not in done]
            rows = sorted(kept + rows, key=lambda r: (NAMES.index(r["graph"]), -r["fraction"]))
        record = {
            "commands": commands,
            "machine": f"{platform.machine()}, 2 cores, Python {platform.python_version()}",
            "note": args.note,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(_dump(record))


def _dump(record: dict) -> str:
    """Indented JSON with each row's `order` on one line."""
    rows = [{**r, "order": None} if "order" in r else r for r in record["rows"]]
    text = json.dumps({**record, "rows": rows}, indent=1)
    for item in record["rows"]:
        if "order" in item:
            text = text.replace('"order": null', '"order": ' + json.dumps(item["order"]), 1)
    return text + "\n"


if __name__ == "__main__":
    main()
