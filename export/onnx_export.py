"""Any classifier module -> one self-contained, checked and verified ``.onnx`` file.

:func:`export_classifier` takes any ``torch.nn.Module`` that maps ``(batch, *input_shape)``
float32 to logits, puts its preprocessing in front and its head behind
(:mod:`onnxedge.export.heads`), exports it with ``torch.onnx.export`` (the dynamo exporter
by default, with a named dynamic batch axis; the TorchScript exporter only as a recorded
fallback), checks the graph (``onnx.checker`` with ``full_check``, strict shape inference,
the contract's names, dtypes and a symbolic batch axis), writes the model's contract into
``metadata_props``, verifies parity against the module itself
(:func:`onnxedge.export.verify.verify_model`) and records the figures, all in a temp file
beside the output that is renamed into place only when everything passed: a failed export
leaves no file behind. :func:`checkpoint_to_onnx` does the same for an onnxedge run folder.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.heads import (
    DEFAULT_THRESHOLD,
    HEAD_AUTO,
    ClassifierWithHead,
    resolve_head,
)
from onnxedge.export.verify import (
    ARCHITECTURE,
    KEY_NODE_MODULE,
    ParityReport,
    graph_weights_sha256,
    verify_model,
)
from onnxedge.models.preprocess import Preprocess
from onnxedge.runtime.atomic import atomic_file
from onnxedge.runtime.contract import (
    BATCH_AXIS,
    INPUT_NAME,
    KEY_EXPORTED_AT,
    KEY_EXPORTER,
    KEY_GOLDEN,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_OPSET,
    KEY_PARITY,
    KEY_TRAINING_METRICS,
    KEY_VERSIONS,
    KEY_WEIGHTS_SHA256,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PREFIX,
    ModelContract,
)
from onnxedge.runtime.contract import golden_set as contract_golden_set
from onnxedge.runtime.errors import (
    CheckpointError,
    ExportError,
    InputShapeError,
    OutputExistsError,
)
from onnxedge.runtime.version import library_versions

if TYPE_CHECKING:
    import os

    import onnx
    import torch
    from onnxedge.models.checkpoint import TrainedRun

#: The default opset: the dynamo exporter's native one (its torchlib is written for 18, so
#: nothing is version-converted), and one that onnxruntime has run since 1.14.
DEFAULT_OPSET = 18
#: The dynamo exporter has no implementations below 18 (it would silently keep 18), and
#: torch 2.13 knows opsets up to 23; the TorchScript exporter stops at 20.
MIN_OPSET = 18
MAX_OPSET = 23
TORCHSCRIPT_MAX_OPSET = 20
EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "torchscript")
#: The dynamo exporter's per-node metadata naming the module scopes a node came from.
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
#: The golden set's size: 8..32 rows, fewer where rows are large (28x28 images: 25).
#: Rows of the example input traced at export: torch.export turns a dimension whose
#: example size is 0 or 1 into a constant, which would bake the batch size into the graph.
EXAMPLE_BATCH = 3


@dataclass
class ExportResult:
    """What :func:`export_classifier` / :func:`checkpoint_to_onnx` wrote.

    Attributes:
        path: the model file.
        task, head, threshold: what the model computes.
        input_shape: one row's shape.
        opset: the ai.onnx opset of the graph.
        exporter: ``dynamo`` or ``torchscript`` (the one that produced the graph).
        fallback_reason: why the dynamo exporter was not used, when it was not.
        size_bytes: the file's size.
        metadata: the ``metadata_props`` written.
        report: the verification report (None with ``verify=False``).
        seconds: wall time of the whole export.
    """

    path: Path
    task: str
    head: str
    threshold: float
    input_shape: tuple[int, ...]
    opset: int
    exporter: str
    fallback_reason: str | None
    size_bytes: int
    metadata: dict[str, str]
    report: ParityReport | None
    seconds: float

    @property
    def parity(self) -> ParityReport | None:
        """The verification report (the older name of :attr:`report`)."""
        return self.report

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the parity figures as their summary)."""
        return {
            "path": str(self.path),
            "task": self.task,
            "head": self.head,
            "threshold": self.threshold,
            "input_shape": list(self.input_shape),
            "opset": self.opset,
            "exporter": self.exporter,
            "fallback_reason": self.fallback_reason,
            "size_bytes": self.size_bytes,
            "verified": self.report is not None,
            "parity": self.report.summary() if self.report is not None else None,
            "seconds": round(self.seconds, 3),
        }


