"""The benchmark's goal, checked over recorded rows (no timing happens here).

For every model and every peer row that ran, some remat row of the same backend family, with
gradients matching eager's, has peak_bytes <= the peer's and step_s <= 1.05 x the peer's.
Families: Inductor peers (method ending in "-inductor") are held against remat-ilp-inductor,
every other peer (eager, checkpoint-*, torch-budget, rockmate) against remat-ilp. Peer rows that
did not run (no peak or no time) have nothing to be compared with and are listed apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.suite.records import Row

TIME_SLACK = 1.05


@dataclass(frozen=True)
class Verdict:
    model: str
    peer: str
    peer_setting: str
    peer_peak: int | None
    peer_step_s: float | None
    met: bool | None
    """None: the peer did not run, so there is nothing to compare."""
    remat_setting: str | None
    """The remat row that meets the goal, or the closest one (lowest time at <= the peak)."""
    remat_peak: int | None
    remat_step_s: float | None
    reason: str


def is_peer(method: str) -> bool:
    return not method.startswith("remat-")


def ours_for(peer_method: str) -> str:
    return "remat-ilp-inductor" if peer_method.endswith("-inductor") else "remat-ilp"


def check(rows: Iterable[Row]) -> list[Verdict]:
    rows = list(rows)
    verdicts = []
    for peer in rows:
        if not is_peer(peer.method):
            continue
        if not peer.ran:
            verdicts.append(
                Verdict(
                    peer.model,
                    peer.method,
                    peer.setting,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    f"peer did not run: {peer.note}",
                )
            )
            continue
        ours = [
            r
            for r in rows
            if r.model == peer.model and r.method == ours_for(peer.method) and r.ran and r.ok
        ]
        verdicts.append(_verdict(peer, ours))
    return verdicts


def _verdict(peer: Row, ours: list[Row]) -> Verdict:
    assert peer.peak_bytes is not None and peer.step_s is not None
    within = [r for r in ours if r.peak_bytes <= peer.peak_bytes]
    limit = TIME_SLACK * peer.step_s
    if not within:
        lowest = min((r.peak_bytes for r in ours), default=None)
        reason = (
            f"no {ours_for(peer.method)} row ran"
            if lowest is None
            else f"no {ours_for(peer.method)} row at or below the peer's peak "
            f"(lowest measured: {lowest} B vs {peer.peak_bytes} B)"
        )
        return Verdict(
            peer.model,
            peer.method,
            peer.setting,
            peer.peak_bytes,
            peer.step_s,
            False,
            None,
            None,
            None,
            reason,
        )
    best = min(within, key=lambda r: r.step_s)
    met = best.step_s <= limit
    ratio = best.step_s / peer.step_s
    reason = (
        f"remat {ratio:.2f}x the peer's time at {best.peak_bytes / peer.peak_bytes:.1%} of its peak"
    )
    return Verdict(
        peer.model,
        peer.method,
        peer.setting,
        peer.peak_bytes,
        peer.step_s,
        met,
        best.setting,
        best.peak_bytes,
        best.step_s,
        reason,
    )


def failures(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.met is False]
