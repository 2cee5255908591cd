"""`remat analyze`: explain a model's training-step memory and what each byte saved costs."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from remat.cli_errors import UsageError

_EXAMPLE = 'remat analyze mypkg.models:build --input "randn(8,3,224,224)" --budget 0.3,0.5,0.7'
_HF_EXAMPLE = "remat analyze hf:gpt2 --hf-config n_layer=4 --batch 2 --seq 512"
_HF_BATCH, _HF_SEQ = 2, 128


def add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "analyze",
        help="where a training step's memory goes, and what each byte saved costs",
        description="Capture one forward+backward of the model (nothing is trained), plan it at "
        "each budget, and write report.json, report.md, timeline.png and tradeoff.png. "
        f"Example: {_EXAMPLE} --out report/ ; or a Hugging Face model type: {_HF_EXAMPLE}",
    )
    p.add_argument(
        "factory",
        metavar="MODULE:FACTORY",
        help="callable returning a module, or (module, example_args); MODULE may be "
        "a dotted name or a path to a .py file. Or hf:TYPE (hf:gpt2, hf:llama, hf:vit, ...): "
        "a Hugging Face model type, default config, random init, inputs from --batch/--seq",
    )
    p.add_argument(
        "--batch", type=int, default=None, help=f"hf:TYPE only: batch size (default {_HF_BATCH})"
    )
    p.add_argument(
        "--seq",
        type=int,
        default=None,
        help=f"hf:TYPE only: tokens per sequence (default {_HF_SEQ}; vision models ignore it)",
    )
    p.add_argument(
        "--hf-config",
        default="",
        metavar="KEY=VALUE,...",
        help="hf:TYPE only: config overrides, e.g. n_layer=4,n_embd=256 (values are Python "
        "literals)",
    )
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SPEC",
        help="one per positional argument: randn(8,3,224,224), rand(...), zeros(...), "
        "ones(...), randint(high,(shape)) or randint(low,high,(shape)); dtype=... "
        "allowed; replaces the factory's example_args",
    )
    p.add_argument(
        "--budget",
        default="0.4,0.6,0.8",
        metavar="LIST",
        help="comma-separated budgets: a number <= 1 is a fraction of the keep-all "
        "peak, a larger integer is bytes, or a size such as 300MiB (default "
        "0.4,0.6,0.8)",
    )
    p.add_argument("--out", default="report", metavar="DIR", help="output folder (default report)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--dtype",
        default=None,
        help="cast the model and float inputs (float32, bfloat16, float16, float64)",
    )
    p.add_argument("--solver", default="auto", help="auto, ilp, sqrt, lazy or none (default auto)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds per budget's solve (default: the solver's, 5 s for auto)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=12,
        help="budgets sampled from the floor to keep-all for tradeoff.png (default 12)",
    )
    p.add_argument(
        "--sample-time-limit",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds per sampled budget's solve (default 1)",
    )
    p.add_argument(
        "--floor-time-limit",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds to search for the floor (default 5)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="also run one real step per budget: measured peak and step time",
    )
    p.add_argument(
        "--compare-torch",
        action="store_true",
        help="also measure torch.compile at several activation_memory_budget values",
    )
    p.add_argument(
        "--torch-budgets",
        default="0,0.25,0.5,0.75,1",
        metavar="LIST",
        help="activation_memory_budget values for --compare-torch",
    )
    p.add_argument(
        "--torch-backend",
        default="inductor",
        help="torch.compile backend for --compare-torch (default inductor)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed steps per measured point")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?$")


def parse_budget_list(text: str) -> tuple:
    """'0.3,0.5,300MiB' -> ((label, Budget), ...); UsageError on a bad item."""
    from remat.budget import BudgetError, parse_budget

    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"--budget needs at least one budget, e.g. 0.3,0.5,0.7; got {text!r}")
    budgets = []
    for item in items:
        try:
            if _NUMBER.match(item):
                value = float(item)
                if value <= 1:
                    budgets.append((item, parse_budget(value)))
                    continue
                if not value.is_integer():
                    raise UsageError(
                        f"budget {item!r}: a number > 1 is bytes and must be whole; write a "
                        "fraction in (0, 1] or a size such as 300MiB"
                    )
                budgets.append((item, parse_budget(int(value))))
            else:
                budgets.append((item, parse_budget(item)))
        except BudgetError as error:
            raise UsageError(f"budget {item!r}: {error}") from None
    return tuple(budgets)


def _torch_budgets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise UsageError(f"--torch-budgets takes numbers in [0, 1], got {text!r}") from None
    if not values or not all(0 <= v <= 1 for v in values):
        raise UsageError(f"--torch-budgets takes numbers in [0, 1], got {text!r}")
    return values


def _options(args: argparse.Namespace):
    from remat.analysis import AnalysisOptions
    from remat.solvers import solver_names

    if args.solver not in solver_names():
        raise UsageError(f"unknown solver {args.solver!r}; choose {', '.join(solver_names())}")
    try:
        return AnalysisOptions(
            budgets=parse_budget_list(args.budget),
            solver=args.solver,
            time_limit=args.time_limit,
            samples=args.samples,
            sample_time_limit=args.sample_time_limit,
            floor_time_limit=args.floor_time_limit,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _device_and_dtype(args: argparse.Namespace):
    import torch

    from remat.analysis.target import DTYPES

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"unknown --device {args.device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but CUDA is not available here; use --device cpu")
    dtype = None
    if args.dtype is not None:
        if args.dtype not in DTYPES or not DTYPES[args.dtype].is_floating_point:
            raise UsageError(
                f"unknown --dtype {args.dtype!r}; use float32, bfloat16, float16 or float64"
            )
        dtype = DTYPES[args.dtype]
    return device, dtype


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )
    with bar:
        task = bar.add_task("starting", total=1)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        yield update


def _target(args: argparse.Namespace, device, dtype):
    """The model and inputs: MODULE:FACTORY with --input, or hf:TYPE with --batch/--seq."""
    from remat.analysis import build_hf_target, build_target, parse_hf_config
    from remat.analysis.target import is_hf_spec

    hf_flags = [
        flag
        for flag, value in (
            ("--batch", args.batch),
            ("--seq", args.seq),
            ("--hf-config", args.hf_config),
        )
        if value
    ]
    if not is_hf_spec(args.factory):
        if hf_flags:
            raise UsageError(f"{hf_flags[0]} applies to hf:TYPE models only; use --input here")
        return build_target(args.factory, args.input, device=device, dtype=dtype)
    if args.input:
        raise UsageError("--input does not apply to hf:TYPE models; use --batch and --seq")
    return build_hf_target(
        args.factory,
        batch=_HF_BATCH if args.batch is None else args.batch,
        seq=_HF_SEQ if args.seq is None else args.seq,
        config=parse_hf_config(args.hf_config),
        device=device,
        dtype=dtype,
    )


def run_analyze(args: argparse.Namespace, command: str) -> int:
    from remat.analysis import TargetError, TraceError, analyze
    from remat.analysis.export import write_report

    options = _options(args)
    torch_budgets = _torch_budgets(args.torch_budgets) if args.compare_torch else ()
    device, dtype = _device_and_dtype(args)
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # files and pipes: wide enough for the budget table
    try:
        target = _target(args, device, dtype)
        with _progress(Console(stderr=True).is_terminal) as progress:
            analysis = analyze(target, options, progress)
            if args.measure or torch_budgets:
                from remat.analysis.measured import measure

                measured = measure(
                    target,
                    analysis,
                    remat_budgets=args.measure,
                    torch_budgets=torch_budgets,
                    torch_backend=args.torch_backend,
                    repeats=args.repeats,
                    progress=progress,
                )
                analysis = dataclasses.replace(analysis, measured=measured)
    except TargetError as error:
        raise UsageError(str(error)) from error
    except TraceError as error:
        raise UsageError(
            f"{error} (check that the model runs on these inputs; --debug shows the traceback)"
        ) from error
    paths = write_report(analysis, args.out, command=command, device=str(device), dtype=args.dtype)
    _print_tables(console, analysis)
    console.print(
        f"wrote {', '.join(os.path.relpath(p) for p in paths.values())} "
        f"in {analysis.analyze_s:.1f}s of analysis"
    )
    return 0


def _print_tables(console: Console, analysis) -> None:
    from remat.analysis.tables import all_tables

    for text_table in all_tables(analysis):
        table = Table(
            title=text_table.title,
            caption=text_table.note or None,
            title_justify="left",
            caption_justify="left",
            min_width=min(len(text_table.title), console.width),
        )
        for index, column in enumerate(text_table.columns):
            table.add_column(column, overflow="fold", justify="left" if index == 0 else "right")
        for row in text_table.rows:
            table.add_row(*row)
        console.print(table)
