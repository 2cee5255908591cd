"""Every method on every model at a sweep of budgets, side by side; then the docs page.

    python -m benchmarks --quick                 # <= 15 min on the 2-core CPU machine
    python -m benchmarks                         # full sizes and sweeps (--device cuda on a GPU)
    python -m benchmarks --quick --inductor --models gpt vit --no-planning --merge
    python -m benchmarks --planning-only         # planning time sweep (to >= 10k nodes) alone
    python -m benchmarks --docs-only benchmarks/results/cpu-2026-11-27.json
    python -m benchmarks --suite hf --quick      # Hugging Face models vs HF checkpointing

Writes benchmarks/results/<device>-<date>.json and docs/benchmarks.md (+ docs/benchmarks/*.png);
`--suite hf`: benchmarks/results/hf-<device>-<date>.json and docs/hf-benchmarks.md (+
docs/benchmarks/hf-*.png). With --merge (implied by --planning-only), today's file keeps the
rows of the models not run now and its planning sweep unless one is run now; every run is
listed in the file's meta.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.suite.hf_report import write_hf_docs
from benchmarks.suite.hf_runner import run_hf_workload
from benchmarks.suite.hf_workloads import SPECS, hf_workloads
from benchmarks.suite.planning import plan_point, planning_sweep
from benchmarks.suite.records import Results, Row, merge
from benchmarks.suite.report import write_docs
from benchmarks.suite.runner import SuiteConfig, run_workload
from benchmarks.suite.workloads import FAMILIES, Workload, workloads

ROOT = Path(__file__).resolve().parent.parent

QUICK = {
    "size": "quick",
    "rounds": 9,
    "torch_budgets": (0.0, 0.5, 1.0),
    "remat_fractions": (0.0, 1.0),
    "sqrt_matched": False,
    "time_limit": 10.0,
    "inductor_budgets": (),
    "planning": {"mlp": (8, 64)},
}
FULL = {
    "size": "full",
    "rounds": 9,
    "torch_budgets": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
    "remat_fractions": (0.0, 0.25, 0.5, 0.75, 1.0),
    "sqrt_matched": True,
    "time_limit": 30.0,
    "inductor_budgets": (0.0, 0.5, 1.0),
    "planning": {"mlp": (8, 32, 128, 264), "gpt": (2, 8, 32, 96)},
}
INDUCTOR_QUICK = (0.5, 1.0)
"""torch-budget-inductor settings when --inductor is asked of a quick run."""
HF_QUICK = {"size": "quick", "rounds": 5, "torch_budgets": (0.0, 0.5), "time_limit": 10.0}
HF_FULL = {"size": "full", "rounds": 7, "torch_budgets": (0.0, 0.5, 1.0), "time_limit": 30.0}


@dataclass(frozen=True)
class Suite:
    """What `--suite` selects: its presets, models, per-model run, results file and page."""

    quick: dict
    full: dict
    workloads: Callable[[str, tuple[str, ...] | None], list[Workload]]
    run: Callable[[Workload, SuiteConfig, Callable[[str], None]], list[Row]]
    prefix: str
    """Results file name: benchmarks/results/<prefix><device>-<date>.json."""
    write_docs: Callable[[Results, Path, Path], Path]
    planning: bool


SUITES = {
    "peers": Suite(QUICK, FULL, workloads, run_workload, "", write_docs, planning=True),
    "hf": Suite(HF_QUICK, HF_FULL, hf_workloads, run_hf_workload, "hf-", write_hf_docs, False),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="peers",
        help="peers: every peer on the example models (default); hf: Hugging Face models "
        "against their own gradient checkpointing",
    )
    parser.add_argument("--quick", action="store_true", help="smaller models, fewer budgets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"peers: {', '.join(sorted(FAMILIES))}; hf: {', '.join(SPECS)}",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved timed rounds (>= 5; default 9)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every method (default: 1 on CPU, where the shared 2-core "
        "machine is oversubscribed by a second thread; torch's default elsewhere)",
    )
    parser.add_argument("--no-planning", action="store_true", help="skip the planning sweep")
    parser.add_argument(
        "--planning-only", action="store_true", help="only the planning sweep (implies --merge)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep today's results of the models not run now, and its planning sweep",
    )
    parser.add_argument(
        "--inductor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Inductor rows (torch-budget-inductor, remat-ilp-inductor); default: full runs only; "
        "peers suite only",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--docs-only", type=Path, default=None, help="regenerate docs from JSON")
    return parser.parse_args(argv)


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    suite = SUITES[args.suite]
    if args.docs_only is not None:
        _log(f"wrote {suite.write_docs(Results.read(args.docs_only), args.docs_only, args.docs)}")
        return 0
    preset = suite.quick if args.quick else suite.full
    try:
        chosen = suite.workloads(preset["size"], tuple(args.models) if args.models else None)
    except ValueError as error:
        print(f"python -m benchmarks: error: {error}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    started, load_start, stamp = time.perf_counter(), _load(), dt.datetime.now()
    rows: list[Row] = []
    models: dict[str, str] = {}
    config = None if args.planning_only else _config(args, preset, device)
    if config is not None:
        for workload in chosen:
            _log(f"{workload.name}: {workload.description}")
            rows.extend(suite.run(workload, config, _log))
            models[workload.name] = workload.description
    planning = [] if args.no_planning or not suite.planning else _planning(preset)
    run = {
        "command": command,
        "started": stamp.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(time.perf_counter() - started, 1),
        "load_start": load_start,
        "load_end": _load(),
        "size": preset["size"],
        "models": list(models),
        "config": None if config is None else _plain(config),
        "planning_points": len(planning),
        "git": _git_state(),
    }
    meta = _meta(device, threads, stamp.date().isoformat(), models)
    path = args.out / f"{suite.prefix}{device.type}-{meta['date']}.json"
    keep_old = (args.merge or args.planning_only) and path.exists()
    results = merge(Results.read(path) if keep_old else None, meta, rows, planning, run)
    results.write(path)
    _log(f"wrote {path} ({len(results.rows)} rows, {len(results.planning)} planning points)")
    _log(f"wrote {suite.write_docs(results, _relative(path), args.docs)}")
    return 0


def _config(args: argparse.Namespace, preset: dict, device: torch.device) -> SuiteConfig:
    inductor = preset.get("inductor_budgets", ())
    if args.inductor is not None:
        inductor = (preset.get("inductor_budgets") or INDUCTOR_QUICK) if args.inductor else ()
    optional = ("remat_fractions", "sqrt_matched", "checkpoint_fractions")
    return SuiteConfig(
        device=device,
        rounds=args.rounds or preset["rounds"],
        torch_budgets=preset["torch_budgets"],
        time_limit=preset["time_limit"],
        inductor_budgets=inductor,
        **{key: preset[key] for key in optional if key in preset},
    )


def _plain(config: SuiteConfig) -> dict:
    return {k: v for k, v in asdict(config).items() if k != "device"}


def _meta(device: torch.device, threads: int, date: str, models: dict[str, str]) -> dict:
    return {
        "device": device.type,
        "device_name": _device_name(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "torch": torch.__version__,
        "threads": threads,
        "date": date,
        "models": models,
    }


def _planning(preset: dict) -> list[dict]:
    plan_point("mlp", 2, preset["time_limit"])  # warm-up: first-call imports and caches
    return planning_sweep(preset["planning"], preset["time_limit"], _log)


def _git_state() -> dict[str, object]:
    """The commit the remat code was at, and remat files that differed from it (the run used
    the working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "remat").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "remat_changes": [c[3:] for c in changed]}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


if __name__ == "__main__":
    raise SystemExit(main())
