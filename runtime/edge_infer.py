#!/usr/bin/env python3
"""Score rows with an ONNX classifier, using only onnxruntime and numpy (Python 3.9+).

Copy it next to a model exported by onnxedge and run

    python edge_infer.py model.onnx rows.csv            # label<TAB>class<TAB>probability
    python edge_infer.py model.onnx rows.npy --json     # one JSON object per row
    some-sensor | python edge_infer.py model.onnx -     # CSV rows on stdin, answered as they come
    python edge_infer.py model.onnx --self-test         # golden rows x levels x providers

Outputs are probabilities only when the model says so (an onnxedge head, or skl2onnx's
probability outputs) and the first batch agrees. The model file is untrusted: its protobuf is
walked first; external data is read only from regular files in its folder. Exit status 0; 1
with one line ``Error: ...``; 2 for bad arguments. This is also onnxedge's scoring core.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["EdgeError", "EdgeModel", "ModelScan", "main", "scan_model", "score"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: onnxruntime lists it, but it only calls remote endpoints; never named as available.
_NOT_LOCAL = ("AzureExecutionProvider",)
REQUESTS = ("auto", "cpu", "cuda")
#: graph_optimization_level names, in increasing order of rewriting.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: Op types (fused forms included: FusedGemm, QLinearConv, ...) that hold the arithmetic;
#: a CUDA session must not run them on the CPU.
COMPUTE_OPS = ("Gemm", "MatMul", "Conv")
#: Rows per session.run for files; stdin is answered row by row unless --batch-size.
FILE_BATCH_SIZE = 1024
#: Past a few threads the synchronization of these small graphs costs more than it splits.
MAX_DEFAULT_THREADS = 4
#: |sum(probabilities) - 1| per row and the slack around [0, 1] (fp16 rounds each value);
#: equal to runtime.tolerances' PROBABILITY_SUM_ATOL / FP16_MAX_PROBABILITY_ERROR (tested).
PROBABILITY_SUM_ATOL = 1e-5
FP16_PROBABILITY_SUM_ATOL = 5e-3
#: Producers whose probability outputs are known to hold probabilities, by output name.
CONVERTER_PROBABILITY_OUTPUTS = dict.fromkeys(
    ("skl2onnx", "onnxmltools"), ("probabilities", "output_probability")
)
OUTPUT_PROBABILITIES = "probabilities"
_LOGIT_NAMES = ("logits", "logit")
_LABEL_NAMES = ("label", "labels", "output_label", "predicted_label")
_FLOAT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}
_HEADS = ("softmax", "sigmoid")
#: ORT-format (flatbuffer) models carry this file identifier at bytes 4..8.
ORT_FORMAT_MAGIC = b"ORTM"


class EdgeError(Exception):
    """Bad model, input or provider (one line, exit 1); ``kind``: model, shape, value,
    provider or run (onnxedge maps each to its own exception class)."""

    def __init__(self, message: str, kind: str = "model") -> None:
        super().__init__(message)
        self.kind = kind


def default_threads() -> int:
    """Intra-op threads by default: the CPUs this process may use (affinity honours
    taskset / cpusets), capped at :data:`MAX_DEFAULT_THREADS`."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_DEFAULT_THREADS))


def ort_message(exc: BaseException) -> str:
    """onnxruntime's message on one line, without its ``[ONNXRuntimeError] : 7 : ...`` prefix."""
    text = " ".join(str(exc).split())
    if text.startswith("[ONNXRuntimeError]"):
        parts = text.split(" : ", 3)
        text = parts[-1] if len(parts) == 4 else text
    if text.startswith("Load model from ") and " failed:" in text:
        text = text.split(" failed:", 1)[1].strip()
    return text or type(exc).__name__


def _is_ort_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime") or isinstance(
        exc, (ValueError, RuntimeError)
    )


# --- the model file: a strict protobuf walk, without onnx ------------------------------
#
# Each field is a varint key (number << 3) | wire type (0 varint, 1 eight bytes, 2 length-
# prefixed, 5 four bytes). Every message field of onnx.proto is parsed as protobuf does (a
# corrupt sub-message fails the file; packed numbers must fill their run; an unexpected
# wire type is an unknown field). Per message: field -> sub-message, or "v" / "f4" / "f8"
# for packed varints / fixed32 / fixed64. A test checks the table against onnx's own.
_SCHEMA: dict[str, dict[int, str]] = {
    name: {int(n): kind for n, kind in (f.split(":") for f in spec.split())}
    for name, spec in {
        "Model": "7:Graph 8:Opset 14:Entry 20:Training 25:Function 26:Config",
        "Graph": "1:Node 5:Tensor 11:Value 12:Value 13:Value 14:Annotation 15:Sparse 16:Entry",
        "Node": "5:Attribute 9:Entry 10:NodeConfig",
        "Attribute": "5:Tensor 6:Graph 7:f4 8:v 10:Tensor 11:Graph 14:Type 15:Type 22:Sparse "
        "23:Sparse",
        "Tensor": "1:v 3:Segment 4:f4 5:v 7:v 10:f8 11:v 13:Entry 16:Entry",
        "Sparse": "1:Tensor 2:Tensor 3:v",
        "Value": "2:Type 4:Entry",
        "Type": "1:TensorType 4:ElemType 5:MapType 7:Opaque 8:TensorType 9:ElemType",
        "TensorType": "2:Shape",
        "ElemType": "1:Type",
        "MapType": "2:Type",
        "Shape": "1:Dim",
        "Annotation": "2:Entry",
        "Training": "1:Graph 2:Graph 3:Entry 4:Entry",
        "Function": "7:Node 9:Opset 11:Attribute 12:Value 14:Entry",
        "NodeConfig": "2:Sharding",
        "Sharding": "2:v 3:IntList 4:ShardedDim",
        "IntList": "2:v",
        "ShardedDim": "2:SimpleDim",
        **dict.fromkeys(("Opset", "Entry", "Config", "Segment", "Opaque", "Dim", "SimpleDim"), ""),
    }.items()
}
#: A crafted file could nest subgraphs / types until the stack runs out (protobuf: 100).
MAX_SUBGRAPH_DEPTH = 64
_MAX_MESSAGE_DEPTH = 256
_DATA_LOCATION_EXTERNAL = 1


class ExternalTensor(NamedTuple):
    """A tensor stored in another file: its name, ``location`` as written in the model and
    every ``external_data`` entry (``location``, ``offset``, ``length``, ...)."""

    tensor: str
    location: str
    entries: dict[str, str]


