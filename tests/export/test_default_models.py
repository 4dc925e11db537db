"""``make export``'s job, on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnxedge.export.default_models import (
    export_default_models,
    main,
    parse_variants,
    render_summary,
)
from onnxedge.models.train import TrainOptions
from onnxedge.runtime.contract import KEY_PARITY
from onnxedge.runtime.errors import ExportError

TINY = TrainOptions(hidden_sizes=(16,), epochs=3, patience=3)


def test_unknown_variant() -> None:
    with pytest.raises(ExportError) as info:
        parse_variants("int8,int4")
    assert str(info.value) == "unknown variant(s) int4; expected some of int8, fp16"


@pytest.mark.slow
def test_builds_verified_models(tmp_path: Path) -> None:
    results = export_default_models(
        tmp_path, names=("breast-cancer",), options=TINY, min_accuracy=0.0, progress=False
    )
    (result,) = results
    assert result.passed, result.errors
    assert result.model_path == tmp_path / "breast-cancer.onnx"
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    assert json.loads(props[KEY_PARITY])["passed"] is True
    assert json.loads(result.report_path.read_text())["passed"] is True
    assert (result.run_dir / "weights.safetensors").is_file()
    table = render_summary(results, 1.0)
    assert "breast-cancer" in table and "1 of 1 models" in table


@pytest.mark.slow
def test_main_fails_below_the_accuracy_bar(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "--out",
            str(tmp_path),
            "--models",
            "breast-cancer",
            "--epochs",
            "1",
            "--min-accuracy",
            "0.999",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    (model,) = summary["models"]
    accuracy = model["val_accuracy"]
    assert model["errors"] == [f"breast-cancer: validation accuracy {accuracy:.4f} is below 0.999"]
    # the model was still exported and verified: only the accuracy bar failed
    assert model["parity"]["passed"] is True
    assert "0 of 1 models trained, exported and verified" in result.output


def test_unknown_model_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--models", "iris"])
    assert result.exit_code == 1
    assert result.output == "Error: unknown default model(s) iris; expected digits, breast-cancer\n"