def check_opset(opset: int | None, exporter: str = "auto") -> int:
    """Validate an opset for an exporter and return it (None: ``DEFAULT_OPSET``).

    Raises:
        ExportError: unknown exporter, or an opset outside what that exporter can write.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    value = DEFAULT_OPSET if opset is None else int(opset)
    top = TORCHSCRIPT_MAX_OPSET if exporter == "torchscript" else MAX_OPSET
    if not MIN_OPSET <= value <= top:
        raise ExportError(
            f"opset {value} is not supported by the {exporter} exporter; choose "
            f"{MIN_OPSET}..{top} (default {DEFAULT_OPSET})"
        )
    return value


def module_to_onnx(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> tuple[onnx.ModelProto, str, str | None]:
    """Export a head module to an in-memory ONNX model with a dynamic ``batch`` axis.

    Args:
        module: maps ``input`` ``(batch, *input_shape)`` float32 to
            ``(logits, probabilities, label)``.
        input_shape: one row's shape.
        opset: the ai.onnx opset (see :func:`check_opset`).
        exporter: ``dynamo``, ``torchscript``, or ``auto`` (dynamo, falling back to
            TorchScript only if dynamo raises).

    Returns:
        The model, the exporter that produced it, and why dynamo was not used (or None).

    Raises:
        ExportError: the exporter(s) failed.
    """
    import torch

    check_opset(opset, exporter)
    example = torch.zeros(EXAMPLE_BATCH, *input_shape, dtype=torch.float32)
    if exporter == "torchscript":
        return _torchscript_export(module, example, opset), "torchscript", None
    try:
        return _dynamo_export(module, example, opset), "dynamo", None
    except Exception as exc:  # the dynamo stack raises many types; the fallback is recorded
        if exporter == "dynamo":
            raise ExportError(f"the dynamo exporter failed: {_first_line(exc)}") from exc
        reason = f"dynamo exporter failed: {_first_line(exc)}"
        if opset > TORCHSCRIPT_MAX_OPSET:
            raise ExportError(
                f"the dynamo exporter failed ({_first_line(exc)}) and the TorchScript fallback "
                f"stops at opset {TORCHSCRIPT_MAX_OPSET}; asked for {opset}"
            ) from exc
    return _torchscript_export(module, example, opset), "torchscript", reason


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress logs and deprecation chatter (the result is checked
    and verified instead)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _dynamo_export(module: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import torch

    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
            verbose=False,
        )
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    return program.model_proto


def _torchscript_export(
    module: torch.nn.Module, example: torch.Tensor, opset: int
) -> onnx.ModelProto:
    import onnx
    import torch

    with tempfile.TemporaryDirectory(prefix="onnxedge-export-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)},
                    do_constant_folding=True,
                )
        except Exception as exc:  # TorchScript tracing / symbolic errors of many types
            raise ExportError(f"the TorchScript exporter failed: {_first_line(exc)}") from exc
        return onnx.load(str(path))


def finalize_graph(
    model: onnx.ModelProto, *, input_shape: Sequence[int], output_size: int, opset: int
) -> onnx.ModelProto:
    """Strip exporter debug metadata, then check the graph and infer its shapes.

    The dynamo exporter annotates every node with its Python stack trace (file paths of
    the build machine, several KB); a deployed model carries none of that.

    Raises:
        ExportError: the checker or strict shape inference fails, the opset differs from
            the one asked for, a tensor is stored outside the file, or the signature is
            not ``input`` float32 ``[batch, *input_shape]`` -> ``logits`` /
            ``probabilities`` float32 ``[batch, output_size]``, ``label`` int64 ``[batch]``.
    """
    import onnx
    from onnx import TensorProto

    graph = model.graph
    for node in graph.node:
        # keep only the torch module path the node came from (first-diverging-node reports)
        scopes = {p.key: p.value for p in node.metadata_props}.get(NAME_SCOPES, "[]")
        del node.metadata_props[:]
        node.doc_string = ""
        path = ast.literal_eval(scopes) if scopes.startswith("[") else []
        if len(path) >= 3:
            node.metadata_props.add(key=KEY_NODE_MODULE, value=str(path[-2]))
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            del value.metadata_props[:]
    del graph.value_info[:]  # re-inferred below

    problems = []
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", versions.get("ai.onnx")) != opset:
        problems.append(f"opset is {versions.get('', versions.get('ai.onnx'))}, asked for {opset}")
    external = [t.name for t in graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if external:
        problems.append(f"tensors stored outside the file: {external}")
    initializers = {t.name for t in graph.initializer}
    values = [v for v in graph.input if v.name not in initializers] + list(graph.output)
    expected = [
        (INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, *input_shape]),
        (OUTPUT_LOGITS, TensorProto.FLOAT, [BATCH_AXIS, output_size]),
        (OUTPUT_PROBABILITIES, TensorProto.FLOAT, [BATCH_AXIS, output_size]),
        (OUTPUT_LABEL, TensorProto.INT64, [BATCH_AXIS]),
    ]
    if [v.name for v in values] != [e[0] for e in expected]:
        problems.append(
            f"inputs/outputs are {[v.name for v in values]}, expected {[e[0] for e in expected]}"
        )
    else:
        for value, (name, dtype, dims) in zip(values, expected, strict=True):
            tensor = value.type.tensor_type
            found = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            if tensor.elem_type != dtype or found != dims:
                problems.append(
                    f"{name} is {TensorProto.DataType.Name(tensor.elem_type)} {found}, expected "
                    f"{TensorProto.DataType.Name(dtype)} {dims}"
                )
    if problems:
        raise ExportError("the exported graph breaks the model contract: " + "; ".join(problems))
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph does not pass the ONNX checker: {exc}") from exc


#: the libraries whose versions shape an exported model (recorded in onnxedge.versions).
EXPORT_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy")


def _check_target(path: Path, overwrite: bool) -> None:
    # Checked before the (slow) export, with a message that names a model file.
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give the model's file name, like {path}/model.onnx")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")


def _write_model(model: onnx.ModelProto, metadata: dict[str, str], path: Path) -> None:
    import onnx

    onnx.helper.set_model_props(model, metadata)
    try:
        path.write_bytes(model.SerializeToString())
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def export_classifier(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int],
    head: str = HEAD_AUTO,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    verify_data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    opset: int | None = None,
    overwrite: bool = False,
    exporter: str = "auto",
    verify: bool = True,
    report_path: str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    extra_metadata: dict[str, Any] | None = None,
    run: TrainedRun | None = None,
) -> ExportResult:
    """Export any classifier module to one verified ONNX file with its head and preprocessing.

    The module is put in eval mode. The graph reads raw rows ``input`` float32
    ``[batch, *input_shape]`` (``preprocess`` is inside it) and outputs ``logits``,
    ``probabilities`` and ``label``; the metadata records the contract (task, head,
    threshold, class / feature names, input shape, preprocessing). Before the file is put
    in place it is verified against ``module`` itself (:func:`verify_model`).

    Args:
        module: maps ``(batch, *input_shape)`` float32 (after ``preprocess``) to logits
            ``(batch, classes)`` or ``(batch, 1)``.
        path: the ``.onnx`` file to write.
        input_shape: one row's shape, without the batch axis (``(64,)``, ``(1, 8, 8)``).
        head: ``auto`` (1 logit -> sigmoid, else softmax), ``softmax`` or ``sigmoid``.
        class_names: one per class (2 for a sigmoid head); default ``"0"``, ``"1"``, ...
        feature_names: for flat inputs, one per feature.
        preprocess: ``Standardize(mean, std)``, ``Rescale(factor)`` or None.
        verify_data: labelled rows ``(x, y)`` (or rows alone) to verify on; default: rows
            drawn from the preprocessing, labelled by the reference.
        threshold: the sigmoid head's decision threshold in ``(0, 1)``.
        opset: ai.onnx opset, ``MIN_OPSET``..``MAX_OPSET`` (None: ``DEFAULT_OPSET``).
        overwrite: replace an existing ``path``.
        exporter: ``auto``, ``dynamo`` or ``torchscript``.
        verify: verify before writing and record the figures as ``onnxedge.parity``.
        report_path: also write the full parity report as JSON here (even on failure).
        batch_sizes: the batch sizes verification runs at (default: 1, 37, all rows).
        extra_metadata: more ``onnxedge.*`` keys (without the prefix).
        run: the run folder the module came from (checked against the metadata).

    Returns:
        What was written, with the parity report (``result.report``).

    Raises:
        ExportError: the module's output is not ``(batch, classes)`` / ``(batch, 1)``
            logits, it rejects ``input_shape``, its logits hold NaN / Inf on the check
            data, the head or threshold does not fit, class names do not match, bad
            opset / exporter, the graph fails the checker, or the file cannot be written.
        InputShapeError: ``verify_data`` does not have rows of ``input_shape``.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        ParityError: verification failed (every failing check is listed).
    """
    import torch

    started = time.perf_counter()
    opset = check_opset(opset, exporter)
    target = Path(path)
    _check_target(target, overwrite)
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ExportError(
            f"input_shape must be one or more positive sizes, got {tuple(input_shape)}"
        )
    check_rows, labels = _check_data(verify_data, shape, preprocess)
    module.eval()
    try:
        with torch.inference_mode():
            logits = module(torch.from_numpy(_pre(preprocess, check_rows)))
    except Exception as exc:  # whatever the user's forward raises on a wrong shape
        raise ExportError(
            f"the module rejects rows of input_shape {shape} (a batch of shape "
            f"{(len(check_rows), *shape)}): {_first_line(exc)}"
        ) from None
    if (
        not isinstance(logits, torch.Tensor)
        or logits.ndim != 2
        or logits.shape[0] != len(check_rows)
    ):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ExportError(
            f"the module must return logits of shape (batch, classes) or (batch, 1); for a "
            f"batch of shape {(len(check_rows), *shape)} it returned {got}"
        )
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise ExportError(
            f"the module's logits hold NaN / Inf on {bad} of {len(check_rows)} check rows"
        )
    width = int(logits.shape[1])
    spec = resolve_head(width, head, None if threshold == DEFAULT_THRESHOLD else threshold)
    classes = max(width, 2)
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else [str(i) for i in range(classes)]
    )
    if len(names) != classes:
        raise ExportError(
            f"class_names has {len(names)} names; {width} logits make {classes} classes"
        )
    if feature_names is not None and len(feature_names) != math.prod(shape):
        raise ExportError(
            f"feature_names has {len(feature_names)} names; rows of shape {shape} "
            f"have {math.prod(shape)} values"
        )
    wrapped = ClassifierWithHead(module, preprocess, spec).eval()
    report: ParityReport | None = None
    with atomic_file(target, overwrite=overwrite, error=ExportError) as tmp:
        model, used, reason = module_to_onnx(wrapped, shape, opset=opset, exporter=exporter)
        model = finalize_graph(model, input_shape=shape, output_size=width, opset=opset)
        extra = {
            **(extra_metadata or {}),
            KEY_GRAPH_WEIGHTS_SHA256[len(PREFIX) :]: graph_weights_sha256(model),
            KEY_VERSIONS[len(PREFIX) :]: library_versions(
                "torch", "onnx", "onnxscript", "onnxruntime", "numpy"
            ),
            KEY_EXPORTED_AT[len(PREFIX) :]: datetime.now(UTC).isoformat(timespec="seconds"),
            KEY_OPSET[len(PREFIX) :]: opset,
            KEY_EXPORTER[len(PREFIX) :]: used,
        }
        metadata = ModelContract(
            task=spec.task,
            head=spec.head,
            threshold=spec.threshold,
            class_names=names,
            num_features=math.prod(shape),
            feature_names=list(feature_names) if feature_names is not None else None,
            input_shape=shape,
            preprocess=preprocess.to_dict() if preprocess is not None else None,
            variant="fp32",
            extra=extra,
        ).to_metadata()
        _write_model(model, metadata, tmp)
        if verify:
            report = verify_model(
                tmp,
                None
                if run is not None
                else (check_rows, labels)
                if labels is not None
                else check_rows,
                module,
                run_dir=run,
                batch_sizes=batch_sizes,
                name=str(target),
            )
            if report_path is not None:
                report.write_json(report_path)
            report.raise_for_failures()
            metadata[KEY_PARITY] = json.dumps(report.summary())
            metadata[KEY_GOLDEN] = json.dumps(golden_set(model, check_rows))
            _write_model(model, metadata, tmp)
    return ExportResult(
        path=target,
        task=spec.task,
        head=spec.head,
        threshold=spec.threshold,
        input_shape=shape,
        opset=opset,
        exporter=used,
        fallback_reason=reason,
        size_bytes=target.stat().st_size,
        metadata=metadata,
        report=report,
        seconds=time.perf_counter() - started,
    )


def golden_set(model: onnx.ModelProto, rows: np.ndarray) -> dict[str, Any]:
    """The self-test's golden set for ``model``: onnxruntime's outputs on ``rows``, by
    :func:`onnxedge.runtime.contract.golden_set`'s rule (near-tie rows left out)."""
    from onnxedge.export.verify import onnxruntime_runner

    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    out = onnxruntime_runner(model)(rows)
    return contract_golden_set(
        rows, out, head=contract.head or "softmax", threshold=contract.threshold
    )