@dataclass
class ModelScan:
    """What :func:`scan_model` learned: ``format`` (onnx / ort, the latter not walked), the
    header, ``opsets`` per domain, every ``external`` tensor, skl2onnx-style
    ``class_labels`` of the main graph, ``size_bytes``."""

    format: str = "onnx"
    ir_version: int | None = None
    producer_name: str = ""
    producer_version: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    external: list[ExternalTensor] = field(default_factory=list)
    size_bytes: int = 0
    class_labels: list[str] | None = None


def scan_model(buf: Any, label: str) -> ModelScan:
    """Walk a model's bytes as protobuf's parser would (EdgeError: not valid ONNX)."""
    scan = ModelScan(size_bytes=len(buf))
    problem = None
    with memoryview(buf) as view:
        if not len(view):
            problem = f"not a valid ONNX model: {label}: the file is empty"
        elif bytes(view[4:8]) == ORT_FORMAT_MAGIC:
            scan.format = "ort"
            return scan
        else:
            # Raised outside: a traceback would keep the (mapped) buffer exported.
            try:
                if 7 not in _message(view, 0, len(view), "Model", scan, 0, 0):
                    problem = f"not a valid ONNX model: {label}: the file holds no graph"
            except _WireError as exc:
                problem = (
                    f"not a valid ONNX model: {label}: protobuf parsing failed ({exc}); the "
                    "file is truncated or not ONNX"
                )
            except _TooDeepError as exc:
                problem = f"refusing model {label}: {exc}"
    if problem is not None:
        raise EdgeError(problem)
    return scan


class _WireError(Exception):
    """The bytes are not a well-formed protobuf message."""


