"""The report files: report.json (schema in remat.analysis.schema), report.md and the PNGs."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from typing import Any

from remat.analysis.core import Analysis, BudgetResult
from remat.analysis.schema import SCHEMA_ID, validate
from remat.analysis.tables import all_tables, markdown

FILES = {"markdown": "report.md", "timeline": "timeline.png", "tradeoff": "tradeoff.png"}


def _graphs(a: Analysis, result: BudgetResult) -> list[dict[str, Any]]:
    return [
        {
            "name": item.captured.graph.name,
            "budget_bytes": result.budget_bytes - held,
            "held_elsewhere": held,
            "predicted_peak": plan.predicted_peak,
            "schedule": list(plan.schedule),
            "boundary": plan.boundary,
        }
        for item, plan, held in zip(a.step.graphs, result.plans, result.held)
    ]


def _budget(a: Analysis, index: int, result: BudgetResult) -> dict[str, Any]:
    ok = result.feasible
    measured = None
    if a.measured is not None and a.measured.remat:
        point = a.measured.remat[index]
        measured = {
            "peak_bytes": point.peak_bytes,
            "step_s": point.step_s,
            "predicted_peak": point.predicted_peak,
            "error": point.error,
        }
    return {
        "label": result.label,
        "budget_bytes": result.budget_bytes,
        "fraction": result.budget_bytes / a.keep_all_peak,
        "feasible": ok,
        "predicted_peak": result.predicted_peak,
        "recompute_flops": result.recompute_flops if ok else None,
        "recompute_time_s": result.recompute_time_s if ok else None,
        "overhead": a.overhead(result),
        "saved_bytes": result.saved_bytes if ok else None,
        "solver": result.solver,
        "status": result.status,
        "gap": result.gap,
        "solve_s": result.solve_s,
        "message": result.message,
        "recomputed": [asdict(r) for r in result.recomputed],
        "graphs": _graphs(a, result),
        "measured": measured,
    }


def _point(a: Analysis, result: BudgetResult) -> dict[str, Any]:
    return {
        "budget_bytes": result.budget_bytes,
        "fraction": result.budget_bytes / a.keep_all_peak,
        "predicted_peak": result.predicted_peak,
        "overhead": a.overhead(result),
        "status": result.status,
    }


def _measured(a: Analysis) -> dict[str, Any] | None:
    m = a.measured
    if m is None:
        return None
    eager = {"peak_bytes": m.eager.peak_bytes, "step_s": m.eager.step_s, "error": m.eager.error}
    torch_points = [
        {
            "activation_memory_budget": float(p.setting),
            "peak_bytes": p.peak_bytes,
            "step_s": p.step_s,
            "error": p.error,
        }
        for p in m.torch
    ]
    return {
        "device": m.device,
        "method": m.method,
        "eager": eager,
        "torch_backend": m.torch_backend,
        "torch": torch_points,
    }


def report_dict(a: Analysis, *, command: str, device: str, dtype: str | None) -> dict[str, Any]:
    graphs = a.step.graphs
    nodes = sum(len(g.captured.graph.ops) for g in graphs)
    forward = sum(g.captured.graph.boundary for g in graphs)
    o, b, d = a.options, a.bytes, a.breakdown
    return {
        "schema": SCHEMA_ID,
        "command": command,
        "target": a.target,
        "run": {
            "device": device,
            "dtype": dtype,
            "solver": o.solver,
            "time_limit": o.time_limit,
            "samples": o.samples,
            "sample_time_limit": o.sample_time_limit,
            "capture_s": a.step.capture_s,
            "analyze_s": a.analyze_s,
        },
        "graph": {
            "graphs": len(graphs),
            "nodes": nodes,
            "forward_nodes": forward,
            "backward_nodes": nodes - forward,
            "per_graph": [
                {
                    "name": g.captured.graph.name,
                    "nodes": len(g.captured.graph.ops),
                    "forward_nodes": g.captured.graph.boundary,
                    "keep_all_peak": g.keep_all_peak,
                    "held_elsewhere": g.held_elsewhere,
                }
                for g in graphs
            ],
        },
        "memory": {
            "parameter_bytes": b.parameters,
            "gradient_bytes": b.gradients,
            "buffer_bytes": b.buffers,
            "input_bytes": b.inputs,
            "activation_bytes": b.activations,
            "keep_all_peak": a.keep_all_peak,
            "floor": a.floor,
            "floor_proven": a.floor_proven,
            "keep_all_time_s": a.keep_all_time_s,
        },
        "top_consumers": {
            "peak": d.peak,
            "graph": d.graph,
            "step": d.step,
            "op": d.op,
            "by_module": [asdict(c) for c in d.by_module],
            "by_op": [asdict(c) for c in d.by_op],
        },
        "budgets": [_budget(a, i, r) for i, r in enumerate(a.budgets)],
        "tradeoff": {
            "solver": o.solver,
            "points": [_point(a, r) for r in a.curve],
            "sqrt": [_point(a, r) for r in a.sqrt_curve],
        },
        "measured": _measured(a),
        "files": dict(FILES),
    }


_NUMBER_LIST = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")


def _dumps(report: dict[str, Any]) -> str:
    """Indented JSON, with lists of integers (schedules) kept on one line."""
    text = json.dumps(report, indent=1)
    return _NUMBER_LIST.sub(
        lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ") + "]", text
    )


def report_markdown(a: Analysis, command: str) -> str:
    parts = [
        f"# remat analyze: {a.target}",
        "",
        f"Produced by `{command}`.",
        "",
        *[markdown(table) + "\n" for table in all_tables(a)],
        "### Live memory over the step",
        "",
        f"![timeline]({FILES['timeline']})",
        "",
        "### Budget vs estimated time overhead",
        "",
        f"![tradeoff]({FILES['tradeoff']})",
        "",
    ]
    return "\n".join(parts)


def write_report(
    a: Analysis, out_dir: str, *, command: str, device: str, dtype: str | None
) -> dict[str, str]:
    """Write report.json, report.md, timeline.png and tradeoff.png; return their paths."""
    from remat.analysis.plots import write_figures  # matplotlib only when writing files

    os.makedirs(out_dir, exist_ok=True)
    report = report_dict(a, command=command, device=device, dtype=dtype)
    problems = validate(report)
    if problems:
        raise AssertionError(f"report.json does not match its schema: {problems[:3]}")
    paths = {"json": os.path.join(out_dir, "report.json")}
    with open(paths["json"], "w") as handle:
        handle.write(_dumps(report) + "\n")
    paths["markdown"] = os.path.join(out_dir, FILES["markdown"])
    with open(paths["markdown"], "w") as handle:
        handle.write(report_markdown(a, command))
    paths.update(write_figures(a, out_dir))
    return paths
