"""The hf benchmark suite's plumbing (benchmarks/suite/hf_*) on one tiny model; no timing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("transformers")

from benchmarks.__main__ import main  # noqa: E402
from benchmarks.suite.hf_report import standing, write_hf_docs  # noqa: E402
from benchmarks.suite.hf_runner import hf_budgets, run_hf_workload, with_budget_check  # noqa: E402
from benchmarks.suite.hf_workloads import SPECS, hf_workloads  # noqa: E402
from benchmarks.suite.records import Results, Row, merge  # noqa: E402
from benchmarks.suite.runner import SuiteConfig  # noqa: E402


@pytest.fixture(scope="module")
def tiny_rows() -> list[Row]:
    """Every hf-suite method on a 2-layer GPT-2 of width 32 (one thread, a few seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (workload,) = hf_workloads("tiny", ("gpt2",))
        config = SuiteConfig(torch.device("cpu"), rounds=5, torch_budgets=(), time_limit=2.0)
        return run_hf_workload(workload, config, lambda line: None)
    finally:
        torch.set_num_threads(threads)


def test_every_method_has_a_row_with_eager_gradients(tiny_rows: list[Row]) -> None:
    methods = [r.method for r in tiny_rows]
    assert methods[:2] == ["eager", "hf-checkpoint"]
    remat = [r for r in tiny_rows if r.method == "remat-ilp"]
    assert len(remat) >= 2  # hf-checkpoint's peak, 0.8 x it, the floor (some may coincide)
    assert any("floor" in r.setting for r in remat)
    for row in tiny_rows:
        if row.ran:
            assert row.ok, (row.method, row.setting, row.grad_rel_error)
        else:  # a refused budget keeps its row, with the floor remat named
            assert row.method == "remat-ilp" and row.plan.get("floor"), row
    for row in remat:
        if row.ran:
            assert row.plan["within_budget"] == (row.peak_bytes <= row.budget_bytes)
            assert row.plan["predicted_peak"] <= row.budget_bytes
            assert row.first_call_s and row.plan["plan_s"] > 0


def test_docs_page_and_plot(tiny_rows: list[Row], tmp_path) -> None:
    meta = {
        "device": "cpu", "device_name": "x", "machine": "x", "torch": "t", "threads": 1,
        "date": "2026-01-02", "models": {"gpt2": "a tiny GPT-2"},
    }  # fmt: skip
    run = {
        "command": "python -m benchmarks --suite hf --quick", "started": "2026-01-02 03:04",
        "wall_s": 60.0, "load_start": "1", "load_end": "2", "size": "tiny",
        "models": ["gpt2"], "planning_points": 0,
        "config": {"rounds": 5, "torch_budgets": [], "time_limit": 2.0,
                   "checkpoint_fractions": [1.0, 0.8]},
    }  # fmt: skip
    results = merge(None, meta, tiny_rows, [], run)
    path = tmp_path / "results" / "hf-cpu-2026-01-02.json"
    results.write(path)
    assert Results.read(path).rows == results.rows
    page = write_hf_docs(Results.read(path), path, tmp_path / "docs")
    text = page.read_text()
    assert page.name == "hf-benchmarks.md"
    assert "Where remat stands against HF gradient checkpointing" in text
    assert "| gpt2 |" in text and "hf-checkpoint" in text
    assert (tmp_path / "docs" / "benchmarks" / "hf-cpu-gpt2.png").stat().st_size > 0


def _row(method: str, peak: int | None, step: float | None, **extra) -> Row:
    base = dict(
        model="m", method=method, setting=extra.pop("setting", method), budget_bytes=None,
        peak_bytes=peak, step_s=step, compile_s=0.0, recompute_flops=0, eager_peak_bytes=200,
        eager_step_s=1.0, ok=True if peak is not None else None, note="",
    )  # fmt: skip
    return Row(**(base | extra))


def test_standing_compares_at_equal_peak_and_below() -> None:
    rows = [
        _row("eager", 200, 1.0),
        _row("hf-checkpoint", 100, 1.4),
        _row("remat-ilp", 99, 1.2, budget_bytes=100, plan={"within_budget": True}),
        _row("remat-ilp", 85, 1.5, budget_bytes=80, plan={"within_budget": False}),
        _row("remat-ilp", None, None, budget_bytes=60, plan={"floor": 75}, setting="0.6 x"),
    ]
    s = standing("m", rows)
    assert s.at_checkpoint is rows[2] and s.time_ratio == pytest.approx(1.2 / 1.4)
    assert s.lowest is rows[3] and s.peak_ratio == pytest.approx(0.85)
    assert s.floor == 75 and s.over_budget == (rows[3],) and s.refused == (rows[4],)


def test_budgets_follow_hf_checkpoints_peak_and_keep_the_floor() -> None:
    chosen = hf_budgets(1000, 700, "proven", (1.0, 0.8))
    assert [c.bytes for c in chosen] == [1000, 800, 700]
    assert chosen[0].matched == ("hf-checkpoint",) and "floor" in chosen[2].setting
    above = hf_budgets(1000, 1200, "lowest found", (1.0, 0.8))
    assert [c.bytes for c in above] == [1200, 1000, 800]  # refused rows record the floor
    assert [c.bytes for c in hf_budgets(None, 700, "x", (1.0,))] == [700]
    (same,) = hf_budgets(700, 700, "proven", (1.0,))
    assert same.matched == ("hf-checkpoint",) and "floor" in same.setting
    peers = [("eager", 1500), ("torch-budget 0.5", 1000), ("torch-budget 0", 600)]
    with_peers = hf_budgets(1000, 700, "proven", (1.0,), peers)
    assert [c.bytes for c in with_peers] == [1500, 1000, 700]  # 600: below the floor
    assert with_peers[1].matched == ("hf-checkpoint", "torch-budget 0.5")
    row = _row("remat-ilp", 120, 1.0, budget_bytes=100)
    assert with_budget_check(row).plan["within_budget"] is False
    assert with_budget_check(_row("eager", 120, 1.0)).plan == {}


def test_workloads_and_cli_choices() -> None:
    names = [w.name for w in hf_workloads("quick")]
    assert names and set(names) <= set(SPECS)
    with pytest.raises(ValueError, match="unknown hf model"):
        hf_workloads("quick", ("gpt5",))
    assert main(["--suite", "hf", "--quick", "--models", "gpt5"]) == 2
    (workload,) = hf_workloads("tiny", ("vit",))
    torch.manual_seed(0)
    model = workload.build()
    x, labels = workload.inputs(torch.device("cpu"))
    loss = workload.step_module(model)(x, labels)
    assert loss.dim() == 0 and len(workload.blocks(model)) == 2
    assert replace(workload, name="v").name == "v"
