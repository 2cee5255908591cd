"""docs/hf-benchmarks.md from an hf suite results file: where remat stands against Hugging
Face's gradient checkpointing, the per-model tables and the Pareto plots.

`standing` reads the rows of one model; the page says, per model, remat's step time at
hf-checkpoint's peak (equal memory) and the lowest peak remat reached below it. The hand-written
reading lives in docs/benchmarks/hf-notes.md and is included verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite import goal
from benchmarks.suite.peers import HF_CHECKPOINT
from benchmarks.suite.plots import model_plot
from benchmarks.suite.records import Results, Row
from benchmarks.suite.report import _header, _mib, _model_section, _s

NOTES = "docs/benchmarks/hf-notes.md"
REMAT = "remat-ilp"


@dataclass(frozen=True)
class Standing:
    """remat against hf-checkpoint on one model (None where a row did not run)."""

    model: str
    eager: Row | None
    checkpoint: Row | None
    at_checkpoint: Row | None
    """The fastest remat row whose measured peak is <= hf-checkpoint's."""
    lowest: Row | None
    """The remat row with the lowest measured peak."""
    floor: int | None
    """The smallest feasible budget remat named (a refused budget's error, else the floor row)."""
    over_budget: tuple[Row, ...]
    """remat rows whose measured peak exceeded their budget."""
    refused: tuple[Row, ...]
    """remat rows that did not run (InfeasibleBudgetError or another error)."""

    @property
    def time_ratio(self) -> float | None:
        """remat's step time over hf-checkpoint's at (or below) hf-checkpoint's peak."""
        if self.at_checkpoint is None or self.checkpoint is None:
            return None
        return self.at_checkpoint.step_s / self.checkpoint.step_s

    @property
    def peak_ratio(self) -> float | None:
        """remat's lowest measured peak over hf-checkpoint's."""
        if self.lowest is None or self.checkpoint is None:
            return None
        return self.lowest.peak_bytes / self.checkpoint.peak_bytes


def standing(model: str, rows: list[Row]) -> Standing:
    mine = [r for r in rows if r.model == model]
    eager = next((r for r in mine if r.method == "eager" and r.ran), None)
    checkpoint = next((r for r in mine if r.method == HF_CHECKPOINT and r.ran), None)
    ours = [r for r in mine if r.method == REMAT and r.ran and r.ok]
    at = [r for r in ours if checkpoint is not None and r.peak_bytes <= checkpoint.peak_bytes]
    floors = [r.plan["floor"] for r in mine if r.method == REMAT and r.plan.get("floor")]
    floor_rows = [r.budget_bytes for r in mine if r.method == REMAT and "floor" in r.setting]
    return Standing(
        model,
        eager,
        checkpoint,
        min(at, key=lambda r: r.step_s) if at else None,
        min(ours, key=lambda r: r.peak_bytes) if ours else None,
        min(floors or floor_rows, default=None),
        tuple(r for r in ours if r.plan.get("within_budget") is False),
        tuple(r for r in mine if r.method == REMAT and not r.ran),
    )


def write_hf_docs(results: Results, results_path: Path, docs: Path) -> Path:
    """Write docs/hf-benchmarks.md and its plots docs/benchmarks/hf-<device>-<model>.png."""
    meta = results.meta
    title = "Benchmarks on Hugging Face models: remat against HF gradient checkpointing"
    standings = [standing(model, list(results.rows)) for model in meta["models"]]
    parts = [
        _header(meta, results_path, title, NOTES, "benchmarks/suite/hf_report.py"),
        _summary(standings, meta),
        _every_peer(results.rows),
        _method(meta),
    ]
    for model, description in meta["models"].items():
        rows = [r for r in results.rows if r.model == model]
        image = docs / "benchmarks" / f"hf-{meta['device']}-{model}.png"
        model_plot(model, description, rows, image)
        parts.append(_model_section(model, description, rows, image.relative_to(docs)))
    notes = docs / "benchmarks" / "hf-notes.md"
    if notes.exists():
        parts.append(notes.read_text().strip())
    page = docs / "hf-benchmarks.md"
    page.write_text("\n\n".join(parts) + "\n")
    return page


def _every_peer(rows: tuple[Row, ...]) -> str:
    """The peer suite's goal over every peer row of this suite (eager and torch-budget too)."""
    compared = [v for v in goal.check(rows) if v.met is not None]
    missed = [v for v in compared if not v.met]
    lines = [
        "## Every peer row",
        "",
        "The peer suite's goal (docs/benchmarks.md) over every peer row here: some `remat-ilp` "
        "row has a measured peak <= the peer's and a step time <= 1.05 x the peer's. "
        f"**Met for {len(compared) - len(missed)} of {len(compared)} peer rows that ran.**",
    ]
    lines += [f"- {v.model} / {v.peer} [{v.peer_setting}]: {v.reason}" for v in missed]
    return "\n".join(lines)


