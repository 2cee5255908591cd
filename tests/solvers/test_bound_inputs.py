"""Chains of dead inputs for the gap relaxation (bound_inputs.py): who is credited where."""

from __future__ import annotations

from remat.solvers.bound_inputs import _Claim, _depths, _owners


def test_each_step_goes_to_the_largest_claim_and_ties_to_the_chain_listed_first() -> None:
    first = _Claim(low=0, high=10, weight=5, index=0, level=0)
    larger = _Claim(low=5, high=15, weight=7, index=1, level=1)
    tied = _Claim(low=12, high=20, weight=7, index=2, level=0)
    owners = [(low, high, claim.index) for low, high, claim in _owners([first, larger, tied])]
    assert owners == [(0, 5, 0), (5, 15, 1), (15, 20, 2)]


def test_a_chain_counts_only_through_the_levels_it_owns_from_the_top() -> None:
    levels = {0: [(0, 10)], 1: [(5, 20)], 2: [(0, 7)]}
    # Level 1 alone (10..20) counts nothing: the top of the chain is someone else's there.
    assert _depths(levels) == [(0, 5, 1), (5, 7, 3), (7, 10, 2)]
