"""remat.analysis as a library: input specs, factories, the schema, and one tiny analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from remat.analysis import AnalysisOptions, TargetError, analyze, build_target, parse_input_spec
from remat.analysis.core import sample_budgets
from remat.analysis.schema import FIELDS, validate
from remat.budget import parse_budget
from remat.ir import PlanStatus
from remat.simulate import simulate

DOCS = Path(__file__).resolve().parents[1] / "docs"

FACTORY = """
import torch
from remat.examples import ResidualMLP

def build():
    torch.manual_seed(0)
    return ResidualMLP(width=32, depth=3)

def with_inputs():
    torch.manual_seed(0)
    return ResidualMLP(width=32, depth=3), (torch.randn(128, 32),)

def not_a_model():
    return 42

def raises():
    raise RuntimeError("no weights here")

value = 3
"""


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("factory") / "tiny_models.py"
    path.write_text(FACTORY)
    return str(path)


@pytest.mark.parametrize(
    ("text", "shape", "dtype"),
    [
        ("randn(8,3,224,224)", (8, 3, 224, 224), torch.float32),
        ("rand((4, 5), dtype=float16)", (4, 5), torch.float16),
        ("zeros(3, dtype=torch.bfloat16)", (3,), torch.bfloat16),
        ("randint(512,(8,128))", (8, 128), torch.int64),
        ("randint(5, 10, (2, 2), dtype=int32)", (2, 2), torch.int32),
    ],
)
def test_input_specs_build_tensors(text: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    value = parse_input_spec(text).build(torch.device("cpu"))
    assert value.shape == shape and value.dtype == dtype


def test_randint_respects_its_range() -> None:
    value = parse_input_spec("randint(5, 10, (1000,))").build(torch.device("cpu"))
    assert int(value.min()) >= 5 and int(value.max()) < 10


def test_a_constant_input_passes_through() -> None:
    assert parse_input_spec("0.5").build(torch.device("cpu")) == 0.5


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("randn(8,3", "cannot read input spec"),
        ("empty(3)", "unknown input maker 'empty'"),
        ("randn(-1)", "non-negative integers"),
        ("randn(n)", "only numbers and tuples"),
        ("randn(3, dtype=cplx)", "unknown dtype 'cplx'"),
        ("randn(3, device='cuda')", "unknown keyword 'device'"),
        ("randint(10)", "randint takes"),
        ("randint(10, 5, (3,))", "low < high"),
    ],
)
def test_bad_input_specs_say_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(TargetError, match=says.replace("(", r"\(")):
        parse_input_spec(text)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_colon_here", "expected MODULE:FACTORY"),
        ("remat_no_such_module_xyz:build", "no module named 'remat_no_such_module_xyz'"),
        ("{file}:missing", "has no attribute 'missing'"),
        ("{file}:value", "not a callable"),
        ("{file}:not_a_model", "return an nn.Module"),
        ("{file}:raises", "RuntimeError: no weights here"),
        ("{file}:build", "pass one --input"),
        ("/no/such/file.py:build", "no such file"),
    ],
)
def test_bad_factories_say_what_to_fix(factory_file: str, spec: str, says: str) -> None:
    with pytest.raises(TargetError, match=says):
        build_target(spec.format(file=factory_file))


def test_input_specs_replace_the_factorys_example_args(factory_file: str) -> None:
    target = build_target(f"{factory_file}:with_inputs", ["randn(4, 32)"], dtype=torch.float64)
    (x,) = target.args
    assert x.shape == (4, 32) and x.dtype == torch.float64
    assert next(target.model.parameters()).dtype == torch.float64


def test_sampled_budgets_span_floor_to_keep_all() -> None:
    assert sample_budgets(100, 200, 5) == [100, 125, 150, 175, 200]
    assert sample_budgets(100, 200, 1) == [200]
    assert sample_budgets(100, 200, 0) == []


@pytest.fixture(scope="module")
def tiny_analysis(factory_file: str):
    target = build_target(f"{factory_file}:with_inputs")
    budgets = (("0.05", parse_budget(0.05)), ("0.7", parse_budget(0.7)), ("1", parse_budget(1.0)))
    options = AnalysisOptions(
        budgets=budgets,
        solver="ilp",
        time_limit=2.0,
        samples=3,
        sample_time_limit=1.0,
        floor_time_limit=1.0,
    )
    return analyze(target, options)


def test_budgets_below_the_floor_are_reported_not_raised(tiny_analysis) -> None:
    low, _, full = tiny_analysis.budgets
    assert not low.feasible and "smallest feasible budget" in (low.message or "")
    assert full.feasible and full.status == PlanStatus.OPTIMAL.value
    assert full.predicted_peak == tiny_analysis.keep_all_peak and full.recompute_flops == 0


def test_predicted_peaks_are_the_simulators(tiny_analysis) -> None:
    for result in (*tiny_analysis.budgets, *tiny_analysis.curve, *tiny_analysis.sqrt_curve):
        if not result.feasible:
            continue
        peaks = [
            simulate(item.captured.graph, plan.schedule, plan.boundary).peak + held
            for item, plan, held in zip(tiny_analysis.step.graphs, result.plans, result.held)
        ]
        assert result.predicted_peak == max(peaks) <= result.budget_bytes


def test_floor_lies_between_zero_and_keep_all(tiny_analysis) -> None:
    assert 0 < tiny_analysis.floor <= tiny_analysis.keep_all_peak
    feasible = [r for r in tiny_analysis.curve if r.feasible]
    assert feasible and min(r.budget_bytes for r in feasible) >= tiny_analysis.floor - 1


def test_peak_breakdown_sums_to_the_keep_all_peak(tiny_analysis) -> None:
    breakdown = tiny_analysis.breakdown
    assert breakdown.peak == tiny_analysis.keep_all_peak
    assert sum(c.bytes for c in breakdown.by_module) == breakdown.peak
    assert sum(c.bytes for c in breakdown.by_op) == breakdown.peak
    assert any(c.name.startswith("layers.") for c in breakdown.by_module)


def test_schema_validation_catches_missing_mistyped_and_unknown_keys() -> None:
    problems = validate({"schema": 1, "surprise": True})
    assert "schema: 1 is not str" in problems
    assert "memory: missing" in problems
    assert "surprise: not in the schema" in problems


def test_the_docs_document_every_field_and_hold_a_valid_report() -> None:
    page = (DOCS / "analyze.md").read_text()
    missing = [f.path for f in FIELDS if f"`{f.path}`" not in page]
    assert not missing, f"docs/analyze.md lacks {missing}"
    report = json.loads((DOCS / "analyze" / "report.json").read_text())
    assert validate(report) == []
    assert report["command"] in page
    for name in report["files"].values():
        assert (DOCS / "analyze" / name).is_file()
