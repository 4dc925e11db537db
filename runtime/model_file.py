"""Look inside an ONNX file before onnxruntime opens it, without importing onnx.

Models are untrusted input. :func:`inspect_model` walks the protobuf wire format as strictly
as protobuf does and learns the header (opsets too, which onnxruntime hides), every tensor
stored as external data (anywhere: subgraphs, functions, training graphs) and skl2onnx-style
class labels; :func:`check_external_data` refuses external data that is not a regular file
inside the model's folder, and any for a model given as bytes. The walk lives in the edge
script (:mod:`onnxedge.runtime.edge_infer`); this module gives it onnxedge's error types.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from onnxedge.runtime import edge_infer as _core
from onnxedge.runtime.edge_infer import ModelScan
from onnxedge.runtime.errors import (
    InputShapeError,
    InputValueError,
    ModelLoadError,
    OnnxEdgeError,
    ProviderUnavailableError,
)

ModelFileInfo = ModelScan

#: The edge core's error kinds as onnxedge's exceptions.
ERRORS: dict[str, type[OnnxEdgeError]] = {
    "model": ModelLoadError,
    "shape": InputShapeError,
    "value": InputValueError,
    "provider": ProviderUnavailableError,
    "run": OnnxEdgeError,
}

_P = ParamSpec("_P")
_R = TypeVar("_R")


def typed(exc: _core.EdgeError) -> OnnxEdgeError:
    """The onnxedge exception for an edge-core error (by its ``kind``)."""
    return ERRORS[exc.kind](str(exc))


def typed_errors(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``function`` raising onnxedge's exception types instead of ``EdgeError``."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except _core.EdgeError as exc:
            raise typed(exc) from None

    return wrapper


@typed_errors
def inspect_model(model: str | os.PathLike[str] | bytes, label: str | None = None) -> ModelFileInfo:
    """Walk a model's bytes (a path or the bytes; ``label`` names it in messages) and return
    its header and external-data references.

    Raises:
        ModelLoadError: missing, unreadable, not a regular file, empty, or not well-formed
            ONNX (truncated, corrupt, or not ONNX at all).
    """
    if isinstance(model, bytes | bytearray | memoryview):
        return _core.scan_model(model, label or "<bytes>")
    return _core.read_model_file(os.fspath(model), label or os.fspath(model))


@typed_errors
def check_external_data(
    info: ModelFileInfo, model_dir: str | os.PathLike[str] | None, label: str
) -> None:
    """Refuse external data the model may not read (``model_dir``: its folder, None for
    bytes; ``label`` names it). Raises ModelLoadError naming the first bad tensor."""
    folder = os.fspath(model_dir) if model_dir is not None else None
    _core.check_external_data(info.external, folder, label)
