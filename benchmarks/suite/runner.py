"""One workload, every method: build, first call, peak, then interleaved timing, then rows.

Order: eager and the peers first (their measured peaks become remat budgets), remat's range
(floor and keep-all), remat at its budgets, rockmate at the same budgets, and finally one
interleaved timing of everything that ran. A method that fails at a setting gets a row saying
why; nothing is dropped.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.suite import ours, peers
from benchmarks.suite.budgets import BudgetChoice, choose_budgets
from benchmarks.suite.candidate import Candidate, Failed, describe_error, flops_of, grads_of
from benchmarks.suite.measure import Prepared, prepare, time_interleaved
from benchmarks.suite.records import GRAD_TOLERANCE, Row
from benchmarks.suite.workloads import Workload

Log = Callable[[str], None]
UNCOMPILED = ("eager", "checkpoint-block", "checkpoint-sqrt", "hf-checkpoint")


@dataclass(frozen=True)
class SuiteConfig:
    device: torch.device
    rounds: int = 5
    """Interleaved timed rounds (each times one step of every method)."""
    torch_budgets: tuple[float, ...] = (0.0, 0.5, 1.0)
    remat_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)
    sqrt_matched: bool = False
    """remat-sqrt also at the peers' peaks (else only at the fractions below 1)."""
    time_limit: float = 5.0
    """remat's ILP time limit per graph, seconds."""
    inductor_budgets: tuple[float, ...] = ()
    """torch-budget-inductor settings; remat-ilp-inductor runs at their peaks. Empty: none."""
    peak_repeats: int = 1
    checkpoint_fractions: tuple[float, ...] = (1.0, 0.8)
    """hf suite: remat-ilp budgets as fractions of hf-checkpoint's measured peak (and the
    floor)."""

    def __post_init__(self) -> None:
        if self.rounds < 5:
            raise ValueError(f"rounds must be >= 5 (median of >= 5 steps), got {self.rounds}")
        if any(not 0.0 <= b <= 1.0 for b in (*self.torch_budgets, *self.inductor_budgets)):
            raise ValueError("activation_memory_budget settings must lie in [0, 1]")
        if any(not 0.0 <= f <= 1.0 for f in self.remat_fractions):
            raise ValueError("remat fractions of [floor, keep-all] must lie in [0, 1]")
        if any(not 0.0 < f <= 1.0 for f in self.checkpoint_fractions):
            raise ValueError("fractions of hf-checkpoint's peak must lie in (0, 1]")


def run_workload(workload: Workload, config: SuiteConfig, log: Log) -> list[Row]:
    torch._dynamo.reset()  # every compiled copy of the last workload is gone; start clean
    torch.manual_seed(0)
    session = Session(workload, config, workload.build().to(config.device), log)
    session.run_all(_peer_candidates(workload, session.base, config))
    try:
        span = ours.probe_range(workload, session.base, session.inputs, config.time_limit)
    except Exception as error:  # a remat failure is a result too: record it, time the rest
        note = f"remat's floor/keep-all probe failed: {describe_error(error)}"
        for method in (ours.REMAT_ILP, ours.REMAT_SQRT):
            session.record(Failed(method, "all budgets", None, note))
        return session.finish()
    log(f"{workload.name}: remat floor {span.floor} B ({span.floor_detail}), keep-all "
        f"{span.keep_all} B")  # fmt: skip
    budgets = session.run_remat(span)
    session.run_inductor(span)
    session.run_all(_rockmate_candidates(workload, session.base, session.inputs, budgets))
    return session.finish()


