"""``Predictor``: run an exported classifier with onnxruntime, honestly.

A :class:`Predictor` opens a model (a path or bytes; ``.onnx`` or ``.ort``), chooses
execution providers (:mod:`onnxedge.runtime.providers`) and checks what the session
really got, validates every input batch against the model's own signature and
``onnxedge.`` metadata before onnxruntime sees it, runs in batches and returns a
:class:`Prediction`.

Input rule (checked in this order):

1. Anything ``numpy.asarray`` accepts. A 1-D array is one row (batch of 1); else
   the input must be 2-D ``(batch, features)``.
2. dtype: bool, signed / unsigned integers, float16 and float64 are cast to the
   model's input type (float32 for onnxedge models; large integers and float64
   values round to the nearest float32). Strings, objects, complex numbers and
   dates raise :class:`InputValueError`.
3. The feature count must equal the model's.
4. NaN and +-Inf (also float64 values that overflow float32) raise
   :class:`InputValueError` naming the first bad row and column, unless the
   predictor was built with ``nonfinite="allow"``.
5. An empty batch returns empty results of the right shapes.

Results: ``probabilities`` is always ``(n, C)`` float32, one column per class. A
binary (sigmoid) model computes one probability per row, that of the positive class
``p``; it is returned as the two columns ``[1 - p, p]`` (computed in float32), so
column ``k`` is always the probability of label ``k``. ``labels`` are the model's
own ``label`` output (int64) when it has one.

Thread safety: onnxruntime's ``InferenceSession.run`` may be called from several
threads at once, and ``predict`` keeps no state between calls (buffers and I/O
bindings are per call), so concurrent ``predict`` calls on one instance are safe.
Creating predictors is serialized while onnxruntime's output is captured.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from onnxedge.runtime import providers as _providers
from onnxedge.runtime.contract import (
    INPUT_NAME,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from onnxedge.runtime.errors import (
    InputShapeError,
    InputValueError,
    ModelLoadError,
    OnnxEdgeError,
)
from onnxedge.runtime.model_file import ModelFileInfo, check_external_data, inspect_model

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_DEFAULT_THREADS",
    "Prediction",
    "Predictor",
    "default_threads",
]

LOGGER_NAME = "onnxedge.runtime"

#: Rows per ``session.run`` when ``predict`` is not given a batch size. Beyond a few
#: thousand rows the per-call overhead is already negligible for these MLPs, and the
#: activations of one batch stay small (rows * hidden * 4 bytes).
DEFAULT_BATCH_SIZE = 8192

#: The default thread count never exceeds this: the models are small MLPs, and past a
#: few threads the synchronization costs more than the arithmetic it splits.
MAX_DEFAULT_THREADS = 4

#: ``graph_optimization_level`` names, in increasing order of rewriting.
OPTIMIZATION_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")

#: Output names tried, in order, for a model without onnxedge's names.
_PROBABILITY_NAMES = (OUTPUT_PROBABILITIES, "probability", "probs", "proba", "output_probability")
_LOGIT_NAMES = (OUTPUT_LOGITS, "logit", "scores")
_LABEL_NAMES = (OUTPUT_LABEL, "labels", "output_label", "predicted_label")

#: onnxruntime tensor types the input may have, with the numpy dtype rows are cast to.
_FLOAT_INPUT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}
_INT_TYPES = frozenset(
    f"tensor({name})"
    for name in ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8")
)

_vdot = np.vdot
_isfinite = math.isfinite

# Creating a session redirects file descriptor 2; two creations at once would
# restore each other's descriptors.
_CAPTURE_LOCK = threading.Lock()

Nonfinite = Literal["reject", "allow"]


def default_threads() -> int:
    """The intra-op thread count used when ``threads=None``.

    The number of CPUs this process may run on (``os.sched_getaffinity``, which
    honours ``taskset`` and cpusets; ``os.cpu_count()`` where it does not exist),
    capped at :data:`MAX_DEFAULT_THREADS`. onnxruntime's own default (every physical
    core, spinning) oversubscribes containers and gains nothing on small MLPs.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_DEFAULT_THREADS))


