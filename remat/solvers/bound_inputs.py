"""What a recomputation needs, for the gap relaxation (bound.py): its inputs at the step it
runs, and their inputs in turn when those are made again too.

A dropped gap's value is made again after a step it is missing at; its producer then reads its
inputs, and an input that the reference order has let die by then must be held at that step
or be made again itself. Following the largest such input down a chain charges the memory or
the recompute that a cheap value over an expensive one (an attention core's softmax over its
score product) really costs, where counting the dropped value's own producer alone would not.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ortools.sat.python import cp_model

from remat.ir import RematGraph
from remat.solvers.gaps import Gap, Relaxation, reference_last_reads
from remat.solvers.ilp_problem import Problem

CHAIN_DEPTH = 6
"""Levels of dead inputs followed below a dropped value (enough to reach the matmul under an
attention core's scale, mask and softmax)."""


SIBLING_DEPTH = 3
"""Levels of dead inputs followed below a sibling made again (HF GPT-2's causal mask: where,
tril, ones)."""


def input_terms(
    model: cp_model.CpModel,
    relaxed: Relaxation,
    dropped: list[cp_model.IntVar],
    chosen: set[int],
    depth: int = CHAIN_DEPTH,
    with_siblings: bool = True,
) -> InputTerms:
    """What a recomputation needs: its inputs, alive when it runs, and theirs in turn.

    Dropping gap G of t (produced by u) means t is missing at some step e inside G and u runs
    again after e. If an input s1 of u is dead at e in the reference order (its last read is
    earlier), then at e either t is there, or s1 is (u reads it later), or s1 is produced again
    after e, whose producer needs its own input s2: there at e or produced again, and so on
    down a chain of dead inputs (the largest at each level). So e holds at least
    min(size t, size s1, .., size sk) unless s1..sk are all produced again (one more run of
    sk's producer, `pays` at level k). One chain's terms telescope (at most one counts at e),
    and each (s, e) is credited to one chain only, the one with the largest term; a chain
    counts at e only through the levels it owns there, so no tensor is counted twice.

    The other dead inputs of the ops along a chain (siblings: the causal mask beside an
    attention core's scores) count once the whole chain is made again: at e each is held or
    made again too (`r_q`). Their weights v_q keep every cut of the chain below what it holds:
    for each level l, the siblings below it weigh at most the chain's weight there (and all of
    them at most t), so whether t, some s_l or the last level's inputs are there, the credit
    stays under it. A sibling made again needs its own dead inputs in turn (SIBLING_DEPTH levels,
    weighing at most the sibling). They count only where the chain owns every level and the sibling.

    Chains are followed `depth` levels down (fewer, or none, only weaken the bound; deep
    chains make a model CP-SAT proves more slowly where little must be dropped).
    """
    problem, graph = relaxed.problem, relaxed.problem.graph
    last_read = reference_last_reads(graph)
    steps = sorted(p for p in chosen if p < len(relaxed.fixed) - 1)
    chains: dict[int, list[tuple[int, int, int]]] = {}
    siblings: dict[int, list[_Sibling]] = {}
    claims: dict[int, list[_Claim]] = {}
    for index, gap in enumerate(relaxed.gaps):
        chain = _dead_input_chain(graph, problem, gap, last_read, depth)
        if not chain:
            continue
        chains[index] = chain
        siblings[index] = _siblings(graph, problem, gap, chain, last_read) if with_siblings else []
        high = bisect.bisect_left(steps, gap.before)
        sources = [(s, w, start) for s, w, start in chain]
        sources += [(sib.source, sib.weight, sib.start) for sib in siblings[index]]
        for level, (source, weight, start) in enumerate(sources):
            low = bisect.bisect_left(steps, start)
            if low < high:
                claims.setdefault(source, []).append(_Claim(low, high, weight, index, level))
    owned: dict[int, dict[int, list[tuple[int, int]]]] = {}
    owned_siblings: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for claimants in claims.values():
        for low, high, claim in _owners(claimants):
            chain_levels = len(chains[claim.index])
            into = owned if claim.level < chain_levels else owned_siblings
            level = claim.level if claim.level < chain_levels else claim.level - chain_levels
            into.setdefault(claim.index, {}).setdefault(level, []).append((low, high))
    runs: dict[int, cp_model.IntVar] = {}
    pays: dict[tuple[int, int], cp_model.IntVar] = {}

    def paying(index: int, level: int) -> cp_model.IntVar:
        if (index, level) not in pays:
            literal = pays[(index, level)] = model.new_bool_var("")
            model.add_implication(
                literal, dropped[index] if level == 0 else paying(index, level - 1)
            )
            producer = _producer(graph, chains[index][level][0])
            runs.setdefault(producer, model.new_bool_var(""))
            model.add_implication(literal, runs[producer])
        return pays[(index, level)]

    telescoped: dict[tuple[int, int], cp_model.LinearExprT] = {}

    def credit(index: int, depth: int) -> cp_model.LinearExprT:
        """Levels 0..depth-1 of a chain's terms, summed: sum of w_l * (pays_{l-1} - pays_l)
        with pays_{-1} the drop itself; equal weights cancel, so most chains need two terms."""
        if (index, depth) not in telescoped:
            coefficients: dict[cp_model.IntVar, int] = {dropped[index]: 0}
            for level in range(depth):
                weight = chains[index][level][1]
                above = dropped[index] if level == 0 else paying(index, level - 1)
                coefficients[above] = coefficients.get(above, 0) + weight
                coefficients[paying(index, level)] = -weight
            pairs = [(var, c) for var, c in coefficients.items() if c]
            telescoped[(index, depth)] = cp_model.LinearExpr.weighted_sum(
                [var for var, _ in pairs], [c for _, c in pairs]
            )
        return telescoped[(index, depth)]

    made_again: dict[tuple[int, int], cp_model.IntVar] = {}

    def making(index: int, number: int) -> cp_model.IntVar:
        """r_q: sibling `number` of chain `index` made again (only if what reads it is)."""
        if (index, number) not in made_again:
            literal = made_again[(index, number)] = model.new_bool_var("")
            model.add_implication(literal, above(index, number))
            producer = _producer(graph, siblings[index][number].source)
            runs.setdefault(producer, model.new_bool_var(""))
            model.add_implication(literal, runs[producer])
        return made_again[(index, number)]

    def above(index: int, number: int) -> cp_model.IntVar:
        """What makes the sibling needed: the whole chain made again, or its parent."""
        parent = siblings[index][number].parent
        if parent is None:
            return paying(index, len(chains[index]) - 1)
        return making(index, parent)

    def sibling_credit(index: int, number: int) -> cp_model.LinearExprT:
        """v_q * (needed - r_q): held where it is needed, unless made again too."""
        sibling = siblings[index][number]
        if not sibling.remakable:
            return sibling.weight * above(index, number)
        return cp_model.LinearExpr.weighted_sum(
            [above(index, number), making(index, number)], [sibling.weight, -sibling.weight]
        )

    extra: dict[int, list[cp_model.LinearExprT]] = {}
    for index, levels in owned.items():
        whole: list[tuple[int, int]] = []
        for low, high, depth in _depths(levels):
            term = credit(index, depth)
            for position in steps[low:high]:
                extra.setdefault(position, []).append(term)
            if depth == len(chains[index]):
                whole.append((low, high))
        # A sibling counts where the chain owns every level, it owns the sibling, and (for a
        # sibling's own input) the sibling: no tensor's bytes are credited twice at a step.
        within: dict[int, list[tuple[int, int]]] = {}
        for number, sibling in enumerate(siblings[index]):
            outer = whole if sibling.parent is None else within.get(sibling.parent, [])
            within[number] = _overlaps(outer, owned_siblings.get(index, {}).get(number, []))
            positions = [p for low, high in within[number] for p in steps[low:high]]
            if positions:
                term = sibling_credit(index, number)
                for position in positions:
                    extra.setdefault(position, []).append(term)
    remade = tuple(
        (relaxed.gaps[index].before, _producer(graph, chains[index][level][0]), literal)
        for (index, level), literal in pays.items()
    ) + tuple(
        (relaxed.gaps[index].before, _producer(graph, siblings[index][number].source), literal)
        for (index, number), literal in made_again.items()
    )
    return InputTerms(extra, sum(problem.cost[p] * var for p, var in runs.items()), remade)


@dataclass(frozen=True)
class InputTerms:
    extra: dict[int, list[cp_model.LinearExprT]]
    """Per chosen step, the memory the chains hold there."""
    cost: cp_model.LinearExprT
    """One run of each producer a chain makes again."""
    remade: tuple[tuple[int, int, cp_model.IntVar], ...]
    """(position, producer, literal): the producer runs again before the dropped gap's closing
    read at `position` when the literal is true (a plan's hint: make the input again there
    rather than hold it)."""


@dataclass(frozen=True)
class _Sibling:
    """A dead input of an op along a chain other than the one the chain follows."""

    source: int
    weight: int
    start: int
    """First step where it and the whole chain are dead in the reference order."""
    remakable: bool
    """Its producer may run again (else it can only be held)."""
    parent: int | None = None
    """For a sibling's own dead input: the sibling's index (it is needed when that is made
    again, and weighs at most what is left of that sibling's weight)."""


def _siblings(
    graph: RematGraph,
    problem: Problem,
    gap: Gap,
    chain: list[tuple[int, int, int]],
    last_read: dict[int, int],
) -> list[_Sibling]:
    """The chain's siblings, weighted so that, for every level l, those of the levels below l
    weigh at most the chain's weight at l (the top level's cap: the dropped value's size)."""
    followed = {source for source, _, _ in chain}
    caps = [gap.size, *(weight for _, weight, _ in chain)]
    chain_start = chain[-1][2]
    found: list[_Sibling] = []
    ops = [gap.producer, *(_producer(graph, source) for source, _, _ in chain[:-1])]
    for level, op in enumerate(ops):
        for source, size in _dead_inputs(graph, problem, op, gap.before, last_read, followed):
            weight = min(size, *caps[: level + 1])
            if weight <= 0:
                continue
            for cap in range(level + 1):
                caps[cap] -= weight
            followed.add(source)
            start = max(chain_start, last_read[source] + 1)
            remakable = problem.copies[_producer(graph, source)] >= 2
            found.append(_Sibling(source, weight, start, remakable))
            if remakable:
                found += _inputs_of_sibling(
                    graph, problem, gap, found[-1], len(found) - 1, last_read, followed
                )
    return found


def _inputs_of_sibling(
    graph: RematGraph,
    problem: Problem,
    gap: Gap,
    sibling: _Sibling,
    number: int,
    last_read: dict[int, int],
    followed: set[int],
    levels: int = SIBLING_DEPTH,
) -> list[_Sibling]:
    """The dead inputs of a sibling's producer (the causal mask's slice under a `where` made
    again, and the `ones` under that), together weighing at most the sibling; `levels` down."""
    left = sibling.weight
    found: list[_Sibling] = []
    op = _producer(graph, sibling.source)
    for source, size in _dead_inputs(graph, problem, op, gap.before, last_read, followed):
        weight = min(size, left)
        if weight <= 0:
            break
        left -= weight
        followed.add(source)
        start = max(sibling.start, last_read[source] + 1)
        remakable = problem.copies[_producer(graph, source)] >= 2
        found.append(_Sibling(source, weight, start, remakable, parent=number))
        if remakable and levels > 1:
            found += _inputs_of_sibling(
                graph, problem, gap, found[-1], number + len(found), last_read, followed,
                levels - 1,
            )  # fmt: skip
    return found


def _dead_inputs(
    graph: RematGraph,
    problem: Problem,
    op: int,
    before: int,
    last_read: dict[int, int],
    skip: set[int],
) -> list[tuple[int, int]]:
    """(tensor, size) of `op`'s stored inputs that die before step `before - 1`, made by an op
    (graph and late inputs are always there), not in `skip`."""
    late = set(graph.late_inputs)
    found = []
    for source in problem.reads[op]:
        size = problem.size[source]
        if graph.tensors[source].producer is None or source in late or not size:
            continue
        if source not in skip and last_read[source] < before - 1:
            found.append((source, size))
    return found


def _overlaps(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersections of two lists of half-open ranges."""
    return [(max(a, c), min(b, d)) for a, b in first for c, d in second if max(a, c) < min(b, d)]


def _producer(graph: RematGraph, tensor: int) -> int:
    producer = graph.tensors[tensor].producer
    assert producer is not None
    return producer


@dataclass(frozen=True)
class _Claim:
    """Chain `index` claims its level-`level` source at the chosen steps low..high-1 (indices
    into the sorted chosen steps) with `weight`."""

    low: int
    high: int
    weight: int
    index: int
    level: int


def _owners(claimants: list[_Claim]) -> list[tuple[int, int, _Claim]]:
    """Who holds one source's claim where: at each step the largest weight, ties to the chain
    listed first; as runs of steps with one owner."""
    if len(claimants) == 1:
        (only,) = claimants
        return [(only.low, only.high, only)]
    cuts = sorted({bound for c in claimants for bound in (c.low, c.high)})
    runs: list[tuple[int, int, _Claim]] = []
    for low, high in zip(cuts, cuts[1:]):
        covering = [c for c in claimants if c.low <= low and high <= c.high]
        if not covering:
            continue
        owner = max(covering, key=lambda c: (c.weight, -c.index, -c.level))
        if runs and runs[-1][1] == low and runs[-1][2] is owner:
            runs[-1] = (runs[-1][0], high, owner)
        else:
            runs.append((low, high, owner))
    return runs


def _depths(levels: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int, int]]:
    """Runs of steps and how many of a chain's levels, from the top, it owns there."""
    cuts = sorted({bound for ranges in levels.values() for pair in ranges for bound in pair})
    found: list[tuple[int, int, int]] = []
    for low, high in zip(cuts, cuts[1:]):
        depth = 0
        while any(a <= low and high <= b for a, b in levels.get(depth, ())):
            depth += 1
        if depth:
            found.append((low, high, depth))
    return found


def _dead_input_chain(
    graph: RematGraph, problem: Problem, gap: Gap, last_read: dict[int, int], depth: int
) -> list[tuple[int, int, int]]:
    """Per level: the dead input followed, the chain's weight there (the smallest size so far)
    and the first step where every input so far is dead."""
    chain: list[tuple[int, int, int]] = []
    op, weight, start = gap.producer, gap.size, gap.after + 1
    while len(chain) < depth:
        found = _largest_dead_input(graph, problem, op, gap.before, last_read)
        if found is None:
            break
        source, size = found
        weight, start = min(weight, size), max(start, last_read[source] + 1)
        chain.append((source, weight, start))
        producer = graph.tensors[source].producer
        assert producer is not None
        op = producer
    return chain


def _largest_dead_input(
    graph: RematGraph, problem: Problem, op: int, before: int, last_read: dict[int, int]
) -> tuple[int, int] | None:
    """The biggest recomputable input of `op` that dies before step `before - 1` (the first
    listed among equals)."""
    recomputable = [
        (source, size)
        for source, size in _dead_inputs(graph, problem, op, before, last_read, set())
        if problem.copies[_producer(graph, source)] >= 2
    ]
    return max(recomputable, key=lambda item: item[1], default=None)
