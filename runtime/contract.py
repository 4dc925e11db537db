"""The contract between an exported model and everything that runs it.

The ONNX graph has one input, ``input`` (float32, ``[batch, *input_shape]``: one row is
``(features,)`` for tabular models, ``(C, H, W)`` for image models), and three outputs,
``logits``, ``probabilities`` and ``label`` (int64). What the graph cannot say (task,
head, threshold, class and feature names, row shape, preprocessing, provenance) is
stored in ONNX ``metadata_props`` under keys prefixed ``onnxedge.``. Export writes
these keys through :meth:`ModelContract.to_metadata`; the runtime and the embedded
script read them back. Keep the names stable: deployed models carry them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

INPUT_NAME = "input"
OUTPUT_LOGITS = "logits"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_NAMES = (OUTPUT_LOGITS, OUTPUT_PROBABILITIES, OUTPUT_LABEL)
BATCH_AXIS = "batch"

PREFIX = "onnxedge."
FORMAT_VERSION = "1"

Task = Literal["multiclass", "binary"]
Head = Literal["softmax", "sigmoid", "none"]
Variant = Literal["fp32", "int8", "fp16"]

TASKS: tuple[str, ...] = ("multiclass", "binary")
HEADS: tuple[str, ...] = ("softmax", "sigmoid", "none")
VARIANTS: tuple[str, ...] = ("fp32", "int8", "fp16")

# Keys whose values are JSON documents; the rest are plain strings.
KEY_FORMAT_VERSION = PREFIX + "format_version"
KEY_TASK = PREFIX + "task"
KEY_HEAD = PREFIX + "head"
KEY_THRESHOLD = PREFIX + "threshold"
KEY_CLASS_NAMES = PREFIX + "class_names"  # JSON list[str]
KEY_NUM_FEATURES = PREFIX + "num_features"
KEY_FEATURE_NAMES = PREFIX + "feature_names"  # JSON list[str]
KEY_NORMALIZATION = PREFIX + "normalization"  # JSON {"mean": [...], "std": [...]}
#: one row's shape without the batch axis, e.g. [64] or [1, 8, 8]; the graph input is
#: [batch, *input_shape] and num_features is the product.
KEY_INPUT_SHAPE = PREFIX + "input_shape"  # JSON list[int]
#: the preprocessing inside the graph, in front of the net (None: the graph reads rows as
#: given): {"kind": "standardize", "mean": [...], "std": [...]} or
#: {"kind": "rescale", "factor": f}.
KEY_PREPROCESS = PREFIX + "preprocess"  # JSON
#: where a wrapped model came from: {"file": ..., "sha256": ..., "producer": ...}.
KEY_SOURCE_MODEL = PREFIX + "source_model"  # JSON
#: a small golden set for the on-device self-test: {"rows": [[...], ...] (each row
#: flattened), "logits": [[...]], "probabilities": [[...]], "labels": [...],
#: "tolerances": {"logits": atol, "probabilities": atol}}; floats as JSON numbers (a
#: float32 widened to float64 round-trips exactly).
KEY_GOLDEN = PREFIX + "golden"  # JSON
#: a golden set holds up to GOLDEN_MAX_ROWS rows (at least GOLDEN_MIN_ROWS when the check
#: data has them), fewer for large rows so that it stays near GOLDEN_MAX_VALUES numbers.
GOLDEN_MIN_ROWS = 8
GOLDEN_MAX_ROWS = 32
GOLDEN_MAX_VALUES = 20_000
KEY_TRAINING_METRICS = PREFIX + "training_metrics"  # JSON
KEY_PARITY = PREFIX + "parity"  # JSON, the verification summary
KEY_WEIGHTS_SHA256 = PREFIX + "weights_sha256"
#: sha256 over the graph's initializers (name, dtype, shape, bytes), written at export:
#: verify detects an edited weight without the run folder.
KEY_GRAPH_WEIGHTS_SHA256 = PREFIX + "graph_weights_sha256"
KEY_VERSIONS = PREFIX + "versions"  # JSON {"onnxedge": ..., "torch": ..., "onnx": ...}
KEY_EXPORTED_AT = PREFIX + "exported_at"  # ISO 8601, UTC
KEY_OPSET = PREFIX + "opset"
KEY_EXPORTER = PREFIX + "exporter"  # "dynamo" or "torchscript"
KEY_VARIANT = PREFIX + "variant"  # fp32 | int8 | fp16
KEY_SOURCE_SHA256 = PREFIX + "source_sha256"  # sha256 of the fp32 model a variant came from
KEY_VARIANT_REPORT = PREFIX + "variant_report"  # JSON, the variant's verification figures

_JSON_KEYS = frozenset(
    {
        KEY_CLASS_NAMES,
        KEY_FEATURE_NAMES,
        KEY_NORMALIZATION,
        KEY_INPUT_SHAPE,
        KEY_PREPROCESS,
        KEY_SOURCE_MODEL,
        KEY_GOLDEN,
        KEY_TRAINING_METRICS,
        KEY_PARITY,
        KEY_VERSIONS,
        KEY_VARIANT_REPORT,
    }
)


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
        input_shape: one row's shape without the batch axis (``(64,)``, ``(1, 8, 8)``);
            None when the metadata does not say (then ``(num_features,)`` if known).
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
        """Read a contract from ONNX ``metadata_props`` (a plain str -> str dict).

        Unknown or undecodable values never raise: a model from elsewhere still
        runs, and ``missing`` says what could not be known.
        """
        decoded: dict[str, Any] = {}
        for key, value in props.items():
            if not key.startswith(PREFIX):
                continue
            if key in _JSON_KEYS:
                try:
                    decoded[key] = json.loads(value)
                except (TypeError, ValueError):
                    decoded[key] = value
            else:
                decoded[key] = value

        contract = cls()
        for key in (KEY_TASK, KEY_HEAD, KEY_CLASS_NAMES, KEY_NUM_FEATURES):
            if key not in decoded:
                contract.missing.append(key)
        task = decoded.pop(KEY_TASK, None)
        contract.task = task if task in TASKS else None
        head = decoded.pop(KEY_HEAD, None)
        contract.head = head if head in HEADS else None
        contract.threshold = _as_float(decoded.pop(KEY_THRESHOLD, None), 0.5)
        names = decoded.pop(KEY_CLASS_NAMES, None)
        contract.class_names = [str(n) for n in names] if isinstance(names, list) else None
        contract.num_features = _as_int(decoded.pop(KEY_NUM_FEATURES, None))
        fnames = decoded.pop(KEY_FEATURE_NAMES, None)
        contract.feature_names = [str(n) for n in fnames] if isinstance(fnames, list) else None
        contract.input_shape = _as_shape(decoded.pop(KEY_INPUT_SHAPE, None))
        if contract.input_shape is None and contract.num_features is not None:
            contract.input_shape = (contract.num_features,)
        preprocess = decoded.pop(KEY_PREPROCESS, None)
        contract.preprocess = preprocess if isinstance(preprocess, dict) else None
        variant = decoded.pop(KEY_VARIANT, "fp32")
        contract.variant = variant if variant in VARIANTS else "fp32"
        decoded.pop(KEY_FORMAT_VERSION, None)
        contract.extra = {key[len(PREFIX) :]: value for key, value in decoded.items()}
        return contract

    def to_metadata(self) -> dict[str, str]:
        """Encode this contract as ``metadata_props`` entries (str -> str)."""
        props: dict[str, str] = {KEY_FORMAT_VERSION: FORMAT_VERSION}
        if self.task is not None:
            props[KEY_TASK] = self.task
        if self.head is not None:
            props[KEY_HEAD] = self.head
        props[KEY_THRESHOLD] = repr(float(self.threshold))
        if self.class_names is not None:
            props[KEY_CLASS_NAMES] = json.dumps(self.class_names)
        if self.num_features is not None:
            props[KEY_NUM_FEATURES] = str(int(self.num_features))
        if self.feature_names is not None:
            props[KEY_FEATURE_NAMES] = json.dumps(self.feature_names)
        if self.input_shape is not None:
            props[KEY_INPUT_SHAPE] = json.dumps([int(d) for d in self.input_shape])
        if self.preprocess is not None:
            props[KEY_PREPROCESS] = json.dumps(self.preprocess)
        props[KEY_VARIANT] = self.variant
        for short, value in self.extra.items():
            key = PREFIX + short
            props[key] = json.dumps(value) if key in _JSON_KEYS else str(value)
        return props


def _as_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not value:
        return None
    try:
        shape = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        return None
    return shape if all(d > 0 for d in shape) else None


def golden_set(
    rows: Any, outputs: dict[str, Any], *, head: str, threshold: float
) -> dict[str, Any]:
    """The self-test's golden set (``KEY_GOLDEN``) from check rows and a graph's outputs.

    Rows whose label is a near tie (top-2 probabilities, or probability and threshold,
    within ``LABEL_TIE_ATOL``) are left out: another CPU may round them to the other
    label, and the self-test requires every label to agree. Tolerances: logits within
    ``LOGIT_ATOL + LOGIT_RTOL * max |logit|``, probabilities within
    ``PROVIDER_PROBABILITY_ATOL``.

    Args:
        rows: ``(n, *input_shape)`` the rows the outputs were computed on.
        outputs: the graph's ``logits``, ``probabilities`` and ``label`` on ``rows``.
        head: ``softmax`` or ``sigmoid``; threshold: the sigmoid head's.

    Raises:
        ExportError: no row is clear of a label tie.
    """
    import numpy as np
    from onnxedge.runtime import tolerances as tol
    from onnxedge.runtime.errors import ExportError

    x = np.asarray(rows)
    p = np.asarray(outputs[OUTPUT_PROBABILITIES], dtype=np.float64)
    if head == "softmax" and p.shape[1] > 1:
        top2 = np.sort(p, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
    else:
        margins = np.abs(p[:, -1] - threshold)
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
