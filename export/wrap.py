"""A logits-only ONNX model -> an onnxedge classifier (:func:`add_head`; onnx, no torch).

The source graph is kept; the contract's input, outputs (with operators every opset from 7
has) and metadata are added, checked and verified before writing. The torch-free pieces
export shares (contract metadata, checker, writer) live here too.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.check_rows import rows_to_verify, synthetic_rows
from onnxedge.export.compare import Check, compare, failures
from onnxedge.export.heads import HeadSpec, class_names_for, resolve_head
from onnxedge.export.verify import ODD_BATCH_SIZE, onnxruntime_runner, own_head_checks, row_losses
from onnxedge.models import reference
from onnxedge.models.preprocess import Preprocess, Rescale, Standardize
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.atomic import atomic_file, exists_message
from onnxedge.runtime.contract import (
    BATCH_AXIS,
    INPUT_NAME,
    KEY_EXPORTED_AT,
    KEY_EXPORTER,
    KEY_GOLDEN,
    KEY_HEAD,
    KEY_PARITY,
    KEY_SOURCE_MODEL,
    KEY_VERSIONS,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PREFIX,
    ModelContract,
    golden_set,
)
from onnxedge.runtime.errors import (
    DataError,
    ExportError,
    ModelLoadError,
    OutputExistsError,
    ParityError,
    one_line,
)
from onnxedge.runtime.version import library_versions

if TYPE_CHECKING:
    import onnx
    from onnxedge.export.verify import Runner

#: Output names of converters that already hold probabilities (skl2onnx).
PROBABILITY_OUTPUT_NAMES = frozenset({OUTPUT_PROBABILITIES, "output_probability"})
PROBABILITY_OPS = frozenset({"Softmax", "Sigmoid"})
#: Synthetic rows verification runs on (at batch 1, ``ODD_BATCH_SIZE`` and all of them).
LARGE_BATCH = 1000
#: The batch a fixed batch of 1 must run at, once made dynamic, to be kept dynamic.
PROBE_BATCH = 3


@dataclass
class WrapResult:
    """What :func:`add_head` wrote, changed (``notes``), checked and measured on ``data``."""

    path: Path
    source: Path
    source_sha256: str
    head: str
    logits_output: str
    input_name: str
    input_shape: tuple[int, ...]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``onnxedge wrap --json``)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data.update(path=str(self.path), source=str(self.source), seconds=round(self.seconds, 3))
        data.update(input_shape=list(self.input_shape), checks=[c.to_dict() for c in self.checks])
        return data


def add_head(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    head: str = "auto",
    logits_output: str | None = None,
    class_names: list[str] | None = None,
    feature_names: list[str] | None = None,
    preprocess: Preprocess | None = None,
    threshold: float | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    overwrite: bool = False,
) -> WrapResult:
    """Add the onnxedge head, label, input preprocessing and contract to a logits model.

    Args:
        source: an ONNX model, one float32 input ``[batch, *row_shape]``, float32 logits
            ``[batch, classes]`` (``logits_output``: which output, where it is ambiguous).
        head, threshold, class_names, feature_names, preprocess: as for export_classifier.
        data: ``(rows, labels)`` to verify on (labels as indices or class names), then
            accuracy and loss are reported. Default: synthetic rows.

    Raises:
        ModelLoadError: ``source`` is missing or not an ONNX model onnxruntime opens.
        ExportError: the source or an option does not fit, or the result fails the checker.
        DataError, InputShapeError: ``data`` does not fit the model.
        ParityError: the wrapped model does not compute what it should.
        OutputExistsError: ``output`` exists and ``overwrite`` is false.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    if output.exists() and not overwrite:  # before the work; Staged guards the race
        raise OutputExistsError(exists_message(output))
    raw, model = _read(source)
    plan = _plan(model, source, logits_output)
    check_feature_names(feature_names, plan.input_shape)
    original = onnxruntime_runner(model, "the source model")
    width = _probe_width(original, plan)
    spec = resolve_head(width, head, threshold)
    names = class_names_for(width, class_names)
    if preprocess is not None:
        preprocess = _fit_preprocess(preprocess, plan.input_shape)

    wrapped = _build(model, plan, spec, width, preprocess)
    checked(wrapped, "wrapped", data_prop=False)
    run = onnxruntime_runner(wrapped, "the wrapped model")
    if plan.batch_made_dynamic:
        try:
            run(np.zeros((PROBE_BATCH, *plan.input_shape), dtype=np.float32))
        except Exception as exc:  # onnxruntime's own error types
            raise ExportError(
                f"{source}: input {plan.input!r} has a fixed batch of 1 and the graph does not "
                f"run at batch {PROBE_BATCH} once it is made dynamic ({one_line(exc)}); "
                "re-export it with a dynamic batch axis"
            ) from None
    rows, labels = _verification_rows(data, plan.input_shape, preprocess, names)
    checks, metrics = _verify(original, run, plan, spec, preprocess, rows, labels)
    failed = failures(checks)
    if failed:
        raise ParityError(f"{source}: the wrapped model fails {'; '.join(failed)}", failed)
    if all(c.value == 0 for c in checks if c.name == OUTPUT_LOGITS):
        plan.notes.append("logits bit-for-bit equal to the source model's at every batch size")

    sha256 = hashlib.sha256(raw).hexdigest()
    producer = f"{model.producer_name} {model.producer_version}".strip()
    extra = {
        KEY_SOURCE_MODEL: {"file": source.name, "sha256": sha256, "producer": producer},
        KEY_GOLDEN: golden_set(rows, run(rows), head=spec.head, threshold=spec.threshold),
        KEY_PARITY: {"passed": True, "checks": [c.to_dict() for c in checks], "metrics": metrics},
    }
    metadata = contract_metadata(
        spec, names, plan.input_shape, feature_names, preprocess, "onnxedge wrap", (), extra
    )
    props = {p.key: p.value for p in model.metadata_props if not p.key.startswith(PREFIX)}
    with atomic_file(output, overwrite=overwrite, error=ExportError) as tmp:
        write_model(wrapped, {**props, **metadata}, tmp)
    return WrapResult(
        path=output,
        source=source,
        source_sha256=sha256,
        head=spec.head,
        logits_output=plan.logits,
        input_name=plan.input,
        input_shape=plan.input_shape,
        class_names=names,
        notes=plan.notes,
        checks=checks,
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )


