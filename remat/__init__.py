"""remat: run a PyTorch training step under a memory budget by recomputing activations.

model = remat.compile(model, budget="6GiB")    # or 0.5 (of the keep-all peak), or bytes
loss_fn(model(x), y).backward()
print(model.remat_plan)
"""

from remat.api import RematModule, compile
from remat.backend import backend, last_plans
from remat.backend_options import BackendOptionError
from remat.budget import BudgetError, InfeasibleBudgetError, parse_budget
from remat.capture import UnsupportedGraphError
from remat.cpu_profiler import ProfilerRunningError
from remat.engines import UnsupportedModelError
from remat.measure import PeakMeasurement, StepTiming, measure_peak, time_step
from remat.simulate import InvalidScheduleError
from remat.torch_internals import check_torch_version

check_torch_version()  # once, on import: remat leans on torch internals of the tested release

__all__ = [
    "BackendOptionError",
    "BudgetError",
    "InfeasibleBudgetError",
    "ProfilerRunningError",
    "InvalidScheduleError",
    "PeakMeasurement",
    "RematModule",
    "StepTiming",
    "UnsupportedGraphError",
    "UnsupportedModelError",
    "backend",
    "compile",
    "last_plans",
    "measure_peak",
    "parse_budget",
    "time_step",
]
