"""The torch.compile backend under FSDP2: 2 ranks (gloo, CPU) spawned by the test.

torchtitan's pattern: `fully_shard` each block and the root, compile each block on its own
(`block.compile(backend=b)`, one remat backend for the step), run the root eagerly; or compile
the root (`torch.compile(model, backend=b)`: Dynamo skips its loop over the sharded blocks and
compiles the blocks). Dynamo hands over one graph for all blocks (the parameters are inputs):
each block's run is its own graph of the step, with its own plan. What FSDP2 and the eager root
hold around the blocks is measured in the second step (remat.backend_probe); from the third on
the step runs its joint plan with that counted. The measured per-rank peak is the check that
would catch a silent over-budget run (the backend refused FSDP2 before it measured this).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from spawned import grad_error, on_ranks
from test_distributed_fsdp import _measure, _model, _tokens, _unsharded

import remat

fsdp = pytest.importorskip("torch.distributed.fsdp")

FRACTION = 0.6
"""Budget as a fraction of plain FSDP2's measured per-rank peak."""

STEPS = 4
"""Training steps before the measured ones: leanest plans, measured, then the joint plan."""


def _backend_rank(rank: int, pattern: str, fraction: float) -> dict:
    tokens = _tokens(rank)
    plain = _model()
    plain_peak = _measure(plain, tokens)
    budget = int(fraction * plain_peak)
    model = _model()
    backend = remat.backend(budget=budget, inner="eager")
    if pattern == "blocks":
        for block in model.blocks:
            block.compile(backend=backend)
        run = model
    else:
        run = torch.compile(model, backend=backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay plain's
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(STEPS):
                optimizer.zero_grad(set_to_none=True)
                run(*tokens)[1].backward()
                optimizer.step()
        peak = _measure(run, tokens)
    except remat.InfeasibleBudgetError as error:
        return {"error": str(error), "floor": error.floor, "budget": budget}
    for each in (plain, run):
        each.zero_grad(set_to_none=True)
        each(*tokens)[1].backward()
    report = backend.last_plans
    assert report is not None
    probe = backend.whole_step.probe
    return {
        "plain_peak": plain_peak,
        "budget": budget,
        "peak": peak,
        "predicted": report.predicted_peak,
        "graphs": len(report.graphs),
        "measured_outside": probe.profile.peak if probe and probe.profile else None,
        "grad_error": grad_error(plain, model),
        "warnings": [str(w.message) for w in caught if "remat" in str(w.message)],
    }


def _print(measured: list[dict], pattern: str) -> None:
    mib = 2**20
    for rank, r in enumerate(measured):
        print(
            f"rank {rank} ({pattern}): plain FSDP2 {r['plain_peak'] / mib:.2f} MiB, budget "
            f"{r['budget'] / mib:.2f} MiB, backend {r['peak'] / mib:.2f} MiB (predicted "
            f"{r['predicted'] / mib:.2f}; outside the graphs at most "
            f"{r['measured_outside'] / mib:.2f}), {r['graphs']} graphs, grad rel. error "
            f"{r['grad_error']:.1e}"
        )


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> list[dict]:
    """Each block compiled on its own (torchtitan's pattern); printed for `pytest -s`."""
    measured = on_ranks(_backend_rank, tmp_path_factory.mktemp("blocks"), "blocks", FRACTION)
    _print(measured, "blocks")
    return measured


def _check_trains_within_budget(ranks: list[dict]) -> None:
    for rank in ranks:
        assert "error" not in rank, rank
        assert rank["peak"] <= rank["budget"] < rank["plain_peak"], rank
        assert rank["peak"] <= rank["predicted"] <= rank["budget"], rank
        assert rank["grad_error"] <= 1e-5, rank
        assert not rank["warnings"], rank


def test_each_block_compiled_on_its_own_trains_within_the_budget_on_every_rank(blocks):
    _check_trains_within_budget(blocks)


def test_each_block_run_is_its_own_graph_planned_with_what_fsdp2_holds(blocks):
    """One graph from Dynamo, four runs a step: four graphs, each with its own plan; at least
    one block's all-gathered parameters are counted outside them."""
    block_bytes = sum(p.numel() * 4 for p in _unsharded().blocks[0].parameters())
    for rank in blocks:
        assert rank["graphs"] == 4
        assert rank["measured_outside"] >= block_bytes


@pytest.mark.slow
def test_the_compiled_root_trains_within_the_budget_on_every_rank(tmp_path):
    measured = on_ranks(_backend_rank, tmp_path, "model", FRACTION)
    _print(measured, "model")
    _check_trains_within_budget(measured)


@pytest.mark.slow
def test_a_budget_below_the_whole_steps_floor_is_refused_naming_it(tmp_path):
    for rank in on_ranks(_backend_rank, tmp_path, "blocks", 0.25):
        assert "measured outside the graphs" in rank["error"], rank
        assert rank["floor"] > rank["budget"]