# --- shared with export ----------------------------------------------------------------


def check_feature_names(names: Sequence[str] | None, input_shape: tuple[int, ...]) -> None:
    """Raises ExportError unless ``names`` is None or holds one name per feature."""
    if names is not None and len(names) != math.prod(input_shape):
        raise ExportError(
            f"{len(names)} feature names given; the model reads {math.prod(input_shape)} "
            f"features per row (shape {list(input_shape)})"
        )


def checked(model: onnx.ModelProto, what: str, data_prop: bool = True) -> onnx.ModelProto:
    """``model`` with shapes inferred; ExportError unless the checker and strict inference
    pass. ``data_prop=False`` for graphs from other exporters, on which onnx's data
    propagation can fail where onnxruntime runs them."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=data_prop
        )
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"the {what} graph does not pass the ONNX checker: {one_line(exc)}"
        ) from None


def contract_metadata(
    spec: HeadSpec,
    class_names: list[str],
    input_shape: tuple[int, ...],
    feature_names: Sequence[str] | None,
    preprocess: Preprocess | None,
    exporter: str,
    libraries: Sequence[str],
    extra: dict[str, Any],
) -> dict[str, str]:
    """A classifier's ``onnxedge.*`` metadata: contract, ``extra``, writer, versions, time."""
    extra = {
        **extra,
        KEY_VERSIONS: library_versions(*libraries, "onnx", "onnxruntime", "numpy"),
        KEY_EXPORTED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        KEY_EXPORTER: exporter,
    }
    return ModelContract(
        task=spec.task,
        head=spec.head,
        threshold=spec.threshold,
        class_names=class_names,
        num_features=math.prod(input_shape),
        feature_names=list(feature_names) if feature_names is not None else None,
        input_shape=input_shape,
        preprocess=preprocess.to_dict() if preprocess is not None else None,
        extra={k.removeprefix(PREFIX): v for k, v in extra.items()},
    ).to_metadata()


def write_model(model: onnx.ModelProto, metadata: dict[str, str], path: Path) -> None:
    """Set ``model``'s metadata and write it to ``path`` (ExportError if that fails)."""
    import onnx

    onnx.helper.set_model_props(model, metadata)
    try:
        path.write_bytes(model.SerializeToString())
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- reading the source ----------------------------------------------------------------


