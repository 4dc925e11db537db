"""The runtime never imports torch or onnx (a device has neither), proven in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("torch", "onnx", "onnxscript", "onnxedge.models", "onnxedge.export", "sklearn")


def _modules_after(code: str, cwd: Path) -> set[str]:
    program = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import onnxedge.runtime",
        "from onnxedge.runtime import Predictor, Prediction",
        "import onnxedge.runtime.cli",
        "import onnxedge.runtime.predictor, onnxedge.runtime.providers",
        "import onnxedge.runtime.edge_infer",
        "import onnxedge.runtime.bundle, onnxedge.runtime.commands",
    ],
)
def test_runtime_imports_leave_torch_and_onnx_out(code: str, tmp_path: Path) -> None:
    loaded = _modules_after(code, tmp_path)
    assert not {name for name in FORBIDDEN if name in loaded}


def test_scoring_a_model_leaves_torch_and_onnx_out(tmp_path: Path, multiclass_path: Path) -> None:
    code = (
        "import numpy as np\n"
        "from onnxedge.runtime import Predictor\n"
        f"p = Predictor({str(multiclass_path)!r})\n"
        "p.predict(np.zeros((2, p.num_features)))\n"
        "p.describe()\n"
        "from onnxedge.runtime.bundle import write_bundle\n"
        f"write_bundle({str(multiclass_path)!r}, {str(tmp_path / 'b')!r})\n"
    )
    loaded = _modules_after(code, tmp_path)
    assert not {name for name in FORBIDDEN if name in loaded}


def test_bare_import_is_light(tmp_path: Path) -> None:
    # `onnxedge --help` and `import onnxedge.runtime` must not pay for onnxruntime or numpy.
    loaded = _modules_after("import onnxedge.runtime, onnxedge.runtime.cli", tmp_path)
    assert "onnxruntime" not in loaded
    assert "numpy" not in loaded


def test_edge_script_imports_only_numpy_at_import(tmp_path: Path) -> None:
    # onnxruntime is imported when a model is opened, not when the script loads.
    loaded = _modules_after("import onnxedge.runtime.edge_infer", tmp_path)
    assert "onnxruntime" not in loaded


@pytest.fixture
def multiclass_path(multiclass: object) -> Path:
    path: Path = multiclass.path  # type: ignore[attr-defined]
    return path
