"""Cost model: FLOPs, bytes moved and estimated time of every node of a joint fx graph.

`estimate_costs(gm, device)` prices a graph from its fake values without running it;
`profile_ops(gm, device)` replaces the estimated times by measured ones on the real device.
"""

from remat.cost.calibrate import calibrate_cpu, measure_slowdowns
from remat.cost.estimate import NodeCost, compute_dtype, estimate_costs
from remat.cost.flops import node_flops
from remat.cost.profile import profile_ops
from remat.cost.timing import (
    A100,
    CPU_DEFAULT,
    H100,
    H200,
    DeviceProfile,
    profile_for,
)
from remat.cost.traffic import OpKind, classify, node_bytes, tensor_footprint

__all__ = [
    "A100",
    "CPU_DEFAULT",
    "H100",
    "H200",
    "DeviceProfile",
    "NodeCost",
    "OpKind",
    "calibrate_cpu",
    "classify",
    "compute_dtype",
    "estimate_costs",
    "measure_slowdowns",
    "node_bytes",
    "node_flops",
    "profile_for",
    "profile_ops",
    "tensor_footprint",
]
