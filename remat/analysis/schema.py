"""The report.json schema: one list of fields, used to validate reports and to document them.

A path names a field: `memory.floor`, `budgets[].predicted_peak` (a field of every element of
the list `budgets`). `docs/analyze.md` shows `schema_markdown()`; tests check reports with
`validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_ID = "remat.analyze/1"


@dataclass(frozen=True)
class Field:
    path: str
    types: str
    """'|'-separated JSON types: int, number, str, bool, list, object, null."""
    doc: str


_MEASURED = "{peak_bytes, step_s, error} of a real step, or null without --measure"
FIELDS: tuple[Field, ...] = (
    Field("schema", "str", f'"{SCHEMA_ID}"'),
    Field("command", "str", "the command line that produced the report"),
    Field("target", "str", "MODULE:FACTORY and its inputs"),
    Field("run", "object", "how the analysis ran"),
    Field("run.device", "str", "device of the captured step (cpu, cuda:0, ...)"),
    Field("run.dtype", "str|null", "--dtype, or null for the model's own"),
    Field("run.solver", "str", "solver of the budgets and the trade-off curve"),
    Field("run.time_limit", "number|null", "seconds per budget's solve (null: solver default)"),
    Field("run.samples", "int", "budgets sampled for the trade-off curve"),
    Field("run.sample_time_limit", "number", "seconds per trade-off sample's solve"),
    Field("run.capture_s", "number", "seconds to trace, price and capture the step"),
    Field("run.analyze_s", "number", "seconds for the whole analysis (without --measure)"),
    Field("graph", "object", "size of the captured step"),
    Field("graph.graphs", "int", "captured graphs (more than one where the model breaks)"),
    Field("graph.nodes", "int", "ops in all graphs"),
    Field("graph.forward_nodes", "int", "ops before the forward/backward boundary"),
    Field("graph.backward_nodes", "int", "ops after it"),
    Field("graph.per_graph", "list", "one entry per captured graph"),
    Field("graph.per_graph[].name", "str", "graph0, graph1, ..."),
    Field("graph.per_graph[].nodes", "int", "ops in this graph"),
    Field("graph.per_graph[].forward_nodes", "int", "forward ops in this graph"),
    Field("graph.per_graph[].keep_all_peak", "int", "this graph's keep-all peak, bytes"),
    Field(
        "graph.per_graph[].held_elsewhere",
        "int",
        "bytes other graphs hold while this one runs (keep all)",
    ),
    Field("memory", "object", "bytes of the step, all in bytes"),
    Field("memory.parameter_bytes", "int", "parameters (not counted in peaks)"),
    Field("memory.gradient_bytes", "int", "parameter gradients backward produces"),
    Field("memory.buffer_bytes", "int", "buffers (BatchNorm statistics, ...)"),
    Field("memory.input_bytes", "int", "tensor inputs (not counted in peaks)"),
    Field("memory.activation_bytes", "int", "saved for backward when nothing is recomputed"),
    Field("memory.keep_all_peak", "int", "predicted step peak with nothing recomputed"),
    Field("memory.floor", "int", "smallest feasible budget found (lowest predicted peak)"),
    Field("memory.floor_proven", "bool", "CP-SAT proved no plan peaks lower"),
    Field("memory.keep_all_time_s", "number", "estimated seconds of the keep-all step"),
    Field("top_consumers", "object", "what is live at the keep-all peak"),
    Field("top_consumers.peak", "int", "the keep-all peak, bytes (each grouping sums to it)"),
    Field("top_consumers.graph", "str", "graph where the step peaks"),
    Field("top_consumers.step", "int", "op index of the peak (-1: between fwd and bwd)"),
    Field("top_consumers.op", "str", "op running at the peak"),
    Field("top_consumers.by_module", "list", "largest first"),
    Field(
        "top_consumers.by_module[].name",
        "str",
        "module path of the producing op: layers.3.attn; (top level) for the model's own "
        "forward; other (...) entries are bytes that belong to no module (scratch, gradients in)",
    ),
    Field("top_consumers.by_module[].bytes", "int", "bytes live at the peak"),
    Field("top_consumers.by_module[].tensors", "int", "values counted"),
    Field("top_consumers.by_op", "list", "largest first"),
    Field("top_consumers.by_op[].name", "str", "op kind of the producer (aten.mm, ...)"),
    Field("top_consumers.by_op[].bytes", "int", "bytes live at the peak"),
    Field("top_consumers.by_op[].tensors", "int", "values counted"),
    Field("budgets", "list", "one entry per --budget, in the order given"),
    Field("budgets[].label", "str", "the budget as written (0.5, 300MiB, ...)"),
    Field("budgets[].budget_bytes", "int", "the budget in bytes"),
    Field("budgets[].fraction", "number", "budget_bytes / keep_all_peak"),
    Field("budgets[].feasible", "bool", "false: below the floor; predicted fields are null"),
    Field("budgets[].predicted_peak", "int|null", "simulated step peak of the plan"),
    Field("budgets[].recompute_flops", "int|null", "FLOPs of recomputations"),
    Field("budgets[].recompute_time_s", "number|null", "estimated seconds of recomputations"),
    Field("budgets[].overhead", "number|null", "recompute_time_s / memory.keep_all_time_s"),
    Field("budgets[].saved_bytes", "int|null", "bytes kept from forward to backward"),
    Field("budgets[].solver", "str", "solver name"),
    Field("budgets[].status", "str", "optimal | feasible | heuristic | infeasible"),
    Field("budgets[].gap", "number|null", "(cost - proven bound) / cost; null: no bound"),
    Field("budgets[].solve_s", "number", "seconds the solve took"),
    Field("budgets[].message", "str|null", "infeasible: the error, naming the floor"),
    Field("budgets[].recomputed", "list", "extra op runs grouped by module, costliest first"),
    Field("budgets[].recomputed[].module", "str", "module path"),
    Field("budgets[].recomputed[].runs", "int", "extra executions of its ops"),
    Field("budgets[].recomputed[].flops", "int", "FLOPs of those executions"),
    Field("budgets[].graphs", "list", "the plan of each captured graph (empty if infeasible)"),
    Field("budgets[].graphs[].name", "str", "graph name"),
    Field("budgets[].graphs[].budget_bytes", "int", "what this graph was allowed"),
    Field("budgets[].graphs[].held_elsewhere", "int", "bytes other graphs hold meanwhile"),
    Field("budgets[].graphs[].predicted_peak", "int", "simulated peak of this graph's plan"),
    Field(
        "budgets[].graphs[].schedule",
        "list",
        "op ids in execution order, repeats are recomputations (remat.simulate replays it)",
    ),
    Field("budgets[].graphs[].boundary", "int", "index in schedule where backward starts"),
    Field("budgets[].measured", "object|null", _MEASURED + "; plus predicted_peak of its plan"),
    Field("tradeoff", "object", "the curve of tradeoff.png"),
    Field("tradeoff.solver", "str", "solver of `points`"),
    Field("tradeoff.points", "list", "budgets evenly spaced from the floor to keep-all"),
    Field("tradeoff.points[].budget_bytes", "int", "sampled budget"),
    Field("tradeoff.points[].fraction", "number", "of the keep-all peak"),
    Field("tradeoff.points[].predicted_peak", "int|null", "null where infeasible"),
    Field("tradeoff.points[].overhead", "number|null", "as budgets[].overhead"),
    Field("tradeoff.points[].status", "str", "as budgets[].status"),
    Field("tradeoff.sqrt", "list", "the sqrt(n) heuristic at the same budgets (same fields)"),
    Field("tradeoff.sqrt[].budget_bytes", "int", ""),
    Field("tradeoff.sqrt[].fraction", "number", ""),
    Field("tradeoff.sqrt[].predicted_peak", "int|null", ""),
    Field("tradeoff.sqrt[].overhead", "number|null", ""),
    Field("tradeoff.sqrt[].status", "str", ""),
    Field("measured", "object|null", "real steps; null without --measure and --compare-torch"),
    Field("measured.device", "str", "device measured on"),
    Field("measured.method", "str", "how peak and time were read"),
    Field("measured.eager", "object", _MEASURED.split(", or null")[0] + " of the eager model"),
    Field("measured.torch_backend", "str", "torch.compile backend of the torch points"),
    Field("measured.torch", "list", "--compare-torch: one per activation_memory_budget"),
    Field("measured.torch[].activation_memory_budget", "number", "torch's setting"),
    Field("measured.torch[].peak_bytes", "int|null", "measured peak"),
    Field("measured.torch[].step_s", "number|null", "median step seconds"),
    Field("measured.torch[].error", "str|null", "why the run failed, if it did"),
    Field("files", "object", "the other files written, relative to --out"),
    Field("files.markdown", "str", "report.md"),
    Field("files.timeline", "str", "timeline.png"),
    Field("files.tradeoff", "str", "tradeoff.png"),
)

_TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_OPEN_OBJECTS = ("measured.eager", "budgets[].measured")
"""Objects whose keys the schema lists in prose only (small, flat)."""


def _values(report: Any, path: str) -> list[Any]:
    """Every value at `path` ('a.b[].c'); missing keys are a KeyError."""
    values = [report]
    for part in path.split("."):
        many = part.endswith("[]")
        key = part.removesuffix("[]")
        next_values = []
        for value in values:
            if value is None:
                continue
            item = value[key]
            next_values.extend(item if many else [item])
        values = next_values
    return values


def validate(report: dict[str, Any]) -> list[str]:
    """Problems with `report` against FIELDS (missing, mistyped or undocumented keys)."""
    problems = []
    for field in FIELDS:
        try:
            values = _values(report, field.path)
        except (KeyError, TypeError):
            problems.append(f"{field.path}: missing")
            continue
        checks = [_TYPES[t] for t in field.types.split("|")]
        for value in values:
            if not any(check(value) for check in checks):
                problems.append(f"{field.path}: {value!r} is not {field.types}")
    problems += _undocumented(report, "")
    return problems


def _undocumented(value: Any, path: str) -> list[str]:
    known = {f.path for f in FIELDS}
    found = []
    if isinstance(value, dict) and path not in _OPEN_OBJECTS:
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if child not in known:
                found.append(f"{child}: not in the schema")
            found += _undocumented(item, child)
    elif isinstance(value, list) and path in known:
        for item in value:
            found += _undocumented(item, f"{path}[]")
    return found


def schema_markdown() -> str:
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{f.path}` | {f.types.replace('|', ' or ')} | {f.doc} |" for f in FIELDS]
    return "\n".join(lines)
