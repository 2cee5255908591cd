"""The hf suite's run of one model: remat against Hugging Face's own gradient checkpointing.

Order: eager (the session's reference), hf-checkpoint, torch-budget at each setting, remat's
floor (the error a 1-byte budget raises), remat-ilp at fractions of hf-checkpoint's measured
peak (as int byte budgets), at every other peer's measured peak and at the floor, then one
interleaved timing of everything that ran (the peer suite's `Session`). A budget remat refuses
(InfeasibleBudgetError) keeps its row, with the floor the error names; every remat row that ran
says whether its measured peak stayed within its budget (`plan["within_budget"]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from benchmarks.suite import ours, peers
from benchmarks.suite.budgets import BudgetChoice
from benchmarks.suite.candidate import Failed, describe_error
from benchmarks.suite.measure import Prepared
from benchmarks.suite.records import Row
from benchmarks.suite.runner import Log, Session, SuiteConfig
from benchmarks.suite.workloads import Workload


def run_hf_workload(workload: Workload, config: SuiteConfig, log: Log) -> list[Row]:
    torch._dynamo.reset()  # every compiled copy of the last workload is gone; start clean
    torch.manual_seed(0)
    try:
        session = Session(workload, config, workload.build().to(config.device), log)
    except Exception as error:  # the model itself does not run: one row says why, go on
        log(f"{workload.name}: eager failed, nothing else run: {describe_error(error)}")
        return [_not_run(workload.name, f"eager failed: {describe_error(error)}")]
    checkpointed = session.run(peers.hf_checkpoint(workload, session.base))
    session.run_all(peers.torch_budget(workload, session.base, b) for b in config.torch_budgets)
    try:
        floor, detail = ours.probe_floor(workload, session.base, session.inputs, config.time_limit)
    except Exception as error:  # a remat failure is a result too: record it, time the rest
        note = f"remat's floor probe failed: {describe_error(error)}"
        session.record(Failed(ours.REMAT_ILP, "all budgets", None, note))
        return session.finish()
    peak = checkpointed.peak.peak_bytes if isinstance(checkpointed, Prepared) else None
    log(f"{workload.name}: remat floor {floor} B ({detail}); hf-checkpoint peak {peak} B")
    others = [(label, b) for label, b in session.peaks(inductor=False) if label != "hf-checkpoint"]
    for choice in hf_budgets(peak, floor, detail, config.checkpoint_fractions, others):
        session.run(
            ours.remat_compiled(workload, session.base, choice.bytes, method=ours.REMAT_ILP,
                                setting=choice.setting, solver="ilp",
                                time_limit=config.time_limit)
        )  # fmt: skip
    return [with_budget_check(row) for row in session.finish()]


def hf_budgets(
    checkpoint_peak: int | None,
    floor: int,
    floor_detail: str,
    fractions: tuple[float, ...],
    other_peaks: Sequence[tuple[str, int]] = (),
) -> list[BudgetChoice]:
    """remat's budgets, highest first: each fraction of hf-checkpoint's measured peak (also
    where it lies below the floor: that row records remat's refusal), every other peer's
    measured peak at or above the floor (eager's, torch-budget's: every peer point gets a
    remat row at its peak), and the floor itself."""
    choices: dict[int, BudgetChoice] = {}
    for label, value in other_peaks:
        if value >= floor:
            known = choices.get(value)
            matched = (*(known.matched if known else ()), label)
            choices[value] = BudgetChoice(value, f"matched: {', '.join(matched)}", matched)
    if checkpoint_peak is not None:
        for fraction in fractions:
            value = int(fraction * checkpoint_peak)
            if fraction == 1.0:
                known = choices.get(value)
                matched = ("hf-checkpoint", *(known.matched if known else ()))
                choices[value] = BudgetChoice(value, f"matched: {', '.join(matched)}", matched)
            else:
                choices.setdefault(value, BudgetChoice(value, f"{fraction:g} x hf-checkpoint"))
    at_floor = f"remat's floor ({floor_detail})"
    same = choices.get(floor)
    choices[floor] = (
        BudgetChoice(floor, at_floor)
        if same is None
        else BudgetChoice(floor, f"{same.setting} = {at_floor}", same.matched)
    )
    return sorted(choices.values(), key=lambda choice: -choice.bytes)


def with_budget_check(row: Row) -> Row:
    """A remat row that ran, with whether its measured peak stayed within its budget."""
    if not row.method.startswith("remat-") or not row.ran or row.budget_bytes is None:
        return row
    assert row.peak_bytes is not None
    return replace(row, plan={**row.plan, "within_budget": row.peak_bytes <= row.budget_bytes})


def _not_run(model: str, note: str) -> Row:
    return Row(model, "eager", "keep all", None, None, None, None, None, None, None, None, note)