def _summary(standings: list[Standing], meta: dict[str, Any]) -> str:
    lines = [
        "## Where remat stands against HF gradient checkpointing",
        "",
        "Equal peak: the fastest `remat-ilp` row whose measured peak is at most hf-checkpoint's "
        "(remat is given hf-checkpoint's measured peak as an int byte budget), its step time "
        "over hf-checkpoint's. Below: the lowest peak any `remat-ilp` row measured, over "
        "hf-checkpoint's. Floor: the smallest budget remat accepts (the error of a refused "
        "budget names it).",
        "",
        "| model | eager peak MiB | eager step s | hf-checkpoint peak MiB | hf-checkpoint step s "
        "| remat at equal peak: peak MiB, step s | time vs hf-checkpoint | remat lowest peak MiB "
        "| peak vs hf-checkpoint | remat floor MiB | within budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in standings:
        at = s.at_checkpoint
        lines.append(
            f"| {s.model} | {_mib(_peak(s.eager))} | {_s(_step(s.eager))} "
            f"| {_mib(_peak(s.checkpoint))} | {_s(_step(s.checkpoint))} "
            f"| {_pair(at)} | {_x(s.time_ratio)} | {_mib(_peak(s.lowest))} "
            f"| {_pct(s.peak_ratio)} | {_mib(s.floor)} | {_within(s)} |"
        )
    lines += ["", *(f"- {_sentence(s)}" for s in standings)]
    return "\n".join(lines)


def _sentence(s: Standing) -> str:
    if s.checkpoint is None:
        return f"**{s.model}**: hf-checkpoint did not run; nothing to compare."
    if s.lowest is None:
        why = s.refused[0].note if s.refused else "no remat-ilp row ran"
        return f"**{s.model}**: no remat-ilp row ran ({why})."
    parts = []
    if s.at_checkpoint is not None:
        parts.append(
            f"at hf-checkpoint's peak remat takes {_x(s.time_ratio)} its step time "
            f"({_s(s.at_checkpoint.step_s)} s vs {_s(s.checkpoint.step_s)} s)"
        )
    else:
        parts.append(
            "no remat-ilp row reached hf-checkpoint's peak "
            f"({_mib(s.checkpoint.peak_bytes)} MiB; remat's floor {_mib(s.floor)} MiB)"
        )
    if s.peak_ratio is not None and s.peak_ratio < 1:
        parts.append(
            f"below it, remat reaches {_mib(s.lowest.peak_bytes)} MiB, {_pct(s.peak_ratio)} of "
            f"hf-checkpoint's peak, at {_x(s.lowest.step_s / s.checkpoint.step_s)} its time"
        )
    if s.over_budget:
        parts.append(f"**{len(s.over_budget)} row(s) over budget**")
    return f"**{s.model}**: " + "; ".join(parts) + "."


def _method(meta: dict[str, Any]) -> str:
    configs = [r["config"] for r in meta["runs"] if r.get("config")]
    config = configs[0] if configs else {}
    return "\n".join(
        [
            "## How it is measured",
            "",
            "- Models: `remat.hf.hf_model` (random init, nothing downloaded), dropout off, no KV "
            "cache; the step is `model(x, labels=labels).loss` (the model's own loss) "
            "followed by `.backward()`, the same module and inputs (`remat.hf.hf_inputs`, seed "
            "0) for every method, each on its own copy of the same parameters.",
            "- eager: nothing recomputed. hf-checkpoint: the model's own "
            "`gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': "
            "False})` (`activation_checkpointing_enable` in transformers 5), every layer. "
            "torch-budget: `torch.compile` (aot_eager, min-cut partitioner) under "
            "`torch._functorch.config.activation_memory_budget` in "
            f"{config.get('torch_budgets')} (a fraction of saved activations, not of the step's "
            "peak), scoped with `config.patch`.",
            "- remat-ilp: `remat.compile(step, budget=<int bytes>, solver='ilp', time_limit="
            f"{config.get('time_limit')})` at {config.get('checkpoint_fractions')} x "
            "hf-checkpoint's measured peak, at every other peer's measured peak above remat's "
            "floor (matched rows) and at the floor (the smallest feasible budget "
            "a 1-byte budget's InfeasibleBudgetError names). A refused budget keeps its row, "
            "with the floor the error names.",
            "- Peak: `remat.measure_peak` (CPU: the profiler's allocation events; CUDA: "
            "`max_memory_allocated`), bytes allocated during forward+backward above what was "
            "allocated before it, after the first call and three unmeasured ones (from which "
            "on remat.compile runs the model as written where its eager step fits the budget). "
            "Step time: `remat.time_step`, one untimed round, then "
            f"{config.get('rounds')} interleaved rounds over every method, the median. "
            "`compile s`: the first call's wall time less the step time (planning and "
            "capture, for remat). `ok`: gradients within 1e-4 of eager's.",
        ]
    )


def _peak(row: Row | None) -> int | None:
    return None if row is None else row.peak_bytes


def _step(row: Row | None) -> float | None:
    return None if row is None else row.step_s


def _pair(row: Row | None) -> str:
    return "-" if row is None else f"{_mib(row.peak_bytes)}, {_s(row.step_s)}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _within(s: Standing) -> str:
    ran = s.lowest is not None
    if not ran:
        return "-"
    return "yes" if not s.over_budget else f"**no** ({len(s.over_budget)} row(s))"
