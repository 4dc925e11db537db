"""Parity: does the exported model compute what PyTorch and the numpy reference compute?

Three independent computations run on the same labelled rows:

``onnx``
    onnxruntime (CPU) on the ``.onnx`` file, exactly as a device runs it.
``torch``
    the PyTorch head module (:class:`onnxedge.export.heads.ClassifierWithHead`). With a run
    folder it is rebuilt from the run's own weights, so a weight changed in the file shows
    up; without one it is rebuilt from the graph's initializers and then checks only the
    graph's arithmetic, not where its weights came from.
``reference``
    the float64 numpy forward pass (:mod:`onnxedge.models.reference`) from the weights and
    standardization constants *read out of the ONNX initializers* (:func:`read_graph`),
    never from torch.

At each batch size (1, an odd size and the whole set) every pair is compared on logits
and probabilities (max abs and max rel error), labels (agreement, exact ties excused),
and the mean loss (cross-entropy / BCE: from the ONNX logits, ``nn.CrossEntropyLoss`` /
``nn.BCEWithLogitsLoss`` on the torch logits, and the reference). Each computation is
checked for NaN / Inf and for probabilities that lie in [0, 1] (and sum to 1 for softmax),
and the model's metadata for the digests and normalization it promises. Every check has
a tolerance named in :mod:`onnxedge.runtime.tolerances`; a report lists every failing
check at once and :meth:`ParityReport.raise_for_failures` raises :class:`ParityError`
with all of them.

The limits follow float32 arithmetic rather than a fixed figure, so that extreme inputs
(features 1e3 times their training range) are judged fairly:

- a logit may differ by ``LOGIT_ATOL + LOGIT_RTOL * m``, where ``m`` is the magnitude of the
  terms summed into it (the forward pass on absolute values, :func:`logit_magnitudes`):
  float32 rounding is relative to those terms, not to a logit that cancels to near 0;
- a probability may differ by ``PROBABILITY_ATOL + g * d``, where ``d`` is the row's
  largest logit difference *measured* between the same two computations (credited only
  up to the row's logit limit, so wrong logits do not excuse wrong probabilities) and
  ``g`` the head's Lipschitz constant (:data:`HEAD_LIPSCHITZ`). On ordinary data ``d`` is
  ~1e-6 and this is close to the plain ``PROBABILITY_ATOL`` bar; the ``head`` check
  compares the graph's probabilities with the reference head on the graph's own logits
  at ``PROBABILITY_ATOL`` alone;
- a label may differ only on a row whose reference decision margin (top-2 probability
  gap, or distance to the threshold) is within ``LABEL_TIE_ATOL + 2 * g * d``: a tie.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.runtime import tolerances as tol
from onnxedge.export.atomic import atomic_file
from onnxedge.runtime.contract import (
    INPUT_NAME,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_NORMALIZATION,
    KEY_WEIGHTS_SHA256,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    InputShapeError,
    ModelLoadError,
    ParityError,
)

if TYPE_CHECKING:
    import onnx
    import torch
    from onnxedge.models.checkpoint import TrainedRun

COMPUTATIONS: tuple[str, ...] = ("onnx", "torch", "reference")
#: Every pair is compared; the second of each pair is the one relative errors divide by.
PAIRS: tuple[tuple[str, str], ...] = (
    ("onnx", "torch"),
    ("onnx", "reference"),
    ("torch", "reference"),
)
#: The odd batch size: not a power of two, so a batch baked into the graph or a kernel
#: that mishandles a remainder shows up.
ODD_BATCH_SIZE = 37
#: Batch size 1 runs one row at a time; on large datasets only this many leading rows.
DEFAULT_SINGLE_ROW_LIMIT = 1000

_TINY32 = float(np.finfo(np.float32).tiny)

#: max over inputs of ||d probabilities / d logits||, infinity norm: softmax's Jacobian
#: diag(p) - p p^T moves p_i by at most 2 p_i (1 - p_i) max|dz| <= max|dz| / 2; sigmoid's
#: derivative p (1 - p) is at most 1/4.
HEAD_LIPSCHITZ: dict[str, float] = {"softmax": 0.5, "sigmoid": 0.25}


def pair_name(pair: tuple[str, str]) -> str:
    """``("onnx", "torch")`` -> ``"onnx~torch"``, the form reports and check names use."""
    return f"{pair[0]}~{pair[1]}"


# --- reading the graph -----------------------------------------------------------------


@dataclass
class GraphContents:
    """The MLP read back out of an exported graph's initializers.

    Attributes:
        weights: ``hidden.{i}.weight`` ``(out, in)``, ``hidden.{i}.bias``, ``output.weight``,
            ``output.bias``, float32, in the layout :func:`onnxedge.models.reference.forward`
            takes (transposed back where the graph stores ``(in, out)``).
        normalization: ``{"mean", "std"}`` float32 ``(features,)``, or None when the
            graph feeds its input straight to the first layer.
        num_features: the input's feature count.
        head: ``softmax`` or ``sigmoid``: the op that produces ``probabilities``.
        initializer_names: parameter key -> the initializer it was read from.
    """

    weights: dict[str, np.ndarray]
    normalization: dict[str, np.ndarray] | None
    num_features: int
    head: str | None
    initializer_names: dict[str, str] = field(default_factory=dict)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each hidden layer."""
        n_hidden = sum(1 for k in self.weights if k.startswith("hidden.") and k.endswith(".weight"))
        return tuple(int(self.weights[f"hidden.{i}.weight"].shape[0]) for i in range(n_hidden))

    @property
    def output_size(self) -> int:
        """Logits per row."""
        return int(self.weights["output.weight"].shape[0])


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file with its weights.

    Raises:
        ModelLoadError: the file is missing, empty or not a readable ONNX model.
    """
    import onnx

    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"model {file} does not exist")
    if file.stat().st_size == 0:
        raise ModelLoadError(f"model {file} is empty")
    try:
        return onnx.load(str(file))
    except Exception as exc:  # protobuf raises its own DecodeError, onnx ValueError / OSError
        raise ModelLoadError(f"cannot read {file} as ONNX: {exc}") from None


def graph_weights_sha256(model: onnx.ModelProto) -> str:
    """sha256 over every initializer's name, dtype, shape and little-endian bytes, by name.

    Stable across save / load and independent of metadata, so export can record it and
    verify can recompute it: any edited weight or constant changes it.
    """
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(tensor.name.encode())
        digest.update(f"|{little.dtype.str}|{list(array.shape)}|".encode())
        digest.update(little.tobytes())
    return digest.hexdigest()


def read_graph(model: onnx.ModelProto) -> GraphContents:
    """Read the standardization constants and the MLP's weights out of an exported graph.

    The graph is walked from ``input``: ``Sub(mean)`` -> ``Div(std)`` (or ``Mul(1/std)``)
    -> dense layers (``Gemm``, or ``MatMul`` + ``Add``) separated by ``Relu`` -> the layer
    that produces ``logits``. Layers are named by position (``hidden.0``, ...,
    ``output``); where initializer names carry the module path (both torch exporters name
    them ``net.hidden.0.weight`` ...), they must agree with that position.

    Raises:
        ModelLoadError: the graph is not a standardize -> MLP -> head graph.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list[Any]] = {}
    producers: dict[str, Any] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node

    def fail(message: str) -> ModelLoadError:
        return ModelLoadError(f"cannot read the MLP out of the graph: {message}")

    def only_consumer(name: str) -> Any:
        found = consumers.get(name, [])
        if len(found) != 1:
            ops = ", ".join(n.op_type for n in found) or "nothing"
            raise fail(f"{name!r} should feed exactly one node, feeds {ops}")
        return found[0]

    def constant(node: Any, position: int) -> np.ndarray:
        if len(node.input) <= position or node.input[position] not in constants:
            raise fail(f"{node.op_type} node {node.name!r} has no constant input {position}")
        return np.asarray(constants[node.input[position]], dtype=np.float32)

    inputs = [i for i in graph.input if i.name not in constants]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise fail(f"expected one graph input {INPUT_NAME!r}, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise fail(f"input {INPUT_NAME!r} must be [batch, features] with a fixed feature count")
    num_features = int(dims[1].dim_value)

    current = INPUT_NAME
    node = only_consumer(current)
    normalization: dict[str, np.ndarray] | None = None
    if node.op_type == "Sub":
        mean = constant(node, 1)
        current = node.output[0]
        node = only_consumer(current)
        if node.op_type == "Div":
            std = constant(node, 1)
        elif node.op_type == "Mul":
            std = (1.0 / constant(node, 1).astype(np.float64)).astype(np.float32)
        else:
            raise fail(f"expected Div or Mul after the input's Sub, found {node.op_type}")
        normalization = {
            "mean": np.broadcast_to(mean, (num_features,)).copy(),
            "std": np.broadcast_to(std, (num_features,)).copy(),
        }
        current = node.output[0]
        node = only_consumer(current)

    layers: list[tuple[np.ndarray, np.ndarray, str]] = []
    while True:
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("transA") is not None and attrs["transA"].i != 0:
                raise fail(f"Gemm {node.name!r} transposes its input")
            for scale in ("alpha", "beta"):
                if scale in attrs and attrs[scale].f != 1.0:
                    raise fail(f"Gemm {node.name!r} has {scale}={attrs[scale].f}, expected 1")
            stored = constant(node, 1)
            trans_b = attrs["transB"].i if "transB" in attrs else 0
            weight = stored if trans_b else stored.T  # -> (out, in)
            bias = constant(node, 2) if len(node.input) > 2 and node.input[2] else None
            weight_name = node.input[1]
            current = node.output[0]
        elif node.op_type == "MatMul":
            weight = constant(node, 1).T  # MatMul stores (in, out)
            weight_name = node.input[1]
            current = node.output[0]
            add = only_consumer(current)
            if add.op_type != "Add":
                raise fail(f"expected Add after MatMul {node.name!r}, found {add.op_type}")
            other = 1 if add.input[0] == current else 0
            bias = constant(add, other)
            current = add.output[0]
        else:
            raise fail(f"expected a dense layer (Gemm or MatMul), found {node.op_type}")
        if bias is None:
            bias = np.zeros(weight.shape[0], np.float32)
        layers.append(
            (
                np.ascontiguousarray(weight),
                np.broadcast_to(bias, weight.shape[:1]).copy(),
                weight_name,
            )
        )
        if current == OUTPUT_LOGITS:
            break
        node = only_consumer(current)
        if node.op_type != "Relu":
            raise fail(f"expected Relu between dense layers, found {node.op_type}")
        node = only_consumer(node.output[0])

    keys = [f"hidden.{i}" for i in range(len(layers) - 1)] + ["output"]
    weights: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for key, (weight, bias, weight_name) in zip(keys, layers, strict=True):
        named = "hidden." in weight_name or "output." in weight_name
        if named and not weight_name.endswith(f"{key}.weight"):
            raise fail(f"layer {key} reads initializer {weight_name!r}: names and order disagree")
        weights[f"{key}.weight"] = weight
        weights[f"{key}.bias"] = bias
        names[f"{key}.weight"] = weight_name

    probabilities = producers.get(OUTPUT_PROBABILITIES)
    head = {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(
        probabilities.op_type if probabilities is not None else ""
    )
    return GraphContents(weights, normalization, num_features, head, names)


# --- the report --------------------------------------------------------------------------


@dataclass
class Check:
    """One comparison with its tolerance.

    Attributes:
        name: what is checked (``logits``, ``probabilities``, ``labels``, ``loss``,
            ``finite``, ``probability_range``, ``head``, ``label_rule``, ``signature``,
            ``normalization``, ``weights_sha256``, ``graph_weights_sha256``, ``threshold``).
        subject: the pair (``onnx~torch``) or computation (``onnx``) it applies to, or "".
        batch_size: the batch size the computations ran at, or None for whole-model checks.
        value: the measured figure (max error, count of bad rows, ...).
        limit: the largest value that passes.
        tolerance: the name(s) of the limit in :mod:`onnxedge.runtime.tolerances`, or
            ``exact``.
        passed: value within limit.
        detail: one line saying what was measured, for the failure list.
    """

    name: str
    subject: str
    batch_size: int | None
    value: float
    limit: float
    tolerance: str
    passed: bool
    detail: str

    def __post_init__(self) -> None:
        # numpy scalars in, plain JSON-able Python values out
        self.value = float(self.value)
        self.limit = float(self.limit)
        self.passed = bool(self.passed)

    @property
    def label(self) -> str:
        """``logits onnx~torch batch=37``: how the check is named in a failure list."""
        parts = [self.name]
        if self.subject:
            parts.append(self.subject)
        if self.batch_size is not None:
            parts.append(f"batch={self.batch_size}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "check": self.label,
            "name": self.name,
            "subject": self.subject,
            "batch_size": self.batch_size,
            "value": _finite_or_str(self.value),
            "limit": _finite_or_str(self.limit),
            "tolerance": self.tolerance,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class ParityReport:
    """What :func:`verify_model` measured, and whether every check passed.

    Attributes:
        model: the model file verified.
        run: the run folder the torch module came from, or None.
        data: where the labelled rows came from.
        rows: how many rows.
        task, head, threshold: what the model computes.
        torch_source: ``run`` (the run's weights) or ``onnx`` (the graph's initializers).
        batch_sizes: the batch sizes every computation ran at.
        checks: every check, passed or not.
        errors: ``{batch: {pair: {output: {"max_abs", "max_rel"}}}}``.
        losses: ``{batch: {computation: mean loss}}``.
        accuracy: accuracy of each computation on the whole set.
        label_agreement: ``{batch: {pair: share of rows with the same label}}``.
        ties: the most rows excused from label agreement in any pair and batch size
            (ties, see the module docstring).
        tolerances: the named tolerances in force.
        seconds: wall time of the verification.
    """

    model: str
    run: str | None
    data: str
    rows: int
    task: str
    head: str
    threshold: float
    torch_source: str
    batch_sizes: list[int]
    checks: list[Check]
    errors: dict[int, dict[str, dict[str, dict[str, float]]]]
    losses: dict[int, dict[str, float]]
    accuracy: dict[str, float]
    label_agreement: dict[int, dict[str, float]]
    ties: int
    tolerances: dict[str, float]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        """Every failing check, one line each: ``label: detail``."""
        return [f"{c.label}: {c.detail}" for c in self.checks if not c.passed]

    def max_error(self, output: str, kind: str = "max_abs", pair: str | None = None) -> float:
        """The largest error on ``output`` over batch sizes (and pairs, unless one is named)."""
        values = [
            figures[output][kind]
            for by_pair in self.errors.values()
            for name, figures in by_pair.items()
            if pair is None or name == pair
        ]
        return max(values) if values else float("nan")

    def max_loss_rel_diff(self) -> float:
        """The largest relative difference between two computations' losses."""
        diffs = [_rel(losses[a], losses[b]) for losses in self.losses.values() for a, b in PAIRS]
        return max(diffs) if diffs else float("nan")

    def min_label_agreement(self) -> float:
        """The lowest label agreement over pairs and batch sizes."""
        rates = [r for by_pair in self.label_agreement.values() for r in by_pair.values()]
        return min(rates) if rates else float("nan")

    def summary(self) -> dict[str, Any]:
        """The compact figures export records in ``onnxedge.parity``."""
        full = self.batch_sizes[-1]
        return _jsonable(
            {
                "passed": self.passed,
                "data": self.data,
                "rows": self.rows,
                "batch_sizes": self.batch_sizes,
                "torch_source": self.torch_source,
                "max_abs_error": {o: _sig(self.max_error(o)) for o in ("logits", "probabilities")},
                "max_rel_error": {
                    o: _sig(self.max_error(o, "max_rel")) for o in ("logits", "probabilities")
                },
                "loss": {k: _sig(v) for k, v in self.losses[full].items()},
                "loss_max_rel_diff": _sig(self.max_loss_rel_diff()),
                "label_agreement": self.min_label_agreement(),
                "ties": self.ties,
                "accuracy": dict(self.accuracy),
                "checks": len(self.checks),
                "failed": len(self.failures),
                "tolerances": self.tolerances,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The full report, JSON-ready (non-finite figures become strings like ``"inf"``)."""
        return _jsonable(
            {
                "model": self.model,
                "run": self.run,
                "data": self.data,
                "rows": self.rows,
                "task": self.task,
                "head": self.head,
                "threshold": self.threshold,
                "torch_source": self.torch_source,
                "passed": self.passed,
                "failures": self.failures,
                "summary": self.summary(),
                "batch_sizes": self.batch_sizes,
                "errors": {str(b): v for b, v in self.errors.items()},
                "losses": {str(b): v for b, v in self.losses.items()},
                "accuracy": self.accuracy,
                "label_agreement": {str(b): v for b, v in self.label_agreement.items()},
                "ties": self.ties,
                "tolerances": self.tolerances,
                "checks": [c.to_dict() for c in self.checks],
                "seconds": round(self.seconds, 3),
            }
        )

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (temp file, then rename).

        Raises:
            OnnxEdgeError: the folder cannot be written (as :class:`DataError`).
        """
        return write_json_atomic(path, self.to_dict())

    def render_table(self) -> str:
        """A compact text table: worst error per quantity and pair over batch sizes,
        losses and accuracies, then every failing check."""
        pairs = [pair_name(p) for p in PAIRS]
        full = self.batch_sizes[-1]
        lines = [
            f"parity of {self.model}: {self.rows} rows ({self.data}), {self.head} head, "
            f"torch from {self.torch_source}, batch sizes {', '.join(map(str, self.batch_sizes))}",
            f"{'':24}" + "".join(f"{p:>20}" for p in pairs) + "   limit",
        ]

        def row(title: str, values: Iterable[float], limit: str) -> None:
            lines.append(f"{title:24}" + "".join(f"{_fmt(v):>20}" for v in values) + f"   {limit}")

        row(
            "logits max abs",
            (self.max_error("logits", pair=p) for p in pairs),
            f"{tol.LOGIT_ATOL:g} + {tol.LOGIT_RTOL:g}*magnitude",
        )
        row("logits max rel", (self.max_error("logits", "max_rel", p) for p in pairs), "")
        row(
            "probabilities max abs",
            (self.max_error("probabilities", pair=p) for p in pairs),
            f"{tol.PROBABILITY_ATOL:g} + g*logit diff",
        )
        row(
            "probabilities max rel",
            (self.max_error("probabilities", "max_rel", p) for p in pairs),
            "(reported)",
        )
        row(
            "loss rel diff",
            (max(_rel(ls[a], ls[b]) for ls in self.losses.values()) for a, b in PAIRS),
            f"{tol.LOSS_RTOL:g} (+{tol.LOSS_ATOL:g} abs)",
        )
        lines.append(
            f"{'label agreement':24}"
            + "".join(f"{min(v[p] for v in self.label_agreement.values()):>20.2%}" for p in pairs)
            + f"   100% ({self.ties} tie{'s' if self.ties != 1 else ''} excused)"
        )
        lines.append(f"{'':24}" + "".join(f"{c:>20}" for c in COMPUTATIONS))
        loss_name = "cross-entropy" if self.head == "softmax" else "BCE"
        lines.append(
            f"{loss_name:24}" + "".join(f"{self.losses[full][c]:>20.7f}" for c in COMPUTATIONS)
        )
        lines.append(
            f"{'accuracy':24}" + "".join(f"{self.accuracy[c]:>20.4f}" for c in COMPUTATIONS)
        )
        failed = self.failures
        lines.append(
            f"{len(self.checks) - len(failed)} of {len(self.checks)} checks passed"
            + ("" if not failed else f"; {len(failed)} FAILED:")
        )
        lines.extend(f"  FAIL {f}" for f in failed)
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ParityError` naming every failing check, if any failed."""
        failed = self.failures
        if failed:
            raise ParityError(
                f"{self.model} failed {len(failed)} parity check{'s' if len(failed) != 1 else ''}: "
                + "; ".join(failed),
                failures=failed,
            )


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` via a temp file in the same folder.

    Raises:
        DataError: ``path`` is a folder, or its folder cannot be created or written.
    """
    with atomic_file(path, overwrite=True, error=DataError) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


# --- the computations ---------------------------------------------------------------------


@dataclass
class Outputs:
    """One computation's outputs on all rows: logits and probabilities as float64 copies
    (float32 values for onnx / torch), labels int64 ``(n,)``."""

    logits: np.ndarray
    probabilities: np.ndarray
    label: np.ndarray

    def head_rows(self, n: int) -> Outputs:
        """The first ``n`` rows."""
        return Outputs(self.logits[:n], self.probabilities[:n], self.label[:n])


#: A computation on one batch: raw features -> (logits, probabilities, label).
Runner = Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _in_batches(
    fn: Runner,
    x: np.ndarray,
    batch_size: int,
) -> Outputs:
    parts = [fn(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    return Outputs(
        np.concatenate([p[0] for p in parts]).astype(np.float64),
        np.concatenate([p[1] for p in parts]).astype(np.float64),
        np.concatenate([p[2] for p in parts]).astype(np.int64),
    )


def _onnx_runner(model_bytes: bytes) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
        raise ModelLoadError(f"onnxruntime cannot load the model: {exc}") from None

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}))

    return run


def _torch_runner(module: torch.nn.Module) -> Runner:
    import torch

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(np.ascontiguousarray(x)))
        return tuple(o.numpy() for o in outputs)

    return run


def _reference(graph: GraphContents, x: np.ndarray, head: str, threshold: float) -> Outputs:
    from onnxedge.models import reference

    logits = reference.forward(graph.weights, x, normalization=graph.normalization)
    probabilities = reference.predict_proba(logits, head)
    return Outputs(logits, probabilities, reference.predict_label(probabilities, head, threshold))


def _losses(outputs: dict[str, Outputs], y: np.ndarray, head: str) -> dict[str, float]:
    """Mean loss of each computation: onnx and reference in float64 numpy from their
    logits (stable forms), torch with its own loss module on its float32 logits."""
    import torch
    from onnxedge.models import reference
    from torch import nn

    torch_logits = torch.from_numpy(outputs["torch"].logits.astype(np.float32))
    if head == "softmax":
        torch_loss = nn.CrossEntropyLoss()(torch_logits, torch.from_numpy(y))

        def numpy_loss(logits: np.ndarray) -> float:
            return float(reference.cross_entropy(logits, y))
    else:
        target = y.astype(np.float64)[:, None]  # (n, 1), like the logits
        torch_loss = nn.BCEWithLogitsLoss()(
            torch_logits, torch.from_numpy(target.astype(np.float32))
        )

        def numpy_loss(logits: np.ndarray) -> float:
            return float(reference.binary_cross_entropy_with_logits(logits, target))

    return {
        "onnx": numpy_loss(outputs["onnx"].logits),
        "torch": float(torch_loss),
        "reference": numpy_loss(outputs["reference"].logits),
    }


def decision_margins(reference_p: np.ndarray, head: str, threshold: float) -> np.ndarray:
    """How far each row is from changing label, in probability: the gap between the top two
    probabilities (softmax) or between the probability and the threshold (sigmoid)."""
    if head == "softmax":
        if reference_p.shape[1] < 2:
            return np.full(len(reference_p), np.inf)
        top2 = np.sort(reference_p, axis=1)[:, -2:]
        return np.asarray(top2[:, 1] - top2[:, 0])
    return np.asarray(np.abs(reference_p[:, 0] - threshold))


def logit_magnitudes(graph: GraphContents, x: np.ndarray) -> np.ndarray:
    """``(n, logits)``: the forward pass on absolute values, ``|W| @ m + |b|`` layer by layer
    from ``(|x| + |mean|) / std``: the size of the terms each logit sums, which float32
    rounding error is proportional to (a logit that cancels to ~0 still carries it)."""
    m = np.abs(x.astype(np.float64))
    if graph.normalization is not None:
        mean = np.abs(graph.normalization["mean"].astype(np.float64))
        m = (m + mean) / graph.normalization["std"].astype(np.float64)
    # Layer order, not text order ("hidden.10" sorts before "hidden.2").
    keys = [f"hidden.{i}" for i in range(len(graph.hidden_sizes))] + ["output"]
    for key in keys:
        m = m @ np.abs(graph.weights[f"{key}.weight"].astype(np.float64)).T + np.abs(
            graph.weights[f"{key}.bias"].astype(np.float64)
        )
    return np.asarray(m)


# --- verification -----------------------------------------------------------------------


def verify_model(
    model_path: str | os.PathLike[str],
    *,
    run_dir: str | os.PathLike[str] | TrainedRun | None = None,
    dataset: str | os.PathLike[str] | None = None,
    label_column: str | int | None = None,
    labels_path: str | os.PathLike[str] | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    batch_sizes: Sequence[int] | None = None,
    single_row_limit: int = DEFAULT_SINGLE_ROW_LIMIT,
    name: str | None = None,
) -> ParityReport:
    """Run labelled rows through onnxruntime, PyTorch and the numpy reference and compare.

    The rows are, first that applies: ``data``; ``dataset``; the run's validation split.

    Args:
        model_path: the exported ``.onnx`` file.
        run_dir: the run folder the model was exported from (or the loaded run). The torch
            module is then built from the run's weights and the model's metadata is checked
            against the run (weights sha256, normalization). Without it the torch module is
            rebuilt from the graph's initializers and ``dataset`` or ``data`` is required.
        dataset: a bundled dataset name or a labelled data file
            (:func:`onnxedge.models.data.load_dataset`); its classes are matched to the
            model's by name.
        label_column, labels_path: passed to ``load_dataset`` with ``dataset``.
        data: raw features ``(n, f)`` and labels ``(n,)`` (class indices of the model).
        batch_sizes: the batch sizes to run at; default 1, ``ODD_BATCH_SIZE`` and all rows.
            Sizes above the row count are clamped to it.
        single_row_limit: batch size 1 runs over at most this many leading rows.
        name: how the report names the model (default: ``model_path``).

    Returns:
        The report; check ``passed`` or call ``raise_for_failures()``.

    Raises:
        ModelLoadError: the model cannot be read, lacks the ``input`` / ``logits`` /
            ``probabilities`` / ``label`` signature, or is not a standardize -> MLP graph.
        CheckpointError: the run folder cannot be loaded, or its net does not match the
            model's task or shapes.
        DataError: no labelled data was given, or labels name classes the model lacks.
        InputShapeError: the data's feature count differs from the model's.
    """
    started = time.perf_counter()
    model = load_onnx(model_path)
    props = {p.key: p.value for p in model.metadata_props}
    contract = ModelContract.from_metadata(props)
    graph = read_graph(model)
    checks: list[Check] = []
    _check_signature(model, checks)

    head = contract.head if contract.head in ("softmax", "sigmoid") else graph.head
    if head not in ("softmax", "sigmoid"):
        raise ModelLoadError(
            f"{model_path}: cannot tell the head (metadata says {contract.head!r}, the graph "
            "makes probabilities with neither Softmax nor Sigmoid)"
        )
    checks.append(
        _exact(
            "head", "", graph.head == head, f"metadata says {head}, the graph computes {graph.head}"
        )
    )
    threshold = float(contract.threshold)
    task = "multiclass" if head == "softmax" else "binary"
    class_names = contract.class_names
    num_classes = (
        len(class_names) if class_names else (graph.output_size if task == "multiclass" else 2)
    )

    run = _as_run(run_dir)
    module = _torch_module(run, graph, head, threshold, task, num_classes)
    _metadata_checks(props, model, graph, run, checks)

    x, y, data_name = _labelled_rows(
        data, dataset, label_column, labels_path, run, class_names, graph.num_features
    )
    n = len(x)
    if n == 0:
        raise DataError(f"no rows to verify {model_path} on ({data_name})")
    sizes = sorted({max(1, min(int(b), n)) for b in (batch_sizes or (1, ODD_BATCH_SIZE, n))})

    onnx_run = _onnx_runner(model.SerializeToString())
    torch_run = _torch_runner(module)
    reference_all = _reference(graph, x, head, threshold)
    margins_all = decision_margins(reference_all.probabilities, head, threshold)
    magnitudes_all = logit_magnitudes(graph, x)
    most_ties = 0

    errors: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
    losses: dict[int, dict[str, float]] = {}
    agreement: dict[int, dict[str, float]] = {}
    full_outputs: dict[str, Outputs] = {}
    for batch in sizes:
        rows = min(n, single_row_limit) if batch == 1 else n
        outputs = {
            "onnx": _in_batches(onnx_run, x[:rows], batch),
            "torch": _in_batches(torch_run, x[:rows], batch),
            "reference": reference_all.head_rows(rows),
        }
        y_b = y[:rows]
        bounds = _Bounds(head, magnitudes_all[:rows], margins_all[:rows])
        errors[batch] = {}
        agreement[batch] = {}
        for computation in ("onnx", "torch"):
            checks.extend(_sanity_checks(outputs[computation], computation, batch, head, threshold))
        checks.append(_head_check(outputs["onnx"], batch, head))
        for pair in PAIRS:
            a, b = outputs[pair[0]], outputs[pair[1]]
            pname = pair_name(pair)
            figures, pair_checks, ties = _compare_pair(a, b, pname, batch, bounds)
            most_ties = max(most_ties, ties)
            errors[batch][pname] = figures
            checks.extend(pair_checks)
            agreement[batch][pname] = float(np.mean(a.label == b.label))
        losses[batch] = _losses(outputs, y_b, head)
        checks.extend(_loss_checks(losses[batch], batch, head))
        if batch == sizes[-1]:
            full_outputs = outputs

    # The largest batch size ran every row unless it is 1 (capped at single_row_limit).
    accuracy = {
        c: float(np.mean(full_outputs[c].label == y[: len(full_outputs[c].label)]))
        for c in COMPUTATIONS
    }
    run_path = str(run.path) if run is not None else None
    return ParityReport(
        model=name or str(model_path),
        run=run_path,
        data=data_name,
        rows=n,
        task=task,
        head=head,
        threshold=threshold,
        torch_source="run" if run is not None else "onnx",
        batch_sizes=sizes,
        checks=checks,
        errors=errors,
        losses=losses,
        accuracy=accuracy,
        label_agreement=agreement,
        ties=most_ties,
        tolerances=tolerances_in_force(),
        seconds=time.perf_counter() - started,
    )


def tolerances_in_force() -> dict[str, float]:
    """The named tolerances verification applies, by name."""
    names = (
        "LOGIT_ATOL",
        "LOGIT_RTOL",
        "PROBABILITY_ATOL",
        "PROBABILITY_SUM_ATOL",
        "LOSS_RTOL",
        "LOSS_ATOL",
        "LABEL_TIE_ATOL",
    )
    return {n: float(getattr(tol, n)) for n in names}


def _as_run(run_dir: str | os.PathLike[str] | TrainedRun | None) -> TrainedRun | None:
    from onnxedge.models.checkpoint import TrainedRun, load_run

    if run_dir is None or isinstance(run_dir, TrainedRun):
        return run_dir
    return load_run(run_dir)


def _torch_module(
    run: TrainedRun | None,
    graph: GraphContents,
    head: str,
    threshold: float,
    task: str,
    num_classes: int,
) -> torch.nn.Module:
    """The PyTorch head module: from the run's weights, or rebuilt from the graph's."""
    import torch
    from onnxedge.export.heads import ClassifierWithHead, HeadSpec
    from onnxedge.models.checkpoint import Normalization
    from onnxedge.models.nets import NetConfig, build_net

    spec = HeadSpec(head, threshold)
    if run is not None:
        if run.task != task:
            raise CheckpointError(
                f"run {run.path} trained a {run.task} net; the model has a {head} head ({task})"
            )
        if run.config.input_size != graph.num_features:
            raise CheckpointError(
                f"run {run.path} reads {run.config.input_size} features; the model reads "
                f"{graph.num_features}"
            )
        return ClassifierWithHead(run.net, run.normalization, spec).eval()
    config = NetConfig(task, graph.num_features, graph.hidden_sizes, num_classes)
    net = build_net(config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in graph.weights.items()}
    if expected != found:
        raise ModelLoadError(f"the graph's layers {found} do not form the {task} net {expected}")
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in graph.weights.items()})
    if graph.normalization is not None:
        normalization = Normalization(graph.normalization["mean"], graph.normalization["std"])
    else:
        normalization = Normalization(
            np.zeros(graph.num_features, np.float32), np.ones(graph.num_features, np.float32)
        )
    return ClassifierWithHead(net.eval(), normalization, spec).eval()


def _labelled_rows(
    data: tuple[np.ndarray, np.ndarray] | None,
    dataset: str | os.PathLike[str] | None,
    label_column: str | int | None,
    labels_path: str | os.PathLike[str] | None,
    run: TrainedRun | None,
    class_names: list[str] | None,
    num_features: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    if data is not None:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        description = f"given arrays, {len(x)} rows"
    elif dataset is not None:
        from onnxedge.models.data import load_dataset

        ds = load_dataset(dataset, label_column=label_column, labels_path=labels_path)
        description = f"dataset {ds.name}"
        _check_width(ds.features, num_features, description)
        x, y = ds.features, _labels_for(ds.labels, ds.class_names, class_names, ds.name)
    elif run is not None:
        x, y = run.validation()
        description = f"validation split of {run.path}"
    else:
        raise DataError(
            "verify needs labelled rows: pass --run RUN_DIR (its validation split) "
            "or --dataset NAME_OR_FILE"
        )
    _check_width(x, num_features, description)
    if y.shape != (x.shape[0],):
        raise DataError(f"{description}: labels have shape {y.shape}, expected ({x.shape[0]},)")
    classes = len(class_names) if class_names else None
    if classes is not None and y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{description}: labels must be class indices 0..{classes - 1}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), description


def _check_width(x: np.ndarray, num_features: int, description: str) -> None:
    if x.ndim != 2 or x.shape[1] != num_features:
        raise InputShapeError(
            f"the model reads {num_features} features; {description} has shape {x.shape}"
        )


def _labels_for(
    labels: np.ndarray, data_classes: list[str], model_classes: list[str] | None, name: str
) -> np.ndarray:
    """Map a dataset's label indices onto the model's classes, by class name."""
    if model_classes is None or list(data_classes) == list(model_classes):
        return labels
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise DataError(
            f"dataset {name} has classes the model does not know: {unknown}; "
            f"the model's classes are {model_classes}"
        )
    return np.asarray([index[c] for c in data_classes], dtype=np.int64)[labels]


# --- the checks -------------------------------------------------------------------------


def _exact(name: str, subject: str, ok: bool, detail: str) -> Check:
    return Check(name, subject, None, 0.0 if ok else 1.0, 0.0, "exact", ok, detail)


def _check_signature(model: onnx.ModelProto, checks: list[Check]) -> None:
    """The contract's graph names, dtypes and a symbolic batch axis on every output."""
    from onnx import TensorProto

    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    outputs = {o.name: o for o in graph.output}
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if [i.name for i in inputs] != [INPUT_NAME] or missing:
        raise ModelLoadError(
            f"the model's signature is inputs {[i.name for i in inputs]}, outputs "
            f"{list(outputs)}; expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}"
        )
    problems = []
    wanted = {
        INPUT_NAME: TensorProto.FLOAT,
        OUTPUT_LOGITS: TensorProto.FLOAT,
        OUTPUT_PROBABILITIES: TensorProto.FLOAT,
        OUTPUT_LABEL: TensorProto.INT64,
    }
    for value in [inputs[0], *(outputs[n] for n in OUTPUT_NAMES)]:
        tensor = value.type.tensor_type
        if tensor.elem_type != wanted[value.name]:
            problems.append(
                f"{value.name} has type {TensorProto.DataType.Name(tensor.elem_type)}, expected "
                f"{TensorProto.DataType.Name(wanted[value.name])}"
            )
        dims = tensor.shape.dim
        if dims and dims[0].HasField("dim_value"):
            problems.append(f"{value.name} has a fixed batch size {dims[0].dim_value}")
    checks.append(_exact("signature", "", not problems, "; ".join(problems) or "ok"))


def _metadata_checks(
    props: dict[str, str],
    model: onnx.ModelProto,
    graph: GraphContents,
    run: TrainedRun | None,
    checks: list[Check],
) -> None:
    recorded = props.get(KEY_GRAPH_WEIGHTS_SHA256)
    if recorded is not None:
        actual = graph_weights_sha256(model)
        checks.append(
            _exact(
                "graph_weights_sha256",
                "",
                actual == recorded,
                f"the graph's initializers hash to {actual[:12]}..., export recorded "
                f"{recorded[:12]}... (a weight or constant was changed after export)",
            )
        )
    if KEY_NORMALIZATION in props:
        # Metadata that promises standardization the graph lacks fails too.
        try:
            meta = json.loads(props[KEY_NORMALIZATION])
            same = graph.normalization is not None and all(
                np.array_equal(np.asarray(meta[k], np.float32), graph.normalization[k])
                for k in ("mean", "std")
            )
        except (ValueError, KeyError, TypeError):
            same = False
        checks.append(
            _exact(
                "normalization",
                "metadata~graph",
                same,
                "the metadata's mean/std differ from the graph's constants",
            )
        )
    if run is not None:
        if graph.normalization is not None:
            same = all(
                np.array_equal(getattr(run.normalization, k), graph.normalization[k])
                for k in ("mean", "std")
            )
            checks.append(
                _exact(
                    "normalization",
                    "run~graph",
                    same,
                    f"the graph's mean/std differ from {run.path}'s",
                )
            )
        recorded_weights = props.get(KEY_WEIGHTS_SHA256)
        if recorded_weights is not None:
            checks.append(
                _exact(
                    "weights_sha256",
                    "run~metadata",
                    recorded_weights == run.weights_sha256,
                    f"the model was exported from weights {recorded_weights[:12]}..., "
                    f"{run.path} holds {run.weights_sha256[:12]}...",
                )
            )


def _sanity_checks(
    out: Outputs, computation: str, batch: int, head: str, threshold: float
) -> list[Check]:
    from onnxedge.models import reference

    bad = int((~np.isfinite(out.logits)).sum() + (~np.isfinite(out.probabilities)).sum())
    checks = [
        Check(
            "finite",
            computation,
            batch,
            bad,
            0,
            "exact",
            bad == 0,
            f"{bad} NaN/Inf values in logits and probabilities",
        )
    ]
    p = out.probabilities
    outside = int(np.sum(~((p >= 0) & (p <= 1))))
    if head == "softmax":
        worst = float(np.max(np.abs(p.sum(axis=1) - 1))) if len(p) else 0.0
        ok = outside == 0 and worst <= tol.PROBABILITY_SUM_ATOL
        checks.append(
            Check(
                "probability_range",
                computation,
                batch,
                worst,
                tol.PROBABILITY_SUM_ATOL,
                "PROBABILITY_SUM_ATOL",
                ok,
                f"rows sum to 1 within {_fmt(worst)} (limit {tol.PROBABILITY_SUM_ATOL:g}); "
                f"{outside} values outside [0, 1]",
            )
        )
    else:
        checks.append(
            Check(
                "probability_range",
                computation,
                batch,
                outside,
                0,
                "exact",
                outside == 0,
                f"{outside} probabilities outside [0, 1]",
            )
        )
    # the label output follows from the same computation's probabilities, by the head's rule
    expected = reference.predict_label(p.astype(np.float32), head, float(np.float32(threshold)))
    wrong = int(np.sum(expected != out.label))
    checks.append(
        Check(
            "label_rule",
            computation,
            batch,
            wrong,
            0,
            "exact",
            wrong == 0,
            f"{wrong} labels differ from the {head} rule applied to its probabilities",
        )
    )
    return checks


def _head_check(out: Outputs, batch: int, head: str) -> Check:
    """The graph's head alone: its probabilities vs the reference head on its own logits."""
    from onnxedge.models import reference

    expected = reference.predict_proba(out.logits, head)
    worst = float(np.max(np.abs(out.probabilities - expected))) if out.logits.size else 0.0
    return Check(
        "head",
        "onnx",
        batch,
        worst,
        tol.PROBABILITY_ATOL,
        "PROBABILITY_ATOL",
        worst <= tol.PROBABILITY_ATOL,
        f"probabilities differ from {head}(its own logits) by {_fmt(worst)}",
    )


@dataclass
class _Bounds:
    """What the limits of one batch's comparisons depend on (see the module docstring)."""

    head: str
    magnitudes: np.ndarray  # (n, logits), from logit_magnitudes
    margins: np.ndarray  # (n,), from decision_margins


def _compare_pair(
    a: Outputs, b: Outputs, pname: str, batch: int, bounds: _Bounds
) -> tuple[dict[str, dict[str, float]], list[Check], int]:
    """Logits, probabilities and labels of two computations; returns the figures, the
    checks and how many rows were excused as ties."""
    figures = {
        "logits": _errors(a.logits, b.logits),
        "probabilities": _errors(a.probabilities, b.probabilities),
    }
    lf, pf = figures["logits"], figures["probabilities"]
    with np.errstate(invalid="ignore"):
        logit_diff = np.abs(a.logits - b.logits)  # (n, logits)
        logit_limit = tol.LOGIT_ATOL + tol.LOGIT_RTOL * bounds.magnitudes
        # credit a row's logit difference only up to what the logits check allows, so
        # probabilities still fail on their own when the logits are wrong
        credited = (
            np.minimum(logit_diff.max(axis=1), logit_limit.max(axis=1))
            if logit_diff.size
            else np.zeros(len(a.logits))
        )
        gain = HEAD_LIPSCHITZ[bounds.head]
        prob_limit = tol.PROBABILITY_ATOL + gain * credited  # (n,)
        prob_diff = np.abs(a.probabilities - b.probabilities)
        logit_ok = bool(np.all(logit_diff <= logit_limit))  # False on any NaN
        prob_ok = bool(np.all(prob_diff <= prob_limit[:, None]))
    checks = [
        Check(
            "logits",
            pname,
            batch,
            lf["max_abs"],
            tol.LOGIT_ATOL,
            "LOGIT_ATOL+LOGIT_RTOL",
            logit_ok,
            f"max abs {_fmt(lf['max_abs'])}, max rel {_fmt(lf['max_rel'])} (limit "
            f"{tol.LOGIT_ATOL:g} + {tol.LOGIT_RTOL:g} * magnitude of the summed terms, "
            f"{_worst(logit_diff, logit_limit)})",
        ),
        Check(
            "probabilities",
            pname,
            batch,
            pf["max_abs"],
            tol.PROBABILITY_ATOL,
            "PROBABILITY_ATOL",
            prob_ok,
            f"max abs {_fmt(pf['max_abs'])}, max rel {_fmt(pf['max_rel'])} (limit "
            f"{tol.PROBABILITY_ATOL:g} + {gain:g} * the row's logit difference, "
            f"{_worst(prob_diff, np.broadcast_to(prob_limit[:, None], prob_diff.shape))})",
        ),
    ]
    ties = bounds.margins <= tol.LABEL_TIE_ATOL + 2 * gain * credited
    differ = (a.label != b.label) & ~ties
    count = int(differ.sum())
    first = f"; first at row {int(np.argmax(differ))}" if count else ""
    checks.append(
        Check(
            "labels",
            pname,
            batch,
            count,
            0,
            "exact (LABEL_TIE_ATOL ties excused)",
            count == 0,
            f"{count} of {len(differ)} rows labelled differently{first}",
        )
    )
    return figures, checks, int(np.sum(ties & (a.label != b.label)))


def _worst(diff: np.ndarray, limit: np.ndarray) -> str:
    """Where ``diff`` comes closest to (or goes furthest past) its limit."""
    if diff.size == 0:
        return "no rows"
    ratio = np.where(np.isnan(diff), np.inf, diff / limit)
    index = np.unravel_index(int(np.argmax(ratio)), diff.shape)
    return f"worst {_fmt(float(diff[index]))} of {_fmt(float(limit[index]))} at row {index[0]}"


def _loss_checks(losses: dict[str, float], batch: int, head: str) -> list[Check]:
    name = "cross-entropy" if head == "softmax" else "BCE"
    checks = []
    for a, b in PAIRS:
        la, lb = losses[a], losses[b]
        diff = abs(la - lb)
        ok = math.isfinite(diff) and diff <= tol.LOSS_ATOL + tol.LOSS_RTOL * abs(lb)
        checks.append(
            Check(
                "loss",
                pair_name((a, b)),
                batch,
                _rel(la, lb),
                tol.LOSS_RTOL,
                "LOSS_RTOL+LOSS_ATOL",
                ok,
                f"{name} {la:.9g} vs {lb:.9g}, rel diff {_fmt(_rel(la, lb))}",
            )
        )
    return checks


def _errors(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    diff = np.abs(a - b)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"max_abs": float("inf"), "max_rel": float("inf")}
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / np.maximum(np.abs(b), _TINY32)).max()),
    }


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / abs(b) if b != 0 else float("inf")


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return "0" if value == 0 else f"{value:.2e}"


def _sig(value: float) -> float | str:
    return float(f"{value:.6g}") if math.isfinite(value) else str(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN / Inf to strings (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _finite_or_str(value)
    return value


def _finite_or_str(value: float) -> float | str:
    return float(value) if math.isfinite(value) else str(value)
