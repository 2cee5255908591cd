"""The CP-SAT model: retention intervals (Moccasin, Bartan et al. 2023) on the IR's memory model.

Every op has its mandatory execution at its own event and up to `copies - 1` optional extra
executions at a variable stage. Each execution gives each output tensor a retention interval
[start, end]; storage-owning tensors put their bytes on one cumulative resource whose capacity
is the budget. A read of tensor t by an execution at time x is covered when some execution of
t's producer started before x and t's interval from it reaches x (a view's read also reads its
base, from the base instance the view was made from). The objective is the time spent on extra
executions. See ilp_problem.py for the time axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from remat.solvers.ilp_problem import Problem

Reader = tuple[int, int]
"""(op id, execution index); op id -1 stands for the end of the step."""
_END: Reader = (-1, 0)

LinearLike = cp_model.LinearExprT
Coverage = list[tuple[int, cp_model.IntVar | bool]]


@dataclass
class _Read:
    reader: Reader
    tensor: int
    options: Coverage
    """(producer execution index, literal) pairs; literal True when only one can cover."""


class RetentionModel:
    """The CP-SAT model for `problem`.

    minimize="cost": the recompute time under `capacity` memory units. minimize="peak": the
    peak (at most `capacity` when given), with the recompute cost at most `max_cost` when given.
    minimize="reach": how far the peak exceeds `capacity` (0 once a plan fits: a first solution
    for budgets no heuristic meets; any schedule, keep-all included, is a feasible start).
    """

    def __init__(
        self,
        problem: Problem,
        capacity: int | None,
        minimize: str = "cost",
        max_cost: int | None = None,
    ) -> None:
        self.problem = problem
        self.model = cp_model.CpModel()
        self.present: dict[Reader, cp_model.IntVar] = {}
        self.stage: dict[Reader, cp_model.IntVar] = {}
        self.end: dict[tuple[int, int], cp_model.IntVar] = {}
        self.late_end: dict[int, cp_model.IntVar] = {}
        self.sizes: dict[tuple[int, int], cp_model.IntVar] = {}
        self.reads: list[_Read] = []
        self.peak: cp_model.IntVar | None = None
        self._executions()
        self._retention()
        self._coverage()
        self._memory(None if minimize == "reach" else capacity, minimize != "cost")
        if max_cost is not None:
            self.model.add(self.cost_expression() <= max_cost)
        if minimize == "reach":
            assert self.peak is not None and capacity is not None
            self.excess = self.model.new_int_var(0, self.total_demand, "excess")
            self.model.add(self.excess >= self.peak - capacity)
            self.model.minimize(self.excess)
        elif self.peak is not None:
            self.model.minimize(self.peak)
        else:
            self.model.minimize(self.cost_expression())

    # --- variables -------------------------------------------------------------------------

    def time(self, reader: Reader) -> LinearLike:
        op_id, index = reader
        if op_id < 0:
            return self.problem.end_time
        if index == 0:
            return self.problem.at(op_id, op_id)
        return self.stage[reader] * self.problem.width + op_id + 1

    def stage_of(self, reader: Reader) -> LinearLike:
        op_id, index = reader
        if op_id < 0:
            return self.problem.count
        return op_id if index == 0 else self.stage[reader]

    def max_stage(self, reader: Reader) -> int:
        op_id, index = reader
        if op_id < 0:
            return self.problem.count
        return op_id if index == 0 else self.problem.hi[op_id]

    def is_present(self, reader: Reader) -> cp_model.IntVar | bool:
        return True if reader[1] == 0 or reader[0] < 0 else self.present[reader]

    def cost_expression(self) -> LinearLike:
        return sum(self.problem.cost[op] * lit for (op, _), lit in self.present.items())

    def _executions(self) -> None:
        problem, model = self.problem, self.model
        for op_id, copies in enumerate(problem.copies):
            for index in range(1, copies):
                key = (op_id, index)
                self.present[key] = model.new_bool_var(f"x{op_id}_{index}")
                self.stage[key] = model.new_int_var(problem.lo[op_id], problem.hi[op_id], f"s{key}")
                model.add(self.stage[key] == problem.lo[op_id]).only_enforce_if(~self.present[key])
                if index > 1:
                    before = (op_id, index - 1)
                    model.add_implication(self.present[key], self.present[before])
                    model.add(self.stage[key] >= self.stage[before] + 1).only_enforce_if(
                        self.present[key]
                    )

    def _retention(self) -> None:
        """End variables: each output of each execution is retained up to its last read."""
        problem, model, graph = self.problem, self.model, self.problem.graph
        for op in graph.ops:
            for index in range(problem.copies[op.id]):
                reader = (op.id, index)
                earliest = problem.at(op.id, op.id if index == 0 else problem.lo[op.id])
                for tensor in op.outputs:
                    var = model.new_int_var(earliest, problem.end_time, f"e{tensor}_{index}")
                    self.end[(tensor, index)] = var
                    model.add(var >= self.time(reader))
                    if index > 0:
                        model.add(var == self.time(reader)).only_enforce_if(~self.present[reader])
                        before = self.end[(tensor, index - 1)]
                        model.add(before < self.time(reader)).only_enforce_if(self.present[reader])
        if graph.boundary < len(graph.ops):
            for tensor in graph.late_inputs:
                self.late_end[tensor] = model.new_int_var(
                    problem.boundary_time, problem.end_time, f"late{tensor}"
                )

    # --- coverage --------------------------------------------------------------------------

    def _coverage(self) -> None:
        problem, graph = self.problem, self.problem.graph
        served: dict[Reader, list[cp_model.IntVar | bool]] = {key: [] for key in self.present}
        late = set(graph.late_inputs)
        for op in graph.ops:
            for index in range(problem.copies[op.id]):
                self._cover_reader((op.id, index), problem.reads[op.id], late, served)
        self._cover_reader(_END, problem.end_reads, late, served)
        for key, literals in served.items():
            if literals:
                self.model.add_bool_or(literals).only_enforce_if(self.present[key])
            else:
                self.model.add(self.present[key] == 0)

    def _cover_reader(
        self,
        reader: Reader,
        tensors: Sequence[int],
        late: set[int],
        served: dict[Reader, list[cp_model.IntVar | bool]],
    ) -> None:
        graph = self.problem.graph
        when, present = self.time(reader), self.is_present(reader)
        options: dict[int, Coverage] = {}
        for tensor in tensors:
            producer = graph.tensors[tensor].producer
            if tensor in late:
                if tensor in self.late_end:
                    self._require(self.late_end[tensor] >= when, present)
                continue
            if producer is None:
                continue
            options[tensor] = self._cover(reader, tensor, producer, served)
        for tensor, choices in options.items():
            base = graph.storage_of(tensor)
            if base != tensor and base in options:
                self._same_base(tensor, choices, options[base])
            self.reads.append(_Read(reader, tensor, choices))

    def _cover(
        self,
        reader: Reader,
        tensor: int,
        producer: int,
        served: dict[Reader, list[cp_model.IntVar | bool]],
    ) -> Coverage:
        model, problem = self.model, self.problem
        when, present = self.time(reader), self.is_present(reader)
        if problem.copies[producer] == 1:
            self._require(self.end[(tensor, 0)] >= when, present)
            return [(0, True)]
        choices: Coverage = []
        for index in range(problem.copies[producer]):
            source = (producer, index)
            if index > 0 and problem.lo[producer] > self.max_stage(reader):
                continue
            literal = model.new_bool_var(f"y{reader}_{tensor}_{index}")
            model.add(self.end[(tensor, index)] >= when).only_enforce_if(literal)
            if index > 0:
                model.add_implication(literal, self.present[source])
                model.add(self.stage[source] <= self.stage_of(reader)).only_enforce_if(literal)
                served[source].append(literal)
            choices.append((index, literal))
        literals = [literal for _, literal in choices]
        if present is True:
            model.add_bool_or(literals)
        else:
            model.add_bool_or(literals).only_enforce_if(present)
        return choices

    def _same_base(self, view_tensor: int, view: Coverage, base: Coverage) -> None:
        """A view read must see the base instance the view was made from (storage is shared)."""
        graph = self.problem.graph
        view_op = graph.tensors[view_tensor].producer
        base_op = graph.tensors[graph.storage_of(view_tensor)].producer
        assert view_op is not None and base_op is not None
        for view_index, view_literal in view:
            for base_index, base_literal in base:
                if base_index == 0:
                    continue
                literals = [lit for lit in (view_literal, base_literal) if lit is not True]
                made_before = self.time((base_op, base_index)) < self.time((view_op, view_index))
                self.model.add(made_before).only_enforce_if(literals)

    def _require(self, constraint: cp_model.BoundedLinearExpression, present: object) -> None:
        if present is True:
            self.model.add(constraint)
        else:
            self.model.add(constraint).only_enforce_if(present)

    # --- memory ----------------------------------------------------------------------------

    def _memory(self, capacity: int | None, variable: bool) -> None:
        problem, model, graph = self.problem, self.model, self.problem.graph
        intervals: list[cp_model.IntervalVar] = []
        demands: list[int] = []
        for op in graph.ops:
            for index in range(problem.copies[op.id]):
                reader = (op.id, index)
                start = self.time(reader)
                for tensor in op.outputs:
                    if problem.size[tensor]:
                        intervals.append(self._interval(reader, tensor, start))
                        demands.append(problem.size[tensor])
                if problem.transient[op.id]:
                    intervals.append(self._fixed(start, 1, reader))
                    demands.append(problem.transient[op.id])
        for tensor, end in self.late_end.items():
            if problem.size[tensor]:
                start = problem.boundary_time
                intervals.append(model.new_interval_var(start, end + 1 - start, end + 1, ""))
                demands.append(problem.size[tensor])
        if problem.reserve:
            intervals.append(model.new_fixed_size_interval_var(problem.boundary_time, 1, ""))
            demands.append(problem.reserve)
        if problem.backward_reserve:
            length = problem.end_time + 1 - problem.boundary_time
            intervals.append(model.new_fixed_size_interval_var(problem.boundary_time, length, ""))
            demands.append(problem.backward_reserve)
        self.total_demand = sum(demands)
        if variable or capacity is None:
            top = self.total_demand if capacity is None else min(capacity, self.total_demand)
            self.peak = model.new_int_var(0, max(top, 0), "peak")
            model.add_cumulative(intervals, demands, self.peak)
        else:
            model.add_cumulative(intervals, demands, capacity)

    def _interval(self, reader: Reader, tensor: int, start: LinearLike) -> cp_model.IntervalVar:
        end = self.end[(tensor, reader[1])]
        if reader[1] == 0:
            return self.model.new_interval_var(start, end + 1 - start, end + 1, "")
        size = self.model.new_int_var(1, self.problem.end_time + 1, "")
        self.sizes[(tensor, reader[1])] = size
        return self.model.new_optional_interval_var(start, size, end + 1, self.present[reader], "")

    def _fixed(self, start: LinearLike, length: int, reader: Reader) -> cp_model.IntervalVar:
        if reader[1] == 0:
            return self.model.new_fixed_size_interval_var(start, length, "")
        return self.model.new_optional_fixed_size_interval_var(
            start, length, self.present[reader], ""
        )
