"""The solver interface: (RematGraph, budget in bytes) -> Plan, and the name -> solver registry.

Solvers never see torch or fx. Every plan a solver returns has been replayed by the simulator:
its `predicted_peak` is the simulator's, and it is <= the budget it was asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from remat.ir import Plan, RematGraph

ProgressCallback = Callable[[str], None]
"""Receives one line of solver status at a time (e.g. 'cp-sat: cost 1.2e-3, bound 9e-4')."""


class Solver(Protocol):
    name: str

    def solve(self, graph: RematGraph, budget: int) -> Plan:
        """A plan whose simulated peak is <= `budget`, or raise InfeasibleBudgetError."""
        ...


_REGISTRY: dict[str, Callable[..., Solver]] = {}


def register(name: str) -> Callable[[Callable[..., Solver]], Callable[..., Solver]]:
    def decorator(factory: Callable[..., Solver]) -> Callable[..., Solver]:
        _REGISTRY[name] = factory
        return factory

    return decorator


def solver_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_solver(name: str, **config: object) -> Solver:
    """Build the solver called `name` with keyword `config` (its Config dataclass's fields)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(solver_names())}")
    return _REGISTRY[name](**config)
