"""onnxedge.runtime: run exported classifiers with onnxruntime and numpy only (no torch,
onnx, models or export). ``Predictor`` and ``__version__`` load on first use."""

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

# the installed version costs ~20 ms of package metadata: read only on request
_LAZY = {"__version__": "version", "Predictor": "predictor", "Prediction": "predictor"}
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
    if name not in _LAZY:
        raise AttributeError(f"module 'onnxedge.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"onnxedge.runtime.{_LAZY[name]}"), name)
