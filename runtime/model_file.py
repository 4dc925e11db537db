"""Look inside an ONNX file before onnxruntime opens it, without importing onnx.

Models are untrusted input. Before a session is created, :func:`inspect_model`
walks the protobuf wire format of the file (no onnx import, no code from the model)
just far enough to learn

* the header: IR version, producer, opset imports (``onnxruntime`` does not expose
  the opsets; ``onnxedge info`` shows them);
* every tensor stored as *external data* and the file it names, anywhere in the
  model (initializers, sparse initializers, ``Constant`` attributes, subgraphs of
  ``If`` / ``Loop`` / ``Scan``, model-local functions, training graphs).

:func:`check_external_data` then refuses a location that is absolute or that
resolves (symbolic links followed) outside the model's own folder, and any external
data at all for a model given as bytes (it has no folder; onnxruntime would read
paths relative to the working directory). Recent onnxruntime releases refuse
escaping paths themselves; this check gives the same answer on every supported
release and a message that names the tensor and the file.

Wire format: each field is a varint key ``(number << 3) | type``; type 0 is a
varint, 1 eight bytes, 2 a length-prefixed run (strings, bytes, sub-messages),
5 four bytes. ONNX uses no groups (types 3 and 4).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onnxedge.runtime.errors import ModelLoadError

#: ORT-format (flatbuffer) models carry this file identifier at bytes 4..8.
ORT_FORMAT_MAGIC = b"ORTM"

# Field numbers from onnx.proto3 (stable since IR version 3).
_MODEL_IR_VERSION = 1
_MODEL_PRODUCER_NAME = 2
_MODEL_PRODUCER_VERSION = 3
_MODEL_GRAPH = 7
_MODEL_OPSET_IMPORT = 8
_MODEL_TRAINING_INFO = 20
_MODEL_FUNCTIONS = 25
_OPSET_DOMAIN = 1
_OPSET_VERSION = 2
_TRAINING_INIT_GRAPH = 1
_TRAINING_ALGORITHM_GRAPH = 3
_FUNCTION_NODE = 7
_GRAPH_NODE = 1
_GRAPH_INITIALIZER = 5
_GRAPH_SPARSE_INITIALIZER = 15
_NODE_ATTRIBUTE = 5
_ATTR_TENSOR = 5
_ATTR_GRAPH = 6
_ATTR_TENSORS = 10
_ATTR_GRAPHS = 11
_ATTR_SPARSE_TENSOR = 22
_ATTR_SPARSE_TENSORS = 23
_SPARSE_VALUES = 1
_SPARSE_INDICES = 2
_TENSOR_NAME = 8
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_ENTRY_KEY = 1
_ENTRY_VALUE = 2
_DATA_LOCATION_EXTERNAL = 1

#: Subgraphs nest (If inside Loop inside ...); a crafted file could nest them until
#: the interpreter's stack runs out.
_MAX_DEPTH = 64


class _WireError(Exception):
    """The bytes are not a well-formed protobuf message."""


class _TooDeepError(Exception):
    """Subgraphs nest deeper than :data:`_MAX_DEPTH`."""


@dataclass
class ExternalTensor:
    """A tensor whose data lives in another file.

    Attributes:
        tensor: the tensor's name in the graph.
        location: the file it names, as written in the model.
    """

    tensor: str
    location: str


@dataclass
class ModelFileInfo:
    """What :func:`inspect_model` learned from a model's bytes.

    Attributes:
        format: ``onnx`` or ``ort`` (onnxruntime's flatbuffer format; not walked).
        ir_version: the ONNX IR version, None when absent or not walked.
        producer_name: e.g. ``pytorch``; empty when absent.
        producer_version: the producer's version string.
        opsets: opset version per domain (``""`` is the default ONNX domain).
        external: every tensor stored as external data.
        size_bytes: the file's size (or the length of the bytes given).
    """

    format: str = "onnx"
    ir_version: int | None = None
    producer_name: str = ""
    producer_version: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    external: list[ExternalTensor] = field(default_factory=list)
    size_bytes: int = 0


def is_ort_format(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) is an ORT-format model."""
    return len(head) >= 8 and bytes(head[4:8]) == ORT_FORMAT_MAGIC


def inspect_model(model: str | os.PathLike[str] | bytes, label: str | None = None) -> ModelFileInfo:
    """Walk a model's bytes and return its header and external-data references.

    Args:
        model: a path to an ``.onnx`` / ``.ort`` file, or the model's bytes.
        label: how to name the model in messages (default: the path, or ``<bytes>``).

    Raises:
        ModelLoadError: the file is missing, unreadable, empty, or not a well-formed
            ONNX protobuf (truncated, or not ONNX at all).
    """
    if isinstance(model, bytes | bytearray | memoryview):
        name = label or "<bytes>"
        return _inspect_buffer(memoryview(model), name)
    path = Path(model)
    name = label or str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ModelLoadError(f"model path is a directory, not a file: {name}")
        if size == 0:
            raise ModelLoadError(f"not a valid ONNX model: {name}: the file is empty")
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm,
        ):
            view = memoryview(mm)
            try:
                return _inspect_buffer(view, name)
            finally:
                view.release()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {name}") from None
    except PermissionError:
        raise ModelLoadError(f"cannot read model file (permission denied): {name}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file: {name}: {exc.strerror or exc}") from None


