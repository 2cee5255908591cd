"""How remat.compile calls the model under Dynamo: its settings, its static-shape backend
wrapper, and what it reads back about graph breaks."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from remat.cpu_profiler import ProfilerRunningError
from remat.signature import is_symbolic
from remat.torch_internals import BackendCompilerFailed, dynamo_config, dynamo_counters, tree_leaves

_RECOMPILE_LIMIT = 64
"""Dynamo's default (8) would silently run eager after 8 input signatures or model instances."""


_LOGGER_METHOD_NAMES = (
    "debug",
    "info",
    "warning",
    "error",
    "warning_once",
    "info_once",
    "warning_advice",
)
"""Logging calls Dynamo may drop rather than break the graph at. transformers logs inside
forward (`warning_once`, a method it adds to Logger on import), which would split the step."""


def _logger_methods() -> set[Callable[..., Any]]:
    names = (getattr(logging.Logger, name, None) for name in _LOGGER_METHOD_NAMES)
    return {method for method in names if method is not None}


DYNAMIC_INPUTS = (
    "remat.compile plans each input shape on its own, but Dynamo traced this step with "
    "dynamic sizes: an input is marked dynamic (torch._dynamo.mark_dynamic or "
    "maybe_mark_dynamic). Remove the mark, or use torch.compile(model, "
    "backend=remat.backend(budget)), which plans each shape when it first runs"
)

_PROPAGATED_DYNAMIC = "_dynamo_propagated_dynamic_indices"
"""AOTAutograd's unguarded hint on the outputs of a graph it traced with dynamic sizes (a
tensor that went through another torch.compile'd model may carry it): Dynamo would trace
remat's static step dynamic because of it."""


def call_under_dynamo(compiled: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """One call of the compiled step under remat's Dynamo settings; a ValueError a backend
    raised (a bad budget) or a measurement refused under the user's profiler reaches the caller
    as itself. The inputs' dynamic-size hints left by
    other compiled code are set aside for the call."""
    hinted = [
        (x, getattr(x, _PROPAGATED_DYNAMIC))
        for x in tree_leaves((args, kwargs))
        if isinstance(x, torch.Tensor) and hasattr(x, _PROPAGATED_DYNAMIC)
    ]
    for tensor, _ in hinted:
        delattr(tensor, _PROPAGATED_DYNAMIC)
    try:
        return _call_with_settings(compiled, args, kwargs)
    finally:
        for tensor, dims in hinted:
            setattr(tensor, _PROPAGATED_DYNAMIC, dims)


def _call_with_settings(compiled: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    with dynamo_config.patch(
        recompile_limit=_RECOMPILE_LIMIT,
        fail_on_recompile_limit_hit=True,  # else past it Dynamo runs eager: unplanned
        ignore_logger_methods=_logger_methods(),
    ):
        try:
            return compiled(*args, **kwargs)
        except BackendCompilerFailed as error:
            inner = error.inner_exception
            if isinstance(inner, (ValueError, ProfilerRunningError)):
                raise inner.with_traceback(None) from None
            raise


def static_only(backend: Callable[..., Any]) -> Callable[..., Any]:
    """`backend`, refusing a graph Dynamo traced with dynamic sizes (remat.compile plans each
    input shape on its own) with what to do instead."""

    def static_backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        if is_symbolic(example_inputs):
            raise ValueError(DYNAMIC_INPUTS)
        return backend(gm, example_inputs)

    return static_backend


def break_reasons() -> Counter:
    """Dynamo's counts of why it split graphs so far (it keeps them process-wide)."""
    return Counter(dynamo_counters["graph_break"]) + Counter(dynamo_counters["unimplemented"])


def summarize_break(reason: str) -> str:
    """'Data-dependent branching at File "model.py", line 6': the reason and where."""
    lines = [line.strip() for line in reason.strip().splitlines()]
    where = next((line for line in lines if line.startswith("# File")), "")
    return lines[0] + (f" ({where.lstrip('# ')})" if where else "")