class Session:
    """The state of one workload's run: the shared model and inputs, and every result so far."""

    def __init__(self, workload: Workload, config: SuiteConfig, base: nn.Module, log: Log):
        self.workload, self.config, self.base, self.log = workload, config, base, log
        self.inputs = workload.inputs(config.device)
        self.results: list[Prepared | Failed] = []
        self.reference: dict[str, torch.Tensor] | None = None
        self.eager_flops: int | None = None
        eager = self.run(peers.eager(workload, base))
        if not isinstance(eager, Prepared):
            raise RuntimeError(f"eager failed on {workload.name}: {eager.note}")
        self.eager = eager
        self.reference = grads_of(eager.candidate.owner)
        self.eager_flops = flops_of(lambda: eager.candidate.module(*self.inputs).backward())

    def record(self, result: Prepared | Failed) -> Prepared | Failed:
        self.results.append(result)
        self.log(_describe(self.workload.name, result))
        return result

    def run(self, candidate: Candidate | Failed) -> Prepared | Failed:
        if isinstance(candidate, Failed):
            return self.record(candidate)
        return self.record(
            prepare(candidate, self.inputs, self.config.device, self.reference,
                    self.eager_flops, self.config.peak_repeats)
        )  # fmt: skip

    def run_all(self, candidates: Iterable[Candidate | Failed]) -> None:
        for candidate in candidates:
            self.run(candidate)

    def peaks(self, inductor: bool) -> list[tuple[str, int]]:
        """The measured peaks of the peers of one backend family (Inductor or not)."""
        return [
            (_label(r.candidate.method, r.candidate.setting), r.peak.peak_bytes)
            for r in self.results
            if isinstance(r, Prepared)
            and not r.candidate.method.startswith("remat-")
            and r.candidate.method.endswith("-inductor") == inductor
        ]

    def run_remat(self, span: ours.Range) -> list[BudgetChoice]:
        """remat-ilp at every budget, remat-sqrt at the sweep's (or at its own floor)."""
        config = self.config
        budgets, below = choose_budgets(
            span.floor, span.keep_all, config.remat_fractions, self.peaks(inductor=False)
        )
        for choice in budgets:
            self.run(self._remat(choice.bytes, choice.setting, ours.REMAT_ILP, "ilp"))
        if below:
            self.record(_below_floor(ours.REMAT_ILP, below, span))
        for choice in budgets:
            if (choice.matched and not config.sqrt_matched) or choice.bytes >= span.keep_all:
                continue  # at keep-all, sqrt's plan is remat-ilp's: keep everything
            result = self.run(self._remat(choice.bytes, choice.setting, ours.REMAT_SQRT, "sqrt"))
            floor = result.facts.get("floor") if isinstance(result, Failed) else None
            if floor is not None and floor < span.keep_all:
                setting = f"sqrt's own floor (below: {choice.setting})"
                self.run(self._remat(floor, setting, ours.REMAT_SQRT, "sqrt"))
        return budgets

    def _remat(self, budget: int, setting: str, method: str, solver: str) -> Candidate:
        limit = self.config.time_limit if solver == "ilp" else None
        return ours.remat_compiled(
            self.workload, self.base, budget, method=method, setting=setting, solver=solver,
            time_limit=limit,
        )  # fmt: skip

    def run_inductor(self, span: ours.Range) -> None:
        if not self.config.inductor_budgets:
            return
        peaks = self.peaks(inductor=True)
        budgets, below = choose_budgets(span.floor, span.keep_all, (0.0, 1.0), peaks)
        for choice in budgets:
            self.run(
                ours.remat_inductor(self.workload, self.base, choice.bytes,
                                    setting=choice.setting, time_limit=self.config.time_limit)
            )  # fmt: skip
        if below:
            self.record(_below_floor(ours.REMAT_ILP_INDUCTOR, below, span))

    def finish(self) -> list[Row]:
        ran = [r for r in self.results if isinstance(r, Prepared)]
        self.log(f"{self.workload.name}: timing {len(ran)} methods x {self.config.rounds} "
                 "interleaved rounds")  # fmt: skip
        samples = time_interleaved(ran, self.inputs, self.config.device, self.config.rounds)
        timed = {id(p): s for p, s in zip(ran, samples, strict=True)}
        eager_s = statistics.median(timed[id(self.eager)])
        eager_peak = self.eager.peak.peak_bytes
        return [_row(self.workload.name, r, timed.get(id(r)), eager_peak, eager_s)
                for r in self.results]  # fmt: skip


def _label(method: str, setting: str) -> str:
    if method.startswith("torch-budget"):
        return f"{method} {setting.rpartition('=')[2]}"
    return method


def _below_floor(method: str, below: list[tuple[str, int]], span: ours.Range) -> Failed:
    listed = ", ".join(f"{peer} ({peak} B)" for peer, peak in below)
    return Failed(
        method,
        "peers' peaks below remat's floor",
        None,
        f"not run at {listed}: below remat's floor {span.floor} B ({span.floor_detail}); "
        "the floor budget's row is remat's lowest",
    )


def _peer_candidates(workload: Workload, base: nn.Module, config: SuiteConfig):
    yield peers.checkpoint_block(workload, base)
    yield peers.checkpoint_sqrt(workload, base)
    for budget in config.torch_budgets:
        yield peers.torch_budget(workload, base, budget)
    for budget in config.inductor_budgets:
        yield peers.torch_budget_inductor(workload, base, budget)


def _rockmate_candidates(workload, base, inputs, budgets: list[BudgetChoice]):
    first = peers.rockmate(workload, base, inputs, budgets[0].bytes)
    if isinstance(first, Failed):
        listed = ", ".join(str(c.bytes) for c in budgets)
        note = f"{first.note}; not run at any of remat-ilp's budgets ({listed} B)"
        yield Failed(first.method, "remat-ilp's budgets", None, note)
        return
    yield first
    for choice in budgets[1:]:
        yield peers.rockmate(workload, base, inputs, choice.bytes)


def _row(model: str, result: Prepared | Failed, samples, eager_peak: int, eager_s: float) -> Row:
    if isinstance(result, Failed):
        return Row(
            model, result.method, result.setting, result.budget_bytes, None, None, None,
            result.facts.get("recompute_flops"), eager_peak, eager_s, None, result.note,
            plan=dict(result.facts),
        )  # fmt: skip
    candidate, facts = result.candidate, result.facts
    step_s = statistics.median(samples)
    compiled = candidate.method not in UNCOMPILED
    return Row(
        model=model,
        method=candidate.method,
        setting=candidate.setting,
        budget_bytes=facts.get("budget_bytes", candidate.budget_bytes),
        peak_bytes=result.peak.peak_bytes,
        step_s=step_s,
        compile_s=max(0.0, result.first_call_s - step_s) if compiled else 0.0,
        recompute_flops=result.recompute_flops,
        eager_peak_bytes=eager_peak,
        eager_step_s=eager_s,
        ok=result.grad_error <= GRAD_TOLERANCE,
        note=candidate.note,
        step_min_s=min(samples),
        step_max_s=max(samples),
        step_samples=tuple(samples),
        peak_samples=result.peak.samples,
        grad_rel_error=result.grad_error,
        first_call_s=result.first_call_s,
        plan={k: v for k, v in facts.items() if k not in ("recompute_flops", "compiled")},
    )


def _describe(model: str, result: Prepared | Failed) -> str:
    if isinstance(result, Failed):
        return f"{model}: {result.method} [{result.setting}] did not run: {result.note}"
    c = result.candidate
    return (
        f"{model}: {c.method} [{c.setting}] peak {result.peak.peak_bytes / 2**20:.2f} MiB, "
        f"first call {result.first_call_s:.1f} s, grad error {result.grad_error:.1e}"
    )