class Prediction:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        probabilities: ``(n, C)`` float32, one column per class (binary: ``[1-p, p]``).
        labels: ``(n,)`` int64 class indices.
        class_names: one name per class, or None when the model does not say.
        logits: ``(n, K)`` float32 when asked for and the model has a ``logits``
            output (``K = 1`` for a binary model), else None.
        positive: ``(n,)`` float32, the positive-class probability of a binary model
            (None for multiclass).

    A binary model's two-column ``probabilities`` are built from ``positive`` the first
    time they are read: at batch 1 the copy would cost a fifth of ``session.run``.
    """

    __slots__ = ("_positive", "_probabilities", "class_names", "labels", "logits")

    def __init__(
        self,
        probabilities: np.ndarray | None,
        labels: np.ndarray,
        class_names: list[str] | None = None,
        logits: np.ndarray | None = None,
        *,
        positive: np.ndarray | None = None,
    ) -> None:
        if probabilities is None and positive is None:
            raise ValueError("a Prediction needs probabilities or a positive-class column")
        self._probabilities = probabilities
        self._positive = positive
        self.labels = labels
        self.class_names = class_names
        self.logits = logits

    @property
    def probabilities(self) -> np.ndarray:
        """``(n, C)`` float32 per-class probabilities (binary: ``[1-p, p]``)."""
        if self._probabilities is None:
            positive = self._positive
            assert positive is not None
            both = np.empty((positive.shape[0], 2), dtype=np.float32)
            both[:, 1] = positive
            np.subtract(np.float32(1), positive, out=both[:, 0])
            self._probabilities = both
        return self._probabilities

    @property
    def positive(self) -> np.ndarray | None:
        """``(n,)`` positive-class probability of a binary model; None for multiclass."""
        return self._positive

    def __repr__(self) -> str:
        return (
            f"Prediction(rows={len(self)}, classes={self.probabilities.shape[1]}, "
            f"class_names={self.class_names!r}, logits={self.logits is not None})"
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def names(self) -> list[str]:
        """The class name of each row's label (the label's digits when names are unknown)."""
        if self.class_names is None:
            return [str(label) for label in self.labels.tolist()]
        names = self.class_names
        return [
            names[label] if 0 <= label < len(names) else str(label)
            for label in self.labels.tolist()
        ]

    @property
    def top_probabilities(self) -> np.ndarray:
        """``(n,)`` float32: each row's probability of its own label."""
        if len(self) == 0:
            return np.empty((0,), dtype=np.float32)
        return np.take_along_axis(self.probabilities, self.labels[:, None], axis=1)[:, 0]


@dataclass(frozen=True)
class _Outputs:
    """Which graph outputs hold what (names as the model spells them)."""

    probabilities: str
    label: str | None
    logits: str | None