class _TooDeepError(Exception):
    """Messages or subgraphs nest deeper than the walk follows."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
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
    """``(number, wire, a, b)`` per field (type 2: ``buf[a:b]``; type 0: ``a`` is the value)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or key > 0xFFFFFFFF:
            raise _WireError(f"invalid field number {number} at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
            continue
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            first = pos
            pos += length
        elif wire in (1, 5):
            first = pos
            pos += 8 if wire == 1 else 4
        else:
            raise _WireError(f"unsupported wire type {wire} at byte {pos}")
        if pos > end:
            raise _WireError(f"field {number} runs past the end at byte {first}")
        yield number, wire, first, pos


def _packed(buf: memoryview, a: int, b: int, kind: str) -> None:
    if kind == "v":
        while a < b:
            a = _varint(buf, a, b)[1]
    elif (b - a) % (4 if kind == "f4" else 8):
        raise _WireError(f"packed numbers of {b - a} bytes at byte {a}")


_Field = tuple[int, int, int]  # (wire, a, b) as _fields yields them
_Kept = dict[int, list[_Field]]


def _text(buf: memoryview, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", errors="replace")


def _message(
    buf: memoryview, start: int, end: int, kind: str, scan: ModelScan, graphs: int, depth: int
) -> _Kept:
    """Check one message and those inside it; record what ``scan`` wants; return its fields."""
    if depth > _MAX_MESSAGE_DEPTH:
        raise _TooDeepError(f"messages nest deeper than {_MAX_MESSAGE_DEPTH} levels")
    schema = _SCHEMA[kind]
    kept: _Kept = {}
    for number, wire, a, b in _fields(buf, start, end):
        kept.setdefault(number, []).append((wire, a, b))
        sub = schema.get(number)
        if sub is None or wire != 2:
            continue
        if sub in ("v", "f4", "f8"):
            _packed(buf, a, b, sub)
            continue
        # graphs enclosing the message (functions / training graphs count as nested).
        level = graphs + (sub == "Graph") + 2 * (sub in ("Function", "Training"))
        if level > MAX_SUBGRAPH_DEPTH + 1:
            raise _TooDeepError(f"subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH} levels")
        _message(buf, a, b, sub, scan, level, depth + 1)
    if kind == "Model":
        _read_header(buf, kept, scan)
    elif kind == "Tensor":
        _read_tensor(buf, kept, scan)
    elif kind == "Attribute" and graphs == 1 and scan.class_labels is None:
        _read_class_labels(buf, kept, scan)
    return kept


def _texts(buf: memoryview, kept: _Kept, number: int) -> list[str]:
    return [_text(buf, a, b) for wire, a, b in kept.get(number, []) if wire == 2]


def _ints(buf: memoryview, kept: _Kept, number: int) -> list[int]:
    """A varint field's values, one per field or packed."""
    values = []
    for wire, a, b in kept.get(number, []):
        if wire == 0:
            values.append(a)
        while wire == 2 and a < b:
            value, a = _varint(buf, a, b)
            values.append(value)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _entries(buf: memoryview, kept: _Kept, number: int) -> list[tuple[str, _Field]]:
    """``(field 1 as text, field 2)`` per sub-message: opset imports, string entries."""
    out = []
    for wire, a, b in kept.get(number, []):
        fields = {n: (w, x, y) for n, w, x, y in _fields(buf, a, b)} if wire == 2 else {}
        first, second = fields.get(1, (0, 0, 0)), fields.get(2, (0, 0, 0))
        out.append((_text(buf, first[1], first[2]) if first[0] == 2 else "", second))
    return out


def _read_header(buf: memoryview, kept: _Kept, scan: ModelScan) -> None:
    scan.ir_version = next(iter(_ints(buf, kept, 1)), None)
    scan.producer_name = next(iter(_texts(buf, kept, 2)), "")
    scan.producer_version = next(iter(_texts(buf, kept, 3)), "")
    for domain, (wire, version, _) in _entries(buf, kept, 8):
        scan.opsets[domain] = version if wire == 0 else 0


def _read_tensor(buf: memoryview, kept: _Kept, scan: ModelScan) -> None:
    # Readers follow external_data only when data_location says EXTERNAL.
    if _DATA_LOCATION_EXTERNAL in _ints(buf, kept, 14):
        entries = {
            key: _text(buf, a, b) if wire == 2 else ""
            for key, (wire, a, b) in _entries(buf, kept, 13)
        }
        name = next(iter(_texts(buf, kept, 8)), "")
        scan.external.append(ExternalTensor(name, entries.get("location", ""), entries))


def _read_class_labels(buf: memoryview, kept: _Kept, scan: ModelScan) -> None:
    if next(iter(_texts(buf, kept, 1)), "").startswith("classlabels_"):
        labels = _texts(buf, kept, 9) + [str(v) for v in _ints(buf, kept, 8)]
        scan.class_labels = labels or None


def read_model_file(path: str, label: str) -> ModelScan:
    """Stat, map and walk the model file at ``path`` (never opening a FIFO or device)."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise EdgeError(f"model path is a directory, not a file: {label}")
        if not stat.S_ISREG(info.st_mode):
            raise EdgeError(f"refusing model {label}: it is not a regular file")
        if info.st_size == 0:
            raise EdgeError(f"not a valid ONNX model: {label}: the file is empty")
        with open(path, "rb") as handle:  # noqa: SIM117 - Python 3.9 has no (a, b) form
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return scan_model(mapped, label)
    except FileNotFoundError:
        raise EdgeError(f"model file not found: {label}") from None
    except PermissionError:
        raise EdgeError(f"cannot read model file (permission denied): {label}") from None
    except OSError as exc:
        raise EdgeError(f"cannot read model file: {label}: {exc.strerror or exc}") from None


def check_external_data(external: list[ExternalTensor], folder: str | None, label: str) -> None:
    """Refuse external data a model may not read, before anything opens: each location must
    be relative, name no marker (``_ORT_MEM_ADDR_`` reads memory) and resolve inside
    ``folder`` to a regular file holding its bytes; a model given as bytes may have none."""
    if not external:
        return
    if folder is None:
        raise EdgeError(
            f"refusing model {label}: tensor {external[0].tensor!r} is stored in external file "
            f"{external[0].location!r}, and a model given as bytes has no folder to read it "
            "from; open the model from its path instead"
        )
    root = os.path.realpath(folder)
    for tensor, location, entries in external:
        problem = _external_problem(root, location, entries)
        if problem:
            raise EdgeError(f"refusing model {label}: tensor {tensor!r} {problem}")


def _external_problem(root: str, location: str, entries: dict[str, str]) -> str | None:
    where = f"reads external data from {location!r}"
    parts = location.replace("\\", "/").split("/")
    if not location or "\x00" in location or any(p.startswith(("_ORT_", "*")) for p in parts):
        return f"has an invalid external data location {location!r}"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or location[1:2] == ":":
        inside = "external data must lie in the model's folder"
        return f"reads external data from absolute path {location!r}; {inside}"
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        return f"{where}, which resolves to {target!r} outside the model's folder {root!r}"
    try:
        info = os.stat(target)
    except OSError:
        return f"{where}, which does not exist"
    if not stat.S_ISREG(info.st_mode):
        return f"{where}, which is not a regular file"
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else info.st_size - offset
    except ValueError:
        return f"{where} at an offset or length that is not a number"
    if offset < 0 or length < 0 or offset + length > info.st_size:
        end = f"past the end of the file ({info.st_size} bytes)"
        return f"{where} at bytes {offset}..{offset + length}, {end}"
    return None


# --- providers and the session --------------------------------------------------------


def normalize_request(requested: Any) -> str:
    """``auto``, ``cpu`` or ``cuda`` from any case or a full provider name."""
    value = requested.strip().lower() if isinstance(requested, str) else None
    value = {CPU.lower(): "cpu", CUDA.lower(): "cuda"}.get(value or "", value)
    if value not in REQUESTS:
        raise EdgeError(f"provider must be one of auto, cpu, cuda; got {requested!r}", "provider")
    return value


def _local(providers: Iterable[str]) -> str:
    return ", ".join(name for name in providers if name not in _NOT_LOCAL) or "none"


def choose_providers(
    requested: str, available: Iterable[str], device_id: int = 0, options: Any = None
) -> list[tuple[str, dict[str, Any]]]:
    """The ``providers=`` list for a request, the CPU last (``available``: what onnxruntime
    offers, faked by tests; ``options``: for CUDA, or the CPU when ``cpu`` is asked)."""
    request, available = normalize_request(requested), list(available)
    if request == "cpu":
        return [(CPU, dict(options or {}))]
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise EdgeError(f"device_id must be an integer >= 0; got {device_id!r}", "provider")
    if CUDA in available:
        return [(CUDA, {"device_id": device_id, **(options or {})}), (CPU, {})]
    if request == "cuda":
        raise EdgeError(f"{CUDA} requested; available: {_local(available)}", "provider")
    return [(CPU, {})]


def check_session_providers(requested: str, resolved: Any, got: Sequence[str]) -> str | None:
    """None when the session got its first choice; a note for ``auto``; strict ``cuda``."""
    first = resolved[0][0] if resolved else CPU
    if first in got:
        return None
    if normalize_request(requested) == "cuda":
        raise EdgeError(
            f"{CUDA} requested; the session got: {_local(got)} "
            "(onnxruntime offers CUDA but could not create it: check the CUDA / cuDNN "
            "libraries and the device id)",
            "provider",
        )
    return f"{first} was offered but the session runs on {', '.join(got) or 'nothing'}"


def count_placement(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{"nodes": {provider: n}, "compute": {provider: n}}`` from an onnxruntime profile
    (``end_profiling()``'s JSON); ``compute`` counts the :data:`COMPUTE_OPS` nodes."""
    seen = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            seen[event.get("name")] = (args["provider"], str(args.get("op_name", "")))
    compute = [p for p, op in seen.values() if any(kind in op for kind in COMPUTE_OPS)]
    return {"nodes": dict(Counter(p for p, _ in seen.values())), "compute": dict(Counter(compute))}


def check_placement(placement: dict[str, dict[str, int]], provider: str) -> None:
    """Refuse a placement whose compute nodes do not all run on ``provider``."""
    compute = placement["compute"]
    total, off = sum(compute.values()), sum(n for p, n in compute.items() if p != provider)
    if off:
        elsewhere = ", ".join(sorted(p for p in compute if p != provider))
        raise EdgeError(
            f"{provider} requested but {off} of {total} Gemm/MatMul/Conv nodes run on {elsewhere}",
            "provider",
        )


def create_session(source: str | bytes, options: Any, providers: list[Any], label: str) -> Any:
    """``InferenceSession`` for a checked model with one-line errors; the model's own
    session settings are not applied and onnxruntime may not fall back."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            source,
            sess_options=options,
            providers=providers,
            read_config_from_model=0,
            enable_fallback=0,  # read by recent releases; 1.18 ignores it (disabled below)
        )
    except Exception as exc:
        if not _is_ort_error(exc):
            raise
        if type(exc).__name__ in ("InvalidProtobuf", "NoSuchFile", "InvalidGraph"):
            raise EdgeError(f"not a valid ONNX model: {label}: {ort_message(exc)}") from None
        raise EdgeError(f"onnxruntime cannot load model {label}: {ort_message(exc)}") from None
    session.disable_fallback()
    return session


def session_options(threads: int | None, level: str = "all", ort_format: bool = False) -> Any:
    """onnxedge's session options: errors-only log, ``threads`` intra-op, one inter-op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = _ort_level(level)
    if ort_format:
        options.add_session_config_entry("session.load_model_format", "ORT")
    return options


def _ort_level(name: str) -> Any:
    import onnxruntime as ort

    if name not in OPTIMIZATION_LEVELS:
        levels = ", ".join(OPTIMIZATION_LEVELS)
        raise EdgeError(f"graph_optimization_level must be one of {levels}; got {name!r}", "value")
    names = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
    return getattr(ort.GraphOptimizationLevel, names[OPTIMIZATION_LEVELS.index(name)])


# --- the model --------------------------------------------------------------------------


class EdgeModel:
    """An onnxruntime session plus what the model says about its rows and outputs.

    ``model`` is a path or the model's bytes (checked, then opened with ``provider``: auto,
    cpu or strict cuda; ``threads``, ``level``, ``device_id``, ``provider_options`` and
    ``session_config`` set up the session). ``require_probabilities=False`` keeps the
    refusal in ``refusal`` (scoring raises it); ``reject_nonfinite`` refuses NaN / Inf
    inputs. ``input_shape`` (one row's) and ``num_features`` are None when unknown;
    ``notes`` says what was assumed.
    """

    #: appended to the NaN / Inf refusal (onnxedge names its option there).
    nonfinite_hint = ""

    def __init__(
        self,
        model: Any,
        provider: str = "auto",
        threads: int | None = None,
        *,
        level: str = "all",
        device_id: int = 0,
        provider_options: dict[str, Any] | None = None,
        session_config: dict[str, str] | None = None,
        require_probabilities: bool = True,
        reject_nonfinite: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.notes: list[str] = []
        self.requested_provider = normalize_request(provider)
        self.source: str | bytes
        if isinstance(model, (bytes, bytearray, memoryview)):
            self.source, self.label, folder = bytes(model), "<bytes>", None
            self.scan = scan_model(self.source, self.label)
        elif isinstance(model, (str, os.PathLike)):
            # The path, not its bytes: onnxruntime then reads external data relative to it.
            self.source = self.label = os.fspath(model)
            self.scan = read_model_file(self.source, self.label)
            folder = os.path.dirname(os.path.abspath(self.source))
        else:
            raise EdgeError(f"model must be a path or bytes; got {type(model).__name__}")
        check_external_data(self.scan.external, folder, self.label)
        self.reject_nonfinite = reject_nonfinite
        providers = choose_providers(
            provider, ort.get_available_providers(), device_id, provider_options
        )
        options = session_options(threads, level, self.scan.format == "ort")
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(key, value)
        self.session = create_session(self.source, options, providers, self.label)
        fallback = check_session_providers(provider, providers, self.session.get_providers())
        self.notes += [fallback] if fallback else []
        # The binding under InferenceSession.run: that wrapper re-checks input names on
        # every call, which check() has done (measured: ~35% of a batch-1 run of a small
        # MLP). Same signature since onnxruntime 1.0.
        inner = getattr(self.session, "_sess", None)
        self._run_fn = getattr(inner, "run", None) or self.session.run
        # A failing run raises with onnxruntime's message; printing it too would repeat it.
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.producer = (meta.producer_name or "").strip()
        self.head = self.metadata.get("onnxedge.head")
        try:
            self.threshold = float(self.metadata.get("onnxedge.threshold", 0.5))
        except ValueError:
            self.threshold = 0.5
        names = _json_list(self.metadata.get("onnxedge.feature_names"))
        self.feature_names = [str(n) for n in names] if names is not None else None
        fp16 = self.metadata.get("onnxedge.variant") == "fp16"
        self.sum_atol = FP16_PROBABILITY_SUM_ATOL if fp16 else PROBABILITY_SUM_ATOL
        self._read_input()
        self._read_outputs(require_probabilities)
        self._placement: dict[str, dict[str, int]] | None = None
        if self.requested_provider == "cuda":
            placement = self.placement()
            if placement is None:
                self.notes.append("node placement not checked: the row shape is unknown")
            else:
                check_placement(placement, CUDA)

    def _error(self, text: str) -> EdgeError:
        return EdgeError(f"cannot use model {self.label}: {text}")

    def _read_input(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            listing = ", ".join(i.name for i in inputs)
            raise self._error(
                "onnxedge runs classifiers with one input; "
                f"this model has {len(inputs)} ({listing})"
            )
        node = inputs[0]
        self.input_name: str = node.name
        if node.type not in _FLOAT_TYPES:
            raise self._error(
                f"input {node.name!r} is {node.type}; onnxedge feeds float tensors (batch, ...)"
            )
        self.input_dtype: np.dtype[Any] = _FLOAT_TYPES[node.type]
        dims = list(node.shape) if node.shape is not None else None
        if dims is not None and len(dims) < 2:
            raise self._error(
                f"input {node.name!r} has shape {dims}; onnxedge feeds batches (batch, ...)"
            )
        graph = tuple(dims[1:]) if dims and all(isinstance(d, int) for d in dims[1:]) else None
        meta_shape = _json_list(self.metadata.get("onnxedge.input_shape"))
        try:
            meta = tuple(int(d) for d in meta_shape) if meta_shape else None
        except (TypeError, ValueError):
            meta = None
        count = self.metadata.get("onnxedge.num_features", "")
        features = int(count) if count.isdigit() else None
        if meta is None and features is not None:
            if graph is not None and math.prod(graph) != features:
                raise self._error(
                    f"its metadata says {features} features but input {node.name!r} takes "
                    f"{math.prod(graph)}"
                )
            meta = graph or (features,)
        if graph is not None and meta is not None and graph != meta:
            raise self._error(
                f"its metadata says rows of shape {meta} but input {node.name!r} takes {graph}"
            )
        if dims is not None and meta is not None and len(dims) != len(meta) + 1:
            raise self._error(
                f"its metadata says rows of shape {meta} but input {node.name!r} has shape {dims}"
            )
        self.input_shape: tuple[int, ...] | None = graph or meta
        shape = self.input_shape
        self.num_features: int | None = math.prod(shape) if shape is not None else None
        if self.input_shape is None:
            self.notes.append(
                "the model does not say how many features it takes; inputs are not checked"
            )
        # -1 never equals a width: with the shape unknown check() takes the slow path.
        self._row = self.input_shape if self.input_shape is not None else (-1,)
        self._flat = self.input_shape is not None and len(self.input_shape) == 1

    def _read_outputs(self, require_probabilities: bool) -> None:
        outputs = self.session.get_outputs()
        lowered = {o.name.lower(): o for o in outputs}
        logits = next((lowered[n] for n in _LOGIT_NAMES if n in lowered), None)
        label = next((lowered[n] for n in _LABEL_NAMES if n in lowered), None)
        if label is not None and not label.type.startswith(("tensor(int", "tensor(uint")):
            self.notes.append(
                f"output {label.name!r} is {label.type}, not an integer label; ignored"
            )
            label = None
        floats = [o for o in outputs if o.type in _FLOAT_TYPES]
        self.refusal: str | None = None
        if self.head in _HEADS:
            others = [o for o in floats if o is not logits]
            prob = lowered.get(OUTPUT_PROBABILITIES) or (others[0] if len(others) == 1 else None)
            if prob is None:
                raise self._error(
                    f"its metadata says it has a {self.head} head, but no output is named "
                    f"{OUTPUT_PROBABILITIES!r} and the probabilities cannot be told apart among: "
                    + ", ".join(f"{o.name} ({o.type})" for o in outputs)
                )
        else:
            known = CONVERTER_PROBABILITY_OUTPUTS.get(self.producer.lower(), ())
            prob = next((o for o in outputs if o.name.lower() in known), None)
            if prob is not None:
                self.notes.append(
                    f"output {prob.name!r} is taken as the class probabilities "
                    f"({self.producer}'s probability output)"
                )
        if prob is not None and prob.type not in _FLOAT_TYPES:
            raise self._error(
                f"output {prob.name!r} is {prob.type}; a float tensor (batch, classes) is needed "
                "(for sklearn-onnx models convert with zipmap=False)"
            )
        if prob is None:
            prob = logits or next((o for o in floats if o is not label), None)
            if prob is None:
                raise self._error("it has no float output to score")
            why = (
                "it holds logits"
                if prob is logits
                else "the model has no onnxedge head in its metadata and is not a known "
                "converter's probability output"
            )
            self.refusal = self.not_probabilities(prob.name, why)
            if require_probabilities:
                raise EdgeError(self.refusal)
        if label is None:
            self.notes.append(
                "the model has no label output; labels are computed from the probabilities"
            )
        self.probability_output: str = prob.name
        self.label_output: str | None = label.name if label is not None else None
        self.logits_output: str | None = logits.name if logits is not None else None
        self.fetch = [prob.name] + ([label.name] if label is not None else [])
        self.fetch_all = self.fetch + ([logits.name] if logits is not None else [])
        shape = prob.shape or []
        # The graph's outputs used as they come ((n, C) float32, (n,) int64): nothing to do.
        self._as_is = (
            label is not None
            and (label.type, len(label.shape or [])) == ("tensor(int64)", 1)
            and (prob.type, len(shape)) == ("tensor(float)", 2)
        )
        self._checked = False
        # classes from the columns the graph computes (one column: a binary model's positive)
        columns = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        count = 2 if len(shape) == 1 or columns == 1 else columns
        names = _json_list(self.metadata.get("onnxedge.class_names"))
        names = [str(n) for n in names] if names is not None else self.scan.class_labels
        self.num_classes: int | None = count or (len(names) if names is not None else None)
        if names is not None and len(names) != self.num_classes:
            self.notes.append(
                f"metadata names {len(names)} classes but the model computes {self.num_classes}; "
                "class names are ignored"
            )
            names = None
        self.class_names: list[str] | None = names

    def not_probabilities(self, output: str, why: str) -> str:
        """The refusal of an output that is not known to hold probabilities."""
        return (
            f"{self.label}: output {output!r} is not known to hold probabilities ({why}) -- "
            f"add a head with: onnxedge wrap {self.label} -o wrapped.onnx"
        )

    def check_probabilities(self, probs: np.ndarray) -> None:
        """Back the output rule up on a batch: finite, in [0, 1], rows summing to 1."""
        if self.refusal is not None:
            raise EdgeError(self.refusal)
        if not probs.size:
            return
        rows = probs.reshape(probs.shape[0], -1)
        # min / max are NaN or Inf exactly when some value is: the per-row pass runs only
        # then (bench-score: the check runs on every batch score writes).
        lo, hi = float(rows.min()), float(rows.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(rows).all(axis=1)
            # With NaN / Inf inputs let through (nonfinite="allow") their rows may be NaN;
            # the others must still be probabilities. Otherwise NaN is never one.
            if self.reject_nonfinite:
                why = f"row {int(np.argmin(finite))} holds NaN or Inf"
                raise EdgeError(self.not_probabilities(self.probability_output, why))
            if not finite.any():
                return
            rows = rows[finite]
            lo, hi = float(rows.min()), float(rows.max())
        if lo < -self.sum_atol or hi > 1 + self.sum_atol:
            why = "its values are not in [0, 1]"
        # float32 sums of C values in [0, 1] err by ~C * 6e-8, far below sum_atol.
        elif rows.shape[1] > 1 and np.abs(rows.sum(axis=1) - 1).max() > self.sum_atol:
            why = "its rows do not sum to 1"
        else:
            self._checked = True
            return
        raise EdgeError(self.not_probabilities(self.probability_output, why))

    def check(self, x: Any) -> np.ndarray:
        """``x`` (``(n, *input_shape)``, ``(n, features)`` or one row, numbers) as a
        C-contiguous ``(n, *input_shape)`` array of the input type; NaN / Inf refused."""
        arr = x if type(x) is np.ndarray else self._asarray(x)
        if arr.dtype != self.input_dtype:
            if arr.dtype.kind not in "biuf":
                raise EdgeError(
                    f"input has dtype {arr.dtype}; expected numbers (bool, int, uint or float, "
                    f"cast to {self.input_dtype})",
                    "value",
                )
            with np.errstate(over="ignore", invalid="ignore"):
                # float64 beyond float32's range becomes inf here; the check below sees it.
                arr = arr.astype(self.input_dtype)
        if arr.shape[1:] != self._row:
            arr = self._reshape(arr)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        # x.x is finite exactly when every value is (squares are >= 0: an inf or a NaN
        # cannot cancel); one BLAS call, no temporary. On overflow the exact test decides.
        if (
            self.reject_nonfinite
            and arr.size
            and not math.isfinite(np.vdot(arr, arr))
            and not np.isfinite(arr).all()
        ):
            raise self._nonfinite(arr)
        return arr

    def _asarray(self, x: Any) -> np.ndarray:
        try:
            return np.asarray(x)
        except ValueError:
            lengths = [len(row) if hasattr(row, "__len__") else 1 for row in x]
            for index, length in enumerate(lengths):
                if self._flat and length != self.num_features:
                    raise EdgeError(
                        f"model expects {self.num_features} features, "
                        f"input row {index} has {length}",
                        "shape",
                    ) from None
            raise EdgeError("input rows have different shapes", "shape") from None

    def _reshape(self, arr: np.ndarray) -> np.ndarray:
        shape = self.input_shape
        if shape is None:
            return arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.shape == shape or (arr.ndim == 1 and arr.shape[0] == self.num_features):
            return arr.reshape(1, *shape)
        if arr.ndim == 2 and arr.shape[1] == self.num_features:
            return arr.reshape(arr.shape[0], *shape)
        if self._flat:
            if arr.ndim in (1, 2):
                got = arr.shape[-1]
                raise EdgeError(
                    f"model expects {self.num_features} features, input has {got}", "shape"
                )
            raise EdgeError(
                f"input must be 2-D (batch, features) or one 1-D row; got shape {tuple(arr.shape)}",
                "shape",
            )
        got = tuple(arr.shape) if arr.ndim == len(shape) else tuple(arr.shape[1:])
        raise EdgeError(f"model expects rows of shape {shape}, input has {got}", "shape")

    def _nonfinite(self, arr: np.ndarray) -> EdgeError:
        flat = arr.reshape(arr.shape[0], -1)
        row, column = (int(i) for i in np.argwhere(~np.isfinite(flat))[0])
        where = f"column {column}"
        names = self.feature_names
        if names is not None and column < len(names):
            where += f" ({names[column]!r})"
        return EdgeError(
            f"input row {row}, {where} is {flat[row, column]}; NaN / Inf are rejected"
            + self.nonfinite_hint,
            "value",
        )

    def run(self, batch: np.ndarray, fetch: list[str], session: Any = None) -> list[np.ndarray]:
        """One run on a checked batch (of ``session``, default this one's); EdgeError when
        onnxruntime fails."""
        run = self._run_fn if session is None else session.run
        try:
            return run(fetch, {self.input_name: batch}, self.run_options)
        except Exception as exc:
            raise self._run_error(exc) from None

    def _run_error(self, exc: Exception) -> EdgeError:
        if not _is_ort_error(exc):
            raise exc
        if type(exc).__name__ == "InvalidArgument":
            return EdgeError(
                f"{self.label}: onnxruntime refused the input: {ort_message(exc)}", "shape"
            )
        return EdgeError(
            f"{self.label}: onnxruntime failed to run the model: {ort_message(exc)}", "run"
        )

    def run_checked(
        self,
        batch: np.ndarray,
        fetch: list[str],
        step: int | None = None,
        run: Callable[[np.ndarray, list[str]], list[np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Run a batch :meth:`check` gave in slices of ``step`` rows (default all;
        ``run(batch, fetch)`` replaces :meth:`run`), check the first batch's probabilities:
        ``(probabilities, labels, raw outputs)`` as :meth:`outputs` gives them."""
        run = run or self.run
        if not step or batch.shape[0] <= step:  # one run (an empty batch too, as it is)
            raw = run(batch, fetch)
        else:
            parts = [run(batch[i : i + step], fetch) for i in range(0, len(batch), step)]
            raw = [np.concatenate([p[k] for p in parts]) for k in range(len(fetch))]
        if not self._checked:
            self.check_probabilities(raw[0])
        probs, labels = self.outputs(raw)
        return probs, labels, raw

    def outputs(self, raw: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, labels)`` from a run's outputs: ``(n, C)`` float32 as the graph
        computes it (binary: one column), the graph's labels or threshold / argmax."""
        if self._as_is:  # batch 1: the dtype / shape checks below cost ~3% of a run
            return raw[0], raw[1]
        probs = raw[0].astype(np.float32, copy=False)
        if probs.ndim != 2:
            probs = probs.reshape(probs.shape[0], -1)
        if self.label_output is not None:
            labels = raw[1]
            if labels.ndim != 1 or labels.dtype != np.int64:
                labels = labels.reshape(-1).astype(np.int64)
        elif probs.shape[1] == 1:
            labels = (probs[:, 0] >= np.float32(self.threshold)).astype(np.int64)
        else:
            labels = probs.argmax(axis=1).astype(np.int64, copy=False)
        return probs, labels

    def score(self, x: Any, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score rows (``batch_size`` per run, default all): ``(labels, probabilities)``,
        ``(n,)`` int64 and ``(n, C)`` float32 (binary: ``[1 - p, p]``)."""
        probs, labels, _ = self.run_checked(self.check(x), self.fetch, batch_size)
        return labels, per_class(probs)

    def placement(self) -> dict[str, dict[str, int]] | None:
        """Nodes per provider (:func:`count_placement`) from one profiled run of zeros on a
        copy of this session, made once on request; None when the row shape is unknown."""
        if self._placement is None and self.input_shape is not None:
            import shutil
            import tempfile

            folder = tempfile.mkdtemp(prefix="onnxedge-placement-")
            try:
                session = self.reopen(profile=os.path.join(folder, "profile"))
                self.run(np.zeros((1, *self.input_shape), self.input_dtype), self.fetch, session)
                with open(session.end_profiling(), encoding="utf-8") as handle:
                    self._placement = count_placement(json.load(handle))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return self._placement

    def reopen(
        self, provider: str | None = None, level: str | None = None, profile: str = ""
    ) -> Any:
        """A new session with this one's options on ``provider`` (CPU / CUDA; default this
        one's) at ``level``, profiled to ``profile`` when given."""
        options = self.session.get_session_options()
        options.enable_profiling = bool(profile)
        options.profile_file_prefix = profile or options.profile_file_prefix
        if level is not None:
            options.graph_optimization_level = _ort_level(level)
        request = "cuda" if (provider or self.session.get_providers()[0]) == CUDA else "cpu"
        device = self.session.get_provider_options().get(CUDA, {}).get("device_id", 0)
        providers = choose_providers(request, [CUDA], int(device))
        session = create_session(self.source, options, providers, self.label)
        check_session_providers(request, providers, session.get_providers())
        return session

    def self_test(self, open_session: Callable[[str, str], Any] | None = None) -> dict[str, Any]:
        """Compare the golden rows (``onnxedge.golden``: outputs and tolerances recorded at
        export) on this session, then on a new one per provider (CPU, CUDA) x level
        (``open_session(provider, level)`` replaces :meth:`reopen`). Returns a JSON-ready
        report: ``passed``, ``rows``, ``max_abs_error``, ``tolerances``, ``labels_agreeing``,
        where it ran, ``matrix`` (per provider and level) and ``failed``."""
        import platform

        import onnxruntime as ort

        golden = self._golden()
        report: dict[str, Any] = {"rows": len(golden["labels"])}
        report.update(self._against_golden(self.session, golden))
        matrix = []
        available = ort.get_available_providers()
        for provider, level in [(p, lv) for p in (CPU, CUDA) for lv in OPTIMIZATION_LEVELS]:
            if provider in available:
                try:
                    session = (open_session or self.reopen)(provider, level)
                    entry = self._against_golden(session, golden)
                except EdgeError as exc:
                    entry = {"passed": False, "error": str(exc)}
                matrix.append({"provider": provider, "level": level, **entry})
        failed = [f"{e['provider']} {e['level']}" for e in matrix if not e["passed"]]
        report.update(
            passed=report["passed"] and not failed,
            matrix=matrix,
            failed=failed,
            model=self.label,
            machine=platform.machine(),
            platform=platform.platform(),
            python=platform.python_version(),
            onnxruntime=ort.__version__,
            provider=self.session.get_providers()[0],
        )
        return report

    def _against_golden(self, session: Any, golden: dict[str, Any]) -> dict[str, Any]:
        x = self.check(np.asarray(golden["rows"], dtype=np.float64))
        raw = self.run(x, self.fetch_all, session)
        computed, labels = self.outputs(raw)
        result: dict[str, Any] = {"max_abs_error": {}, "tolerances": {}}
        passed = True
        for name, got in (
            ("probabilities", per_class(computed)),
            ("logits", raw[-1] if self.logits_output else None),
        ):
            if name not in golden or got is None:
                result.setdefault("not_compared", []).append(name)  # said, never silent
                continue
            want = np.asarray(golden[name], dtype=np.float64)
            if want.shape != got.shape:
                want = per_class(want.astype(np.float32)) if name == "probabilities" else want
            if want.shape != got.shape:
                raise self._golden_error(
                    f"{name} of shape {want.shape}, the model computes {got.shape}"
                )
            error = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
            result["max_abs_error"][name] = error
            result["tolerances"][name] = tolerance = float(golden["tolerances"][name])
            passed = passed and error <= tolerance
        agreeing = int((labels == np.asarray(golden["labels"], dtype=np.int64)).sum())
        result.update(labels_agreeing=agreeing, passed=passed and agreeing == x.shape[0])
        return result

    def _golden(self) -> dict[str, Any]:
        text = self.metadata.get("onnxedge.golden")
        if not text:
            raise EdgeError(
                f"{self.label} has no golden set (metadata onnxedge.golden) to self-test with; "
                "onnxedge export and onnxedge wrap store one in the model"
            )
        try:
            golden = json.loads(text)
            rows = np.asarray(golden["rows"], dtype=np.float64)
            labels = np.asarray(golden["labels"], dtype=np.int64)
            tolerances = {k: float(v) for k, v in golden["tolerances"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._golden_error(f"it cannot be read ({type(exc).__name__}: {exc})") from None
        width = self.num_features
        if rows.ndim != 2 or (width is not None and rows.shape[1] != width):
            raise self._golden_error(
                f"rows of shape {rows.shape[1:]}, the model takes {width} values"
            )
        # A self-test that compares nothing proves nothing: rows and probabilities required.
        outputs = set(golden) & {"logits", "probabilities"}
        if (
            labels.shape != (rows.shape[0],)
            or rows.shape[0] == 0
            or "probabilities" not in outputs
            or not outputs <= set(tolerances)
        ):
            raise self._golden_error(
                f"{rows.shape[0]} rows, {labels.shape[0]} labels, outputs {sorted(tolerances)}; "
                "it needs one label per row (at least one) and probabilities with a tolerance"
            )
        return golden

    def _golden_error(self, text: str) -> EdgeError:
        return self._error(f"its golden set does not fit the model: {text}")

    def name_of(self, label: int) -> str:
        """The class name of ``label`` (its digits when the model names no classes)."""
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else str(label)


def score(model: Any, x: Any, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Score ``x`` with the model at a path (or its bytes): ``(labels, probabilities)``."""
    return EdgeModel(model).score(x, batch_size)


def per_class(probs: np.ndarray) -> np.ndarray:
    """One column per class: a binary model's ``p`` becomes ``[1 - p, p]`` (float32)."""
    return np.hstack((np.float32(1) - probs, probs)) if probs.shape[1] == 1 else probs


def _json_list(value: str | None) -> list[Any] | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, list) else None


# --- input ------------------------------------------------------------------------------


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv_batches(
    lines: Iterable[str], source: str, model: EdgeModel, batch_size: int
) -> Iterator[np.ndarray]:
    """Float64 batches of up to ``batch_size`` rows from CSV text; a first row without
    numbers is a header (its names pick the model's features); bad cells are named by line
    and column."""
    import csv

    reader = csv.reader(lines)
    header: list[str] | None = None
    width: int | None = None
    columns: Any = slice(None)
    rows: list[list[str]] = []
    lines_of: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if width is None:
            width = len(row)
            numbers = [_number(cell) is not None for cell in row]
            if not any(numbers):
                header = [cell.strip() for cell in row]
                columns = _select_columns(header, model, source)
                continue
            if not all(numbers):
                raise EdgeError(
                    f"{source}: line {reader.line_num} mixes numbers and text; a header holds "
                    "only names, a row only numbers"
                )
        if len(row) != width:
            raise EdgeError(
                f"{source}: line {reader.line_num} has {len(row)} values, expected {width}"
            )
        rows.append(row)
        lines_of.append(reader.line_num)
        if len(rows) >= batch_size:
            yield _parse_rows(rows, lines_of, header, source)[:, columns]
            rows, lines_of = [], []
    if rows:
        yield _parse_rows(rows, lines_of, header, source)[:, columns]


def _parse_rows(
    rows: list[list[str]], lines: list[int], header: list[str] | None, source: str
) -> np.ndarray:
    """The rows as one float64 array (one numpy call; cell by cell only to name a bad one)."""
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):  # noqa: B905 - Python 3.9
            for index, cell in enumerate(row):
                if _number(cell) is None:
                    name = f" ({header[index]!r})" if header is not None else ""
                    raise EdgeError(
                        f"{source}: line {line}, column {index}{name}: {cell!r} is not a number"
                    ) from None
        raise  # not reached: numpy parses a cell exactly when float() does


def _select_columns(header: list[str], model: EdgeModel, source: str) -> Any:
    wanted = model.feature_names
    if wanted and all(name in header for name in wanted):
        return [header.index(name) for name in wanted]
    expected = model.num_features
    if expected is not None and len(header) != expected:
        hint = ""
        if wanted:
            more = ", ..." if len(wanted) > 5 else ""
            hint = f"; the model's features are named {', '.join(wanted[:5])}{more}"
        raise EdgeError(
            f"{source}: header has {len(header)} columns, model expects {expected} features{hint}"
        )
    return slice(None)


def input_batches(source: str, model: EdgeModel, batch_size: int | None) -> Iterator[np.ndarray]:
    """Batches of rows from a ``.npy`` (its shape kept), ``.csv`` or ``-`` (stdin)."""
    if source == "-":
        yield from read_csv_batches(sys.stdin, "<stdin>", model, batch_size or 1)
        return
    suffix = os.path.splitext(source)[1].lower()
    step = batch_size or FILE_BATCH_SIZE
    try:
        if suffix == ".npy":
            data = np.load(source, allow_pickle=False, mmap_mode="r")
        elif suffix in (".csv", ".txt"):
            with open(source, newline="", encoding="utf-8-sig") as handle:
                yield from read_csv_batches(handle, source, model, step)
            return
        else:
            raise EdgeError(f"input must be a .npy or .csv file or - for stdin; got {source!r}")
    except FileNotFoundError:
        raise EdgeError(f"input file not found: {source}") from None
    except UnicodeDecodeError:
        raise EdgeError(f"{source}: not UTF-8 text") from None
    except (ValueError, OSError) as exc:
        if suffix != ".npy":
            raise
        raise EdgeError(f"cannot read {source} as .npy: {' '.join(str(exc).split())}") from None
    if data.ndim <= len(model.input_shape or (0,)):  # one row (check() says if it fits)
        data = data[None]
    for start in range(0, data.shape[0], step):
        yield np.asarray(data[start : start + step])


# --- output and the command line --------------------------------------------------------


def format_rows(
    model: EdgeModel, labels: np.ndarray, probabilities: np.ndarray, as_json: bool
) -> str:
    """The output lines for one batch (each ending in a newline)."""
    if as_json:
        return "".join(
            json.dumps({"label": label, "class": model.name_of(label), "probabilities": row}) + "\n"
            for label, row in zip(labels.tolist(), probabilities.tolist())  # noqa: B905
        )
    top = probabilities[np.arange(labels.shape[0]), labels] if labels.shape[0] else labels
    return "".join(
        f"{label}\t{model.name_of(label)}\t{p:.6f}\n"
        for label, p in zip(labels.tolist(), top.tolist())  # noqa: B905
    )


def format_self_test(report: dict[str, Any]) -> str:
    """The one-screen text of a :meth:`EdgeModel.self_test` report."""
    lines = [
        f"self-test {'PASSED' if report['passed'] else 'FAILED'}: {report['model']}, "
        f"{report['rows']} golden rows",
        f"machine        {report['machine']}, {report['platform']}, Python {report['python']}",
        f"onnxruntime    {report['onnxruntime']} on {report['provider']}",
    ]
    for name, error in report["max_abs_error"].items():
        tolerance = report["tolerances"][name]
        verdict = "ok" if error <= tolerance else "TOO LARGE"
        lines.append(f"{name:<15}max |error| {error:.3g} (tolerance {tolerance:.3g}): {verdict}")
    lines.append(f"labels         {report['labels_agreeing']} of {report['rows']} agree")
    matrix = report.get("matrix", [])
    for provider in dict.fromkeys(entry["provider"] for entry in matrix):
        cells = [f"{e['level']} {_verdict(e)}" for e in matrix if e["provider"] == provider]
        lines.append(f"{'levels':<15}{provider}: {', '.join(cells)}")
    for entry in (e for e in matrix if "error" in e):
        lines.append(f"{'':<15}{entry['provider']} {entry['level']}: {entry['error']}")
    if report.get("failed"):
        lines.append(f"{'FAILED under':<15}{'; '.join(report['failed'])}")
    return "\n".join(lines)


def _verdict(entry: dict[str, Any]) -> str:
    """``ok``, or what failed: labels agreeing and the outputs past their tolerance."""
    if entry["passed"]:
        return "ok"
    if "error" in entry:
        return "FAILED (cannot run)"
    errors, tolerances = entry["max_abs_error"], entry["tolerances"]
    worse = [f"{k} {v:.3g} > {tolerances[k]:.3g}" for k, v in errors.items() if v > tolerances[k]]
    return "FAILED (" + ", ".join([f"labels {entry['labels_agreeing']} agree", *worse]) + ")"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 bad arguments)."""
    import argparse
    import csv

    parser = argparse.ArgumentParser(
        prog="edge_infer.py",
        description="Score rows with an ONNX classifier (onnxruntime + numpy only).",
        epilog="examples:\n  python edge_infer.py model.onnx rows.csv\n"
        "  python edge_infer.py model.onnx rows.npy --json\n"
        "  cat rows.csv | python edge_infer.py model.onnx - --provider cpu\n"
        "  python edge_infer.py model.onnx --self-test          # run this first on a device",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("model", help="an .onnx (or .ort) model file")
    add("input", nargs="?", help=".npy file, .csv file, or - for CSV rows on stdin")
    add("--self-test", action="store_true", help="golden rows x levels x providers, compared")
    add("--json", action="store_true", help="one JSON object per row")
    add("--threads", type=int, default=None, help="intra-op threads")
    add("--provider", default="auto", choices=REQUESTS, type=str.lower)
    add("--batch-size", type=int, default=None, help=f"rows per run ({FILE_BATCH_SIZE}; stdin 1)")
    args = parser.parse_args(argv)
    try:
        for flag, value in (("--threads", args.threads), ("--batch-size", args.batch_size)):
            if value is not None and value < 1:
                raise EdgeError(f"{flag} must be >= 1; got {value}")
        if args.input is None and not args.self_test:
            raise EdgeError("give an INPUT file (or - for stdin), or --self-test")
        model = EdgeModel(args.model, provider=args.provider, threads=args.threads)
        if args.self_test:
            report = model.self_test()
            print(json.dumps(report) if args.json else format_self_test(report))
            return 0 if report["passed"] else 1
        out = sys.stdout
        for batch in input_batches(args.input, model, args.batch_size):
            labels, probabilities = model.score(batch)
            out.write(format_rows(model, labels, probabilities, args.json))
            out.flush()
    except BrokenPipeError:
        # the reader went away (| head): not an error; keep Python from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (EdgeError, OSError, csv.Error) as exc:
        # A file that cannot be read (a folder, no permission, a NUL byte, a field over
        # the csv module's limit) is one line on the device, never a traceback.
        text = str(exc) if isinstance(exc, EdgeError) else f"{args.input}: {exc}"
        print(f"Error: {' '.join(text.split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
