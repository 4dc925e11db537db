"""onnxedge.runtime: run exported classifiers with onnxruntime and numpy only.

Nothing here imports torch, onnx's heavy parts, ``onnxedge.models`` or
``onnxedge.export``; a test proves it in a subprocess. Public names are loaded
lazily so that ``import onnxedge.runtime`` (and ``onnxedge --help``) stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    ExportError,
    InputShapeError,
    InputValueError,
    MissingDependencyError,
    ModelLoadError,
    OnnxEdgeError,
    OutputExistsError,
    ParityError,
    ProviderUnavailableError,
)

if TYPE_CHECKING:  # pragma: no cover
    from onnxedge.runtime.predictor import Prediction, Predictor

_LAZY = {
    # Reading the installed version costs ~20 ms of package metadata: only on request.
    "__version__": "onnxedge.runtime.version",
    "Predictor": "onnxedge.runtime.predictor",
    "Prediction": "onnxedge.runtime.predictor",
}

__all__ = [
    "CheckpointError",
    "DataError",
    "ExportError",
    "InputShapeError",
    "InputValueError",
    "MissingDependencyError",
    "ModelLoadError",
    "OnnxEdgeError",
    "OutputExistsError",
    "ParityError",
    "Prediction",
    "Predictor",
    "ProviderUnavailableError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxedge.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
