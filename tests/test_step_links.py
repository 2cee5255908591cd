"""remat.step_links: what run time showed of the tensors between a step's graphs, applied to the
combined graph (each value counted once, for as long as it is held)."""

from __future__ import annotations

from solvers.factories import GraphBuilder

from remat.ir import RematGraph
from remat.simulate import simulate
from remat.solvers import keep_all_plan
from remat.step_graph import combine, join
from remat.step_links import GradientLink, ReleasedOutput, SourceLink

# Tensor ids in each block (GraphBuilder numbers them in creation order).
IN, OUT, TANGENT, GRAD = 0, 2, 3, 5
A_OUT, A_TANGENT, A_GRAD = OUT, TANGENT, GRAD
B_IN, B_TANGENT, B_GRAD = IN, TANGENT, GRAD


def block(name: str) -> RematGraph:
    """x -> f0 -> f1 (handed on); backward: t -> g1 (reads f0) -> g0, the gradient of x."""
    builder = GraphBuilder(name)
    x = builder.input("x")
    f0 = builder.op("f0", [x], 100, 1.0)
    f1 = builder.op("f1", [f0], 100, 1.0)
    builder.start_backward()
    tangent = builder.input("t", 100, late=True)
    g1 = builder.op("g1", [tangent, f0], 100, 1.0)
    g0 = builder.op("g0", [g1], 100, 1.0)
    assert (x, f1, tangent, g0) == (IN, OUT, TANGENT, GRAD)
    return builder.build(outputs=[f1, g0], forward_outputs=[f1])


def block_a() -> RematGraph:
    """The first block: its f1 is block b's x."""
    return block("a")


def block_b() -> RematGraph:
    return block("b")


LINKS = (
    GradientLink(producer=1, gradient=B_GRAD, consumer=0, late=A_TANGENT),
    SourceLink(source=0, consumer=1, gradient=B_GRAD),
    ReleasedOutput(graph=0, output=A_OUT),
)


def _keep_all_peak(links=()) -> int:
    step = combine([block_a(), block_b()], links=links)
    schedule, boundary = join(step, [keep_all_plan(g) for g in step.graphs])
    return simulate(step.graph, schedule, boundary).peak


def test_a_linked_gradient_is_one_tensor_read_by_the_earlier_graph():
    step = combine([block_a(), block_b()], links=LINKS[:1])
    gradient = step.tensor_ids[1][B_GRAD]
    a_last = step.graph.ops[step.op_ids[0][len(block_a().ops) - 1]]
    g1 = step.graph.ops[step.op_ids[0][2]]
    assert gradient in g1.inputs  # a's g1 reads b's k0 where it read its tangent
    assert step.tensor_ids[0][A_TANGENT] not in step.graph.late_inputs
    assert gradient not in step.graph.outputs
    assert gradient in a_last.inputs  # held until a's backward returns


def test_each_link_lowers_the_steps_peak_and_never_below_the_values_really_held():
    unlinked = _keep_all_peak()
    linked = _keep_all_peak(LINKS)
    assert linked < unlinked
    # Still counted: a's and b's saved activations and what they pass on, at b's backward.
    assert linked >= 400


def test_every_graphs_output_gradient_is_held_until_its_backward_returns():
    step = combine([block_a(), block_b()])
    for k, graph in enumerate(step.graphs):
        last = step.graph.ops[step.op_ids[k][len(graph.ops) - 1]]
        assert step.tensor_ids[k][graph.late_inputs[0]] in last.inputs


def test_a_released_output_is_held_until_its_graphs_backward_and_never_recomputed():
    step = combine([block_a(), block_b()], links=LINKS[2:])
    output = step.tensor_ids[0][A_OUT]
    assert output not in step.graph.outputs and output not in step.graph.forward_outputs
    a_last = step.graph.ops[step.op_ids[0][len(block_a().ops) - 1]]
    assert output in a_last.inputs
    assert not step.graph.ops[step.op_ids[0][1]].recomputable  # f1, what the forward handed out


def test_a_link_that_does_not_fit_the_graphs_is_ignored():
    backwards = GradientLink(producer=0, gradient=A_GRAD, consumer=1, late=B_TANGENT)
    not_an_output = SourceLink(source=0, consumer=1, gradient=4)
    assert not backwards.fits([block_a(), block_b()])
    assert not not_an_output.fits([block_a(), block_b()])
    assert combine([block_a(), block_b()], links=(backwards, not_an_output)).graph == (
        combine([block_a(), block_b()]).graph
    )


def test_a_gradient_passed_through_reads_what_its_own_late_input_was_linked_to():
    """c returns its output gradient as its input's gradient (a residual): b's link to it
    resolves to the gradient c received from the graph after it."""
    builder = GraphBuilder("c")
    y = builder.input("y")
    builder.op("h", [y], 100, 1.0)
    builder.start_backward()
    passed = builder.input("u", 100, late=True)
    c = builder.build(outputs=[passed])
    graphs = [block_a(), block_b(), c]
    links = (
        GradientLink(producer=2, gradient=passed, consumer=1, late=B_TANGENT),
        GradientLink(producer=1, gradient=B_GRAD, consumer=0, late=A_TANGENT),
    )
    step = combine(graphs, links=links)
    k1 = step.graph.ops[step.op_ids[1][2]]
    assert step.tensor_ids[2][passed] in k1.inputs  # c's own late input, read by b
    schedule, boundary = join(step, [keep_all_plan(g) for g in graphs])
    simulate(step.graph, schedule, boundary)  # every read is of a value that exists