def _pre(step: Preprocess | None, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(step.apply(x) if step is not None else x, dtype=np.float32)


def _check_data(
    data: tuple[np.ndarray, np.ndarray] | np.ndarray | None,
    shape: tuple[int, ...],
    step: Preprocess | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The check rows ``(n, *shape)`` float32 and their labels (None: the reference's)."""
    if data is None:
        from onnxedge.export.verify import SYNTHETIC_ROWS
        from onnxedge.models.preprocess import Rescale

        rng = np.random.default_rng(0)
        size = (SYNTHETIC_ROWS, *shape)
        if isinstance(step, Rescale):
            return rng.uniform(0, 1 / abs(step.factor), size=size).astype(np.float32), None
        if step is not None:
            return (step.mean + step.std * rng.standard_normal(size)).astype(np.float32), None
        return rng.standard_normal(size).astype(np.float32), None
    x, y = data if isinstance(data, tuple) else (data, None)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape[1:] != shape and x.shape[1] == math.prod(shape):
        x = x.reshape(len(x), *shape)
    if x.shape[1:] != shape or len(x) == 0:
        raise InputShapeError(
            f"verify_data must hold rows of shape {shape}; got an array of shape {x.shape}"
        )
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise InputShapeError(f"verify_data labels must have shape ({len(x)},), got {y.shape}")
        y = y.astype(np.int64)
    return np.ascontiguousarray(x), y


def checkpoint_to_onnx(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    head: str = HEAD_AUTO,
    threshold: float | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    overwrite: bool = False,
    verify: bool = True,
    report_path: str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
) -> ExportResult:
    """Export an onnxedge run folder (any architecture onnxedge trains) to one verified file.

    The net is rebuilt from the run's config and weights; verification runs on the run's
    validation split against the run's own module, and checks the metadata against it.

    Args:
        run_dir: the run folder (``onnxedge train`` output).
        output: the ``.onnx`` file to write.
        head, threshold, opset, exporter, overwrite, verify, report_path, batch_sizes:
            as for :func:`export_classifier` (threshold None: 0.5; sigmoid only).

    Raises:
        CheckpointError: ``run_dir`` is a file, or the run folder is missing, incomplete
            or corrupt.
        ExportError, OutputExistsError, ParityError: as for :func:`export_classifier`.
    """
    from onnxedge.models.checkpoint import load_run

    check_opset(opset, exporter)
    _check_target(Path(output), overwrite)
    if Path(run_dir).is_file():
        raise CheckpointError(
            f"{run_dir} is a file; onnxedge export takes a run folder (what onnxedge train "
            "writes); export your own module with onnxedge.export.export_classifier"
        )
    run = load_run(run_dir)
    spec = resolve_head(run.config.output_size, head, threshold)
    best = run.metrics.get("best", {}) if isinstance(run.metrics, dict) else {}
    training = {
        "dataset": run.dataset,
        "best_epoch": run.metrics.get("best_epoch"),
        "epochs_run": run.metrics.get("epochs_run"),
        "train_rows": run.metrics.get("train_rows"),
        "val_rows": run.metrics.get("val_rows"),
        **{k: v for k, v in best.items() if isinstance(v, int | float)},
        "options": run.info.get("training"),
    }
    data = run.validation() if verify else None
    return export_classifier(
        run.net,
        output,
        input_shape=run.input_shape,
        head=spec.head,
        class_names=list(run.class_names),
        feature_names=list(run.feature_names) if len(run.input_shape) == 1 else None,
        preprocess=run.preprocess,
        verify_data=data,
        threshold=spec.threshold,
        opset=opset,
        overwrite=overwrite,
        exporter=exporter,
        verify=verify,
        report_path=report_path,
        batch_sizes=batch_sizes,
        extra_metadata={
            ARCHITECTURE: json.dumps(run.config.to_dict()),
            KEY_TRAINING_METRICS[len(PREFIX) :]: training,
            KEY_WEIGHTS_SHA256[len(PREFIX) :]: run.weights_sha256,
        },
        run=run,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
