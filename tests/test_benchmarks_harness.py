"""The benchmark harness itself (benchmarks/suite), on tiny models: fast, no timing asserted."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from benchmarks.suite import goal, peers
from benchmarks.suite.budgets import choose_budgets
from benchmarks.suite.candidate import Failed, grads_of, max_grad_error
from benchmarks.suite.records import REQUIRED, Results, Row, merge, result_files
from benchmarks.suite.report import write_docs
from benchmarks.suite.workloads import FAMILIES, workloads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models are tiny: a second thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _row(method: str, peak: int | None, step: float | None, **extra) -> Row:
    base = dict(
        model="m",
        method=method,
        setting=extra.pop("setting", method),
        budget_bytes=None,
        peak_bytes=peak,
        step_s=step,
        compile_s=0.0,
        recompute_flops=0,
        eager_peak_bytes=100,
        eager_step_s=1.0,
        ok=True if peak is not None else None,
        note="",
        step_min_s=step,
        step_max_s=step,
        step_samples=(step,) * 5 if step else (),
    )
    return Row(**(base | extra))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sequential_view_computes_the_model(name: str) -> None:
    (workload,) = workloads("tiny", (name,))
    torch.manual_seed(0)
    model = workload.build()
    x, _ = workload.inputs(torch.device("cpu"))
    out = x
    for stage in workload.stages(model):
        out = stage(out)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    assert workload.blocks(model), "every model names its blocks"


@pytest.mark.parametrize("build", [peers.checkpoint_block, peers.checkpoint_sqrt])
def test_checkpoint_methods_give_eager_gradients(build) -> None:
    (workload,) = workloads("tiny", ("unet",))
    torch.manual_seed(0)
    base = workload.build()
    inputs = workload.inputs(torch.device("cpu"))
    eager = peers.eager(workload, base)
    eager.module(*inputs).backward()
    candidate = build(workload, base)
    candidate.module(*inputs).backward()
    assert max_grad_error(candidate.owner, grads_of(eager.owner)) < 1e-6
    if build is peers.checkpoint_block:
        wrapped = [m for m in candidate.owner.modules() if isinstance(m, peers.Checkpointed)]
        assert len(wrapped) == len(workload.blocks(base))


def test_torch_budget_scopes_the_knob_and_partitions_under_it() -> None:
    (workload,) = workloads("tiny", ("mlp",))
    torch.manual_seed(0)
    base = workload.build()
    inputs = workload.inputs(torch.device("cpu"))
    before = torch._functorch.config.activation_memory_budget
    seen: list[float] = []
    original = torch._functorch.partitioners.min_cut_rematerialization_partition

    def spy(*args, **kwargs):
        seen.append(torch._functorch.config.activation_memory_budget)
        return original(*args, **kwargs)

    torch._dynamo.reset()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch._functorch.partitioners, "min_cut_rematerialization_partition", spy)
        candidate = peers.torch_budget(workload, base, 0.25)
        candidate.module(*inputs).backward()
    assert seen == [0.25]
    assert torch._functorch.config.activation_memory_budget == before
    assert candidate.facts()["recompute_flops"] is not None
    eager = copy.deepcopy(base)
    workload.step_module(eager)(*inputs).backward()
    assert max_grad_error(candidate.owner, grads_of(eager)) < 1e-5


def test_rockmate_row_says_why_it_did_not_run() -> None:
    (workload,) = workloads("tiny", ("mlp",))
    base = workload.build()
    result = peers.rockmate(workload, base, workload.inputs(torch.device("cpu")), 10**6)
    if isinstance(result, Failed):
        assert result.note and result.method == "rockmate"


def test_budgets_match_peer_peaks_and_sweep_the_range() -> None:
    peaks = [("eager", 210), ("ckpt", 120), ("tb 0", 121), ("tb 0.5", 150), ("low", 90)]
    chosen, below = choose_budgets(100, 200, (0.0, 0.5, 1.0), peaks)
    assert [c.bytes for c in chosen] == [200, 150, 120, 100]
    assert below == [("low", 90)]
    assert chosen[0].matched == ("eager",)
    assert chosen[2].matched == ("ckpt", "tb 0")  # within 1%: the lower peak serves both
    assert "fraction 0.5" in chosen[1].setting  # the fraction fell on a matched peak
    near_top, _ = choose_budgets(100, 200, (0.0, 1.0), [("eager", 210), ("tb 1", 199)])
    assert [c.bytes for c in near_top] == [199, 100]
    assert near_top[0].matched == ("tb 1", "eager")
    with pytest.raises(ValueError):
        choose_budgets(0, 10, (0.5,), [])


def test_goal_needs_a_remat_row_at_most_the_peak_and_within_5_percent() -> None:
    rows = [
        _row("checkpoint-block", 100, 1.0),
        _row("torch-budget", 80, 1.0),
        _row("eager", 200, 0.5),
        _row("rockmate", None, None, note="import failed"),
        _row("torch-budget-inductor", 100, 0.2),
        _row("remat-ilp", 100, 1.04),
        _row("remat-ilp", 90, 1.2),
        _row("remat-ilp", 70, 0.9, ok=False),  # wrong gradients never count
    ]
    verdicts = {v.peer: v for v in goal.check(rows)}
    assert verdicts["checkpoint-block"].met is True
    assert verdicts["torch-budget"].met is False  # the only row below 80 B is not ok
    assert verdicts["eager"].met is False  # 1.04 s > 1.05 x 0.5 s
    assert verdicts["rockmate"].met is None
    assert "remat-ilp-inductor" in verdicts["torch-budget-inductor"].reason
    assert len(goal.failures(goal.check(rows))) == 3


def _results(tmp_path, rows, planning=(), models=None, old=None, command="--quick"):
    meta = {
        "device": "cpu", "device_name": "x", "machine": "x", "torch": "t", "threads": 1,
        "date": "2026-01-02", "models": models or {"m": "a model"},
    }  # fmt: skip
    run = {
        "command": f"python -m benchmarks {command}", "started": "2026-01-02 03:04",
        "wall_s": 60.0, "load_start": "1", "load_end": "2", "size": "quick",
        "models": list(meta["models"]), "config": {"rounds": 5, "inductor_budgets": ()},
        "planning_points": len(planning),
    }  # fmt: skip
    return merge(old, meta, list(rows), list(planning), run)


PLANNING = {
    "family": "mlp", "layers": 2, "fx_nodes": 10, "remat_ops": 8, "torch_partition_s": 0.1,
    "remat_total_s": 0.2, "remat_solve_s": 0.1, "remat_capture_s": 0.05, "remat_rewrite_s": 0.05,
    "status": "optimal", "gap": 0.0, "time_limit": 5.0, "remat_budget": "0.5 of keep-all",
}  # fmt: skip


def test_results_round_trip_and_docs(tmp_path) -> None:
    rows = (
        _row("eager", 200, 0.5),
        _row("remat-ilp", 100, 0.52, budget_bytes=120, plan={"predicted_peak": 99}),
        _row("rockmate", None, None, note="a | b"),
    )
    results = _results(tmp_path, rows, [PLANNING])
    path = tmp_path / "results" / "cpu-2026-01-02.json"
    results.write(path)
    (tmp_path / "results" / "core-cpu-2026-01-02.json").write_text("{}")
    assert result_files(tmp_path / "results") == [path]
    loaded = Results.read(path)
    assert loaded.rows == rows
    assert set(REQUIRED) <= set(loaded.rows[0].to_json())
    page = write_docs(loaded, path, tmp_path / "docs")
    text = page.read_text()
    assert "Met for 1 of 1 peer rows" in text and "a \\| b" in text
    assert (tmp_path / "docs" / "benchmarks" / "cpu-m.png").stat().st_size > 0
    assert (tmp_path / "docs" / "benchmarks" / "cpu-planning.png").stat().st_size > 0


def test_merge_replaces_the_models_run_now_and_keeps_the_rest(tmp_path) -> None:
    first = _results(
        tmp_path,
        [_row("eager", 1, 1.0), replace(_row("eager", 2, 1.0), model="n")],
        [PLANNING],
        models={"m": "a", "n": "b"},
    )
    second = _results(tmp_path, [_row("eager", 3, 1.0)], old=first, command="--merge")
    assert [(r.model, r.peak_bytes) for r in second.rows] == [("m", 3), ("n", 2)]
    assert second.planning == first.planning and second.meta["planning_run"] == 0
    assert second.meta["model_runs"] == {"m": 1, "n": 0} and len(second.meta["runs"]) == 2
