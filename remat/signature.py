"""The input signature a plan is made for: arguments that differ in it get a plan of their own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from remat.torch_internals import tree_leaves


def input_signature(args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> tuple:
    """Each tensor's shape, stride, dtype, device type and requires_grad; each Python number's
    type and value; any other value's type name.

    `args` is taken as it is (a graph's flat inputs); with `kwargs`, the tensors and values
    nested in both (lists, tuples, dicts: a model's call) are read in pytree order."""
    values = args if kwargs is None else tree_leaves((args, kwargs))
    return tuple(
        (tuple(x.shape), tuple(x.stride()), x.dtype, x.device.type, x.requires_grad)
        if isinstance(x, torch.Tensor)
        else (type(x).__name__, x if isinstance(x, int | float | bool) else None)
        for x in values
    )


def is_symbolic(example_inputs: Sequence[Any]) -> bool:
    """Whether a graph's example inputs have symbolic sizes (Dynamo traced it dynamic)."""
    for x in example_inputs:
        if isinstance(x, torch.SymInt | torch.SymFloat):
            return True
        if isinstance(x, torch.Tensor) and any(
            isinstance(d, torch.SymInt) for d in (*x.shape, *x.stride())
        ):
            return True
    return False
