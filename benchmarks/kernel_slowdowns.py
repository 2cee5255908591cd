"""Kernels that run below the roofline, measured: `python -m benchmarks.kernel_slowdowns`.

Times each case of remat.cost.calibrate on this machine (float32, caches flushed before each
run) against the roofline of the device's built-in profile, prints the table and writes
benchmarks/results/kernel-slowdowns-<device>-<date>.json. The built-in CPU profile's
`slowdowns` are this file's `slowdowns` (tests/cost/test_calibrate.py checks they agree).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import torch

from remat.cost.calibrate import measure_slowdowns, profile_slowdowns
from remat.cost.timing import profile_for

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--elements", type=int, default=1 << 21)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/kernel-slowdowns-…")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profile = profile_for(device)
    print(
        f"{profile.name}; {args.elements} float32 elements per case, "
        f"median of {args.rounds} x {args.repeats} runs"
    )
    columns = ("roofline ms", "measured ms", "slowdown", "in profile")
    print(f"{'op':36s} " + " ".join(f"{name:>12s}" for name in columns))
    found = measure_slowdowns(
        device, elements=args.elements, repeats=args.repeats, rounds=args.rounds
    )
    for each in found:
        print(
            f"{each.name:36s} {each.roofline_s * 1e3:12.3f} {each.measured_s * 1e3:12.3f} "
            f"{each.factor:12.2f} {profile.slowdown(each.name):12.1f}"
        )
    out = args.out or RESULTS / f"kernel-slowdowns-{device.type}-{dt.date.today()}.json"
    record = {
        "device": str(device),
        "profile": profile.name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "elements": args.elements,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "cases": [
            {"op": e.name, "roofline_s": e.roofline_s, "measured_s": e.measured_s} for e in found
        ],
        "slowdowns": dict(profile_slowdowns(found)),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
