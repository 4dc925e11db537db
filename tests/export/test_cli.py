"""``onnxedge export`` / ``verify`` as a user runs them: help, JSON output, --no-verify."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnxedge.runtime.cli import COMMANDS, cli
from onnxedge.runtime.contract import KEY_EXPORTER, KEY_PARITY

from tests.export.tiny_models import TinyModel


@pytest.mark.parametrize("command", ["export", "verify"])
def test_help_shows_an_example(command: str) -> None:
    assert command in COMMANDS
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"onnxedge {command} " in result.output


def test_export_json_reports_what_was_written(binary: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "b.onnx"
    result = CliRunner().invoke(
        cli, ["export", str(binary.run_dir), "-o", str(out), "--threshold", "0.25", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(out) and data["size_bytes"] == out.stat().st_size
    assert (data["task"], data["head"], data["threshold"]) == ("binary", "sigmoid", 0.25)
    assert data["exporter"] == "dynamo" and data["verified"] is True
    assert data["parity"]["passed"] is True


def test_export_prints_the_parity_table(multiclass: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    report = tmp_path / "m.parity.json"
    result = CliRunner().invoke(
        cli, ["export", str(multiclass.run_dir), "-o", str(out), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    first, *rest = result.output.splitlines()
    assert first.startswith(
        f"exported multiclass model (softmax head, opset 18, dynamo exporter) -> {out} ("
    )
    assert f"  torch: the run's own module ({multiclass.run_dir})" in rest
    assert any(line.split()[:2] == ["probabilities", "onnxruntime~torch"] for line in rest)
    assert not any("torch from onnx" in line for line in rest)
    assert rest[-1].endswith("checks passed")
    assert json.loads(report.read_text())["passed"] is True


def test_no_verify_records_no_parity(binary: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "nv.onnx"
    result = CliRunner().invoke(cli, ["export", str(binary.run_dir), "-o", str(out), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "not verified (--no-verify)" in result.output
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert KEY_PARITY not in props and props[KEY_EXPORTER] == "dynamo"
    # and verify passes on it afterwards
    verified = CliRunner().invoke(cli, ["verify", str(out), "--run", str(binary.run_dir)])
    assert verified.exit_code == 0, verified.output


def test_bad_head_choice_is_a_usage_error(binary: TinyModel, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["export", str(binary.run_dir), "-o", str(tmp_path / "x.onnx"), "--head", "relu"]
    )
    assert result.exit_code == 2
    assert "'relu' is not one of 'auto', 'softmax', 'sigmoid'" in result.output
