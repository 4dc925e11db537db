"""Parity: ``torch`` (the user's module with preprocessing and head), ``onnxruntime`` and
``reference`` (numpy from the initializers, else ``onnx.reference``) compared pairwise at
batch sizes 1, an odd size and all rows, the numpy head and losses on each one's logits.
A logit may differ by ``LOGIT_ATOL + LOGIT_RTOL * m`` (``m`` the magnitude of the terms it
sums), a probability by ``PROBABILITY_ATOL + g * d`` (``d`` the row's credited logit
difference, ``g`` the head's Lipschitz constant), a label only within ``LABEL_TIE_ATOL +
2 * g * d`` of a tie.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.check_rows import rows_to_verify
from onnxedge.export.compare import Check, compare, exact, failures, fmt, jsonable, render_checks
from onnxedge.export.heads import HEAD_LIPSCHITZ
from onnxedge.export.localize import (
    KEY_NODE_MODULE,
    LocalizationError,
    first_diverging_node,
    localization_lines,
    node_text,
)
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.atomic import atomic_file
from onnxedge.runtime.contract import (
    INPUT_NAME,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_HEAD,
    KEY_WEIGHTS_SHA256,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    ModelContract,
    decision_margins,
)
from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    ModelLoadError,
    OnnxEdgeError,
    ParityError,
)

if TYPE_CHECKING:
    import onnx
    import torch
    from onnxedge.models.checkpoint import TrainedRun

# re-exported for export, wrap and variants
__all__ = ["KEY_NODE_MODULE", "Check", "verify_model"]

#: metadata key (under ``onnxedge.``) naming the net's config, for the numpy forward.
ARCHITECTURE = "architecture"
LOCALIZE_ROWS = 16
#: Not a power of two, so a batch baked into the graph or a mishandled remainder shows.
ODD_BATCH_SIZE = 37
#: Batch size 1 runs one row at a time; on large sets only this many leading rows.
DEFAULT_SINGLE_ROW_LIMIT = 500
#: failing checks named in the ParityError message (the table and the report list all).
SHOWN_FAILURES = 3
PAIRS = (("onnxruntime", "torch"), ("onnxruntime", "reference"), ("torch", "reference"))
#: the named tolerances verification applies, recorded in the report.
TOLERANCES = (
    "LOGIT_ATOL",
    "LOGIT_RTOL",
    "PROBABILITY_ATOL",
    "PROBABILITY_SUM_ATOL",
    "LOSS_RTOL",
    "LOSS_ATOL",
    "LABEL_TIE_ATOL",
)

Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], Outputs]


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file with its weights (ModelLoadError: missing, empty or unreadable)."""
    import onnx

    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"model {file} does not exist")
    if file.stat().st_size == 0:
        raise ModelLoadError(f"model {file} is empty")
    try:
        return onnx.load(str(file))
    except Exception as exc:  # protobuf raises DecodeError, onnx ValueError / OSError
        raise ModelLoadError(f"cannot read {file} as ONNX: {exc}") from None


def graph_weights_sha256(model: onnx.ModelProto) -> str:
    """sha256 over every initializer's name, dtype, shape and little-endian bytes, by name."""
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{tensor.name}|{little.dtype.str}|{list(array.shape)}|".encode())
        digest.update(little.tobytes())
    return digest.hexdigest()


