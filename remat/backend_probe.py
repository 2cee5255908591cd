"""Under FSDP2, the torch.compile backend measures what is allocated outside its graphs.

The backend sees only the blocks' graphs; FSDP2's all-gathered parameters and reduce-scatter
buffers, the root's eager layers and the loss are allocated around them. `remat.compile` counts
those in a probe step of its own (remat.fsdp); the backend cannot run a step again, so it
measures one that the training loop runs:

- step 1: each graph runs its leanest plan (nothing is known yet of what is held around it);
- once step 1's last backward has started, the next module call (the root's forward: FSDP2
  runs it eagerly) puts an OutsideTracker on the dispatch-mode stack, and step 2, its graphs
  still at their leanest, runs under it: every op outside remat's graphs is counted, graph
  run by graph run (remat.measure, remat.outside);
- when step 2's backward pass has finished (an autograd-engine callback, queued after FSDP2's
  own), the tracker stops counting, and the next module call takes it off the stack;
- the step after that is planned whole with what was measured counted where it is held
  (remat.backend_step.WholeStep), or refused with the whole step's floor.

The tracker is pushed and popped at module calls rather than inside the backward, because the
autograd engine restores the thread's dispatch modes after each node it runs. The hooks it
registers hold the probe weakly and are removed as soon as they fire.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import torch.fx as fx
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from remat.measure import OutsideTracker
from remat.outside import OutsideProfile
from remat.torch_internals import current_dispatch_mode, in_backward, queue_backward_callback


class OutsideProbe:
    """Measures, in a step the training loop runs, the bytes allocated outside the graphs."""

    def __init__(self) -> None:
        self.profile: OutsideProfile | None = None
        """What the measured step held outside the graphs; None until it has ended."""
        self.steps_seen = 0
        """Steps that ended while the probe was waiting or measuring."""
        self._tracker: OutsideTracker | None = None
        self._hook: Any = None

    @property
    def measuring(self) -> bool:
        return self._tracker is not None and self.profile is None

    def step_ending(self) -> None:
        """The step's last backward in flight is about to run (called from the backward)."""
        self.steps_seen += 1
        if self.profile is not None:
            return
        if self._tracker is None:
            self._at_next_module_call(OutsideProbe._start)
        else:
            this = weakref.ref(self)
            queue_backward_callback(lambda: _call(this, OutsideProbe._finish))

    def close(self) -> None:
        """Take the tracker off the stack if it is on top, and remove a pending hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        tracker = self._tracker
        if tracker is not None and current_dispatch_mode() is tracker:
            tracker.__exit__(None, None, None)
        self._tracker = None

    def _start(self) -> None:
        gc.collect()  # what the last step left to the collector is not this step's
        tracker = OutsideTracker()
        tracker.__enter__()
        self._tracker = tracker

    def _finish(self) -> None:
        tracker = self._tracker
        if tracker is None:
            return
        tracker.freeze()
        self.profile = tracker.profile()
        self._at_next_module_call(OutsideProbe.close)

    def _at_next_module_call(self, method: Any) -> None:
        if self._hook is not None:
            return
        this = weakref.ref(self)

        def fire(module: nn.Module, args: Any) -> None:
            probe = this()
            # remat's own fx code is a module too, called inside the backward: not a step.
            if probe is None or in_backward() or isinstance(module, fx.GraphModule):
                return
            if probe._hook is not None:
                probe._hook.remove()
                probe._hook = None
            method(probe)

        self._hook = register_module_forward_pre_hook(fire)

    def __del__(self) -> None:
        if self._hook is not None:
            self._hook.remove()


def _call(probe: weakref.ref[OutsideProbe], method: Any) -> None:
    found = probe()
    if found is not None:
        method(found)
