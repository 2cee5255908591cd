"""The relaxation's data (remat.solvers.gaps): gaps of repeated blocks grouped to be tied."""

from __future__ import annotations

from test_structured import layered

from remat.solvers.bound import relaxation
from remat.solvers.gaps import alike_gaps
from remat.solvers.template import find_templates

BLOCKS = 6


def test_alike_gaps_group_the_same_gap_of_every_block() -> None:
    graph, ids = layered(BLOCKS)
    relaxed = relaxation(graph)
    (one, _two) = find_templates(graph)
    groups = alike_gaps(relaxed, one.classes)
    assert groups
    class_of = {t: c for c, members in enumerate(one.classes) for t in members}
    grouped: set[int] = set()
    for indices in groups:
        gaps = [relaxed.gaps[i] for i in indices]
        tensors = [gap.tensor for gap in gaps]
        # One gap per block, of the blocks whose value has as many gaps (the last block's
        # output, read by the head, has not: five of six tied)
        assert 2 <= len(set(tensors)) == len(tensors) <= BLOCKS
        assert len({class_of[t] for t in tensors}) == 1
        ordinals = {
            sorted(g.after for g in relaxed.gaps if g.tensor == gap.tensor).index(gap.after)
            for gap in gaps
        }
        assert len(ordinals) == 1
        grouped.update(tensors)
    # The fc outputs, read in the forward and again in the backward, are tied across blocks;
    # the embedding, a class of its own, is not.
    fc_outputs = {ids[f"a{i}"] for i in range(BLOCKS)}
    assert any({relaxed.gaps[i].tensor for i in indices} == fc_outputs for indices in groups)
    assert ids["e"] not in grouped