@dataclass
class _Plan:
    """The source's input and logits output, as found."""

    input: str
    input_shape: tuple[int, ...]
    batch_made_dynamic: bool
    logits: str
    notes: list[str]


def _read(source: Path) -> tuple[bytes, onnx.ModelProto]:
    import onnx

    if not source.is_file():
        raise ModelLoadError(f"{source}: no such model file")
    try:
        return source.read_bytes(), onnx.load(str(source))
    except Exception as exc:  # protobuf and onnx raise their own types
        raise ModelLoadError(f"{source}: not a readable ONNX model ({one_line(exc)})") from None


def _plan(model: onnx.ModelProto, source: Path, logits_output: str | None) -> _Plan:
    from onnx import TensorProto

    graph = model.graph
    producers = _producers(graph)
    having = [o.name for o in graph.output if o.name in PROBABILITY_OUTPUT_NAMES]
    having += [
        f"{o.name} (made by {producers[o.name]})"
        for o in graph.output
        if producers.get(o.name) in PROBABILITY_OPS
    ]
    head = {p.key: p.value for p in model.metadata_props}.get(KEY_HEAD)
    if head in reference.PROBABILITY_HEADS:
        having.insert(0, f"onnxedge head {head}")
    if having:
        raise ExportError(
            f"{source} already outputs probabilities ({', '.join(having)}); it needs no head: "
            f"`onnxedge info {source}` shows how onnxedge reads it as it is"
        )

    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(
            f"{source}: a classifier has one input; this graph has {len(inputs)}: "
            f"{[i.name for i in inputs]}"
        )
    x = inputs[0]
    tensor = x.type.tensor_type
    if tensor.elem_type != TensorProto.FLOAT:
        raise ExportError(
            f"{source}: input {x.name!r} is {_dtype(tensor.elem_type)}; onnxedge feeds float32"
        )
    dims = list(tensor.shape.dim)
    shown = [d.dim_param or d.dim_value or "?" for d in dims]
    if len(dims) < 2:
        raise ExportError(
            f"{source}: input {x.name!r} has shape {shown}, no batch axis; onnxedge needs "
            "[batch, *row_shape] (re-export it with a batch axis first)"
        )
    if any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
        raise ExportError(
            f"{source}: input {x.name!r} has shape {shown}; every axis but the batch axis "
            "must have a fixed size"
        )
    notes: list[str] = []
    made_dynamic = dims[0].HasField("dim_value")
    if made_dynamic and dims[0].dim_value != 1:
        raise ExportError(
            f"{source}: input {x.name!r} has a fixed batch of {dims[0].dim_value}; "
            "onnxedge needs a dynamic batch axis (or a batch of 1 to make dynamic)"
        )
    if made_dynamic:
        notes.append(f"input {x.name!r} had a fixed batch of 1; made dynamic ({BATCH_AXIS!r})")

    outputs = {o.name: o for o in graph.output}
    if logits_output is not None and logits_output not in outputs:
        raise ExportError(
            f"{source} has no output {logits_output!r}; its outputs: {_listing(graph)}"
        )
    if logits_output is None and len(outputs) > 1 and OUTPUT_LOGITS not in outputs:
        raise ExportError(
            f"{source} has {len(outputs)} outputs and none is named 'logits': "
            f"{_listing(graph)}; choose one with --logits-output NAME"
        )
    chosen = logits_output or (next(iter(outputs)) if len(outputs) == 1 else OUTPUT_LOGITS)
    elem = outputs[chosen].type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ExportError(f"{source}: output {chosen!r} is {_dtype(elem)}; logits must be float32")
    dropped = [name for name in outputs if name != chosen]
    if dropped:
        notes.append(f"outputs {dropped} dropped (only the logits {chosen!r} are kept)")
    return _Plan(x.name, tuple(int(d.dim_value) for d in dims[1:]), made_dynamic, chosen, notes)


def _producers(graph: onnx.GraphProto) -> dict[str, str]:
    """The op that makes each tensor, looking through Identity nodes."""
    made = {out: node for node in graph.node for out in node.output}
    ops = {}
    for name, node in made.items():
        while node.op_type == "Identity" and node.input[0] in made:
            node = made[node.input[0]]
        ops[name] = node.op_type
    return ops