@dataclass
class ParityReport:
    """What :func:`verify_model` measured: ``computations`` (name -> what it was), ``losses``
    (``{batch: {computation: mean loss}}``), ``localization`` (:func:`first_diverging_node`,
    when it was searched for), and whether every check passed."""

    model: str
    data: str
    rows: int
    head: str | None
    threshold: float
    computations: dict[str, str]
    batch_sizes: list[int]
    checks: list[Check]
    losses: dict[int, dict[str, float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    localization: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """True when there were checks and every one passed (no checks proves nothing)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        """Every failing check, one line each: ``label: detail``."""
        return failures(self.checks)

    def summary(self) -> dict[str, Any]:
        """The compact figures export records in ``onnxedge.parity``."""
        return jsonable(
            {
                "passed": self.passed,
                "data": self.data,
                "rows": self.rows,
                "batch_sizes": self.batch_sizes,
                "computations": self.computations,
                "max_abs_error": {  # over every pair and batch size
                    o: max(
                        (c.value for c in self.checks if c.name == o and "~" in c.subject),
                        default=float("nan"),
                    )
                    for o in (OUTPUT_LOGITS, OUTPUT_PROBABILITIES)
                },
                "loss": self.losses.get(self.batch_sizes[-1], {}) if self.batch_sizes else {},
                "accuracy": self.accuracy,
                "checks": len(self.checks),
                "failed": len(self.failures),
                "tolerances": self.tolerances,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The full report, JSON-ready."""
        return jsonable(
            {
                "model": self.model,
                "passed": self.passed,
                "head": self.head,
                "threshold": self.threshold,
                "failures": self.failures,
                "summary": self.summary(),
                "losses": {str(b): v for b, v in self.losses.items()},
                "checks": [c.to_dict() for c in self.checks],
                "localization": self.localization,
                "seconds": round(self.seconds, 3),
            }
        )

    def render_table(self) -> str:
        """The computations, each check's worst figure against its limit, losses,
        accuracies, the first diverging node, then every failing check."""
        head = f"{self.head} head" if self.head else "no head (logits only)"
        sizes = ", ".join(map(str, self.batch_sizes))
        lines = [
            f"parity of {self.model}: {self.rows} rows ({self.data}), {head}, batch sizes {sizes}",
            *(f"  {name}: {what}" for name, what in self.computations.items()),
            *render_checks(self.checks),
        ]
        full = self.losses.get(self.batch_sizes[-1], {})
        if full:
            loss_name = "cross-entropy" if self.head == "softmax" else "BCE"
            lines.append(f"{loss_name}: " + ", ".join(f"{c} {v:.7f}" for c, v in full.items()))
        if self.accuracy:
            lines.append("accuracy: " + ", ".join(f"{c} {v:.4f}" for c, v in self.accuracy.items()))
        lines += localization_lines(self.localization)
        failed = self.failures
        lines.append(
            f"{len(self.checks) - len(failed)} of {len(self.checks)} checks passed"
            + (f"; {len(failed)} FAILED:" if failed else "")
        )
        return "\n".join(lines + [f"  FAIL {f}" for f in failed])

    def raise_for_failures(self) -> None:
        """Raise :class:`ParityError` naming the first ``SHOWN_FAILURES`` failing checks (an
        ``Error:`` line of twenty is not read; the table and ``failures`` list every one)."""
        failed, where = self.failures, self.localization or {}
        if not failed:
            return
        first = f" (first diverging node: {node_text(where)})" if where.get("node") else ""
        more = len(failed) - SHOWN_FAILURES
        raise ParityError(
            f"{self.model} failed {len(failed)} parity check{'s' if len(failed) != 1 else ''}"
            f"{first}: "
            + "; ".join(failed[:SHOWN_FAILURES])
            + (f"; and {more} more" if more > 0 else ""),
            failures=failed,
        )


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (DataError if that fails)."""
    with atomic_file(path, overwrite=True, error=DataError) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


# --- the computations ---------------------------------------------------------------------


def onnxruntime_runner(model: onnx.ModelProto | bytes, what: str = "the model") -> Runner:
    """``x -> {output name: array}`` through an onnxruntime CPU session (ModelLoadError if
    onnxruntime cannot open the model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
        raise ModelLoadError(f"onnxruntime cannot load {what}: {exc}") from None
    names = [o.name for o in session.get_outputs()]
    feed = session.get_inputs()[0].name
    return lambda x: dict(zip(names, session.run(names, {feed: x}), strict=True))


def torch_runner(module: torch.nn.Module) -> Runner:
    """``x -> {logits, probabilities, label}`` through a head module, in inference mode."""
    import torch

    def run(x: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(np.ascontiguousarray(x)))
        return dict(zip(OUTPUT_NAMES, (o.numpy() for o in outputs), strict=True))

    return run


def in_batches(run: Runner, x: np.ndarray, batch: int) -> Outputs:
    """``run`` over ``x`` in batches of ``batch`` rows, concatenated by output name."""
    parts = [run(x[i : i + batch]) for i in range(0, len(x), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


#: the third computation: a runner, what it is, and the logit magnitudes it knows (or None).
Independent = tuple[Runner, str, Callable[[np.ndarray], np.ndarray] | None]


def independent_forward(
    model: onnx.ModelProto, contract: ModelContract, head: str | None, threshold: float
) -> Independent:
    """The numpy forward from the graph's initializers where the architecture is known,
    else ``onnx.reference.ReferenceEvaluator`` on the graph."""
    why = "no onnxedge architecture recorded"
    config = contract.extra.get(ARCHITECTURE)
    if config is not None and head is not None:
        try:
            return _numpy_forward(model, json.loads(config), head, threshold)
        except (OnnxEdgeError, KeyError, ValueError, TypeError) as exc:
            why = f"numpy forward unavailable: {exc}"
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    names, feed = [o.name for o in model.graph.output], _feed(model).name
    return (
        lambda x: dict(zip(names, evaluator.run(names, {feed: x}), strict=True)),
        f"onnx.reference.ReferenceEvaluator on the graph ({why})",
        None,
    )


def _numpy_forward(
    model: onnx.ModelProto, config: dict[str, Any], head: str, threshold: float
) -> Independent:
    """The numpy forward of an onnxedge architecture, weights read out of the graph."""
    from onnx import numpy_helper
    from onnxedge.models import reference
    from onnxedge.models.nets import NetConfig

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = {k[len("net.") :]: v for k, v in init.items() if k.startswith("net.")}
    if not weights:
        raise ModelLoadError("the graph has no initializers named net.*")
    net_config, step = NetConfig.from_dict(config), _graph_preprocess(init)

    def logits_of(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return np.asarray(reference.forward_from_weights(net_config, w, x))

    def pre(x: np.ndarray) -> np.ndarray:
        return step.apply(x.astype(np.float64)) if step is not None else x.astype(np.float64)

    logits_of(weights, pre(np.zeros((1, *_row_shape(model)), np.float32)))  # raises on a mismatch

    def run(x: np.ndarray) -> Outputs:
        z = logits_of(weights, pre(x))
        p = reference.predict_proba(z, head)
        label = reference.predict_label(p, head, threshold)
        return dict(zip(OUTPUT_NAMES, (z, p, label), strict=True))

    def magnitudes(x: np.ndarray) -> np.ndarray:
        # ReLU / max pool pass non-negative terms through: the forward on |W|, |x| bounds
        # the size of the terms each logit sums.
        m = np.abs(x.astype(np.float64))
        if step is not None and hasattr(step, "mean"):
            m = (m + np.abs(step.mean.astype(np.float64))) / step.std.astype(np.float64)
        elif step is not None:
            m = m * abs(float(step.factor))
        return logits_of({k: np.abs(v.astype(np.float64)) for k, v in weights.items()}, m)

    arch = config.get("arch", "mlp")
    return run, f"numpy forward from the ONNX initializers ({arch})", magnitudes


def _graph_preprocess(init: dict[str, np.ndarray]) -> Any:
    """The preprocessing constants as the graph holds them (``preprocess.*``), or None."""
    from onnxedge.models.preprocess import Rescale, Standardize

    if "preprocess.mean" in init and "preprocess.std" in init:
        return Standardize(init["preprocess.mean"], init["preprocess.std"])
    if "preprocess.factor" in init:
        return Rescale(float(init["preprocess.factor"]))
    return None


def _feed(model: onnx.ModelProto) -> Any:
    inits = {t.name for t in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits)


def _row_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """One row's shape from the graph input's non-batch dims (0 where symbolic)."""
    return tuple(int(d.dim_value) for d in _feed(model).type.tensor_type.shape.dim[1:])


# --- the checks ---------------------------------------------------------------------------


def signature_problems(
    model: onnx.ModelProto, dims: dict[str, list[int | str]] | None = None
) -> list[str]:
    """How the graph's signature breaks the contract: input ``input`` float32, outputs
    ``logits`` / ``probabilities`` float32 and ``label`` int64, each with a symbolic batch
    axis (and, where ``dims`` gives them by name, exactly those dims).

    Raises:
        ModelLoadError: the graph lacks the contract's input or outputs.
    """
    from onnx import TensorProto

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = {o.name: o for o in model.graph.output}
    if [i.name for i in inputs] != [INPUT_NAME] or any(n not in outputs for n in OUTPUT_NAMES):
        raise ModelLoadError(
            f"the model's signature is inputs {[i.name for i in inputs]}, outputs "
            f"{list(outputs)}; expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}"
        )
    problems, name = [], TensorProto.DataType.Name
    for value in [inputs[0], *(outputs[n] for n in OUTPUT_NAMES)]:
        tensor = value.type.tensor_type
        want = TensorProto.INT64 if value.name == OUTPUT_LABEL else TensorProto.FLOAT
        found = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        if tensor.elem_type != want:
            problems.append(f"{value.name} has type {name(tensor.elem_type)}, not {name(want)}")
        if found and tensor.shape.dim[0].HasField("dim_value"):
            problems.append(f"{value.name} has a fixed batch size {found[0]}")
        elif dims is not None and found != dims[value.name]:
            problems.append(f"{value.name} has dims {found}, expected {dims[value.name]}")
    return problems


def _metadata_checks(
    model: onnx.ModelProto, props: dict[str, str], contract: ModelContract, run: TrainedRun | None
) -> list[Check]:
    """The graph's weights and preprocessing against the metadata and the run."""
    from onnx import numpy_helper
    from onnxedge.models.preprocess import preprocess_from_dict

    checks = []
    recorded = props.get(KEY_GRAPH_WEIGHTS_SHA256)
    if recorded is not None:
        actual = graph_weights_sha256(model)
        detail = (
            f"the graph's initializers hash to {actual[:12]}..., export recorded "
            f"{recorded[:12]}... (a weight or constant was changed after export)"
        )
        checks.append(exact("graph_weights_sha256", "", actual == recorded, detail))
    graph_step = _graph_preprocess(
        {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    )
    if contract.preprocess is not None or graph_step is not None:
        try:
            same = _same_step(preprocess_from_dict(contract.preprocess), graph_step)
        except OnnxEdgeError:
            same = False
        detail = "the metadata's preprocessing differs from the graph's constants"
        checks.append(exact("preprocess", "metadata~graph", same, detail))
    if run is not None:
        detail = f"the graph's preprocessing differs from {run.path}'s"
        checks.append(
            exact("preprocess", "run~graph", _same_step(run.preprocess, graph_step), detail)
        )
        weights = props.get(KEY_WEIGHTS_SHA256)
        if weights is not None:
            detail = (
                f"the model was exported from weights {weights[:12]}..., {run.path} "
                f"holds {run.weights_sha256[:12]}..."
            )
            same = weights == run.weights_sha256
            checks.append(exact("weights_sha256", "run~metadata", same, detail))
    return checks


def _same_step(a: Any, b: Any) -> bool:
    """Whether two preprocessing steps hold the same float32 constants (a recorded factor
    of 1/255 is the float32 constant it became)."""
    if a is None or b is None:
        return a is None and b is None
    da, db = a.to_dict(), b.to_dict()
    keys = ("factor",) if da["kind"] == "rescale" else ("mean", "std")
    return da["kind"] == db["kind"] and all(
        np.array_equal(np.asarray(da[k], np.float32), np.asarray(db[k], np.float32)) for k in keys
    )


def own_head_checks(
    out: Outputs, name: str, batch: int, head: str, threshold: float, y: np.ndarray
) -> list[Check]:
    """The numpy reference head on computation ``name``'s own logits against its own
    probabilities and labels, their range, and the per-row loss on ``y`` from its
    probabilities against that from its logits."""
    from onnxedge.models import reference

    z, p = out[OUTPUT_LOGITS].astype(np.float64), out[OUTPUT_PROBABILITIES]
    expected = {
        OUTPUT_PROBABILITIES: reference.predict_proba(z, head),
        # the rule on its own float32 probabilities
        OUTPUT_LABEL: reference.predict_label(
            p.astype(np.float32), head, float(np.float32(threshold))
        ),
    }
    checks = compare(
        expected,
        out,
        {OUTPUT_PROBABILITIES: tol.PROBABILITY_ATOL, OUTPUT_LABEL: 0.0},
        subject=f"numpy-head~{name}",
        batch_size=batch,
        names={OUTPUT_PROBABILITIES: "PROBABILITY_ATOL", OUTPUT_LABEL: "exact"},
    )
    outside = int(np.sum(~((p >= 0) & (p <= 1))))
    worst = float(np.max(np.abs(p.sum(axis=1) - 1))) if head == "softmax" and len(p) else 0.0
    ok = outside == 0 and worst <= tol.PROBABILITY_SUM_ATOL
    detail = f"{outside} values outside [0, 1]; rows sum to 1 within {fmt(worst)}"
    limit, sum_name = tol.PROBABILITY_SUM_ATOL, "PROBABILITY_SUM_ATOL"
    checks.append(Check("probability_range", name, batch, worst, limit, sum_name, ok, detail))
    # probabilities within PROBABILITY_ATOL (e) move -log(q) up by at most log(q / (q - e))
    # (down to the loss's clamp) and down by log(1 + e / q)
    from_logits = row_losses(z, y, head)
    q, e = np.exp(-from_logits), tol.PROBABILITY_ATOL  # q: the true class's probability
    if head == "softmax":
        floor = reference.PROBABILITY_EPS
        from_p = reference.cross_entropy_from_probabilities(y, np.clip(p, 0, 1), reduction="none")
    else:
        floor = float(np.exp(reference.BCE_LOG_CLAMP))
        target = y.astype(np.float64)
        from_p = reference.binary_cross_entropy(np.clip(p[:, 0], 0, 1), target, reduction="none")
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = np.maximum(np.log1p(e / q), np.log(q) - np.log(np.maximum(q - e, floor)))
    limit_rows = (
        tol.LOSS_ATOL + tol.LOSS_RTOL * np.abs(from_logits) + np.nan_to_num(moved, nan=np.inf)
    )
    return checks + compare(
        {"loss": from_logits},
        {"loss": np.asarray(from_p)},
        {"loss": limit_rows},
        subject=f"{name} logits~probabilities",
        batch_size=batch,
        names={"loss": "LOSS_ATOL+LOSS_RTOL+PROBABILITY_ATOL"},
    )


def row_losses(z: np.ndarray, y: np.ndarray, head: str) -> np.ndarray:
    """Per-row cross-entropy (softmax) or BCE (sigmoid) from logits, numerically stable."""
    from onnxedge.models import reference

    if head == "softmax":
        return np.asarray(reference.cross_entropy(z, y, reduction="none"))
    target = y.astype(np.float64)
    return np.asarray(reference.binary_cross_entropy_with_logits(z[:, 0], target, reduction="none"))


def _pair_checks(
    a: Outputs,
    b: Outputs,
    subject: str,
    batch: int,
    head: str | None,
    magnitudes: np.ndarray | None,
    margins: np.ndarray | None,
) -> list[Check]:
    """Two computations on every output of ``b`` (expected): floats within ``LOGIT_ATOL +
    LOGIT_RTOL * |b|`` (or the magnitudes), the rest exact; with a head, probabilities and
    labels allow for the logit difference credited to each row."""
    limits: dict[str, Any] = {
        n: tol.LOGIT_ATOL + tol.LOGIT_RTOL * np.abs(v.astype(np.float64))
        for n, v in b.items()
        if np.issubdtype(v.dtype, np.floating)
    }
    names, ties = {"": "LOGIT_ATOL+LOGIT_RTOL"}, None
    if head is not None:
        if magnitudes is not None:
            limits[OUTPUT_LOGITS] = tol.LOGIT_ATOL + tol.LOGIT_RTOL * magnitudes
        with np.errstate(invalid="ignore"):
            diff = np.abs(a[OUTPUT_LOGITS].astype(np.float64) - b[OUTPUT_LOGITS])
            # credit a row's logit difference only up to what the logits check allows, so
            # probabilities still fail on their own when the logits are wrong
            credited = np.minimum(diff.max(axis=1), limits[OUTPUT_LOGITS].max(axis=1))
        gain, credited = HEAD_LIPSCHITZ[head], np.nan_to_num(credited, nan=0.0)
        limits[OUTPUT_PROBABILITIES] = (tol.PROBABILITY_ATOL + gain * credited)[:, None]
        ties = None if margins is None else margins <= tol.LABEL_TIE_ATOL + 2 * gain * credited
        names[OUTPUT_PROBABILITIES] = "PROBABILITY_ATOL"
        names[OUTPUT_LABEL] = "exact (LABEL_TIE_ATOL ties excused)"
    return compare(
        b, a, {**limits, "": 0.0}, subject=subject, batch_size=batch, names=names, excused=ties
    )


# --- verification -------------------------------------------------------------------------


def verify_model(
    model_path: str | os.PathLike[str],
    data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    module: torch.nn.Module | None = None,
    *,
    run_dir: str | os.PathLike[str] | TrainedRun | None = None,
    dataset: str | os.PathLike[str] | None = None,
    label_column: str | int | None = None,
    labels_path: str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    single_row_limit: int = DEFAULT_SINGLE_ROW_LIMIT,
    name: str | None = None,
    localize: bool = False,
) -> ParityReport:
    """Compare the model in onnxruntime with the user's module and an independent forward.

    Args:
        model_path: the ``.onnx`` file; ``name``: how the report names it.
        data: rows ``(n, *input_shape)`` (or flat) with labels ``(n,)``, or rows alone;
            else ``dataset``, the run's validation split, the bundled dataset the metadata
            records, or synthetic rows (:func:`~onnxedge.export.check_rows.rows_to_verify`).
        module: the user's logits module (the recorded preprocessing and head go around
            it), else the net of ``run_dir``: the run (folder) the model came from.
        dataset, label_column, labels_path: a bundled dataset or a labelled data file.
        batch_sizes: default 1, ``ODD_BATCH_SIZE`` and all rows; batch size 1 runs over at
            most ``single_row_limit`` leading rows.
        localize: search for the first diverging node even when every check passes (it
            is searched for whenever one fails; a search that cannot run is then noted).

    Raises:
        ModelLoadError: the model cannot be read, or lacks the contract's signature.
        LocalizationError: ``localize`` was asked for and the search cannot run.
        CheckpointError: the run folder cannot be loaded or does not fit the model.
        DataError: labels name classes the model lacks, or no rows.
        InputShapeError: the rows' shape differs from the model's.
    """
    from onnxedge.export.heads import HeadSpec
    from onnxedge.export.onnx_export import ClassifierWithHead
    from onnxedge.models.checkpoint import TrainedRun, load_run
    from onnxedge.models.preprocess import preprocess_from_dict

    started = time.perf_counter()
    model = load_onnx(model_path)
    props = {p.key: p.value for p in model.metadata_props}
    contract = ModelContract.from_metadata(props)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    graph_head = {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(
        producers.get(OUTPUT_PROBABILITIES, "")
    )
    head = contract.head if contract.head in HEAD_LIPSCHITZ else graph_head
    if not set(OUTPUT_NAMES) <= {o.name for o in model.graph.output}:
        head = None  # not the contract's outputs: compare every output by name only
    threshold = float(contract.threshold)
    checks: list[Check] = []
    if KEY_HEAD in props:  # an onnxedge model
        problems = signature_problems(model)
        checks.append(exact("signature", "", not problems, "; ".join(problems) or "ok"))
        detail = f"metadata says {contract.head}, the graph computes {graph_head}"
        checks.append(exact("head", "metadata~graph", graph_head == head, detail))
    run = run_dir if run_dir is None or isinstance(run_dir, TrainedRun) else load_run(run_dir)
    checks += _metadata_checks(model, props, contract, run)

    torch_module, computations = None, {}
    if head is not None and module is not None and (run is None or module is not run.net):
        step = preprocess_from_dict(contract.preprocess)
        torch_module = ClassifierWithHead(module, step, HeadSpec(head, threshold)).eval()
        computations["torch"] = (
            f"the given module ({type(module).__name__}), recorded preprocessing and head"
        )
    elif head is not None and run is not None:
        if (head == "sigmoid") != (run.config.output_size == 1):
            raise CheckpointError(
                f"run {run.path} trained a {run.task} net; the model has a {head} head"
            )
        torch_module = ClassifierWithHead(run.net, run.preprocess, HeadSpec(head, threshold)).eval()
        computations["torch"] = f"the run's own module ({run.path})"
    computations["onnxruntime"] = "onnxruntime CPU on the file"
    runners = {"onnxruntime": onnxruntime_runner(model)}
    if torch_module is not None:
        runners["torch"] = torch_runner(torch_module)
    reference_run, computations["reference"], magnitudes_of = independent_forward(
        model, contract, head, threshold
    )

    row_shape = tuple(contract.input_shape or _row_shape(model))
    x, y, data_name = rows_to_verify(
        data, dataset, label_column, labels_path, run, contract, row_shape
    )
    n = len(x)
    reference_all = reference_run(x)
    if y is None and head is not None:
        y = reference_all[OUTPUT_LABEL].astype(np.int64)
    magnitudes = magnitudes_of(x) if magnitudes_of is not None else None
    p_ref = reference_all.get(OUTPUT_PROBABILITIES)
    margins = decision_margins(np.asarray(p_ref, np.float64), head, threshold) if head else None
    sizes = sorted({max(1, min(int(b), n)) for b in (batch_sizes or (1, ODD_BATCH_SIZE, n))})
    losses: dict[int, dict[str, float]] = {}
    accuracy: dict[str, float] = {}  # on the largest batch size's rows
    for batch in sizes:
        rows = min(n, single_row_limit) if batch == 1 else n
        outs = {c: in_batches(r, x[:rows], batch) for c, r in runners.items()}
        outs["reference"] = {k: v[:rows] for k, v in reference_all.items()}
        m = magnitudes[:rows] if magnitudes is not None else None
        t = margins[:rows] if margins is not None else None
        for a, b in PAIRS:
            if a in outs and b in outs:
                checks += _pair_checks(outs[a], outs[b], f"{a}~{b}", batch, head, m, t)
        if head is None or y is None:
            continue
        for comp in outs:
            if not (comp == "reference" and magnitudes_of is not None):  # numpy's own head
                checks += own_head_checks(outs[comp], comp, batch, head, threshold, y[:rows])
        losses[batch] = {
            c: float(np.mean(row_losses(o[OUTPUT_LOGITS].astype(np.float64), y[:rows], head)))
            for c, o in outs.items()
        }
        ref_loss = losses[batch]["reference"]
        for comp, loss in losses[batch].items():
            if comp != "reference":
                checks += compare(
                    {"loss": np.array(ref_loss)},
                    {"loss": np.array(loss)},
                    {"loss": tol.LOSS_ATOL + tol.LOSS_RTOL * abs(ref_loss)},
                    subject=f"{comp}~reference",
                    batch_size=batch,
                    names={"loss": "LOSS_ATOL+LOSS_RTOL"},
                )
        accuracy = {c: float(np.mean(o[OUTPUT_LABEL] == y[:rows])) for c, o in outs.items()}
    report = ParityReport(
        model=name or str(model_path),
        data=data_name,
        rows=n,
        head=head,
        threshold=threshold,
        computations=computations,
        batch_sizes=sizes,
        checks=checks,
        losses=losses,
        accuracy=accuracy,
        tolerances={k: float(getattr(tol, k)) for k in TOLERANCES},
    )
    if localize or not report.passed:
        try:
            report.localization = first_diverging_node(model, x[:LOCALIZE_ROWS], torch_module)
        except LocalizationError as exc:
            if localize:
                raise LocalizationError(f"cannot localize in {report.model}: {exc}") from None
            report.localization = {"unavailable": str(exc)}
    report.seconds = time.perf_counter() - started
    return report
