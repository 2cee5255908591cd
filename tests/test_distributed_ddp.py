"""remat under DDP: 2 ranks (gloo, CPU) spawned by the test, one byte budget per rank.

DDP splits the step at its gradient buckets (Dynamo's DDPOptimizer compiles one graph per
bucket); remat plans the graphs together and the measured per-rank peak stays within the
budget, with the gradients plain DDP computes. The measured peak is the check that would catch
a silent over-budget run: with the step's graphs planned one by one (before the joint plan),
this model ran at 1.15x the budget.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from spawned import grad_error, on_ranks
from torch.nn.parallel import DistributedDataParallel as DDP

import remat
from remat.engines import engine_reserve
from remat.examples import ResidualMLP
from remat.measure import measure_peak

FRACTION = 0.6
"""Budget as a fraction of plain DDP's measured per-rank peak."""


def _model() -> ResidualMLP:
    torch.manual_seed(0)
    return ResidualMLP(width=128, depth=6)


def _ddp(module: torch.nn.Module) -> DDP:
    # 1 MiB buckets: DDP's first bucket is 1 MiB too, so the step is split into several graphs.
    return DDP(module, bucket_cap_mb=1)


def _measure(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Per-rank peak of one steady step. Two warm-up calls: DDP rebuilds its buckets at the
    start of the second call, freeing ones made before any profiling, which the CPU profiler
    cannot see freed (see docs/distributed.md)."""

    def step() -> None:
        model(batch).square().mean().backward()

    def setup() -> None:
        model.zero_grad(set_to_none=True)

    return measure_peak(step, "cpu", warmup=2, repeats=1, setup=setup).peak_bytes


def _compile(module: torch.nn.Module, budget: int, entry: str) -> torch.nn.Module:
    if entry == "compile":
        return remat.compile(module, budget=budget)
    return torch.compile(module, backend="remat", options={"budget": budget, "inner": "eager"})


def _measure_rank(rank: int, entry: str = "compile") -> dict:
    batch = torch.randn(1024, 128, generator=torch.Generator().manual_seed(rank))
    plain = _ddp(_model())
    plain_peak = _measure(plain, batch)
    budget = int(FRACTION * plain_peak)
    compiled = _compile(_ddp(_model()), budget, entry)
    if entry == "backend":  # its first step runs the bucket graphs' plans made one by one
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled(batch).square().mean().backward()
        first = {"first_predicted": remat.last_plans().predicted_peak}
        first["first_warned"] = any(issubclass(w.category, RuntimeWarning) for w in caught)
    peak = _measure(compiled, batch)
    result = {"plain_peak": plain_peak, "budget": budget, "peak": peak}
    if entry == "backend":
        result.update(first)
        report = remat.last_plans()
        result["predicted"] = report.predicted_peak
        result["graphs"] = len(report.graphs)
    result["grad_error"] = grad_error(plain, compiled)
    if entry == "compile":
        step = next(iter(compiled.remat_plans.values()))
        result["predicted"] = step.predicted_peak
        result["graphs"] = len(step.graphs)
        result["joint"] = step.runs_joint_plan
        result["reserve"] = engine_reserve(compiled.original_module)
    return result


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each rank measured under remat.compile (the ranks run once for the module); printed
    for `pytest -s` (the figures in docs/distributed.md)."""
    measured = on_ranks(_measure_rank, tmp_path_factory.mktemp("ddp"), "compile")
    mib = 2**20
    for rank, result in enumerate(measured):
        print(
            f"rank {rank}: plain DDP {result['plain_peak'] / mib:.2f} MiB, budget "
            f"{result['budget'] / mib:.2f} MiB, remat.compile {result['peak'] / mib:.2f} MiB, "
            f"{result['graphs']} graphs, grad rel. error {result['grad_error']:.1e}"
        )
    return measured


def test_each_rank_measures_at_most_the_budget_well_below_plain_ddp(ranks):
    for rank in ranks:
        assert rank["plain_peak"] > rank["budget"]
        assert rank["predicted"] <= rank["budget"]
        assert rank["peak"] <= rank["budget"], rank


def test_the_bucket_split_step_is_planned_whole(ranks):
    for rank in ranks:
        assert rank["graphs"] >= 2
        assert rank["joint"]


def test_gradients_equal_plain_ddp_on_every_rank(ranks):
    for rank in ranks:
        assert rank["grad_error"] <= 1e-5


def test_plain_ddp_reserves_nothing(ranks):
    """Its buckets are made before the step and filled in place (measured: the same per-rank
    peak as the model without DDP, docs/distributed.md)."""
    assert all(rank["reserve"] == 0 for rank in ranks)


def test_the_backend_plans_the_bucket_graphs_together_within_the_budget(tmp_path):
    """torch.compile(DDP(model), backend="remat"): DDPOptimizer hands over one bucket graph at a
    time; the first step plans each beside the buckets compiled before it, later steps run the
    buckets' joint plan. The check that would catch a silent over-budget run is the measured
    peak (the buckets planned each as if it were the whole step had gone over, no error)."""
    for number, rank in enumerate(on_ranks(_measure_rank, tmp_path, "backend")):
        print(
            f"rank {number}: plain DDP {rank['plain_peak'] / 2**20:.2f} MiB, budget "
            f"{rank['budget'] / 2**20:.2f} MiB, backend {rank['peak'] / 2**20:.2f} MiB "
            f"(predicted {rank['predicted'] / 2**20:.2f}; first step predicted "
            f"{rank['first_predicted'] / 2**20:.2f}), {rank['graphs']} graphs"
        )
        assert rank["graphs"] >= 2
        assert rank["first_predicted"] <= rank["budget"] and not rank["first_warned"], rank
        assert rank["predicted"] <= rank["budget"] and rank["peak"] <= rank["budget"], rank
        assert rank["grad_error"] <= 1e-5