def _listing(graph: onnx.GraphProto) -> str:
    return ", ".join(f"{o.name!r} ({_dtype(o.type.tensor_type.elem_type)})" for o in graph.output)


def _dtype(elem_type: int) -> str:
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type).lower()
    return "float32" if name == "float" else name


def _probe_width(run: Runner, plan: _Plan) -> int:
    """The logits' width, from running the source on one row (graphs often leave it open)."""
    try:
        logits = run(np.zeros((1, *plan.input_shape), dtype=np.float32))[plan.logits]
    except Exception as exc:  # onnxruntime's own error types
        raise ExportError(f"onnxruntime cannot run the source model: {one_line(exc)}") from None
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ExportError(
            f"output {plan.logits!r} has shape {list(logits.shape)} for one row; logits are "
            "(batch, classes)"
        )
    return int(logits.shape[1])


def _fit_preprocess(step: Preprocess, input_shape: tuple[int, ...]) -> Preprocess:
    """The step as the graph holds it: a float32 factor, or statistics shaped like a row."""
    if isinstance(step, Rescale):
        return Rescale(float(np.float32(step.factor)))
    mean, std = step.mean, step.std
    if mean.size == math.prod(input_shape) and mean.shape != input_shape:
        mean, std = mean.reshape(input_shape), std.reshape(input_shape)
    try:
        fits = np.broadcast_shapes(mean.shape, input_shape) == input_shape
    except ValueError:
        fits = False
    if not fits:
        raise ExportError(
            f"standardize statistics of shape {list(step.mean.shape)} do not fit rows of "
            f"shape {list(input_shape)}"
        )
    return Standardize(mean, std)


# --- building the wrapped graph --------------------------------------------------------


