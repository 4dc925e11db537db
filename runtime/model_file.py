"""Look inside an ONNX file before onnxruntime opens it, without importing onnx.

Models are untrusted input. :func:`inspect_model` walks the file's protobuf wire format
(no onnx import, no code from the model) as strictly as protobuf's own parser does and
learns the header (IR version, producer, opsets, which onnxruntime does not expose), every
tensor stored as external data (initializers, ``Constant`` attributes, subgraphs,
functions, training graphs) and skl2onnx-style class labels.
:func:`check_external_data` then refuses external data that is not a regular file inside
the model's own folder (absolute paths, ``..``, symbolic links leaving it, FIFOs and
devices, onnxruntime's in-memory markers, bytes past the file's end), and any external
data for a model given as bytes: the same answer on every onnxruntime release.

The walk lives in the edge script (:mod:`onnxedge.runtime.edge_infer`), which runs where
onnxedge is not installed; this module gives its pieces onnxedge's error types.
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
