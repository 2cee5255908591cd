"""The two pictures of a report: the live-bytes timeline and the budget/overhead trade-off."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from remat.analysis.core import Analysis, BudgetResult  # noqa: E402
from remat.analysis.step import held_bytes  # noqa: E402
from remat.ir import Plan  # noqa: E402
from remat.simulate import simulation_of  # noqa: E402

_KEEP_ALL = "#222222"
_ILP = "#1f77b4"
_SQRT = "#ff7f0e"
_TORCH = "#2ca02c"
_MEASURED = "#d62728"


def _unit(analysis: Analysis) -> tuple[str, float]:
    peak = analysis.keep_all_peak
    if peak >= 4 * 2**30:
        return "GiB", 2**30
    return ("MiB", 2**20) if peak >= 2**20 else ("KiB", 2**10)


def _step_timeline(
    analysis: Analysis, plans: tuple[Plan, ...], held: tuple[int, ...], scale: float
) -> tuple[list[float], int]:
    """(live bytes / scale per executed op, where the backward starts), in the step's order.

    Graphs run their forward parts in order and their backward parts in reverse order; while
    one graph runs, what the others hold (`held`) is added to its own live bytes.
    """
    forward: list[float] = []
    backward: list[float] = []
    for item, plan, extra in zip(analysis.step.graphs, plans, held):
        timeline = simulation_of(item.captured.graph, plan).timeline
        values = [(v + extra) / scale for v in timeline]
        forward.extend(values[: plan.boundary])
        backward[:0] = values[plan.boundary :]
    return forward + backward, len(forward)


def timeline_figure(analysis: Analysis) -> Figure:
    figure, axes = plt.subplots(figsize=(11, 6), dpi=110)
    unit, scale = _unit(analysis)
    step = analysis.step
    keep_all = step.keep_all_plans
    values, bound = _step_timeline(analysis, keep_all, held_bytes(step, keep_all), scale)
    axes.plot(
        values,
        color=_KEEP_ALL,
        lw=1.6,
        label=f"keep all: peak {analysis.keep_all_peak / scale:.1f} {unit}",
    )
    axes.axvline(bound, color="#999999", ls=":", lw=1)
    axes.text(
        bound,
        0.98,
        " backward starts (keep all)",
        va="top",
        fontsize=8,
        color="#666666",
        transform=axes.get_xaxis_transform(),
    )
    colors = plt.get_cmap("viridis")
    feasible = [r for r in analysis.budgets if r.feasible]
    for index, result in enumerate(feasible):
        color = colors(0.15 + 0.7 * index / max(1, len(feasible) - 1))
        values, _ = _step_timeline(analysis, result.plans, result.held, scale)
        axes.plot(
            values,
            color=color,
            lw=1.3,
            label=f"budget {result.label} ({result.budget_bytes / scale:.1f} {unit}, "
            f"dashed): peak {(result.predicted_peak or 0) / scale:.1f} {unit}, "
            f"+{100 * (analysis.overhead(result) or 0):.1f}% time",
        )
        axes.axhline(result.budget_bytes / scale, color=color, ls="--", lw=1)
    for result in analysis.budgets:
        if not result.feasible:
            axes.axhline(
                result.budget_bytes / scale,
                color=_MEASURED,
                ls="--",
                lw=1,
                label=f"budget {result.label} ({result.budget_bytes / scale:.1f} {unit}): "
                "infeasible",
            )
    axes.axhline(
        analysis.floor / scale,
        color="#888888",
        ls="-.",
        lw=1,
        label=f"floor {analysis.floor / scale:.1f} {unit}",
    )
    axes.set_xlabel("execution step (ops in the order they run; recomputations add steps)")
    axes.set_ylabel(f"live bytes ({unit})")
    axes.set_title(f"Live memory over one training step: {analysis.target}", fontsize=10)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.25)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    figure.tight_layout()
    return figure


def _curve(
    axes: Axes, analysis: Analysis, results: tuple[BudgetResult, ...], scale: float, **style
) -> None:
    points = [
        (r.budget_bytes / scale, 100 * (analysis.overhead(r) or 0.0)) for r in results if r.feasible
    ]
    if points:
        xs, ys = zip(*points)
        axes.plot(xs, ys, **style)


def tradeoff_figure(analysis: Analysis) -> Figure:
    figure, axes = plt.subplots(figsize=(9, 6), dpi=110)
    unit, scale = _unit(analysis)
    keep_all = analysis.keep_all_peak / scale
    floor = analysis.floor / scale
    axes.axvspan(0, floor, color="#dddddd", alpha=0.6, label="below the floor: infeasible")
    _curve(
        axes,
        analysis,
        analysis.curve,
        scale,
        color=_ILP,
        marker="o",
        ms=5,
        lw=1.5,
        label=f"{analysis.options.solver} at sampled budgets (estimated)",
    )
    _curve(
        axes,
        analysis,
        analysis.sqrt_curve,
        scale,
        color=_SQRT,
        marker="x",
        ms=7,
        lw=0,
        label="sqrt(n) checkpoints at the same budgets (estimated)",
    )
    for result in analysis.budgets:
        if result.feasible:
            overhead = 100 * (analysis.overhead(result) or 0.0)
            axes.plot(
                result.budget_bytes / scale,
                overhead,
                marker="*",
                ms=14,
                color=_ILP,
                markeredgecolor="black",
                lw=0,
            )
            axes.annotate(
                result.label,
                (result.budget_bytes / scale, overhead),
                fontsize=8,
                xytext=(7, 7),
                textcoords="offset points",
            )
    _measured_points(axes, analysis, scale)
    axes.axvline(keep_all, color=_KEEP_ALL, ls=":", lw=1)
    axes.text(
        keep_all, 0.02, "keep all ", ha="right", fontsize=8, transform=axes.get_xaxis_transform()
    )
    axes.set_xlim(0, max(keep_all, _measured_max(analysis) / scale) * 1.05)
    _clip_outliers(axes)
    axes.set_xlabel(
        f"budget ({unit}); stars: the requested budgets; measured points: the peak they reached"
    )
    axes.set_ylabel("time overhead (% of the keep-all step)")
    top = axes.secondary_xaxis("top", functions=(lambda x: x / keep_all, lambda f: f * keep_all))
    top.set_xlabel("fraction of the keep-all peak")
    axes.set_title(f"What each {unit} costs: {analysis.target}", fontsize=10)
    axes.grid(alpha=0.25)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    figure.tight_layout()
    return figure


def _clip_outliers(axes: Axes) -> None:
    """Keep the curve readable when one point (at the floor, typically) dwarfs the rest."""
    ys = sorted({float(y) for line in axes.get_lines() for y in line.get_ydata()})
    if len(ys) < 2 or ys[-2] <= 0 or ys[-1] <= 3 * ys[-2]:
        return
    top = ys[-2] * 1.6
    axes.set_ylim(top=top)
    for line in axes.get_lines():
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            if y > top:
                axes.annotate(
                    f"{y:.0f}% (off scale)",
                    (x, top),
                    xytext=(0, -14),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    color=line.get_color(),
                    arrowprops={"arrowstyle": "->"},
                )


def _measured_max(analysis: Analysis) -> float:
    if analysis.measured is None:
        return 0.0
    points = [analysis.measured.eager, *analysis.measured.remat, *analysis.measured.torch]
    return float(max(p.peak_bytes or 0 for p in points))


def _measured_points(axes: Axes, analysis: Analysis, scale: float) -> None:
    """Real steps: x = the peak they reached, y = step time over eager's (measured)."""
    measured = analysis.measured
    if measured is None or not measured.eager.step_s:
        return
    base = measured.eager.step_s
    if measured.eager.peak_bytes is not None:
        axes.plot(
            measured.eager.peak_bytes / scale,
            0,
            marker="o",
            color=_KEEP_ALL,
            lw=0,
            label="eager (measured)",
        )
    for points, color, marker, name in (
        (measured.remat, _MEASURED, "s", "remat.compile (measured)"),
        (measured.torch, _TORCH, "D", "torch.compile activation_memory_budget (measured)"),
    ):
        good = [p for p in points if p.peak_bytes is not None and p.step_s is not None]
        if not good:
            continue
        xs = [(p.peak_bytes or 0) / scale for p in good]
        ys = [100 * ((p.step_s or 0) / base - 1) for p in good]
        axes.plot(xs, ys, color=color, marker=marker, ms=6, lw=0, label=name)
        for p, x, y in zip(good, xs, ys):
            axes.annotate(
                p.setting,
                (x, y),
                fontsize=7,
                color=color,
                xytext=(5, -10),
                textcoords="offset points",
            )


def write_figures(analysis: Analysis, out_dir: str) -> dict[str, str]:
    """Write timeline.png and tradeoff.png into `out_dir`; return {'timeline': path, ...}."""
    paths = {}
    for name, build in (("timeline", timeline_figure), ("tradeoff", tradeoff_figure)):
        figure = build(analysis)
        paths[name] = os.path.join(out_dir, f"{name}.png")
        figure.savefig(paths[name])
        plt.close(figure)
    return paths
