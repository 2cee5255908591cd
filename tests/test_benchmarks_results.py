"""The recorded benchmark results (benchmarks/results/<device>-<date>.json): complete, honest,
and meeting the goal. Reads the files; runs nothing and asserts no timing of its own.

Goal (docs/benchmarks.md): for every model and every peer row, some remat-ilp row with eager's
gradients has peak <= the peer's and step_s <= 1.05 x the peer's. Where the recorded run misses
it, the (results file, model) pair is listed in GOAL_MISSED with the reason; the test is then an
xfail(strict=True), so it turns red the day the goal is met and the entry must go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.suite import goal
from benchmarks.suite.records import REQUIRED, Results, result_files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
FILES = result_files(RESULTS)
METHODS = {
    "eager",
    "checkpoint-block",
    "checkpoint-sqrt",
    "torch-budget",
    "rockmate",
    "remat-sqrt",
    "remat-ilp",
}

GOAL_MISSED: dict[tuple[str, str], str] = {
    ("cpu-2026-11-27", "gpt"): "1.14x/1.22x of checkpoint-block/-sqrt at their peaks on ~0.1 s "
    "steps whose spreads overlap; vs block remat's roofline-priced plan recomputes more",
    ("cpu-2026-11-27", "vit"): "the fx-code path ran the ViT step 1.25x eager with nothing "
    "recomputed (torch-budget=1 too), so no remat-ilp row was within 1.05x of eager",
    ("cpu-2026-12-03", "gpt"): "1.06x of checkpoint-sqrt at its peak (0.0743 vs 0.0702 s, spreads "
    "0.066-0.086 and 0.069-0.083 s); remat's plan there recomputes no FLOP-counted op, only cheap "
    "ones; at eager's peak 1.04x",
    ("cpu-2026-12-03", "resnet_bn"): "at 97% of eager's peak (4 MFLOP recomputed) the fx-code path "
    "ran 1.08x eager on ~0.05 s steps (torch's aot_eager 1.07x there)",
    ("cpu-2026-12-03", "vit"): "at eager's peak, nothing recomputed, the fx-code path ran 1.06x "
    "eager (0.0580 vs 0.0545 s; torch's aot_eager 1.03x)",
    ("cpu-2026-12-04", "unet"): "at eager's peak, nothing recomputed, the fx-code path ran 1.052x "
    "eager (0.0489 vs 0.0465 s; torch's aot_eager at activation_memory_budget=1 1.045x); U-Net "
    "met it in the day's runs before (all 30 met at 21:45)",
}
"""(results file, model) -> why that recorded run misses the goal there (docs/benchmarks.md)."""

BUDGET_MISSED: dict[tuple[str, str], str] = {}
"""(results file, model) -> why remat's measured peak exceeds its budget in that run."""


def _cases(table: dict[tuple[str, str], str]) -> list:
    cases = []
    for path in FILES:
        results = Results.read(path)
        for model in results.meta["models"]:
            key = (path.stem, model)
            marks = [pytest.mark.xfail(strict=True, reason=table[key])] if key in table else []
            cases.append(pytest.param(path, model, marks=marks, id=f"{path.stem}-{model}"))
    return cases


pytestmark = pytest.mark.skipif(not FILES, reason="no recorded results in benchmarks/results")


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_model_has_every_method_with_the_required_fields(path: Path) -> None:
    results = Results.read(path)
    for model in results.meta["models"]:
        rows = [r for r in results.rows if r.model == model]
        assert {r.method for r in rows} >= METHODS, f"{model} lacks a method"
        for row in rows:
            assert set(REQUIRED) <= set(row.to_json())
            if row.ran:
                assert len(row.step_samples) >= 5, f"{model}/{row.method}: fewer than 5 steps"
                assert row.step_min_s <= row.step_s <= row.step_max_s
                assert row.ok is not None and row.eager_peak_bytes and row.eager_step_s
            else:
                assert row.note, f"{model}/{row.method} did not run and says nothing about why"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_remat_rows_compute_eager_gradients(path: Path) -> None:
    wrong = [
        (r.model, r.method, r.setting, r.grad_rel_error)
        for r in Results.read(path).rows
        if r.method.startswith("remat-") and r.ran and not r.ok
    ]
    assert not wrong


@pytest.mark.parametrize(("path", "model"), _cases(BUDGET_MISSED))
def test_remat_measured_peak_is_within_its_budget(path: Path, model: str) -> None:
    over = [
        (r.method, r.setting, r.budget_bytes, r.peak_bytes)
        for r in Results.read(path).rows
        if r.model == model and r.method.startswith("remat-") and r.ran
        and r.budget_bytes is not None and r.peak_bytes > r.budget_bytes
    ]  # fmt: skip
    assert not over


@pytest.mark.parametrize(("path", "model"), _cases(GOAL_MISSED))
def test_goal_some_remat_row_beats_every_peer(path: Path, model: str) -> None:
    rows = [r for r in Results.read(path).rows if r.model == model]
    missed = [f"{v.peer} [{v.peer_setting}]: {v.reason}" for v in goal.failures(goal.check(rows))]
    assert not missed, "\n".join(missed)
