"""``Predictor``: run a classifier with onnxruntime, honestly.

A :class:`Predictor` is the edge script's :class:`~onnxedge.runtime.edge_infer.EdgeModel`
(one scoring core: file checks, session, output rules, input validation, batching,
self-test) plus what a library adds: typed errors, logging, ``describe()``, CUDA I/O
binding and a :class:`Prediction`. Concurrent ``predict`` calls on one instance are safe.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import onnxruntime as ort
from onnxedge.runtime import providers as _providers
from onnxedge.runtime.contract import ModelContract
from onnxedge.runtime.edge_infer import (
    CPU,
    MAX_DEFAULT_THREADS,
    OPTIMIZATION_LEVELS,
    EdgeError,
    EdgeModel,
    ModelScan,
    default_threads,
    per_class,
)
from onnxedge.runtime.errors import (
    InputShapeError,
    InputValueError,
    ModelLoadError,
    OnnxEdgeError,
    ProviderUnavailableError,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_DEFAULT_THREADS",
    "OPTIMIZATION_LEVELS",
    "Prediction",
    "Predictor",
    "default_threads",
]

LOGGER_NAME = "onnxedge.runtime"

#: Rows per ``session.run`` by default (beyond a few thousand the call costs nothing).
DEFAULT_BATCH_SIZE = 8192

Nonfinite = Literal["reject", "allow"]
_CONTRACT_KEYS: tuple[str, ...] = ("task", "head", "threshold", "class_names", "num_features")
_CONTRACT_KEYS += ("feature_names", "variant")

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


def typed(exc: EdgeError) -> OnnxEdgeError:
    """The onnxedge exception for an edge-core error (by its ``kind``)."""
    return ERRORS[exc.kind](str(exc))


def typed_errors(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``function`` raising onnxedge's exception types instead of ``EdgeError``."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except EdgeError as exc:
            raise typed(exc) from None

    return wrapper


class Prediction:
    """What :meth:`Predictor.predict` returns: ``probabilities`` ``(n, C)`` float32 (binary:
    ``[1-p, p]``, built from ``positive`` when first read: at batch 1 the copy would cost a
    fifth of ``session.run``), ``labels`` ``(n,)`` int64, ``class_names`` or None,
    ``logits`` ``(n, K)`` float32 when asked for and there, ``positive`` ``(n,)`` float32
    (binary only, else None)."""

    __slots__ = ("_probabilities", "class_names", "labels", "logits", "positive")

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
        self._probabilities, self.positive, self.labels = probabilities, positive, labels
        self.class_names, self.logits = class_names, logits

    @property
    def probabilities(self) -> np.ndarray:
        """``(n, C)`` float32 per-class probabilities (binary: ``[1-p, p]``)."""
        if self._probabilities is None:
            assert self.positive is not None
            self._probabilities = per_class(self.positive[:, None])
        return self._probabilities

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
        names = self.class_names or []
        return [names[i] if 0 <= i < len(names) else str(i) for i in self.labels.tolist()]

    @property
    def top_probabilities(self) -> np.ndarray:
        """``(n,)`` float32: each row's probability of its own label."""
        return np.take_along_axis(self.probabilities, self.labels[:, None], axis=1)[:, 0]