def _build(
    model: onnx.ModelProto, plan: _Plan, spec: HeadSpec, width: int, preprocess: Preprocess | None
) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    wrapped = type(model)()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    taken = _names(graph)
    renamed = {}
    for name in (INPUT_NAME, *OUTPUT_NAMES):
        if name in taken:
            renamed[name] = _fresh(f"{name}_source", taken)
            _rename(graph, name, renamed[name])
    if renamed:
        plan.notes.append(f"source tensors renamed to free onnxedge's names: {renamed}")
    x = renamed.get(plan.input, plan.input)
    logits = renamed.get(plan.logits, plan.logits)
    graph.input.remove(next(i for i in graph.input if i.name == x))
    if plan.batch_made_dynamic:
        del graph.value_info[:]  # they record the fixed batch; shape inference redoes them
    del graph.output[:]

    def const(name: str, value: np.ndarray) -> str:
        fresh = _fresh(name, taken)
        graph.initializer.append(numpy_helper.from_array(value, fresh))
        return fresh

    front = 0  # the nodes in front of the source go first: the list stays topological

    def node(op: str, inputs: list[str], out: str = "", ahead: bool = False, **attrs: Any) -> str:
        nonlocal front
        out = out or _fresh(f"wrap_{op.lower()}", taken)
        taken.add(out)
        graph.node.insert(
            front if ahead else len(graph.node), helper.make_node(op, inputs, [out], **attrs)
        )
        front += ahead
        return out

    if isinstance(preprocess, Standardize):
        centred = node("Sub", [INPUT_NAME, const("preprocess.mean", preprocess.mean)], ahead=True)
        node("Div", [centred, const("preprocess.std", preprocess.std)], x, ahead=True)
    elif isinstance(preprocess, Rescale):
        factor = const("preprocess.factor", np.array(preprocess.factor, dtype=np.float32))
        node("Mul", [INPUT_NAME, factor], x, ahead=True)
    else:
        node("Identity", [INPUT_NAME], x, ahead=True)
    node("Identity", [logits], OUTPUT_LOGITS)
    if spec.head == "softmax":
        node("Softmax", [logits], OUTPUT_PROBABILITIES, axis=1)
        node("ArgMax", [OUTPUT_PROBABILITIES], OUTPUT_LABEL, axis=1, keepdims=0)
    else:
        node("Sigmoid", [logits], OUTPUT_PROBABILITIES)
        flat = node("Reshape", [OUTPUT_PROBABILITIES, const("wrap_flat", np.array([-1]))])
        t = const("wrap_threshold", np.array(spec.threshold, dtype=np.float32))
        # p >= t as not(p < t): GreaterOrEqual needs opset 12
        node("Cast", [node("Not", [node("Less", [flat, t])])], OUTPUT_LABEL, to=TensorProto.INT64)

    value = helper.make_tensor_value_info
    graph.input.insert(0, value(INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, *plan.input_shape]))
    graph.output.extend(
        [
            value(OUTPUT_LOGITS, TensorProto.FLOAT, [BATCH_AXIS, width]),
            value(OUTPUT_PROBABILITIES, TensorProto.FLOAT, [BATCH_AXIS, width]),
            value(OUTPUT_LABEL, TensorProto.INT64, [BATCH_AXIS]),
        ]
    )
    return wrapped


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [
        sub
        for n in graph.node
        for attr in n.attribute
        for sub in ((attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs)
    ]


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name in the graph and its subgraphs."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    names |= {name for n in graph.node for name in (*n.input, *n.output)}
    return names.union(*(_names(sub) for sub in _subgraphs(graph)))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename one tensor everywhere, subgraphs included (they may read the outer tensor)."""
    for n in graph.node:
        n.input[:] = [new if name == old else name for name in n.input]
        n.output[:] = [new if name == old else name for name in n.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if value.name == old:
            value.name = new
    for sub in _subgraphs(graph):
        _rename(sub, old, new)


def _fresh(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``, ...: the first not taken, now taken."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


# --- verification ----------------------------------------------------------------------


def _verification_rows(
    data: tuple[np.ndarray, np.ndarray] | None,
    input_shape: tuple[int, ...],
    preprocess: Preprocess | None,
    class_names: list[str],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows ``(n, *input_shape)`` and class indices (names looked up); else synthetic rows."""
    if data is None:
        return synthetic_rows(preprocess, input_shape, LARGE_BATCH), None
    labels = np.asarray(data[1])
    if not np.issubdtype(labels.dtype, np.integer):
        index = {name: k for k, name in enumerate(class_names)}
        unknown = sorted({str(v) for v in labels} - set(index))
        if unknown:
            raise DataError(
                f"data labels {unknown} are not among the model's classes {class_names} "
                "(name the classes with --classes)"
            )
        labels = np.array([index[str(v)] for v in labels])
    contract = ModelContract(class_names=class_names)
    return rows_to_verify((data[0], labels), None, None, None, None, contract, input_shape)[:2]


def _verify(
    original: Runner,
    wrapped: Runner,
    plan: _Plan,
    spec: HeadSpec,
    preprocess: Preprocess | None,
    rows: np.ndarray,
    labels: np.ndarray | None,
) -> tuple[list[Check], dict[str, float]]:
    """Checks at batch 1, an odd size and all rows; metrics on all rows with labels."""
    checks: list[Check] = []
    metrics: dict[str, float] = {}
    for n in sorted({1, min(ODD_BATCH_SIZE, len(rows)), len(rows)}):
        x = rows[:n]
        out = wrapped(x)
        fed = preprocess.apply(x).astype(np.float32) if preprocess is not None else x
        # a batch made dynamic: the source still runs one row at a time
        parts = [row[None] for row in fed] if plan.batch_made_dynamic else [fed]
        source = np.concatenate([original(f)[plan.logits] for f in parts])
        checks += compare(
            {OUTPUT_LOGITS: source},
            out,
            {OUTPUT_LOGITS: tol.LOGIT_ATOL},
            subject="wrapped~source",
            batch_size=n,
            names={OUTPUT_LOGITS: "LOGIT_ATOL"},
        )
        # the numpy head on its own logits, its own labels as the loss's targets: every
        # row's loss stays well conditioned in float32 (a confidently wrong row is not)
        p = out[OUTPUT_PROBABILITIES]
        own = reference.predict_label(p, spec.head, float(np.float32(spec.threshold)))
        checks += own_head_checks(out, "wrapped", n, spec.head, spec.threshold, own)
        if labels is not None and n == len(rows):
            z = out[OUTPUT_LOGITS].astype(np.float64)
            accuracy = float(np.mean(out[OUTPUT_LABEL] == labels))
            loss = float(np.mean(row_losses(z, labels, spec.head)))
            metrics = {"rows": n, "accuracy": accuracy, "loss": loss}
    return checks, metrics
