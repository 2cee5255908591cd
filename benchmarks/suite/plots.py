"""PNG plots: per model, measured peak vs step time for every method (the Pareto frontier), and
planning time vs graph size for remat's ILP against PyTorch's partitioner."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.suite.records import Row  # noqa: E402

MIB = 2**20
STYLE = {
    "eager": ("black", "o"),
    "checkpoint-block": ("tab:orange", "s"),
    "checkpoint-sqrt": ("tab:brown", "D"),
    "hf-checkpoint": ("tab:green", "s"),
    "torch-budget": ("tab:blue", "^"),
    "torch-budget-inductor": ("tab:cyan", "v"),
    "rockmate": ("tab:purple", "P"),
    "remat-sqrt": ("tab:olive", "X"),
    "remat-ilp": ("tab:red", "*"),
    "remat-ilp-inductor": ("tab:pink", "*"),
}


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (time, peak) points no other point beats on both, by increasing time."""
    front, lowest = [], float("inf")
    for time_s, peak in sorted(points):
        if peak < lowest:
            front.append((time_s, peak))
            lowest = peak
    return front


def model_plot(model: str, description: str, rows: list[Row], path: Path) -> None:
    ran = [r for r in rows if r.ran]
    fig, ax = plt.subplots(figsize=(9.5, 5))
    budgets = sorted({r.budget_bytes for r in rows if r.method == "remat-ilp" and r.budget_bytes})
    for budget in budgets:
        ax.axhline(budget / MIB, color="0.85", lw=0.8, ls=":", zorder=0)
    for method, (color, marker) in STYLE.items():
        mine = sorted((r for r in ran if r.method == method), key=_sweep_order)
        if not mine:
            continue
        xs = [r.step_s for r in mine]
        ys = [r.peak_bytes / MIB for r in mine]
        spread = [[r.step_s - r.step_min_s for r in mine], [r.step_max_s - r.step_s for r in mine]]
        ax.errorbar(
            xs,
            ys,
            xerr=spread,
            fmt=marker,
            color=color,
            label=method,
            ms=8,
            capsize=2,
            ls="-" if len(mine) > 1 else "none",
            lw=0.8,
            alpha=0.9,
        )
    front = pareto([(r.step_s, r.peak_bytes / MIB) for r in ran])
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="0.4", lw=1.2, ls="--", label="Pareto frontier")
    ax.set_xlabel("step time, s (median; bars: min-max of interleaved rounds)")
    ax.set_ylabel("measured peak, MiB")
    title = "\n".join(textwrap.wrap(f"{model}: {description}", 110))
    ax.set_title(f"{title}\n(dotted lines: remat-ilp budgets)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweep_order(row: Row) -> float:
    """Points of one method are joined in the order of its knob: the byte budget, or the
    activation_memory_budget value (so a non-monotone knob shows as a zigzag)."""
    if row.budget_bytes is not None:
        return float(row.budget_bytes)
    try:
        return float(row.setting.rpartition("=")[2])
    except ValueError:
        return float(row.peak_bytes)


def planning_plot(points: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for family, marker in (("mlp", "o"), ("gpt", "s")):
        mine = sorted((p for p in points if p["family"] == family), key=lambda p: p["fx_nodes"])
        if not mine:
            continue
        nodes = [p["fx_nodes"] for p in mine]
        ax.plot(
            nodes,
            [p["remat_total_s"] for p in mine],
            marker=marker,
            color="tab:red",
            label=f"remat ILP, total ({family})",
        )
        ax.plot(
            nodes,
            [p["remat_solve_s"] for p in mine],
            marker=marker,
            color="tab:red",
            ls=":",
            label=f"remat ILP, solve only ({family})",
        )
        ax.plot(
            nodes,
            [p["torch_partition_s"] for p in mine],
            marker=marker,
            color="tab:blue",
            label=f"torch min-cut, budget 0.5 ({family})",
        )
    limits = {p["time_limit"] for p in points}
    for limit in limits:
        ax.axhline(limit, color="0.6", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("joint graph size (fx call_function nodes)")
    ax.set_ylabel("planning time, s")
    ax.set_title(
        f"Planning time vs graph size (dashed: ILP time limit {sorted(limits)} s)", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