def check_external_data(
    info: ModelFileInfo, model_dir: str | os.PathLike[str] | None, label: str
) -> None:
    """Refuse external data that a model may not read.

    Args:
        info: what :func:`inspect_model` found.
        model_dir: the folder the model file lies in; None for a model given as bytes.
        label: how to name the model in messages.

    Raises:
        ModelLoadError: a location is absolute, escapes ``model_dir`` (``..`` or a
            symbolic link), or the model came as bytes and names any external file.
    """
    if not info.external:
        return
    if model_dir is None:
        first = info.external[0]
        raise ModelLoadError(
            f"refusing model {label}: tensor {first.tensor!r} is stored in external file "
            f"{first.location!r}, and a model given as bytes has no folder to read it from; "
            "open the model from its path instead"
        )
    root = Path(os.path.realpath(model_dir))
    for ext in info.external:
        location = ext.location
        if not location or "\x00" in location:
            raise ModelLoadError(
                f"refusing model {label}: tensor {ext.tensor!r} has an invalid external data "
                f"location {location!r}"
            )
        pure = Path(location)
        if (
            pure.is_absolute()
            or location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":")
        ):
            raise ModelLoadError(
                f"refusing model {label}: tensor {ext.tensor!r} reads external data from absolute "
                f"path {location!r}; external data must lie in the model's folder"
            )
        target = Path(os.path.realpath(root / location))
        if target != root and root not in target.parents:
            raise ModelLoadError(
                f"refusing model {label}: tensor {ext.tensor!r} reads external data from "
                f"{location!r}, which resolves to {str(target)!r} outside the model's folder "
                f"{str(root)!r}"
            )


# --- the wire-format walk -------------------------------------------------------------