class Predictor:
    """Run a classifier exported by onnxedge (or a plain ONNX classifier) with onnxruntime.

    Args:
        model: path to an ``.onnx`` / ``.ort`` file, or the model's bytes.
        provider: ``auto``, ``cpu`` or ``cuda`` (case-insensitive). ``cuda`` is
            strict; ``auto`` takes CUDA when the session really gets it.
        device_id: CUDA device ordinal.
        provider_options: extra options for the accelerator's provider (CUDA), or
            for the CPU provider when ``provider="cpu"``.
        threads: intra-op threads; None uses :func:`default_threads`. Inter-op
            threads are 1 (the graphs are sequential).
        graph_optimization_level: one of :data:`OPTIMIZATION_LEVELS`.
        nonfinite: ``reject`` (default) raises on NaN / Inf inputs; ``allow`` scores
            them (the outputs are then usually NaN).
        io_binding: run through onnxruntime I/O binding with outputs written straight
            into the result arrays; None (default) uses it on CUDA only.
        logger: where onnxruntime's warnings and this class's notes go
            (default ``logging.getLogger("onnxedge.runtime")``).
        session_config: extra onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` (batch scoring turns spinning
            off so its writer thread gets the cores between runs).

    Raises:
        ModelLoadError: the model is missing, empty, truncated, not ONNX, reads
            external data from outside its folder, or is not a single-input
            classifier.
        ProviderUnavailableError: ``cuda`` was asked for and is not available, or the
            session could not get it; or the request is unknown.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        provider: str = "auto",
        device_id: int = 0,
        provider_options: dict[str, Any] | None = None,
        threads: int | None = None,
        graph_optimization_level: str = "all",
        nonfinite: Nonfinite = "reject",
        io_binding: bool | None = None,
        logger: logging.Logger | None = None,
        session_config: dict[str, str] | None = None,
    ) -> None:
        self._log = logger or logging.getLogger(LOGGER_NAME)
        if nonfinite not in ("reject", "allow"):
            raise InputValueError(f"nonfinite must be 'reject' or 'allow'; got {nonfinite!r}")
        self._reject_nonfinite = nonfinite == "reject"
        self.nonfinite: Nonfinite = nonfinite
        self.requested_provider = _providers.normalize_request(provider)
        self.threads = _check_threads(threads)
        self.graph_optimization_level = _check_level(graph_optimization_level)
        self.session_config = {str(k): str(v) for k, v in (session_config or {}).items()}
        #: Notes on what could not be known or was assumed; also logged at WARNING.
        self.warnings: list[str] = []

        source, self.model_label, self.file_info = _open_model_source(model)
        available = ort.get_available_providers()
        resolved = _providers.resolve_providers(
            self.requested_provider, available, device_id, provider_options
        )
        conflict = _providers.distribution_conflict(_installed_distributions())
        if conflict:
            self._note(conflict)

        options = self._session_options()
        self._session = _create_session(source, options, resolved, self.model_label, self._log)
        # run() would otherwise move to the CPU by itself after an accelerator failure,
        # printing only to stdout; the provider reported here must stay true.
        self._session.disable_fallback()
        self.providers: list[str] = list(self._session.get_providers())
        fallback = _providers.check_session_providers(
            self.requested_provider, resolved, self.providers
        )
        if fallback:
            self._note(fallback)
        #: The provider that runs the graph (the session's first).
        self.provider: str = self.providers[0]
        self.device_id = device_id
        self._use_binding = (
            (self.provider != _providers.CPU) if io_binding is None else bool(io_binding)
        )
        # The binding under InferenceSession.run: that wrapper re-checks input names and
        # ownership on every call (about 1.5 us, as much as a batch-1 run of a small
        # MLP), all of which validate() has done. Same signature since onnxruntime 1.0.
        inner = getattr(self._session, "_sess", None)
        self._run_fn = (
            inner.run if inner is not None and hasattr(inner, "run") else self._session.run
        )
        self._warned_no_logits = False
        # A failing run raises with onnxruntime's message; printing it to stderr as
        # well (severity ERROR) would only duplicate it. Read-only, shared by threads.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4

        meta = self._session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.producer = (meta.producer_name or "").strip()
        self.contract = ModelContract.from_metadata(self.metadata)
        self._read_signature()

    # --- construction helpers ------------------------------------------------------

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        # Errors only: warnings at run time would go straight to stderr; session
        # creation's output is captured into log records (_create_session).
        options.log_severity_level = 3
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _ORT_LEVELS()[self.graph_optimization_level]
        if self.file_info.format == "ort":
            options.add_session_config_entry("session.load_model_format", "ORT")
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
        return options

    def _note(self, message: str) -> None:
        self.warnings.append(message)
        self._log.warning("%s: %s", self.model_label, message)

    def _read_signature(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            listing = ", ".join(i.name for i in inputs)
            raise ModelLoadError(
                f"cannot use model {self.model_label}: onnxedge runs classifiers with one input; "
                f"this model has {len(inputs)} ({listing})"
            )
        node = inputs[0]
        self.input_name: str = node.name
        if node.type not in _FLOAT_INPUT_TYPES:
            raise ModelLoadError(
                f"cannot use model {self.model_label}: input {node.name!r} is {node.type}; "
                "onnxedge feeds float tensors (batch, features)"
            )
        self.input_dtype: np.dtype[Any] = _FLOAT_INPUT_TYPES[node.type]
        shape = list(node.shape) if node.shape is not None else None
        if shape is not None and len(shape) != 2:
            raise ModelLoadError(
                f"cannot use model {self.model_label}: input {node.name!r} has shape {shape}; "
                "onnxedge feeds 2-D batches (batch, features)"
            )
        graph_features = shape[1] if shape is not None and isinstance(shape[1], int) else None
        meta_features = self.contract.num_features
        if (
            graph_features is not None
            and meta_features is not None
            and graph_features != meta_features
        ):
            raise ModelLoadError(
                f"cannot use model {self.model_label}: its metadata says {meta_features} features "
                f"but input {node.name!r} takes {graph_features}"
            )
        self.num_features: int | None = (
            graph_features if graph_features is not None else meta_features
        )
        # -1 never equals a width: with the count unknown predict() takes the slow path.
        self._expected_features = self.num_features if self.num_features is not None else -1
        if self.num_features is None:
            self._note("the model does not say how many features it takes; inputs are not checked")
        if node.name != INPUT_NAME:
            self._log.debug("%s: input is named %r", self.model_label, node.name)

        self._outputs = self._find_outputs()
        info = {o.name: o for o in self._session.get_outputs()}
        prob_shape = info[self._outputs.probabilities].shape
        prob_cols = (
            prob_shape[1] if len(prob_shape) == 2 and isinstance(prob_shape[1], int) else None
        )
        if len(prob_shape) == 1:
            prob_cols = 1
        #: Columns of the probabilities output as the graph computes it (1 for binary).
        self._prob_columns: int | None = prob_cols
        logit_shape = info[self._outputs.logits].shape if self._outputs.logits else []
        self._logit_columns: int | None = (
            logit_shape[1] if len(logit_shape) == 2 and isinstance(logit_shape[1], int) else None
        )
        names = self.contract.class_names
        if prob_cols is not None:
            self.num_classes: int | None = 2 if prob_cols == 1 else prob_cols
        elif names is not None:
            self.num_classes = len(names)
        else:
            self.num_classes = None
        if names is not None and self.num_classes is not None and len(names) != self.num_classes:
            self._note(
                f"metadata names {len(names)} classes but the model computes {self.num_classes}; "
                "class names are ignored"
            )
            names = None
        self.class_names: list[str] | None = names
        self.binary = prob_cols == 1 or (prob_cols is None and self.contract.task == "binary")
        if self.contract.missing:
            keys = ", ".join(self.contract.missing)
            unnamed = "; labels are class indices" if self.class_names is None else ""
            self._note(f"no onnxedge metadata for {keys}{unnamed}")
        self._fetch = [self._outputs.probabilities] + (
            [self._outputs.label] if self._outputs.label else []
        )
        # The graph's own outputs are the result as they come (multiclass float32
        # probabilities, a 1-D int64 label): no post-processing at all.
        label_node = info[self._outputs.label] if self._outputs.label else None
        self._direct = (
            label_node is not None
            and label_node.type == "tensor(int64)"
            and len(label_node.shape) == 1
            and info[self._outputs.probabilities].type == "tensor(float)"
            and len(prob_shape) == 2
            and prob_cols is not None
            and prob_cols > 1
        )
        # A binary graph's outputs as they come: (n, 1) float32 probability, 1-D int64 label.
        self._direct_binary = (
            label_node is not None
            and label_node.type == "tensor(int64)"
            and len(label_node.shape) == 1
            and info[self._outputs.probabilities].type == "tensor(float)"
            and len(prob_shape) == 2
            and prob_cols == 1
        )
        self._fetch_with_logits = self._fetch + (
            [self._outputs.logits] if self._outputs.logits else []
        )

    def _find_outputs(self) -> _Outputs:
        outputs = self._session.get_outputs()
        by_name = {o.name: o for o in outputs}
        lowered = {o.name.lower(): o.name for o in outputs}

        def first(candidates: Sequence[str]) -> str | None:
            for candidate in candidates:
                if candidate in lowered:
                    return lowered[candidate]
            return None

        floats = [o.name for o in outputs if o.type in _FLOAT_INPUT_TYPES]
        probabilities = first(_PROBABILITY_NAMES)
        logits = first(_LOGIT_NAMES)
        label = first(_LABEL_NAMES)
        if probabilities is None:
            candidates = [name for name in floats if name != logits]
            if len(candidates) != 1:
                listing = ", ".join(f"{o.name} ({o.type})" for o in outputs)
                raise ModelLoadError(
                    f"cannot use model {self.model_label}: no output is named "
                    f"{OUTPUT_PROBABILITIES!r} and the class probabilities cannot be told apart "
                    f"among: {listing}"
                )
            probabilities = candidates[0]
            self._note(
                f"output {probabilities!r} is taken as the class probabilities (the model has no "
                f"{OUTPUT_PROBABILITIES!r} output)"
            )
        if by_name[probabilities].type not in _FLOAT_INPUT_TYPES:
            raise ModelLoadError(
                f"cannot use model {self.model_label}: output {probabilities!r} is "
                f"{by_name[probabilities].type}; a float tensor (batch, classes) is needed "
                "(for sklearn-onnx models convert with zipmap=False)"
            )
        if label is not None and by_name[label].type not in _INT_TYPES:
            self._note(f"output {label!r} is {by_name[label].type}, not an integer label; ignored")
            label = None
        if label is None:
            self._note("the model has no label output; labels are computed from the probabilities")
        return _Outputs(probabilities=probabilities, label=label, logits=logits)

    # --- public API ----------------------------------------------------------------

    @property
    def output_names(self) -> list[str]:
        """Every output of the graph, in order."""
        return [o.name for o in self._session.get_outputs()]

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying onnxruntime session (for benchmarks and advanced use)."""
        return self._session

    def predict(
        self,
        x: Any,
        *,
        batch_size: int | None = None,
        return_logits: bool = False,
    ) -> Prediction:
        """Score rows.

        Args:
            x: ``(n, features)`` array-like, or one row ``(features,)``; see the
                module docstring for the dtype rule.
            batch_size: rows per ``session.run`` (default :data:`DEFAULT_BATCH_SIZE`).
            return_logits: also return the ``logits`` output (None when the model has
                none).

        Returns:
            A :class:`Prediction` with ``n`` rows.

        Raises:
            InputShapeError: wrong rank or feature count.
            InputValueError: non-numeric values, or NaN / Inf under ``nonfinite="reject"``,
                or a batch size below 1.
        """
        # validate(), with its common case (a C-contiguous 2-D array of the input type)
        # inline: at batch 1 each call costs a measurable share of session.run.
        if (
            type(x) is np.ndarray
            and x.dtype == self.input_dtype
            and x.ndim == 2
            and x.shape[1] == self._expected_features
            and x.flags.c_contiguous
        ):
            if self._reject_nonfinite and x.size and not _isfinite(_vdot(x, x)):
                self.validate(x)  # raises with the first bad row and column
            batch = x
        else:
            batch = self.validate(x)
        step = DEFAULT_BATCH_SIZE if batch_size is None else _check_batch_size(batch_size)
        if return_logits:
            fetch = self._fetch_with_logits
            if self._outputs.logits is None and not self._warned_no_logits:
                self._warned_no_logits = True
                self._log.warning(
                    "%s: the model has no logits output; logits are None", self.model_label
                )
        else:
            fetch = self._fetch
        n = batch.shape[0]
        if 0 < n <= step and not self._use_binding:
            # The common case, kept free of calls: one run, the outputs used as they are.
            try:
                raw = self._run_fn(fetch, {self.input_name: batch}, self._run_options)
            except Exception as exc:
                raise _run_error(exc, self.model_label) from None
            if self._direct and not return_logits:
                return Prediction(raw[0], raw[1], self.class_names)
            if self._direct_binary and not return_logits:
                return Prediction(None, raw[1], self.class_names, positive=raw[0][:, 0])
        elif self._use_binding and n > 0:
            raw = self._run_bound(batch, fetch, step)
        elif n <= step and self._prob_columns is None:
            raw = self._run(batch, fetch)
        else:
            raw = self._run_batches(batch, fetch, step)
        return self._finish(raw, return_logits)

    def warmup(self, runs: int = 1) -> None:
        """Run a batch of one row of zeros ``runs`` times (allocations, kernel choice).

        Raises:
            InputShapeError: the model does not say how many features it takes.
        """
        if self.num_features is None:
            raise InputShapeError(
                f"cannot warm up {self.model_label}: the model does not say how many features "
                "it takes"
            )
        row = np.zeros((1, self.num_features), dtype=self.input_dtype)
        for _ in range(max(1, runs)):
            self._run(row, self._fetch)
        if self._use_binding:
            self._run_bound(row, self._fetch, 1)

    def validate(self, x: Any) -> np.ndarray:
        """Return ``x`` as a C-contiguous ``(n, features)`` array of the model's input type.

        Raises:
            InputShapeError: wrong rank or feature count (rows of different lengths
                name the first row that differs).
            InputValueError: non-numeric dtype; NaN / Inf under ``nonfinite="reject"``.
        """
        expected = self.num_features
        if isinstance(x, np.ndarray):
            arr = x
        else:
            try:
                arr = np.asarray(x)
            except ValueError:
                raise self._ragged_error(x) from None
        if arr.dtype != self.input_dtype:
            kind = arr.dtype.kind
            if kind not in "biuf":
                raise InputValueError(
                    f"input has dtype {arr.dtype}; expected numbers (bool, int, uint or float, "
                    f"cast to {self.input_dtype})"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                # float64 beyond float32's range becomes inf here; the check below sees it.
                arr = arr.astype(self.input_dtype, order="C")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        elif arr.ndim != 2:
            raise InputShapeError(
                f"input must be 2-D (batch, features) or one 1-D row; got shape {tuple(arr.shape)}"
            )
        if expected is not None and arr.shape[1] != expected:
            raise InputShapeError(f"model expects {expected} features, input has {arr.shape[1]}")
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        # x.x is finite exactly when every value is (squares are >= 0, so an inf or a
        # NaN cannot cancel); one BLAS call, no temporary. If it overflows on large
        # finite values the exact check decides.
        if (
            self._reject_nonfinite
            and arr.size
            and not _isfinite(_vdot(arr, arr))
            and not np.isfinite(arr).all()
        ):
            raise self._nonfinite_error(arr)
        return arr

    def describe(self) -> dict[str, Any]:
        """Everything ``onnxedge info`` shows, as JSON-ready data.

        Keys: model, format, size_bytes, ir_version, producer, opsets, inputs,
        outputs, provider, providers, available_providers, onnxruntime, threads,
        contract, metadata (every ``onnxedge.`` key, JSON values decoded), warnings.
        """
        info = self.file_info
        opsets: dict[str, int] | str = dict(info.opsets) if info.opsets else "unknown"
        producer = " ".join(part for part in (info.producer_name, info.producer_version) if part)
        contract = self.contract
        metadata = {key: value for key, value in self.metadata.items()}
        decoded = ModelContract.from_metadata(metadata).extra
        onnxedge_meta: dict[str, Any] = {
            "task": contract.task,
            "head": contract.head,
            "threshold": contract.threshold,
            "class_names": contract.class_names,
            "num_features": contract.num_features,
            "feature_names": contract.feature_names,
            "variant": contract.variant,
            **decoded,
        }
        other = {k: v for k, v in metadata.items() if not k.startswith("onnxedge.")}
        return {
            "model": self.model_label,
            "format": info.format,
            "size_bytes": info.size_bytes,
            "ir_version": info.ir_version,
            "producer": producer or self.producer or "unknown",
            "opsets": opsets,
            "inputs": [_describe_node(node) for node in self._session.get_inputs()],
            "outputs": [_describe_node(node) for node in self._session.get_outputs()],
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "provider": self.provider,
            "providers": list(self.providers),
            "available_providers": list(ort.get_available_providers()),
            "onnxruntime": {
                "version": ort.__version__,
                "distributions": _installed_distributions(),
            },
            "threads": self.threads,
            "graph_optimization_level": self.graph_optimization_level,
            "onnxedge": onnxedge_meta,
            "missing_metadata": list(contract.missing),
            "other_metadata": other,
            "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        return (
            f"Predictor({self.model_label!r}, provider={self.provider!r}, "
            f"features={self.num_features}, classes={self.num_classes})"
        )

    # --- running -------------------------------------------------------------------

    def _run(self, batch: np.ndarray, fetch: list[str]) -> list[np.ndarray]:
        try:
            return self._run_fn(fetch, {self.input_name: batch}, self._run_options)
        except Exception as exc:
            raise _run_error(exc, self.model_label) from None

    def _run_batches(self, batch: np.ndarray, fetch: list[str], step: int) -> list[np.ndarray]:
        """Run ``batch`` in slices of ``step`` rows into arrays allocated once."""
        n = batch.shape[0]
        out: list[np.ndarray] = []
        for start in range(0, n, step):
            part = self._run(batch[start : start + step], fetch)
            if not out:
                out = [np.empty((n, *p.shape[1:]), dtype=p.dtype) for p in part]
            for buffer, values in zip(out, part, strict=True):
                buffer[start : start + values.shape[0]] = values
        if not out:  # n == 0 and the output widths are known: nothing to run
            out = self._empty_outputs(fetch)
        return out

    def _run_bound(self, batch: np.ndarray, fetch: list[str], step: int) -> list[np.ndarray]:
        """Run through I/O binding; outputs of known width go straight into the result."""
        n = batch.shape[0]
        widths = self._output_widths(fetch)
        if any(w is None for w in widths):
            # Output widths unknown until run: let onnxruntime allocate, then gather.
            parts: list[list[np.ndarray]] = []
            for start in range(0, n, step):
                binding = self._session.io_binding()
                binding.bind_cpu_input(self.input_name, batch[start : start + step])
                for name in fetch:
                    binding.bind_output(name, "cpu")
                self._run_with_binding(binding)
                parts.append(binding.copy_outputs_to_cpu())
            return [np.concatenate([p[i] for p in parts]) for i in range(len(fetch))]
        out = self._empty_outputs(fetch, rows=n)
        for start in range(0, n, step):
            stop = min(n, start + step)
            binding = self._session.io_binding()
            binding.bind_cpu_input(self.input_name, batch[start:stop])
            for name, buffer in zip(fetch, out, strict=True):
                part = buffer[start:stop]  # a row slice of a C-contiguous array is contiguous
                binding.bind_output(
                    name,
                    device_type="cpu",
                    device_id=0,
                    element_type=part.dtype.type,
                    shape=list(part.shape),
                    buffer_ptr=part.ctypes.data,
                )
            self._run_with_binding(binding)
        return out

    def _run_with_binding(self, binding: Any) -> None:
        try:
            self._session.run_with_iobinding(binding, self._run_options)
        except Exception as exc:
            raise _run_error(exc, self.model_label) from None

    def _output_widths(self, fetch: list[str]) -> list[int | None]:
        widths: list[int | None] = []
        for name in fetch:
            if name == self._outputs.probabilities:
                widths.append(self._prob_columns)
            elif name == self._outputs.logits:
                widths.append(self._logit_columns)
            else:
                widths.append(0)  # the label: one value per row
        return widths

    def _empty_outputs(self, fetch: list[str], rows: int = 0) -> list[np.ndarray]:
        """Arrays of ``rows`` rows shaped and typed like the graph's outputs."""
        info = {o.name: o for o in self._session.get_outputs()}
        out = []
        for name, width in zip(fetch, self._output_widths(fetch), strict=True):
            node = info[name]
            dtype = _FLOAT_INPUT_TYPES.get(node.type, np.dtype(np.int64))
            rank = len(node.shape) if node.shape is not None else 2
            # A label output of shape (batch, 1) keeps its column.
            columns = 1 if width == 0 else int(width or 0)
            shape: tuple[int, ...] = (rows,) if rank == 1 else (rows, columns)
            out.append(np.empty(shape, dtype=dtype))
        return out

    def _finish(self, raw: list[np.ndarray], return_logits: bool) -> Prediction:
        """Turn the graph's outputs into a :class:`Prediction` (binary -> two columns).

        ``raw`` is in fetch order: probabilities, then the label, then the logits
        (each only when the graph has it).
        """
        probs = raw[0]
        if probs.dtype != np.float32:
            probs = probs.astype(np.float32)
        if probs.ndim == 1:
            probs = probs.reshape(-1, 1)
        binary = probs.shape[1] == 1
        positive = probs[:, 0] if binary else None
        if self._outputs.label is not None:
            labels = raw[1]
            if labels.ndim != 1:
                labels = labels.reshape(-1)
            if labels.dtype != np.int64:
                labels = labels.astype(np.int64)
        elif binary:
            labels = (probs[:, 0] >= np.float32(self.contract.threshold)).astype(np.int64)
        else:
            labels = probs.argmax(axis=1).astype(np.int64, copy=False)
        logits = None
        if return_logits and self._outputs.logits is not None:
            logits = raw[-1]
            if logits.dtype != np.float32:
                logits = logits.astype(np.float32)
        if positive is not None:
            return Prediction(None, labels, self.class_names, logits, positive=positive)
        return Prediction(probs, labels, self.class_names, logits)

    # --- errors --------------------------------------------------------------------

    def _ragged_error(self, x: Any) -> InputShapeError:
        expected = self.num_features
        lengths: list[int] = []
        for row in x:
            try:
                lengths.append(len(row))
            except TypeError:
                lengths.append(1)
        for index, length in enumerate(lengths):
            if expected is not None and length != expected:
                return InputShapeError(
                    f"model expects {expected} features, input row {index} has {length}"
                )
            if expected is None and length != lengths[0]:
                return InputShapeError(
                    f"input rows have different lengths: row 0 has {lengths[0]}, "
                    f"row {index} has {length}"
                )
        return InputShapeError(
            "input rows have different shapes; pass a 2-D (batch, features) array"
        )

    def _nonfinite_error(self, arr: np.ndarray) -> InputValueError:
        row, column = (int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        value = arr[row, column]
        names = self.contract.feature_names
        where = f"column {column}"
        if names is not None and column < len(names):
            where += f" ({names[column]!r})"
        return InputValueError(
            f"input row {row}, {where} is {value}; NaN / Inf are rejected (values beyond "
            "float32's range become inf); pass nonfinite='allow' to score them anyway"
        )


# --- module helpers -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ORT_LEVELS() -> dict[str, ort.GraphOptimizationLevel]:  # noqa: N802 - a constant, built lazily
    level = ort.GraphOptimizationLevel
    return {
        "disable": level.ORT_DISABLE_ALL,
        "basic": level.ORT_ENABLE_BASIC,
        "extended": level.ORT_ENABLE_EXTENDED,
        "all": level.ORT_ENABLE_ALL,
    }


@functools.lru_cache(maxsize=1)
def _installed_distributions() -> list[str]:
    return _providers.installed_ort_distributions()


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputValueError(f"threads must be an integer >= 1 or None; got {threads!r}")
    return threads


def _check_batch_size(batch_size: Any) -> int:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise InputValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    return int(batch_size)


def _check_level(level: str) -> str:
    value = str(level).strip().lower()
    if value not in OPTIMIZATION_LEVELS:
        raise InputValueError(
            f"graph_optimization_level must be one of {', '.join(OPTIMIZATION_LEVELS)}; "
            f"got {level!r}"
        )
    return value


def _open_model_source(
    model: str | os.PathLike[str] | bytes,
) -> tuple[str | bytes, str, ModelFileInfo]:
    """Check a model before onnxruntime opens it; return what to pass to the session."""
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        info = inspect_model(data)
        check_external_data(info, None, "<bytes>")
        return data, "<bytes>", info
    if not isinstance(model, str | os.PathLike):
        raise ModelLoadError(f"model must be a path or bytes; got {type(model).__name__}")
    path = Path(model)
    label = str(path)
    info = inspect_model(path)
    check_external_data(info, path.parent, label)
    # The path, not its bytes: onnxruntime then reads external data relative to it.
    return str(path), label, info


def _create_session(
    source: str | bytes,
    options: ort.SessionOptions,
    providers: list[_providers.ProviderEntry],
    label: str,
    logger: logging.Logger,
) -> ort.InferenceSession:
    try:
        with _ort_output_to_log(logger, label):
            return ort.InferenceSession(
                source,
                sess_options=options,
                providers=providers,
                # A model's metadata may carry session settings; never apply them.
                read_config_from_model=0,
            )
    except OnnxEdgeError:
        raise
    except Exception as exc:
        if not _is_ort_error(exc) and not isinstance(exc, ValueError | RuntimeError):
            raise
        name = type(exc).__name__
        reason = _ort_message(exc)
        if name in ("InvalidProtobuf", "NoSuchFile", "InvalidGraph"):
            raise ModelLoadError(f"not a valid ONNX model: {label}: {reason}") from None
        raise ModelLoadError(f"onnxruntime cannot load model {label}: {reason}") from None


@contextlib.contextmanager
def _ort_output_to_log(logger: logging.Logger, label: str) -> Iterator[None]:
    """Capture what onnxruntime prints while a session is created; log it instead.

    onnxruntime writes its C++ log to file descriptor 2, prints provider fallbacks
    with ``print`` and emits Python warnings; all three become WARNING records.
    Anything another thread writes to stderr meanwhile is logged too.
    """
    with (
        _CAPTURE_LOCK,
        tempfile.TemporaryFile() as sink,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        printed = io.StringIO()
        saved: int | None = None
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
        except OSError:
            saved = None
        try:
            with contextlib.redirect_stdout(printed):
                yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace") + printed.getvalue()
            for line in text.splitlines():
                if line.strip() and set(line.strip()) != {"*"}:
                    logger.warning("%s: onnxruntime: %s", label, line.strip())
            for item in caught:
                logger.warning("%s: onnxruntime: %s", label, " ".join(str(item.message).split()))


def _is_ort_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def _ort_message(exc: BaseException) -> str:
    """onnxruntime's message on one line, without its ``[ONNXRuntimeError] : 7 : ...`` prefix."""
    text = " ".join(str(exc).split())
    if text.startswith("[ONNXRuntimeError]"):
        parts = text.split(" : ", 3)
        text = parts[-1] if len(parts) == 4 else text
    marker = " failed:"
    if text.startswith("Load model from ") and marker in text:
        text = text.split(marker, 1)[1].strip()
    return text or type(exc).__name__


def _run_error(exc: Exception, label: str) -> OnnxEdgeError:
    if isinstance(exc, OnnxEdgeError):
        return exc
    if not _is_ort_error(exc) and not isinstance(exc, ValueError | RuntimeError):
        raise exc
    reason = _ort_message(exc)
    if type(exc).__name__ == "InvalidArgument":
        return InputShapeError(f"{label}: onnxruntime refused the input: {reason}")
    return OnnxEdgeError(f"{label}: onnxruntime failed to run the model: {reason}")


def _describe_node(node: Any) -> dict[str, Any]:
    shape = list(node.shape) if node.shape is not None else None
    return {"name": node.name, "type": node.type, "shape": shape}
