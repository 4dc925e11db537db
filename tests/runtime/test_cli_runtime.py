"""``onnxedge info`` and ``onnxedge bundle`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnxedge.runtime.cli import cli

from tests.runtime.onnx_models import ModelCase


def test_info_text(multiclass: ModelCase) -> None:
    result = CliRunner().invoke(cli, ["info", str(multiclass.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    size = multiclass.path.stat().st_size
    assert lines[0] == f"model        {multiclass.path} ({size:,} bytes, onnx, IR 9)"
    assert "opsets       ai.onnx 17" in lines
    assert "inputs       input: float [batch, 5]" in lines
    assert "outputs      logits: float [batch, 3]" in lines
    assert "             label: int64 [batch]" in lines
    assert "classes      3: class_0, class_1, class_2" in lines
    assert f"providers    {', '.join(ort.get_available_providers())}" in lines
    # the placement row (added with issue 15) sits between providers and metadata
    assert lines[lines.index("variant      fp32") + 3].startswith("placement    CPUExecution")
    assert lines[lines.index("variant      fp32") + 4].startswith("metadata     normalization: ")
    assert '             parity: {"probabilities_max_abs": 1.2e-07, "labels_equal": true}' in lines
    assert not any(line.startswith("warnings") for line in lines)


def test_info_json_has_every_metadata_key(binary: ModelCase) -> None:
    result = CliRunner().invoke(cli, ["info", str(binary.path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["onnxedge"]["task"] == "binary"
    assert data["onnxedge"]["threshold"] == binary.threshold
    assert data["onnxedge"]["normalization"]["std"] == binary.weights["std"].tolist()
    assert data["outputs"][1] == {
        "name": "probabilities",
        "type": "tensor(float)",
        "shape": ["batch", 1],
    }
    assert data["num_classes"] == 2
    assert data["opsets"] == {"": 17}


def test_info_plain_model_lists_what_is_unknown(plain: ModelCase) -> None:
    result = CliRunner().invoke(cli, ["info", str(plain.path)])
    assert result.exit_code == 0, result.output
    assert (
        "missing      onnxedge.task, onnxedge.head, onnxedge.class_names, onnxedge.num_features"
        in result.output
    )
    assert (
        "warnings     output 'output_probability' is taken as the class probabilities "
        "(skl2onnx's probability output)" in result.output
    )
    assert "task         unknown" in result.output


def test_info_bad_model_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"")
    result = CliRunner().invoke(cli, ["info", str(bad)])
    assert result.exit_code == 1
    assert result.output == f"Error: not a valid ONNX model: {bad}: the file is empty\n"
    missing = tmp_path / "missing.onnx"
    result = CliRunner().invoke(cli, ["info", str(missing)])
    assert (result.exit_code, result.output) == (1, f"Error: model file not found: {missing}\n")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="needs a machine without CUDA"
)
def test_info_provider_cuda_without_cuda_is_one_line_error(multiclass: ModelCase) -> None:
    result = CliRunner().invoke(cli, ["info", str(multiclass.path), "--provider", "cuda"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: CUDAExecutionProvider requested; available: CPUExecutionProvider\n",
    )


def test_bundle_command(multiclass: ModelCase, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = CliRunner().invoke(cli, ["bundle", str(multiclass.path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"wrote {out}/"
    assert "  edge_infer.py" in result.output.splitlines()
    assert (
        result.output.splitlines()[-1].strip() == "python edge_infer.py multiclass.onnx sample.csv"
    )
    assert (out / "multiclass.onnx").exists()
    again = CliRunner().invoke(cli, ["bundle", str(multiclass.path), "-o", str(out)])
    assert again.exit_code == 1
    assert again.output == f"Error: {out} already exists; pass --overwrite to replace it\n"
    replaced = CliRunner().invoke(
        cli, ["bundle", str(multiclass.path), "-o", str(out), "--overwrite"]
    )
    assert replaced.exit_code == 0, replaced.output


def test_bundle_needs_an_output(multiclass: ModelCase) -> None:
    result = CliRunner().invoke(cli, ["bundle", str(multiclass.path)])
    assert result.exit_code == 2
    assert "Missing option '-o' / '--output'" in result.output
