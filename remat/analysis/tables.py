"""The report's tables, built once as plain rows and drawn twice: rich (terminal), markdown."""

from __future__ import annotations

from dataclasses import dataclass

from remat.analysis.core import Analysis
from remat.analysis.points import SKIPPED
from remat.budget import format_bytes


@dataclass(frozen=True)
class TextTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _gflop(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


def summary_table(a: Analysis) -> TextTable:
    graphs = a.step.rematgraphs
    nodes = sum(len(g.ops) for g in graphs)
    forward = sum(g.boundary for g in graphs)
    floor_note = "proven minimum" if a.floor_proven else "lowest found"
    b = a.bytes
    rows = (
        (
            "graph",
            f"{len(graphs)} captured graph(s), {nodes} nodes: {forward} forward, "
            f"{nodes - forward} backward",
        ),
        ("parameters", format_bytes(b.parameters)),
        ("gradients", format_bytes(b.gradients)),
        ("activations saved for backward (keep all)", format_bytes(b.activations)),
        ("inputs", format_bytes(b.inputs)),
        ("keep-all peak (budget 1.0)", f"{format_bytes(a.keep_all_peak)} ({a.keep_all_peak} B)"),
        (
            "floor (smallest feasible budget)",
            f"{format_bytes(a.floor)} ({a.floor} B, {a.floor / a.keep_all_peak:.1%} of keep-all; "
            f"{floor_note})",
        ),
        ("estimated step time (keep all)", f"{a.keep_all_time_s * 1e3:.2f} ms"),
    )
    note = (
        "Peaks count bytes allocated during forward+backward, not parameters or inputs. A "
        "fractional budget is a fraction of the keep-all peak."
    )
    if len(graphs) > 1:
        note += (
            f" The model broke into {len(graphs)} graphs: each is planned in turn with the "
            "budget less what the earlier ones keep, so a budget above the floor (each graph at "
            "its own floor) can still be infeasible."
        )
    return TextTable("Step", ("", "value"), rows, note)


def consumers_tables(a: Analysis, top: int = 10) -> tuple[TextTable, TextTable]:
    d = a.breakdown
    where = f"{d.graph}, op {d.op!r}" if d.op else f"{d.graph}, between forward and backward"
    tables = []
    for title, items in (("module path", d.by_module), ("op", d.by_op)):
        rows = tuple(
            (c.name, format_bytes(c.bytes), f"{c.bytes / d.peak:.1%}", str(c.tensors))
            for c in items[:top]
        )
        tables.append(
            TextTable(
                f"Top memory consumers at the keep-all peak, by {title}",
                (title, "bytes", "share", "tensors"),
                rows,
                f"Live at the peak ({format_bytes(d.peak)}, {where}); grouped by the op that "
                "produced each value.",
            )
        )
    return tables[0], tables[1]


def budgets_table(a: Analysis) -> TextTable:
    measured = a.measured if a.measured is not None and a.measured.remat else None
    columns = [
        "budget",
        "bytes",
        "predicted peak",
        "GFLOP recomputed",
        "est. overhead",
        "status",
        "gap",
        "solve",
    ]
    if measured is not None:
        columns[4:4] = ["measured peak", "measured step"]
    rows = []
    for index, r in enumerate(a.budgets):
        if r.feasible:
            row = [
                r.label,
                format_bytes(r.budget_bytes),
                format_bytes(r.predicted_peak or 0),
                _gflop(r.recompute_flops),
                _pct(a.overhead(r)),
                f"{r.status} ({r.solver})",
                _pct(r.gap),
                f"{r.solve_s:.1f}s",
            ]
        else:
            floor = format_bytes(r.floor_hint or a.floor)
            row = [
                r.label,
                format_bytes(r.budget_bytes),
                f"below floor {floor}",
                "",
                "",
                f"infeasible ({r.solver})",
                "",
                f"{r.solve_s:.1f}s",
            ]
        if measured is not None:
            point = measured.remat[index]
            row[4:4] = _measured_cells(point.peak_bytes, point.step_s, point.error)
        rows.append(tuple(row))
    if measured is not None:
        eager = measured.eager
        row = ["eager", "", format_bytes(a.keep_all_peak), "0.000", "0.0%", "keep all", "", ""]
        row[4:4] = _measured_cells(eager.peak_bytes, eager.step_s, eager.error)
        rows.insert(0, tuple(row))
    return TextTable(
        "Budgets",
        tuple(columns),
        tuple(rows),
        "est. overhead = estimated recompute time / estimated keep-all step time; "
        "gap = (cost - proven bound) / cost.",
    )


def recompute_table(a: Analysis, top: int = 5) -> TextTable:
    rows = []
    for r in a.budgets:
        if not r.feasible:
            continue
        if not r.recomputed:
            rows.append((r.label, "nothing", "0", "0.000"))
        for item in r.recomputed[:top]:
            rows.append((r.label, item.module, str(item.runs), _gflop(item.flops)))
        rest = r.recomputed[top:]
        if rest:
            rows.append(
                (
                    r.label,
                    f"({len(rest)} more modules)",
                    str(sum(i.runs for i in rest)),
                    _gflop(sum(i.flops for i in rest)),
                )
            )
    return TextTable(
        "What is recomputed, by module",
        ("budget", "module path", "extra op runs", "GFLOP"),
        tuple(rows),
        "Costliest first; views and other free ops count as runs with 0 FLOPs.",
    )


def _measured_cells(peak: int | None, seconds: float | None, error: str | None) -> list[str]:
    if error == SKIPPED:
        return ["", "not run"]
    if error is not None:
        return ["failed", error[:60]]
    return [format_bytes(peak or 0), f"{(seconds or 0) * 1e3:.1f} ms"]


def torch_table(a: Analysis) -> TextTable | None:
    if a.measured is None or not a.measured.torch:
        return None
    eager_s = a.measured.eager.step_s
    rows = []
    for p in a.measured.torch:
        if p.error is not None:
            rows.append((p.setting, "failed", p.error[:80], ""))
            continue
        ratio = f"{(p.step_s or 0) / eager_s:.2f}x" if eager_s else "n/a"
        rows.append(
            (p.setting, format_bytes(p.peak_bytes or 0), f"{(p.step_s or 0) * 1e3:.1f} ms", ratio)
        )
    return TextTable(
        f"torch.compile ({a.measured.torch_backend}) with activation_memory_budget, measured",
        ("activation_memory_budget", "measured peak", "measured step", "vs eager"),
        tuple(rows),
        "activation_memory_budget is a fraction of saved activations between recompute-all (0) "
        "and the default partition (1), not of the step's peak.",
    )


def all_tables(a: Analysis) -> list[TextTable]:
    by_module, by_op = consumers_tables(a)
    tables = [summary_table(a), by_module, by_op, budgets_table(a)]
    recomputed = recompute_table(a)
    tables += [recomputed] if recomputed.rows else []
    extra = torch_table(a)
    return tables + ([extra] if extra is not None else [])


def markdown(table: TextTable) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;")

    lines = [
        f"### {table.title}",
        "",
        "| " + " | ".join(map(cell, table.columns)) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)
