"""remat.gradient_links: the storages a step's graphs pass on, seen as they run, as links."""

from __future__ import annotations

import weakref

import torch

from remat.gradient_links import GraphIO, gradient_links, recording
from remat.step_links import GradientLink, ReleasedOutput, SourceLink


def _keys(*tensors: torch.Tensor) -> list:
    return [(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in tensors]


def _io() -> GraphIO:
    # forward: input tensor 0 -> output 2; backward: tangent 3 -> gradient 5 (of input 0)
    return GraphIO(inputs=(0,), outputs=(2,), tangents=(3,), gradients=(5,))


def test_storages_passed_on_become_links():
    a, b = _io(), _io()
    handed, gradient = torch.ones(4), torch.ones(4)
    a.record_forward(_keys(torch.ones(4)), [handed, torch.ones(2)])  # output, then a saved value
    b.record_forward(_keys(handed), [torch.ones(4)])
    b.record_backward(_keys(torch.ones(4), torch.ones(4)), [gradient])  # saved, then the tangent
    a.record_backward(_keys(torch.ones(4), gradient), [torch.ones(4)])
    links = gradient_links([a, b])
    assert GradientLink(producer=1, gradient=5, consumer=0, late=3) in links
    assert SourceLink(source=0, consumer=1, gradient=5) in links
    assert not any(isinstance(link, ReleasedOutput) for link in links)  # not yet seen


def test_an_output_nothing_holds_when_the_step_ends_is_released():
    a = _io()
    kept, dropped = torch.ones(4), torch.ones(4)
    a.record_forward([None], [kept])
    a.step_ended()
    assert a.outlived == (True,)
    a.record_forward([None], [dropped])
    del dropped
    a.step_ended()
    assert gradient_links([a]) == (ReleasedOutput(graph=0, output=2),)


def test_unrelated_storages_make_no_links():
    a, b = _io(), _io()
    kept = [torch.ones(4) for _ in range(8)]  # alive together: no address is reused
    a.record_forward(_keys(kept[0]), [kept[1]])
    b.record_forward(_keys(kept[2]), [kept[3]])
    b.record_backward(_keys(kept[4]), [kept[5]])
    a.record_backward(_keys(kept[6]), [kept[7]])
    assert gradient_links([a, b]) == ()


def test_a_boxed_callee_still_frees_its_arguments_and_they_are_recorded():
    io = _io()

    def compiled(args: list) -> list:
        out = [args[0] * 2]
        args.clear()
        return out

    compiled._boxed_call = True
    run = recording(lambda gm, inputs: compiled, lambda: io, GraphIO.record_forward)(None, [])
    x = torch.ones(3)
    key = _keys(x)[0]
    alive = weakref.ref(x.untyped_storage())
    arguments = [x]
    del x
    (out,) = run(arguments)
    assert run._boxed_call
    assert alive() is None  # nothing kept the argument once the callee let it go
    assert io.fed == (key,)
    assert io.handed == ((out.untyped_storage().data_ptr(), out.untyped_storage().nbytes()),)