def _inspect_buffer(buf: memoryview, label: str) -> ModelFileInfo:
    info = ModelFileInfo(size_bytes=len(buf))
    if len(buf) == 0:
        raise ModelLoadError(f"not a valid ONNX model: {label}: the file is empty")
    if is_ort_format(bytes(buf[:8])):
        info.format = "ort"
        return info
    try:
        has_graph = _walk_model(buf, info)
    except _WireError as exc:
        raise ModelLoadError(
            f"not a valid ONNX model: {label}: protobuf parsing failed ({exc}); the file is "
            "truncated or not ONNX"
        ) from None
    except _TooDeepError as exc:
        raise ModelLoadError(f"refusing model {label}: {exc}") from None
    if not has_graph:
        raise ModelLoadError(f"not a valid ONNX model: {label}: the file holds no graph")
    return info


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _WireError(f"varint runs past the end at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(number, wire_type, a, b)`` per field of the message in ``buf[start:end]``.

    For type 0 ``a`` is the value; for type 2 the payload is ``buf[a:b]``.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError(
                    f"field {number} of {length} bytes runs past the end at byte {pos}"
                )
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _WireError(f"unsupported wire type {wire} at byte {pos}")
        if pos > end:
            raise _WireError(f"field {number} runs past the end")


def _text(buf: memoryview, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", errors="replace")


def _walk_model(buf: memoryview, info: ModelFileInfo) -> bool:
    has_graph = False
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if number == _MODEL_IR_VERSION and wire == 0:
            info.ir_version = a
        elif number == _MODEL_PRODUCER_NAME and wire == 2:
            info.producer_name = _text(buf, a, b)
        elif number == _MODEL_PRODUCER_VERSION and wire == 2:
            info.producer_version = _text(buf, a, b)
        elif number == _MODEL_GRAPH and wire == 2:
            has_graph = True
            _walk_graph(buf, a, b, info, 0)
        elif number == _MODEL_OPSET_IMPORT and wire == 2:
            domain, version = "", 0
            for n, w, x, y in _fields(buf, a, b):
                if n == _OPSET_DOMAIN and w == 2:
                    domain = _text(buf, x, y)
                elif n == _OPSET_VERSION and w == 0:
                    version = x
            info.opsets[domain] = version
        elif number == _MODEL_TRAINING_INFO and wire == 2:
            for n, w, x, y in _fields(buf, a, b):
                if n in (_TRAINING_INIT_GRAPH, _TRAINING_ALGORITHM_GRAPH) and w == 2:
                    _walk_graph(buf, x, y, info, 1)
        elif number == _MODEL_FUNCTIONS and wire == 2:
            for n, w, x, y in _fields(buf, a, b):
                if n == _FUNCTION_NODE and w == 2:
                    _walk_node(buf, x, y, info, 1)
    return has_graph


def _walk_graph(buf: memoryview, start: int, end: int, info: ModelFileInfo, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _TooDeepError(f"subgraphs nest deeper than {_MAX_DEPTH} levels")
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if number == _GRAPH_NODE:
            _walk_node(buf, a, b, info, depth)
        elif number == _GRAPH_INITIALIZER:
            _walk_tensor(buf, a, b, info)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _walk_sparse(buf, a, b, info)


def _walk_node(buf: memoryview, start: int, end: int, info: ModelFileInfo, depth: int) -> None:
    for number, wire, a, b in _fields(buf, start, end):
        if number != _NODE_ATTRIBUTE or wire != 2:
            continue
        for n, w, x, y in _fields(buf, a, b):
            if w != 2:
                continue
            if n in (_ATTR_TENSOR, _ATTR_TENSORS):
                _walk_tensor(buf, x, y, info)
            elif n in (_ATTR_GRAPH, _ATTR_GRAPHS):
                _walk_graph(buf, x, y, info, depth + 1)
            elif n in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                _walk_sparse(buf, x, y, info)


def _walk_sparse(buf: memoryview, start: int, end: int, info: ModelFileInfo) -> None:
    for number, wire, a, b in _fields(buf, start, end):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            _walk_tensor(buf, a, b, info)


def _walk_tensor(buf: memoryview, start: int, end: int, info: ModelFileInfo) -> None:
    name = ""
    external = False
    location: str | None = None
    for number, wire, a, b in _fields(buf, start, end):
        if number == _TENSOR_NAME and wire == 2:
            name = _text(buf, a, b)
        elif number == _TENSOR_DATA_LOCATION and wire == 0:
            external = a == _DATA_LOCATION_EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key = value = ""
            for n, w, x, y in _fields(buf, a, b):
                if n == _ENTRY_KEY and w == 2:
                    key = _text(buf, x, y)
                elif n == _ENTRY_VALUE and w == 2:
                    value = _text(buf, x, y)
            if key == "location":
                location = value
    # Readers (onnx, onnxruntime) follow `external_data` only when data_location says
    # EXTERNAL; stale entries on an embedded tensor are never read.
    if external:
        info.external.append(ExternalTensor(tensor=name, location=location or ""))