class Predictor(EdgeModel):
    """Run a classifier (exported by onnxedge, or a known converter's) with onnxruntime.

    Args:
        model: path to an ``.onnx`` / ``.ort`` file, or the model's bytes.
        provider: ``auto``, ``cpu`` or ``cuda`` (any case; strict: the session must hold
            CUDA and run its Gemm / MatMul / Conv nodes there).
        device_id, provider_options: the CUDA device and its options (the CPU's with ``cpu``).
        threads: intra-op threads (default :func:`default_threads`); inter-op is 1.
        graph_optimization_level: one of :data:`OPTIMIZATION_LEVELS`.
        nonfinite: ``reject`` (default) raises on NaN / Inf inputs; ``allow`` scores them.
        io_binding: run through I/O binding; None (default) uses it on CUDA only.
        logger: where the notes go (default ``onnxedge.runtime``).
        session_config: extra session config entries (``session.intra_op.allow_spinning``).
        require_probabilities: False opens a model whose outputs are not known to be
            probabilities (``describe()`` works; ``predict`` refuses it).

    Raises:
        ModelLoadError: missing, invalid, unsafe (external data), not a single-input
            classifier, or outputs not known to be probabilities.
        ProviderUnavailableError: an unknown request, or ``cuda`` not there, not created,
            or with compute nodes on the CPU.
    """

    nonfinite_hint = (
        " (values beyond float32's range become inf); pass nonfinite='allow' to score them anyway"
    )

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
        require_probabilities: bool = True,
    ) -> None:
        self._log = logger or logging.getLogger(LOGGER_NAME)
        if nonfinite not in ("reject", "allow"):
            raise InputValueError(f"nonfinite must be 'reject' or 'allow'; got {nonfinite!r}")
        self.nonfinite: Nonfinite = nonfinite
        self.threads = (
            default_threads() if threads is None else _count("threads", threads, " or None")
        )
        self.graph_optimization_level = str(graph_optimization_level).strip().lower()
        self.session_config = {str(k): str(v) for k, v in (session_config or {}).items()}
        try:
            super().__init__(
                model,
                provider,
                self.threads,
                level=self.graph_optimization_level,
                device_id=device_id,
                provider_options=provider_options,
                session_config=self.session_config,
                require_probabilities=require_probabilities,
                reject_nonfinite=nonfinite == "reject",
            )
        except EdgeError as exc:
            raise typed(exc) from None
        self.file_info: ModelScan = self.scan
        self.model_label, self.device_id = self.label, device_id
        self.providers: list[str] = list(self.session.get_providers())
        #: The provider that runs the graph (the session's first).
        self.provider: str = self.providers[0]
        self._use_binding = (self.provider != CPU) if io_binding is None else io_binding
        self.contract = ModelContract.from_metadata(self.metadata)
        if self.contract.missing:
            unnamed = "; labels are class indices" if self.class_names is None else ""
            self.notes.append(
                f"no onnxedge metadata for {', '.join(self.contract.missing)}{unnamed}"
            )
        conflict = _providers.distribution_conflict(_installed_distributions())
        #: Notes on what could not be known or was assumed; each is logged at WARNING.
        self.warnings: list[str] = ([conflict] if conflict else []) + self.notes
        for note in self.warnings:
            self._log.warning("%s: %s", self.label, note)
        self._warned_no_logits = False

    @property
    def output_names(self) -> list[str]:
        """Every output of the graph, in order."""
        return [o.name for o in self.session.get_outputs()]

    def predict(
        self, x: Any, *, batch_size: int | None = None, return_logits: bool = False
    ) -> Prediction:
        """Score rows: ``(n, *input_shape)``, ``(n, num_features)`` or one row, any numeric
        dtype; ``batch_size`` rows per run (default :data:`DEFAULT_BATCH_SIZE`); logits too
        when asked (None when the model has none). Returns a :class:`Prediction`.

        Raises:
            InputShapeError: a shape the model does not take.
            InputValueError: non-numeric values, NaN / Inf under ``nonfinite="reject"``,
                or a batch size below 1.
            ModelLoadError: the first batch's outputs are not probabilities.
        """
        step = DEFAULT_BATCH_SIZE if batch_size is None else _count("batch_size", batch_size)
        fetch = self.fetch_all if return_logits else self.fetch
        if return_logits and self.logits_output is None and not self._warned_no_logits:
            self._warned_no_logits = True
            self._log.warning("%s: the model has no logits output; logits are None", self.label)
        try:
            batch = self.check(x)
            if self._use_binding or not 0 < batch.shape[0] <= step:
                probs, labels, raw = self.run_checked(
                    batch, fetch, step, self._run_bound if self._use_binding else None
                )
            else:  # one run, inline: run_checked's frame is 3-4% of a batch-1 call (make bench)
                try:
                    raw = self._run_fn(fetch, {self.input_name: batch}, self.run_options)
                except Exception as exc:
                    raise self._run_error(exc) from None
                if not self._checked:
                    self.check_probabilities(raw[0])
                probs, labels = self.outputs(raw)
        except EdgeError as exc:
            raise typed(exc) from None
        logits = None
        if return_logits and self.logits_output is not None:
            logits = raw[-1].astype(np.float32, copy=False)
        if probs.shape[1] == 1:
            return Prediction(None, labels, self.class_names, logits, positive=probs[:, 0])
        return Prediction(probs, labels, self.class_names, logits)

    def _run_bound(self, batch: np.ndarray, fetch: list[str]) -> list[np.ndarray]:
        """One run through I/O binding (the input copied to the device once)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        for name in fetch:
            binding.bind_output(name, "cpu")
        try:
            self.session.run_with_iobinding(binding, self.run_options)
        except Exception as exc:
            raise self._run_error(exc) from None
        return binding.copy_outputs_to_cpu()

    @typed_errors
    def warmup(self, runs: int = 1) -> None:
        """Run a row of zeros ``runs`` times (InputShapeError when its shape is unknown)."""
        if self.input_shape is None:
            raise InputShapeError(
                f"cannot warm up {self.label}: the model does not say how many features it takes"
            )
        row = np.zeros((1, *self.input_shape), dtype=self.input_dtype)
        run = self._run_bound if self._use_binding else self.run
        for _ in range(max(1, runs)):
            run(row, self.fetch)

    # The core's methods with onnxedge's typed errors (docstrings are the core's).
    check_probabilities = typed_errors(EdgeModel.check_probabilities)
    self_test = typed_errors(EdgeModel.self_test)
    placement = typed_errors(EdgeModel.placement)

    def describe(self) -> dict[str, Any]:
        """Everything ``onnxedge info`` shows, as JSON-ready data: the file, signature,
        shapes, classes, ``usable`` / ``refusal``, providers and ``placement`` (nodes per
        provider, one profiled run), onnxruntime, every ``onnxedge.`` key decoded, other
        metadata and warnings."""
        info = self.file_info
        contract = self.contract
        producer = " ".join(part for part in (info.producer_name, info.producer_version) if part)
        return {
            "model": self.label,
            "format": info.format,
            "size_bytes": info.size_bytes,
            "ir_version": info.ir_version,
            "producer": producer or self.producer or "unknown",
            "opsets": dict(info.opsets) if info.opsets else "unknown",
            "inputs": [_describe_node(node) for node in self.session.get_inputs()],
            "outputs": [_describe_node(node) for node in self.session.get_outputs()],
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "usable": self.refusal is None,
            "refusal": self.refusal,
            "provider": self.provider,
            "providers": list(self.providers),
            "placement": self.placement(),
            "available_providers": list(ort.get_available_providers()),
            "onnxruntime": {
                "version": ort.__version__,
                "distributions": _installed_distributions(),
            },
            "threads": self.threads,
            "graph_optimization_level": self.graph_optimization_level,
            "onnxedge": {**{k: getattr(contract, k) for k in _CONTRACT_KEYS}, **contract.extra},
            "missing_metadata": list(contract.missing),
            "other_metadata": {k: v for k, v in self.metadata.items() if k[:9] != "onnxedge."},
            "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        shape = f"features={self.num_features}, classes={self.num_classes}"
        return f"Predictor({self.label!r}, provider={self.provider!r}, {shape})"


@functools.lru_cache(maxsize=1)
def _installed_distributions() -> list[str]:
    return _providers.installed_ort_distributions()


def _count(name: str, value: Any, or_none: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputValueError(f"{name} must be an integer >= 1{or_none}; got {value!r}")
    return int(value)


def _describe_node(node: Any) -> dict[str, Any]:
    return {"name": node.name, "type": node.type, "shape": node.shape and list(node.shape)}
