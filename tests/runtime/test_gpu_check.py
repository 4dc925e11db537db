"""benchmarks/gpu_check.py (make gpu-check): what it prints and returns without a GPU."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import onnxruntime as ort
import pytest
from onnxedge.runtime.tolerances import PROVIDER_PROBABILITY_ATOL

from tests.runtime.onnx_models import ModelCase

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def artifacts(tmp_path: Path, multiclass: ModelCase, binary: ModelCase) -> Path:
    shutil.copyfile(multiclass.path, tmp_path / "digits.onnx")
    shutil.copyfile(binary.path, tmp_path / "breast-cancer.onnx")
    return tmp_path


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_without_cuda_it_says_so(artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--artifacts", str(artifacts)]) == 0
    out = capsys.readouterr().out
    assert f"available providers: {', '.join(ort.get_available_providers())}" in out
    assert "installed as: onnxruntime" in out
    assert "CUDAExecutionProvider is not offered by this onnxruntime: nothing to compare" in out


def test_comparison_machinery_on_the_cpu(
    artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _load().main(["--artifacts", str(artifacts), "--provider", "cpu", "--rows", "50"]) == 0
    out = capsys.readouterr().out
    assert out.count("labels differ on 0/50 rows") == 6  # 2 models x 3 batch sizes
    assert "synthetic rows around the normalization mean" in out  # the toy models' widths
    assert out.count("placement: cpu {'nodes': {'CPUExecutionProvider': ") == 2
    assert out.rstrip().endswith(
        f"(labels equal, probabilities within {PROVIDER_PROBABILITY_ATOL:g})"
    )


def test_missing_models_build_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--artifacts", str(tmp_path), "--provider", "cpu"]) == 2
    out = capsys.readouterr().out
    assert "missing model(s)" in out and "run `make export` first" in out
    assert list(tmp_path.iterdir()) == []
