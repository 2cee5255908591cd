"""Offline analysis of a training step: where the memory goes and what each byte saved costs.

    from remat.analysis import analyze, AnalysisOptions, build_target
    target = build_target("mypkg.models:build", ["randn(8,3,224,224)"])
    result = analyze(target, AnalysisOptions(budgets=(("0.5", parse_budget(0.5)),)))

`remat analyze` (remat.cli) is this plus tables, pictures and report files.
"""

from remat.analysis.core import (
    Analysis,
    AnalysisOptions,
    BudgetResult,
    ModuleRecompute,
    analyze,
    evaluate_budget,
)
from remat.analysis.step import CapturedStep, TraceError, capture_step, plan_step, step_loss
from remat.analysis.target import (
    InputSpec,
    Target,
    TargetError,
    build_hf_target,
    build_target,
    load_factory,
    parse_hf_config,
    parse_input_spec,
)

__all__ = [
    "Analysis",
    "AnalysisOptions",
    "BudgetResult",
    "CapturedStep",
    "InputSpec",
    "ModuleRecompute",
    "Target",
    "TargetError",
    "TraceError",
    "analyze",
    "build_hf_target",
    "build_target",
    "capture_step",
    "evaluate_budget",
    "load_factory",
    "parse_hf_config",
    "parse_input_spec",
    "plan_step",
    "step_loss",
]
