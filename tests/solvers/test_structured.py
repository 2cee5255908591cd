"""Structured candidates: per-block, every-k-blocks and selective checkpointing by module path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from factories import GraphBuilder, chain

from remat.ir import Op, Phase, RematGraph
from remat.simulate import simulate
from remat.solvers import find_floor
from remat.solvers.heuristics import budget_free_plans
from remat.solvers.lazy import Schedule, schedule_from_kept
from remat.solvers.structured import (
    block_levels,
    boundary_kept,
    structured_family,
    structured_kept_sets,
)

BLOCKS = 4


def with_paths(graph: RematGraph, path: Callable[[Op], str]) -> RematGraph:
    """`graph` with each forward op's module path set to `path(op)`."""
    ops = tuple(
        replace(op, module_path=path(op)) if op.phase is Phase.FORWARD else op for op in graph.ops
    )
    return replace(graph, ops=ops)


def layered(blocks: int = BLOCKS) -> tuple[RematGraph, dict[str, int]]:
    """embed, `blocks` x (fc -> act -> out(+residual)), head; a mirrored backward.

    Returns the graph (forward op `layers.i.fc` has module path `layers.i.fc`) and the tensor
    ids by name: e (embedding), h1..hn (block outputs), a_i, b_i (fc, act outputs), loss.
    """
    builder = GraphBuilder(f"layered{blocks}")
    x = builder.input("x")
    ids = {"e": builder.op("embed", [x], 100)}
    h = ids["e"]
    for i in range(blocks):
        ids[f"a{i}"] = builder.op(f"layers.{i}.fc", [h], 200, 2.0)
        ids[f"b{i}"] = builder.op(f"layers.{i}.act", [ids[f"a{i}"]], 200, 0.0)  # 0 FLOPs
        h = ids[f"h{i + 1}"] = builder.op(f"layers.{i}.out", [ids[f"b{i}"], h], 100, 2.0)
    ids["loss"] = builder.op("head", [h], 10)
    builder.start_backward()
    grad = builder.op("g_head", [builder.input("tangent", 10, late=True), h], 100)
    for i in reversed(range(blocks)):
        grad_b = builder.op(f"g_out{i}", [grad, ids[f"b{i}"]], 200)
        grad_a = builder.op(f"g_act{i}", [grad_b, ids[f"a{i}"]], 200)
        grad = builder.op(f"g_fc{i}", [grad_a, ids[f"h{i}" if i else "e"], grad], 100)
    graph = builder.build(outputs=[ids["loss"], grad], forward_outputs=[ids["loss"]])
    return with_paths(graph, lambda op: op.name if op.name.startswith("layers.") else ""), ids


def labelled(graph: RematGraph) -> dict[str, frozenset[int]]:
    return {label: kept for kept, label in structured_kept_sets(graph)}


def test_per_block_keeps_exactly_the_block_boundaries() -> None:
    graph, ids = layered()
    kept = labelled(graph)["per-block: layers"]
    boundaries = {ids[name] for name in ("e", "h1", "h2", "h3", "h4", "loss")}
    assert kept == boundaries
    schedule = schedule_from_kept(graph, kept)
    assert set(simulate(graph, *schedule).saved) == boundaries


def test_per_block_peak_is_the_hand_computed_one() -> None:
    graph, _ = layered()
    schedule = schedule_from_kept(graph, labelled(graph)["per-block: layers"])
    result = simulate(graph, *schedule)
    # Block 3's backward, at g_out3: kept e, h1, h2, h3 (400) + loss (10) + the incoming grad
    # (100) + recomputed a3, b3 (400) + g_out3's output (200) = 1110; h4 died at g_head.
    assert result.peak == 1110
    assert result.recompute_time == BLOCKS * 2.0  # each block's fc once (act costs nothing)
    assert simulate(graph, *schedule_from_kept(graph, set(graph.outputs))).peak > 1110
    # Keep-all, at g_out3: e and every a, b, h but h4 (2000) + loss (10) + grad (100) + 200.
    assert simulate(graph, tuple(range(len(graph.ops))), graph.boundary).peak == 2310


def hoisted(
    graph: RematGraph, schedule: Schedule, blocks: list[frozenset[int]], whole: bool
) -> Schedule:
    """`schedule` with each block's recomputations moved to its first one; whole=True reruns
    the block's entire forward there (torch.utils.checkpoint's order)."""
    order, boundary = schedule
    recomputed = [op_id for op_id in order[boundary:] if op_id < graph.boundary]
    result, done = list(order[:boundary]), set()
    for op_id in order[boundary:]:
        block = next((b for b in blocks if op_id in b and op_id < graph.boundary), None)
        if block is None:
            result.append(op_id)
        elif block not in done:
            done.add(block)
            result.extend(sorted(block) if whole else [r for r in recomputed if r in block])
    return tuple(result), boundary


