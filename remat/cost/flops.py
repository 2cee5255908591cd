"""FLOPs of one fx node, from `torch.utils.flop_counter`'s registered formulas.

We call the formula registered for the node's op (the same table `FlopCounterMode` uses) with the
node's fake values, so our counts match `FlopCounterMode` exactly and new formulas added upstream
are picked up for free. Ops without a formula (pointwise, reductions, norms) count 0 FLOPs: the
roofline prices them by the bytes they move instead.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import fx
from torch.utils.flop_counter import flop_registry

from remat.torch_internals import HigherOrderOperator, OpOverload, optimization_hint

log = logging.getLogger(__name__)
aten = torch.ops.aten

# CPU's fused attention kernels have no formula upstream (FlopCounterMode counts them as 0). Their
# arguments begin as the flash kernels' do ((query, key, value) forward, (grad_out, query, key,
# value) backward), so the flash formulas price them.
_SDPA_CPU = aten._scaled_dot_product_flash_attention_for_cpu
_SDPA_CPU_BACKWARD = aten._scaled_dot_product_flash_attention_for_cpu_backward
_SAME_FORMULA_AS = {
    _SDPA_CPU: aten._scaled_dot_product_flash_attention,
    _SDPA_CPU_BACKWARD: aten._scaled_dot_product_flash_attention_backward,
}

UNBACKED_SIZE_FALLBACK = 8192
"""Size assumed for a data-dependent (unbacked) symbolic size; Inductor's default guess too."""

_warned: set[object] = set()


def as_int(value: object) -> int:
    """A concrete int for an int or SymInt: the hint of a symbolic size, never a guard."""
    if isinstance(value, torch.SymInt):
        return int(optimization_hint(value, fallback=UNBACKED_SIZE_FALLBACK))
    if isinstance(value, torch.SymFloat):
        return int(value.node.hint) if value.node.hint is not None else 0
    return int(value)  # type: ignore[call-overload]


def node_value(arg: object) -> object:
    """The fake value an fx node stands for (its `meta['val']`); other arguments unchanged."""
    if isinstance(arg, fx.Node):
        return arg.meta.get("val")
    return arg


def formula_for(target: object) -> Any | None:
    """The registered FLOP formula for an fx target, or None."""
    if isinstance(target, OpOverload):
        packet = target.overloadpacket
        return flop_registry.get(_SAME_FORMULA_AS.get(packet, packet))
    if isinstance(target, HigherOrderOperator):
        return flop_registry.get(target)
    return None


def counter_mapping() -> dict[Any, Any]:
    """`FlopCounterMode(custom_mapping=...)` that counts CPU's fused attention as `node_flops`
    does, so eager steps counted by FlopCounterMode compare with remat's counts."""

    def counted_as(packet: Any) -> Any:
        formula = flop_registry[packet]  # already takes tensors (registered shape-wrapped)

        def count(*args: Any, **kwargs: Any) -> Any:
            return formula(*args, **kwargs)

        count._get_raw = True  # type: ignore[attr-defined]
        return count

    return {cpu: counted_as(packet) for cpu, packet in _SAME_FORMULA_AS.items()}


def node_flops(node: fx.Node) -> int:
    """FLOPs of one execution of `node`; 0 for placeholders, views and ops with no formula."""
    if node.op != "call_function":
        return 0
    formula = formula_for(node.target)
    if formula is None:
        return 0
    args = fx.node.map_aggregate(node.args, node_value)
    kwargs = fx.node.map_aggregate(node.kwargs, node_value)
    try:
        flops = formula(*args, **kwargs, out_val=node.meta.get("val"))
    except Exception as error:  # one odd op must not stop pricing the whole graph
        # A formula that cannot read these arguments (missing fake values, a new overload's
        # signature) leaves the op priced by its bytes alone; say so once per op.
        if node.target not in _warned:
            _warned.add(node.target)
            log.warning(
                "no FLOP count for %s (%s: %s); counting 0",
                node.target,
                type(error).__name__,
                error,
            )
        return 0
    return as_int(flops)
