"""Ground truth on the small graphs: Checkmate's MILP (Jain et al., MLSys 2020), solved by SCIP.

    python benchmarks/literature_milp.py --graphs vgg16_train --time-limit 600 \
        --out benchmarks/results/literature_milp.json

The model of Checkmate's `solve_ilp_gurobi` on the reference order: n stages, stage t runs node
t and may recompute any earlier node (R[t, i]), keeps values from the stage before (S[t, i]),
frees a value after its last use in the stage unless the next stage keeps it (FREE[t, i, k]);
U[t, k] (memory after node k of stage t) <= budget; minimise the cost of every run. Its optimum
is the cheapest schedule that runs each node first in the reference order and recomputes any
node at most once per stage: the same restriction as our CP-SAT model's first executions, with
up to n runs per node instead of `copies`. The decoded schedule is re-scored by
remat.graphs.score_schedule (the README's memory model); the row reports that score.
SCIP is single-threaded; it runs after ours and the Moccasin-style runs, never beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from ortools.linear_solver import pywraplp

from remat.graphs import (
    literature_budget,
    load_literature_graph,
    node_order,
    read_networkx,
    score_schedule,
)
from remat.ir import RematGraph

GRAPHS = Path(__file__).resolve().parents[2] / "shared" / "remat-graphs"
SMALL = [
    "vgg16_train", "vgg19_train", "vgg_unet_train", "fcn_8_vgg_train", "segnet_train",
    "random_layered_n100", "mobilenet_train",
]  # fmt: skip


def checkmate_milp(graph: RematGraph, budget: int, time_limit: float) -> dict:
    """Build and solve the MILP; the decoded schedule (op ids) and SCIP's figures."""
    n = len(graph.ops)
    size = [graph.tensors[op.outputs[0]].bytes for op in graph.ops]
    # Bytes in units of the largest output, so the LP is well scaled: with raw byte counts
    # (up to 1e10) SCIP reported "optimal" plans costlier than ones it could fit (SegNet at 0.8:
    # 0.410% against our 0.207%, which the same model accepts with R fixed to our schedule).
    unit = max(size) or 1
    mem = [s / unit for s in size]
    cap = budget / unit
    scale = max(op.time for op in graph.ops) or 1.0
    cost = [op.time / scale for op in graph.ops]
    deps = [sorted(set(op.inputs)) for op in graph.ops]
    users: list[list[int]] = [[] for _ in range(n)]
    for k, inputs in enumerate(deps):
        for i in inputs:
            users[i].append(k)
    solver = pywraplp.Solver.CreateSolver("SCIP")
    assert solver is not None, "OR-Tools was built without SCIP"
    R = [[solver.BoolVar(f"R{t}_{i}") for i in range(t + 1)] for t in range(n)]
    S = [[solver.BoolVar(f"S{t}_{i}") for i in range(t)] for t in range(n)]
    for t in range(n):
        solver.Add(R[t][t] == 1)
        for k in range(t + 1):
            for i in deps[k]:
                solver.Add(R[t][k] <= R[t][i] + S[t][i])
        if t > 0:
            for i in range(t):
                solver.Add(S[t][i] <= R[t - 1][i] + (S[t - 1][i] if i < t - 1 else 0))
    for t in range(n):
        used = sum(mem[i] * S[t][i] for i in range(t))
        for k in range(t + 1):
            used = used + mem[k] * R[t][k]
            solver.Add(used <= cap)
            freed = 0
            for i in [*deps[k], k]:
                keep_next = S[t + 1][i] if t + 1 < n else 0
                later = [R[t][j] for j in users[i] if k < j <= t]
                hazards = 1 - R[t][k] + keep_next + sum(later)
                top = 2 + len(later)
                free = solver.BoolVar("")
                solver.Add(free >= 1 - hazards)
                solver.Add(top * (1 - free) >= hazards)
                freed = freed + mem[i] * free
            used = used - freed
    solver.Minimize(sum(cost[i] * R[t][i] for t in range(n) for i in range(t + 1)))
    solver.SetTimeLimit(int(time_limit * 1000))
    start = time.perf_counter()
    status = solver.Solve()
    wall = time.perf_counter() - start
    names = {pywraplp.Solver.OPTIMAL: "optimal", pywraplp.Solver.FEASIBLE: "feasible"}
    other = "infeasible" if status == pywraplp.Solver.INFEASIBLE else "not finished"
    result = {"status": names.get(status, other), "solve_s": round(wall, 2)}
    result["variables"] = solver.NumVariables()
    if status in names:
        order = [i for t in range(n) for i in range(t + 1) if R[t][i].solution_value() > 0.5]
        result["schedule"] = order
        result["lower_bound_s"] = solver.Objective().BestBound() * scale
    return result


def row(name: str, fraction: float, time_limit: float) -> dict:
    path = GRAPHS / f"{name}.json"
    graph = load_literature_graph(path)
    budget = literature_budget(graph, fraction)
    found = checkmate_milp(graph, budget, time_limit)
    item: dict[str, object] = {"graph": name, "fraction": fraction, "method": "checkmate-milp"}
    item |= {k: found[k] for k in ("status", "solve_s", "variables")}
    if "schedule" in found:
        score = score_schedule(read_networkx(path), node_order(graph, found["schedule"]))
        base = graph.total_time
        bound = max(0.0, found["lower_bound_s"] - base)
        item |= {
            "overhead_pct": round(100 * (score.cost / base - 1), 3),
            "peak_over_budget": round(score.peak / budget, 4),
            "lower_bound_pct": round(100 * bound / base, 3),
            "valid": score.peak <= budget,
            "order": node_order(graph, found["schedule"]),
        }
    return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", nargs="+", default=SMALL)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.9, 0.8])
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    if args.out and args.out.exists():  # several invocations add to one file
        rows = json.loads(args.out.read_text())["rows"]
        commands = json.loads(args.out.read_text())["commands"]
    else:
        commands = []
    commands.append("python benchmarks/literature_milp.py " + " ".join(sys.argv[1:]))
    for name in args.graphs:
        for fraction in args.fractions:
            item = row(name, fraction, args.time_limit)
            rows.append(item)
            print(json.dumps(item), flush=True)
            if args.out:
                record = {
                    "commands": commands,
                    "machine": f"{platform.machine()}, 2 cores, Python {platform.python_version()}",
                    "rows": rows,
                }
                args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
