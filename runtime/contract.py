"""The contract between an exported model and everything that runs it: graph input
``input`` (float32, ``[batch, *input_shape]``), outputs ``logits``, ``probabilities`` and
``label`` (int64), and what the graph cannot say under ``onnxedge.`` metadata keys.
Keep the names stable: deployed models carry them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INPUT_NAME = "input"
OUTPUT_LOGITS = "logits"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_NAMES = (OUTPUT_LOGITS, OUTPUT_PROBABILITIES, OUTPUT_LABEL)
BATCH_AXIS = "batch"

PREFIX = "onnxedge."
FORMAT_VERSION = "1"

TASKS: tuple[str, ...] = ("multiclass", "binary")
HEADS: tuple[str, ...] = ("softmax", "sigmoid", "none")
VARIANTS: tuple[str, ...] = ("fp32", "int8", "fp16")

_JSON_KEYS: set[str] = set()  # keys whose values are JSON documents; the rest plain strings


def _json_key(name: str) -> str:
    _JSON_KEYS.add(PREFIX + name)
    return PREFIX + name


KEY_FORMAT_VERSION = PREFIX + "format_version"
KEY_TASK = PREFIX + "task"
KEY_HEAD = PREFIX + "head"
KEY_THRESHOLD = PREFIX + "threshold"
KEY_CLASS_NAMES = _json_key("class_names")  # list[str]
KEY_NUM_FEATURES = PREFIX + "num_features"
KEY_FEATURE_NAMES = _json_key("feature_names")  # list[str]
KEY_NORMALIZATION = _json_key("normalization")  # {"mean": [...], "std": [...]}
#: one row's shape, e.g. [64] or [1, 8, 8]; the graph input is [batch, *input_shape].
KEY_INPUT_SHAPE = _json_key("input_shape")  # list[int]
#: the in-graph preprocessing in front of the net (absent: rows are read as given):
#: {"kind": "standardize", "mean": [...], "std": [...]} or {"kind": "rescale", "factor": f}.
KEY_PREPROCESS = _json_key("preprocess")
#: where a wrapped model came from: {"file": ..., "sha256": ..., "producer": ...}.
KEY_SOURCE_MODEL = _json_key("source_model")
#: the self-test's golden set (see golden_set).
KEY_GOLDEN = _json_key("golden")
#: up to GOLDEN_MAX_ROWS rows (at least GOLDEN_MIN_ROWS), fewer for large rows so that a
#: golden set stays near GOLDEN_MAX_VALUES numbers.
GOLDEN_MIN_ROWS = 8
GOLDEN_MAX_ROWS = 32
GOLDEN_MAX_VALUES = 20_000
KEY_TRAINING_METRICS = _json_key("training_metrics")
KEY_PARITY = _json_key("parity")  # the verification summary
KEY_WEIGHTS_SHA256 = PREFIX + "weights_sha256"
#: sha256 over the graph's initializers: verify detects an edited weight without a run.
KEY_GRAPH_WEIGHTS_SHA256 = PREFIX + "graph_weights_sha256"
KEY_VERSIONS = _json_key("versions")  # {"onnxedge": ..., "torch": ..., "onnx": ...}
KEY_EXPORTED_AT = PREFIX + "exported_at"  # ISO 8601, UTC
KEY_OPSET = PREFIX + "opset"
KEY_EXPORTER = PREFIX + "exporter"  # "dynamo" or "torchscript"
KEY_VARIANT = PREFIX + "variant"  # fp32 | int8 | fp16
KEY_SOURCE_SHA256 = PREFIX + "source_sha256"  # sha256 of the fp32 model a variant came from
KEY_VARIANT_REPORT = _json_key("variant_report")  # the variant's verification figures


@dataclass
class ModelContract:
    """What a model promises about its inputs and outputs.

    Attributes:
        task: ``multiclass`` or ``binary``; None when the model does not say.
        head: ``softmax``, ``sigmoid`` or ``none``; None when unknown.
        threshold: decision threshold on the positive-class probability (binary).
        class_names: one name per class (2 for binary: negative, positive).
        num_features: features per row; None when neither metadata nor graph say.
        feature_names: column names, in the order the model reads them.
        input_shape: one row's shape (``(64,)``, ``(1, 8, 8)``), else ``(num_features,)`` or None.
        preprocess: the in-graph preprocessing as recorded (see KEY_PREPROCESS).
        variant: ``fp32``, ``int8`` or ``fp16``.
        extra: every other ``onnxedge.`` key, decoded (JSON where it is JSON).
        missing: the keys a plain (non-onnxedge) model did not provide.
    """

    task: str | None = None
    head: str | None = None
    threshold: float = 0.5
    class_names: list[str] | None = None
    num_features: int | None = None
    feature_names: list[str] | None = None
    input_shape: tuple[int, ...] | None = None
    preprocess: dict[str, Any] | None = None
    variant: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelContract:
        """Read a contract from ONNX ``metadata_props`` (str -> str). Never raises: a model
        from elsewhere still runs, and ``missing`` says what could not be known."""
        decoded = {k: _convert(v, json.loads, v) for k, v in props.items() if k in _JSON_KEYS}
        meta = {k: v for k, v in props.items() if k.startswith(PREFIX)} | decoded
        wanted = (KEY_TASK, KEY_HEAD, KEY_CLASS_NAMES, KEY_NUM_FEATURES)
        contract = cls(missing=[key for key in wanted if key not in meta])
        contract.task = task if (task := meta.pop(KEY_TASK, None)) in TASKS else None
        contract.head = head if (head := meta.pop(KEY_HEAD, None)) in HEADS else None
        contract.threshold = _convert(meta.pop(KEY_THRESHOLD, None), float, 0.5)
        contract.class_names = _names(meta.pop(KEY_CLASS_NAMES, None))
        contract.num_features = _convert(meta.pop(KEY_NUM_FEATURES, None), int)
        contract.feature_names = _names(meta.pop(KEY_FEATURE_NAMES, None))
        shape = meta.pop(KEY_INPUT_SHAPE, None)
        shape = _convert(shape, lambda v: tuple(map(int, v))) if isinstance(shape, list) else ()
        if shape and all(d > 0 for d in shape):
            contract.input_shape = shape
        elif contract.num_features is not None:
            contract.input_shape = (contract.num_features,)
        preprocess = meta.pop(KEY_PREPROCESS, None)
        contract.preprocess = preprocess if isinstance(preprocess, dict) else None
        variant = meta.pop(KEY_VARIANT, "fp32")
        contract.variant = variant if variant in VARIANTS else "fp32"
        meta.pop(KEY_FORMAT_VERSION, None)
        contract.extra = {key[len(PREFIX) :]: value for key, value in meta.items()}
        return contract

    def to_metadata(self) -> dict[str, str]:
        """Encode this contract as ``metadata_props`` entries (str -> str)."""
        shape = None if self.input_shape is None else [int(d) for d in self.input_shape]
        fields = {
            KEY_FORMAT_VERSION: FORMAT_VERSION,
            KEY_TASK: self.task,
            KEY_HEAD: self.head,
            KEY_THRESHOLD: float(self.threshold),
            KEY_CLASS_NAMES: self.class_names,
            KEY_NUM_FEATURES: self.num_features and int(self.num_features),
            KEY_FEATURE_NAMES: self.feature_names,
            KEY_INPUT_SHAPE: shape,
            KEY_PREPROCESS: self.preprocess,
            KEY_VARIANT: self.variant,
        }
        props = {key: _encode(key, value) for key, value in fields.items() if value is not None}
        return props | {PREFIX + k: _encode(PREFIX + k, v) for k, v in self.extra.items()}


def _encode(key: str, value: Any) -> str:
    return json.dumps(value) if key in _JSON_KEYS else str(value)


def _convert(value: Any, kind: Any, default: Any = None) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return default


def _names(value: Any) -> list[str] | None:
    return [str(n) for n in value] if isinstance(value, list) else None


def decision_margins(p: Any, head: str, threshold: float) -> Any:
    """How far each row of probabilities ``p`` is from changing label, in probability."""
    import numpy as np

    if head == "sigmoid":
        return np.asarray(np.abs(p[:, 0] - threshold))
    if p.shape[1] < 2:
        return np.full(len(p), np.inf)
    top2 = np.sort(p, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def golden_set(
    rows: Any, outputs: dict[str, Any], *, head: str, threshold: float
) -> dict[str, Any]:
    """The self-test's golden set (``KEY_GOLDEN``): flattened check ``rows``, the graph's
    ``outputs`` on them, and their tolerances. Near label ties (``LABEL_TIE_ATOL``) are left
    out: another CPU may round them to the other label. Floats go as float64 JSON numbers
    (a float32 widened to float64 round-trips exactly).

    Raises:
        ExportError: no row is clear of a label tie.
    """
    import numpy as np
    from onnxedge.runtime import tolerances as tol
    from onnxedge.runtime.errors import ExportError

    x = np.asarray(rows)
    p = np.asarray(outputs[OUTPUT_PROBABILITIES], dtype=np.float64)
    margins = decision_margins(p, head, threshold)
    size = max(1, int(np.prod(x.shape[1:])))
    n = max(GOLDEN_MIN_ROWS, min(GOLDEN_MAX_ROWS, GOLDEN_MAX_VALUES // size))
    keep = np.flatnonzero(margins > tol.LABEL_TIE_ATOL)[:n]
    if not len(keep):
        raise ExportError(
            f"no golden set for the self-test: every one of the {len(x)} check rows is a "
            "label tie; give check data the model tells apart"
        )
    logits = np.asarray(outputs[OUTPUT_LOGITS], dtype=np.float64)[keep]
    return {
        "rows": x[keep].reshape(len(keep), -1).astype(np.float64).tolist(),
        OUTPUT_LOGITS: logits.tolist(),
        OUTPUT_PROBABILITIES: p[keep].tolist(),
        "labels": np.asarray(outputs[OUTPUT_LABEL], dtype=np.int64)[keep].tolist(),
        "tolerances": {
            OUTPUT_LOGITS: tol.LOGIT_ATOL + tol.LOGIT_RTOL * float(np.abs(logits).max(initial=0)),
            OUTPUT_PROBABILITIES: tol.PROVIDER_PROBABILITY_ATOL,
        },
    }
