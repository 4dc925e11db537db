"""onnxedge.export: ``export_classifier`` (a module to a verified ONNX file), ``verify_model``
(a file against the module and independent references), ``add_head`` (wrap a logits-only ONNX
model, no torch); names load lazily, so importing the package does not import torch."""

from __future__ import annotations

from typing import Any

__all__ = ["Rescale", "Standardize", "add_head", "export_classifier", "verify_model"]

_NAMES = {
    "export_classifier": "onnxedge.export.onnx_export",
    "verify_model": "onnxedge.export.verify",
    "add_head": "onnxedge.export.wrap",
    "Standardize": "onnxedge.models.preprocess",
    "Rescale": "onnxedge.models.preprocess",
}


def __getattr__(name: str) -> Any:
    """Load a public name on first use."""
    import importlib

    if name not in _NAMES:
        raise AttributeError(f"module 'onnxedge.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
