"""One JSON row per (model, method, setting), and the results file that holds them.

Required keys (issue 5): model, method, budget_bytes (null for methods without one),
peak_bytes (measured by remat.measure_peak), step_s (median of the interleaved timed steps),
compile_s, recompute_flops, eager_peak_bytes, eager_step_s, ok (gradients match eager's), note.
The rest say how each number was obtained: the setting, every timed sample and their spread,
the gradient error, and what the plan predicted.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REQUIRED = (
    "model",
    "method",
    "budget_bytes",
    "peak_bytes",
    "step_s",
    "compile_s",
    "recompute_flops",
    "eager_peak_bytes",
    "eager_step_s",
    "ok",
    "note",
)
RESULT_NAME = re.compile(r"^(?P<device>[a-z]+)-(?P<date>\d{4}-\d{2}-\d{2})\.json$")
"""benchmarks/results/<device>-<date>.json (core-*.json and the like belong to other scripts)."""

GRAD_TOLERANCE = 1e-4
"""Largest ||g - g_eager|| / ||g_eager|| over parameters for `ok` (fp32; compiled code reorders
floating-point sums, so bit equality is not expected)."""


@dataclass(frozen=True)
class Row:
    model: str
    method: str
    setting: str
    budget_bytes: int | None
    peak_bytes: int | None
    step_s: float | None
    compile_s: float | None
    recompute_flops: int | None
    eager_peak_bytes: int | None
    eager_step_s: float | None
    ok: bool | None
    """None when the method did not run at this setting (the note says why)."""
    note: str = ""
    step_min_s: float | None = None
    step_max_s: float | None = None
    step_samples: tuple[float, ...] = ()
    peak_samples: tuple[int, ...] = ()
    grad_rel_error: float | None = None
    first_call_s: float | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    """remat rows: predicted peak, planning time, solver status and gap, ops, graphs."""

    @property
    def ran(self) -> bool:
        return self.peak_bytes is not None and self.step_s is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["step_samples"] = list(self.step_samples)
        data["peak_samples"] = list(self.peak_samples)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise ValueError(f"row {data.get('model')}/{data.get('method')} lacks {missing}")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["step_samples"] = tuple(known.get("step_samples", ()))
        known["peak_samples"] = tuple(known.get("peak_samples", ()))
        return cls(**known)


@dataclass(frozen=True)
class Results:
    meta: dict[str, Any]
    rows: tuple[Row, ...]
    planning: tuple[dict[str, Any], ...] = ()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "meta": self.meta,
            "rows": [row.to_json() for row in self.rows],
            "planning": list(self.planning),
        }
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Results:
        data = json.loads(Path(path).read_text())
        rows = tuple(Row.from_json(row) for row in data["rows"])
        return cls(data["meta"], rows, tuple(data.get("planning", ())))


def result_files(directory: Path) -> list[Path]:
    """The suite's results files in `directory`, oldest date first."""
    found = [p for p in Path(directory).glob("*.json") if RESULT_NAME.match(p.name)]
    return sorted(found, key=lambda p: (RESULT_NAME.match(p.name)["date"], p.name))


def merge(
    old: Results | None,
    meta: dict[str, Any],
    rows: list[Row],
    planning: list[dict[str, Any]],
    run: dict[str, Any],
) -> Results:
    """This run's results over `old` (today's file): the models run now replace theirs, a
    planning sweep run now replaces the old one, and the run joins the list of runs. Each model
    and the planning sweep name the run (index into meta["runs"]) that measured them."""
    runs = [*(old.meta["runs"] if old else []), run]
    index = len(runs) - 1
    models = dict(old.meta["models"]) if old else {}
    made_by = dict(old.meta.get("model_runs", {})) if old else {}
    for name, description in meta["models"].items():
        models[name] = description
        made_by[name] = index
    kept = [r for r in (old.rows if old else ()) if r.model not in meta["models"]]
    new_meta = meta | {"models": models, "model_runs": made_by, "runs": runs}
    new_planning = tuple(planning) if planning or not old else old.planning
    new_meta["planning_run"] = index if planning or not old else old.meta.get("planning_run")
    order = list(models)
    all_rows = sorted([*kept, *rows], key=lambda r: order.index(r.model))
    return Results(new_meta, tuple(all_rows), new_planning)
