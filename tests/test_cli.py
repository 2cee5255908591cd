"""The `remat` command as a user runs it: files written, numbers checked, errors explained."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from remat.analysis import build_target, capture_step
from remat.analysis.schema import validate
from remat.cli import main
from remat.simulate import simulate

FACTORY = """
import torch
from remat.examples import ResidualMLP

def build():
    torch.manual_seed(0)
    return ResidualMLP(width=32, depth=3)

def broken():
    raise ValueError("checkpoint not found")
"""
ARGS = ["--budget", "0.6,0.8,0.01", "--samples", "3", "--time-limit", "1"]
FAST = ["--sample-time-limit", "0.5", "--floor-time-limit", "0.5"]


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "models.py"
    path.write_text(FACTORY)
    return str(path)


@pytest.fixture(scope="module")
def analyzed(factory: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(output folder, what the command printed) of one run on a tiny model."""
    out = tmp_path_factory.mktemp("report")
    argv = ["analyze", f"{factory}:build", "--input", "randn(128,32)", *ARGS, *FAST]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def report_dir(analyzed: tuple[Path, str]) -> Path:
    return analyzed[0]


def test_analyze_writes_every_file(report_dir: Path) -> None:
    for name in ("report.json", "report.md", "timeline.png", "tradeoff.png"):
        assert (report_dir / name).stat().st_size > 0, name
    for name in ("timeline.png", "tradeoff.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report_dir / "report.md").read_text()
    assert "![timeline](timeline.png)" in markdown and "![tradeoff](tradeoff.png)" in markdown
    assert "### Budgets" in markdown


def test_report_json_follows_the_documented_schema(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert validate(report) == []
    assert [b["label"] for b in report["budgets"]] == ["0.6", "0.8", "0.01"]
    assert report["command"].startswith("remat analyze ")
    assert report["tradeoff"]["points"] and report["measured"] is None


def test_json_predicted_peaks_match_the_simulator(report_dir: Path, factory: str) -> None:
    """Capture the step again, independently, and replay every schedule the report lists."""
    report = json.loads((report_dir / "report.json").read_text())
    target = build_target(f"{factory}:build", ["randn(128,32)"])
    graphs = {
        item.captured.graph.name: item.captured.graph
        for item in capture_step(target.model, target.args).graphs
    }
    feasible = [b for b in report["budgets"] if b["feasible"]]
    assert feasible, "the test budgets should include feasible ones"
    for budget in feasible:
        peaks = []
        for entry in budget["graphs"]:
            sim = simulate(graphs[entry["name"]], entry["schedule"], entry["boundary"])
            assert sim.peak == entry["predicted_peak"]
            peaks.append(sim.peak + entry["held_elsewhere"])
        assert budget["predicted_peak"] == max(peaks) <= budget["budget_bytes"]
        assert sum(r["flops"] for r in budget["recomputed"]) == budget["recompute_flops"]
    infeasible = report["budgets"][2]
    assert not infeasible["feasible"] and infeasible["predicted_peak"] is None
    assert "smallest feasible budget" in infeasible["message"]


def test_analyze_prints_the_tables(analyzed: tuple[Path, str]) -> None:
    out, printed = analyzed
    for title in ("Step", "Top memory consumers", "by module path", "Budgets", "floor"):
        assert title in printed, title
    report = json.loads((out / "report.json").read_text())
    assert report["top_consumers"]["by_module"][0]["name"] in printed
    assert "report.json" in printed


BAD = [
    (["analyze", "not_a_factory"], "expected MODULE:FACTORY"),
    (["analyze", "remat_missing_pkg_abc:build"], "no module named 'remat_missing_pkg_abc'"),
    (["analyze", "{factory}:nope"], "has no attribute 'nope'"),
    (["analyze", "{factory}:broken"], "ValueError: checkpoint not found"),
    (["analyze", "{factory}:build", "--input", "randn(128,32"], "cannot read input spec"),
    (["analyze", "{factory}:build"], "pass one --input"),
    (["analyze", "{factory}:build", "--input", "randn(4,7)"], "failed to trace"),
    (["analyze", "{factory}:build", "--input", "randn(4,32)", "--budget", "1.5"], "bytes"),
    (["analyze", "{factory}:build", "--input", "randn(4,32)", "--solver", "magic"], "unknown"),
    (["analyze", "{factory}:build", "--input", "randn(4,32)", "--dtype", "int8"], "--dtype"),
    (["analyze"], "required: MODULE:FACTORY"),
    (["solve-graph", "/no/such/graph.json"], "no such file"),
    (["solve-graph", "{factory}", "--budget-fraction", "1.5"], "--budget-fraction"),
]


@pytest.mark.parametrize(("argv", "says"), BAD)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], says: str, factory: str, capsys: pytest.CaptureFixture
) -> None:
    argv = [arg.format(factory=factory) for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_debug_shows_the_traceback(factory: str) -> None:
    with pytest.raises(Exception, match="checkpoint not found"):
        main(["analyze", f"{factory}:broken", "--debug"])


def test_python_dash_m_remat_is_the_same_command(factory: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "remat", "analyze", f"{factory}:nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "has no attribute 'nope'" in done.stderr and "Traceback" not in done.stderr


def _chain_graph(path: Path, nodes: int = 12) -> None:
    graph = nx.DiGraph()
    for index in range(nodes):
        graph.add_node(index, cost_cpu=1 + index % 3, cost_ram=10 + (index * 7) % 5)
        if index:
            graph.add_edge(index - 1, index)
    for index in range(nodes // 2):  # backward-like edges: late nodes read early outputs
        graph.add_edge(index, nodes - 1 - index)
    path.write_text(json.dumps(nx.node_link_data(graph, edges="links")))


def test_solve_graph_json_has_exactly_the_issue_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from remat.graphs import read_networkx, score_schedule

    path = tmp_path / "chain.json"
    _chain_graph(path)
    argv = ["solve-graph", str(path), "--budget-fraction", "0.9", "--time-limit", "5", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["order", "cost", "peak", "budget", "lower_bound", "status", "solve_s"]
    score = score_schedule(read_networkx(path), result["order"])
    assert (score.cost, score.peak) == (result["cost"], result["peak"])
    assert result["peak"] <= result["budget"]
    if result["lower_bound"] is not None:
        assert result["lower_bound"] <= result["cost"]


def test_solve_graph_summary_is_readable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "chain.json"
    _chain_graph(path)
    assert main(["solve-graph", str(path), "--budget-fraction", "0.9", "--time-limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "peak" in out and "lower bound" in out
