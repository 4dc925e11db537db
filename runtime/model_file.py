"""Look inside an ONNX file before onnxruntime opens it, without importing onnx.

Models are untrusted input. Before a session is created, :func:`inspect_model` walks
the protobuf wire format of the file (no onnx import, no code from the model) as
strictly as protobuf's own parser does, and learns

* the header: IR version, producer, opset imports (``onnxruntime`` does not expose
  the opsets; ``onnxedge info`` shows them);
* every tensor stored as *external data*, anywhere in the model (initializers, sparse
  initializers, ``Constant`` attributes, subgraphs, functions, training graphs);
* class labels recorded the way skl2onnx records them (``classlabels_*`` attributes).

:func:`check_external_data` then refuses external data that is not a regular file
inside the model's own folder (absolute paths, ``..``, symbolic links leaving the
folder, FIFOs and devices, onnxruntime's in-memory markers, offsets or lengths past the
file's end), and any external data for a model given as bytes. onnxruntime's own checks
differ by release; these give the same answer on every one.

The walk itself lives in the edge script (:mod:`onnxedge.runtime.edge_infer`), which
runs where onnxedge is not installed; this module gives it onnxedge's types and errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from onnxedge.runtime import edge_infer as _core
from onnxedge.runtime.errors import ModelLoadError

ORT_FORMAT_MAGIC = _core.ORT_FORMAT_MAGIC


@dataclass
class ExternalTensor:
    """A tensor whose data lives in another file.

    Attributes:
        tensor: the tensor's name in the graph.
        location: the file it names, as written in the model.
        entries: every ``external_data`` entry (``location``, ``offset``, ``length``, ...).
    """

    tensor: str
    location: str
    entries: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


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
        class_labels: skl2onnx-style ``classlabels_*`` of the main graph, or None.
    """

    format: str = "onnx"
    ir_version: int | None = None
    producer_name: str = ""
    producer_version: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    external: list[ExternalTensor] = field(default_factory=list)
    size_bytes: int = 0
    class_labels: list[str] | None = None


def is_ort_format(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) is an ORT-format model."""
    return len(head) >= 8 and bytes(head[4:8]) == ORT_FORMAT_MAGIC


def inspect_model(model: str | os.PathLike[str] | bytes, label: str | None = None) -> ModelFileInfo:
    """Walk a model's bytes and return its header and external-data references.

    Args:
        model: a path to an ``.onnx`` / ``.ort`` file, or the model's bytes.
        label: how to name the model in messages (default: the path, or ``<bytes>``).

    Raises:
        ModelLoadError: the file is missing, unreadable, not a regular file, empty, or
            not a well-formed ONNX protobuf (truncated, corrupt, or not ONNX at all).
    """
    try:
        if isinstance(model, bytes | bytearray | memoryview):
            scan = _core.scan_model(model, label or "<bytes>")
        else:
            scan = _core.read_model_file(os.fspath(model), label or str(Path(model)))
    except _core.EdgeError as exc:
        raise ModelLoadError(str(exc)) from None
    return ModelFileInfo(
        format=scan.format,
        ir_version=scan.ir_version,
        producer_name=scan.producer_name,
        producer_version=scan.producer_version,
        opsets=scan.opsets,
        external=[
            ExternalTensor(name, entries.get("location", ""), entries)
            for name, entries in scan.external
        ],
        size_bytes=scan.size_bytes,
        class_labels=scan.class_labels,
    )


def check_external_data(
    info: ModelFileInfo, model_dir: str | os.PathLike[str] | None, label: str
) -> None:
    """Refuse external data that a model may not read (see the module docstring).

    Args:
        info: what :func:`inspect_model` found.
        model_dir: the folder the model file lies in; None for a model given as bytes.
        label: how to name the model in messages.

    Raises:
        ModelLoadError: naming the first tensor that breaks a rule and its location.
    """
    external = [(t.tensor, t.entries or {"location": t.location}) for t in info.external]
    folder = os.fspath(model_dir) if model_dir is not None else None
    try:
        _core.check_external_data(external, folder, label)
    except _core.EdgeError as exc:
        raise ModelLoadError(str(exc)) from None
