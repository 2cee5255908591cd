"""`remat analyze hf:TYPE`: a Hugging Face model type by name, random init, nothing downloaded."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from remat.analysis import TargetError, build_hf_target, parse_hf_config  # noqa: E402
from remat.analysis.schema import validate  # noqa: E402
from remat.cli import main  # noqa: E402

TINY_GPT2 = ["--hf-config", "n_layer=1,n_embd=32,n_head=2,vocab_size=256"]
FAST = [
    "--samples", "2", "--time-limit", "1", "--sample-time-limit", "0.5",
    "--floor-time-limit", "0.5",
]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    return code, capsys.readouterr().err


def test_analyze_hf_gpt2_writes_a_valid_report(tmp_path: Path) -> None:
    argv = ["analyze", "hf:gpt2", *TINY_GPT2, "--batch", "1", "--seq", "32", "--budget", "0.9"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, *FAST, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert validate(report) == []
    assert report["target"].startswith("hf:gpt2(n_layer=1,")
    assert "input_ids, labels 1 x 32" in report["target"]
    assert report["memory"]["input_bytes"] == 2 * 32 * 8  # input_ids and labels, int64
    assert report["budgets"][0]["label"] == "0.9"


def test_hf_target_builds_the_config_and_the_batch() -> None:
    target = build_hf_target(
        "hf:vit",
        batch=3,
        seq=999,  # vision models take no sequence length
        config=parse_hf_config(
            "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,"
            "intermediate_size=64,image_size=32,patch_size=8"
        ),
    )
    assert target.model.config.num_hidden_layers == 1 and target.model.training
    assert target.args == ()
    assert tuple(target.kwargs["pixel_values"].shape) == (3, 3, 32, 32)
    assert tuple(target.kwargs["labels"].shape) == (3,)


def test_hf_config_values_are_literals_or_strings() -> None:
    parsed = parse_hf_config("depths=[1, 2],embed_dim=16, hidden_act=gelu_new,use_cache=False")
    assert parsed == {
        "depths": [1, 2],
        "embed_dim": 16,
        "hidden_act": "gelu_new",
        "use_cache": False,
    }
    assert parse_hf_config("") == {}
    with pytest.raises(TargetError, match="key=value"):
        parse_hf_config("n_layer")


BAD = [
    (["hf:gpt3"], "known: bart, bert, convnext"),
    (["hf:gpt2", "--hf-config", "n_layers=2"], "has no field 'n_layers'"),
    (["hf:gpt2", "--input", "randn(2,3)"], "--input does not apply to hf:TYPE"),
    (["hf:gpt2", "--hf-config", "n_layer"], "key=value"),
    (["hf:gpt2", *TINY_GPT2, "--batch", "0"], "--batch and --seq must be >= 1"),
    (["mypkg.models:build", "--seq", "32"], "--seq applies to hf:TYPE models only"),
]


@pytest.mark.parametrize(("argv", "says"), BAD)
def test_bad_hf_arguments_exit_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture
) -> None:
    code, err = _run(["analyze", *argv], capsys)
    assert code == 2
    assert says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_without_transformers_it_says_how_to_install(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    code, err = _run(["analyze", "hf:gpt2"], capsys)
    assert code == 2
    assert "pip install transformers" in err
