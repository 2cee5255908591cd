"""Which byte budgets remat is run at: a sweep over its own range plus the peers' peaks.

Fractions f place a budget at floor + f * (keep_all - floor). Every peak a peer measured
between the floor and the keep-all peak becomes a budget too, so that each peer has a remat row
at its own memory: remat's measured peak stays within its budget, so that row's peak is at most
the peer's, and the comparison is on time alone. Peaks within `tolerance` of each other share
the lowest of them; a fraction within `tolerance` of a matched peak is dropped for it. Peaks
below the floor cannot be matched and are returned apart; peaks at or above the keep-all peak
are matched by the keep-all budget (fraction 1), or by a matched peak just below it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetChoice:
    bytes: int
    setting: str
    """How the budget was chosen, for the row: "fraction 0.5 of [floor, keep-all]" or
    "matched: checkpoint-block, torch-budget 0.5"."""
    matched: tuple[str, ...] = ()
    """The peers whose measured peak this budget equals (or undercuts)."""


def choose_budgets(
    floor: int,
    keep_all: int,
    fractions: tuple[float, ...],
    peer_peaks: list[tuple[str, int]],
    tolerance: float = 0.01,
) -> tuple[list[BudgetChoice], list[tuple[str, int]]]:
    """(budgets ordered high to low, peers whose peak lies below the floor)."""
    if not 0 < floor <= keep_all:
        raise ValueError(f"need 0 < floor <= keep_all, got floor={floor}, keep_all={keep_all}")
    below = [(peer, peak) for peer, peak in peer_peaks if peak < floor]
    at_top = tuple(peer for peer, peak in peer_peaks if peak >= keep_all)
    inside = sorted((peak, peer) for peer, peak in peer_peaks if floor <= peak < keep_all)
    matched: list[BudgetChoice] = []
    for peak, peer in inside:
        last = matched[-1] if matched else None
        if last is not None and peak <= last.bytes * (1 + tolerance):
            matched[-1] = BudgetChoice(last.bytes, f"{last.setting}, {peer}", (*last.matched, peer))
        else:
            matched.append(BudgetChoice(peak, f"matched: {peer}", (peer,)))
    by_bytes = {choice.bytes: choice for choice in matched}
    for fraction in fractions:
        value = floor + round(fraction * (keep_all - floor))
        label = f"fraction {fraction:g} of [floor, keep-all]"
        also = at_top if fraction >= 1 else ()
        near = [b for b, c in by_bytes.items() if c.matched and abs(b - value) <= tolerance * value]
        if near:
            old = by_bytes[near[0]]
            setting = ", ".join((old.setting, *also)) + f" (~{label})"
            by_bytes[near[0]] = BudgetChoice(old.bytes, setting, (*old.matched, *also))
        elif value not in by_bytes:
            setting = label + ("; matched: " + ", ".join(also) if also else "")
            by_bytes[value] = BudgetChoice(value, setting, also)
    return sorted(by_bytes.values(), key=lambda c: -c.bytes), below
