"""The `remat` command (also `python -m remat`).

    remat analyze MODULE:FACTORY --input "randn(8,3,224,224)" --budget 0.3,0.5,0.7 --out report/
    remat solve-graph FILE.json --budget-fraction 0.8 --time-limit 60 [--json]

Exit codes: 0 done; 1 an internal error (a bug: rerun with --debug for the traceback); 2 the
command line, the model or its inputs need fixing (one line on stderr says what).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from remat.cli_errors import EXIT_USAGE, UsageError

EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remat", description="Rematerialization for PyTorch training steps.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from remat.cli_analyze import add_analyze_parser

    add_analyze_parser(commands)
    solve = commands.add_parser(
        "solve-graph",
        help="schedule a benchmark graph of the literature under a budget",
        description="Solve one graph of ../shared/remat-graphs (networkx node-link JSON) at "
        "ceil(FRACTION * topo_peak) and re-score the schedule under the README's memory model.",
    )
    solve.add_argument("file", metavar="FILE.json")
    solve.add_argument(
        "--budget-fraction",
        type=float,
        default=0.8,
        metavar="FRACTION",
        help="budget as a fraction of the reference order's peak (default 0.8)",
    )
    solve.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock seconds for the solve (default 60)",
    )
    solve.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: order, cost, peak, budget, lower_bound, status, solve_s",
    )
    solve.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "analyze":
            from remat.cli_analyze import run_analyze

            return run_analyze(args, "remat " + shlex.join(argv))
        return run_solve_graph(args)
    except UsageError as error:
        if args.debug:
            raise
        _fail(f"remat {args.command}: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:
        if args.debug:
            raise
        _fail(
            f"remat {args.command}: internal error: {type(error).__name__}: "
            f"{_first_line(error)} (rerun with --debug for the traceback)"
        )
        return EXIT_INTERNAL


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _fail(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)


def run_solve_graph(args: argparse.Namespace) -> int:
    """Solve a literature graph; print the re-scored schedule (JSON or a summary)."""
    import os

    from remat import graphs
    from remat.budget import InfeasibleBudgetError

    if not os.path.isfile(args.file):
        raise UsageError(
            f"no such file {args.file!r}; pass a graph JSON such as "
            "../shared/remat-graphs/vgg16_train.json"
        )
    if not 0 < args.budget_fraction <= 1:
        raise UsageError(f"--budget-fraction must lie in (0, 1], got {args.budget_fraction}")
    if not args.time_limit > 0:
        raise UsageError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    # The time limit covers the whole command: starting Python and importing remat (torch is
    # imported with it: seconds on a loaded machine), reading the file, solving and scoring.
    started = time.perf_counter() - _process_age()
    try:
        graph = graphs.load_literature_graph(args.file)
        network = graphs.read_networkx(args.file)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raise UsageError(
            f"cannot read {args.file!r} as a benchmark graph: {_first_line(error)}"
        ) from error
    budget = graphs.literature_budget(graph, args.budget_fraction)
    try:
        plan = graphs.solve_literature(
            args.file,
            args.budget_fraction,
            max(0.1, args.time_limit - _SCORING_S - (time.perf_counter() - started)),
        )
    except InfeasibleBudgetError as error:
        reason = graphs.proven_infeasible(graph, budget)
        raise UsageError(str(error) + (f"; proven: {reason}" if reason else "")) from error
    solve_s = time.perf_counter() - started
    result = _scored(graphs, graph, network, plan, budget, solve_s)
    if args.json:
        print(json.dumps(result))
    else:
        _print_summary(args.file, graph, result)
    return 0


_SCORING_S = 0.5
"""Seconds kept for re-scoring and printing the schedule after the solve."""


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc); 0 where that is unknown."""
    import os

    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _scored(graphs, graph, network, plan, budget: int, solve_s: float) -> dict:
    """The JSON object of issue 6, scored by the simulator and re-scored by the validator."""
    from remat.simulate import simulation_of

    order = graphs.node_order(graph, plan.schedule)
    score = graphs.score_schedule(network, order)  # raises on an invalid schedule
    simulated = simulation_of(graph, plan)
    if score.peak != simulated.peak or score.peak > budget:
        raise RuntimeError(
            f"the schedule re-scores to peak {score.peak} (simulator: {simulated.peak}, "
            f"budget {budget})"
        )
    base = graph.total_time
    bound = None if plan.lower_bound is None else base + plan.lower_bound
    return {
        "order": order,
        "cost": _number(score.cost),
        "peak": score.peak,
        "budget": budget,
        "lower_bound": None if bound is None else _number(bound),
        "status": plan.status.value,
        "solve_s": round(solve_s, 3),
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _print_summary(path: str, graph, result: dict) -> None:
    from rich.table import Table

    base = graph.total_time
    title = f"{path}: {len(graph.ops)} nodes"
    table = Table(title=title, show_header=False, min_width=len(title), title_justify="left")
    table.add_row("budget", f"{result['budget']}")
    table.add_row("peak", f"{result['peak']} ({result['peak'] / result['budget']:.1%} of budget)")
    table.add_row("cost", f"{result['cost']} (overhead {result['cost'] / base - 1:.2%})")
    bound = result["lower_bound"]
    gap = "n/a" if bound is None else f"{(result['cost'] - bound) / result['cost']:.2%}"
    table.add_row("lower bound", f"{bound} (gap {gap})")
    table.add_row("status", result["status"])
    table.add_row(
        "schedule",
        f"{len(result['order'])} steps ({len(result['order']) - len(graph.ops)} recomputations)",
    )
    table.add_row("solve time", f"{result['solve_s']:.2f} s")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