def test_lazy_recompute_is_never_above_block_at_once_recompute() -> None:
    graph, _ = layered()
    blocks = list(block_levels(graph)[0].blocks)
    for kept, label in structured_kept_sets(graph):
        lazy = schedule_from_kept(graph, kept)
        at_once = simulate(graph, *hoisted(graph, lazy, blocks, whole=False))
        assert simulate(graph, *lazy).peak <= at_once.peak, label
    per_block = schedule_from_kept(graph, labelled(graph)["per-block: layers"])
    # A tie here: each block's recompute is one chain, which the lazy schedule also reruns
    # whole; the `out` torch reruns too makes an h that nothing reads any more (1010 there).
    for whole in (False, True):
        assert simulate(graph, *hoisted(graph, per_block, blocks, whole=whole)).peak == 1110


def test_floor_and_warm_starts_are_at_most_per_block() -> None:
    graph, _ = layered()
    per_block = schedule_from_kept(graph, labelled(graph)["per-block: layers"])
    schedules = {(plan.schedule, plan.boundary) for plan in budget_free_plans(graph)}
    assert {schedule for schedule, _ in structured_family(graph)} <= schedules
    assert find_floor(graph, time_limit=5.0).bytes <= simulate(graph, *per_block).peak == 1110


def test_every_kth_block_keeps_only_every_kth_input() -> None:
    graph, ids = layered()
    kept = labelled(graph)
    common = {ids["e"], ids["h4"], ids["loss"]}  # first block's input, the head's input, loss
    assert kept["every 2 blocks: layers"] == common | {ids["h2"]}
    assert kept["every 3 blocks: layers"] == common | {ids["h3"]}
    peaks = {
        label: simulate(graph, *schedule).peak
        for schedule, label in structured_family(graph)
        if label.startswith("every")
    }
    assert list(peaks) == ["every 2 blocks: layers", "every 3 blocks: layers"]
    assert len(set(peaks.values())) == 2


def test_selective_recomputes_only_the_cheap_ops() -> None:
    graph, ids = layered()
    kept = labelled(graph)["selective: layers"]
    assert kept == {ids[n] for n in ("e", "h1", "h2", "h3", "h4")} | {
        ids[f"a{i}"] for i in range(BLOCKS)
    }
    schedule = schedule_from_kept(graph, kept)
    assert simulate(graph, *schedule).recompute_time == 0.0  # act has no cost


def test_selective_keeps_what_a_cheap_copy_is_made_from() -> None:
    """Attention's shape: a matmul's output, viewed (split heads), copied by a cheap op (a
    contiguous clone) that the backward reads. Dropping the copy must not rerun the matmul."""
    builder = GraphBuilder("copies")
    h = builder.input("x")
    copies = []
    for i in range(BLOCKS):
        qkv = builder.op(f"layers.{i}.qkv", [h], 300, 2.0)
        heads = builder.op(f"layers.{i}.split", [qkv], 0, 0.0, view_of=qkv)
        copies.append(builder.op(f"layers.{i}.clone", [heads], 300, 0.0))
        h = builder.op(f"layers.{i}.out", [copies[-1], h], 100, 2.0)
    builder.start_backward()
    grad = builder.input("tangent", 100, late=True)
    for i in reversed(range(BLOCKS)):
        grad = builder.op(f"g{i}", [grad, copies[i]], 100)
    graph = builder.build(outputs=[h, grad], forward_outputs=[h])
    graph = with_paths(graph, lambda op: op.name if op.name.startswith("layers.") else "")
    kept = labelled(graph)["selective: layers"]
    assert not kept & set(copies)
    schedule = schedule_from_kept(graph, kept)
    assert simulate(graph, *schedule).recompute_time == 0.0  # only the clones run again


def test_no_module_paths_no_structured_candidates() -> None:
    graph = chain(6)
    assert block_levels(graph) == [] and structured_family(graph) == []
    one_block = with_paths(chain(6), lambda op: "layers.0.fc")
    assert structured_family(one_block) == []  # one block is no repetition


def test_levels_follow_path_components_and_nesting() -> None:
    graph = with_paths(chain(12), lambda op: f"layers.{op.id}.fc")
    (level,) = block_levels(graph)
    assert level.label == "layers" and [sorted(b) for b in level.blocks] == [[i] for i in range(12)]

    def nested(op: Op) -> str:
        return f"encoder.stages.{op.id // 3}.layers.{op.id % 3}.fc"

    inner, outer = block_levels(with_paths(chain(6), nested))
    assert (inner.label, len(inner.blocks)) == ("encoder.stages.*.layers", 6)
    assert (outer.label, len(outer.blocks)) == ("encoder.stages", 2)


def test_boundary_kept_of_one_group_keeps_what_crosses_it() -> None:
    graph, ids = layered()
    everything = frozenset(range(1, graph.boundary - 1))  # all block ops, one group
    assert boundary_kept(graph, [everything]) == {ids["e"], ids["h4"], ids["loss"]}
