"""A training run folder -> one self-contained, checked and verified ``.onnx`` file.

:func:`checkpoint_to_onnx` loads the run, wraps its net in the head module
(:mod:`onnxedge.export.heads`), exports it with ``torch.onnx.export`` (the dynamo exporter
by default, with a named dynamic batch axis; the TorchScript exporter only as a recorded
fallback), checks the graph (``onnx.checker`` with ``full_check``, strict shape inference,
the contract's names, dtypes and a symbolic batch axis), writes the model's contract into
``metadata_props``, verifies parity (:func:`onnxedge.export.verify.verify_model`) and
records the figures, all in a temp file beside the output that is renamed into place
only when everything passed: a failed export leaves no file behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxedge.export.atomic import atomic_file
from onnxedge.export.heads import HEAD_AUTO, ClassifierWithHead, HeadSpec, resolve_head
from onnxedge.export.verify import (
    ParityReport,
    graph_weights_sha256,
    verify_model,
)
from onnxedge.runtime.contract import (
    BATCH_AXIS,
    INPUT_NAME,
    KEY_EXPORTED_AT,
    KEY_EXPORTER,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_NORMALIZATION,
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
from onnxedge.runtime.errors import ExportError, OutputExistsError
from onnxedge.runtime.version import __version__

if TYPE_CHECKING:
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
#: Rows of the example input traced at export: torch.export turns a dimension whose
#: example size is 0 or 1 into a constant, which would bake the batch size into the graph.
EXAMPLE_BATCH = 3


@dataclass
class ExportResult:
    """What :func:`checkpoint_to_onnx` wrote.

    Attributes:
        path: the model file.
        task, head, threshold: what the model computes.
        opset: the ai.onnx opset of the graph.
        exporter: ``dynamo`` or ``torchscript`` (the one that produced the graph).
        fallback_reason: why the dynamo exporter was not used, when it was not.
        size_bytes: the file's size.
        metadata: the ``metadata_props`` written.
        parity: the verification report (None with ``verify=False``).
        seconds: wall time of the whole export.
    """

    path: Path
    task: str
    head: str
    threshold: float
    opset: int
    exporter: str
    fallback_reason: str | None
    size_bytes: int
    metadata: dict[str, str]
    parity: ParityReport | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the parity figures as their summary)."""
        return {
            "path": str(self.path),
            "task": self.task,
            "head": self.head,
            "threshold": self.threshold,
            "opset": self.opset,
            "exporter": self.exporter,
            "fallback_reason": self.fallback_reason,
            "size_bytes": self.size_bytes,
            "verified": self.parity is not None,
            "parity": self.parity.summary() if self.parity is not None else None,
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
    num_features: int,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> tuple[onnx.ModelProto, str, str | None]:
    """Export a head module to an in-memory ONNX model with a dynamic ``batch`` axis.

    Args:
        module: maps ``input`` ``(batch, num_features)`` float32 to
            ``(logits, probabilities, label)``.
        num_features: features per row.
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
    example = torch.zeros(EXAMPLE_BATCH, num_features, dtype=torch.float32)
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
    model: onnx.ModelProto, *, num_features: int, output_size: int, opset: int
) -> onnx.ModelProto:
    """Strip exporter debug metadata, then check the graph and infer its shapes.

    The dynamo exporter annotates every node with its Python stack trace (file paths of
    the build machine, several KB); a deployed model carries none of that.

    Returns:
        The model with inferred shapes.

    Raises:
        ExportError: the checker or strict shape inference fails, the opset differs from
            the one asked for, a tensor is stored outside the file, or the signature is
            not ``input`` float32 ``[batch, num_features]`` -> ``logits`` /
            ``probabilities`` float32 ``[batch, output_size]``, ``label`` int64 ``[batch]``.
    """
    import onnx

    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            del value.metadata_props[:]
    del graph.value_info[:]  # re-inferred below

    problems = []
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", versions.get("ai.onnx")) != opset:
        problems.append(f"opset is {versions.get('', versions.get('ai.onnx'))}, asked for {opset}")
    external = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        problems.append(f"tensors stored outside the file: {external}")
    problems += _signature_problems(model, num_features, output_size)
    if problems:
        raise ExportError("the exported graph breaks the model contract: " + "; ".join(problems))
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph does not pass the ONNX checker: {exc}") from exc
    return inferred


def _signature_problems(model: onnx.ModelProto, num_features: int, output_size: int) -> list[str]:
    from onnx import TensorProto

    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    expected = [
        (INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, num_features]),
        (OUTPUT_LOGITS, TensorProto.FLOAT, [BATCH_AXIS, output_size]),
        (OUTPUT_PROBABILITIES, TensorProto.FLOAT, [BATCH_AXIS, output_size]),
        (OUTPUT_LABEL, TensorProto.INT64, [BATCH_AXIS]),
    ]
    names = [v.name for v in inputs] + [v.name for v in graph.output]
    if names != [name for name, _, _ in expected]:
        return [f"inputs/outputs are {names}, expected {[name for name, _, _ in expected]}"]
    problems = []
    for value, (name, dtype, dims) in zip([*inputs, *graph.output], expected, strict=True):
        tensor = value.type.tensor_type
        found: list[str | int] = [
            d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim
        ]
        if tensor.elem_type != dtype or found != dims:
            problems.append(
                f"{name} is {TensorProto.DataType.Name(tensor.elem_type)} {found}, expected "
                f"{TensorProto.DataType.Name(dtype)} {dims}"
            )
    return problems


def export_metadata(
    run: TrainedRun, spec: HeadSpec, *, opset: int, exporter: str, graph_digest: str
) -> dict[str, str]:
    """The ``metadata_props`` of a model exported from ``run`` (parity is added later)."""
    best = run.metrics.get("best", {}) if isinstance(run.metrics, dict) else {}
    training = {
        "dataset": run.info.get("dataset"),
        "best_epoch": run.metrics.get("best_epoch"),
        "epochs_run": run.metrics.get("epochs_run"),
        "train_rows": run.metrics.get("train_rows"),
        "val_rows": run.metrics.get("val_rows"),
        **{k: v for k, v in best.items() if isinstance(v, int | float)},
        "options": run.info.get("training"),
    }
    extra = {
        KEY_NORMALIZATION: run.normalization.to_dict(),
        KEY_TRAINING_METRICS: training,
        KEY_WEIGHTS_SHA256: run.weights_sha256,
        KEY_GRAPH_WEIGHTS_SHA256: graph_digest,
        KEY_VERSIONS: library_versions(),
        KEY_EXPORTED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        KEY_OPSET: opset,
        KEY_EXPORTER: exporter,
    }
    contract = ModelContract(
        task=run.task,
        head=spec.head,
        threshold=spec.threshold,
        class_names=list(run.class_names),
        num_features=run.config.input_size,
        feature_names=list(run.feature_names),
        variant="fp32",
        extra={key[len(PREFIX) :]: value for key, value in extra.items()},
    )
    return contract.to_metadata()


def library_versions() -> dict[str, str]:
    """Versions of everything that shaped an exported model."""
    import numpy
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    return {
        "onnxedge": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


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
    """Export a training run to one verified ONNX file.

    Args:
        run_dir: the run folder (``onnxedge train`` output).
        output: the ``.onnx`` file to write.
        head: ``auto`` (the task's head), ``softmax`` or ``sigmoid``.
        threshold: the sigmoid head's decision threshold in ``(0, 1)``; None: 0.5.
            Not accepted with a softmax head.
        opset: ai.onnx opset, ``MIN_OPSET``..``MAX_OPSET`` (None: ``DEFAULT_OPSET``).
        exporter: ``auto`` (dynamo, TorchScript only if dynamo fails), ``dynamo`` or
            ``torchscript``. The one that ran is recorded as ``onnxedge.exporter``.
        overwrite: replace an existing ``output``.
        verify: verify parity on the run's validation split before the file is put in
            place, and record the figures as ``onnxedge.parity``.
        report_path: also write the full parity report as JSON here (even when parity
            fails, so the figures can be read).
        batch_sizes: the batch sizes verification runs at (default: 1, 37, all rows).

    Returns:
        What was written, with the parity report.

    Raises:
        CheckpointError: the run folder is missing, incomplete or corrupt, or its config
            does not match its weights.
        ExportError: bad head / threshold / opset / exporter, the exporter failed, the
            graph fails the checker, or the output folder cannot be written.
        OutputExistsError: ``output`` exists and ``overwrite`` is false.
        ParityError: verification failed (every failing check is listed).
    """
    from onnxedge.models.checkpoint import load_run

    started = time.perf_counter()
    opset = check_opset(opset, exporter)
    target = Path(output)
    _check_target(target, overwrite)
    run = load_run(run_dir)
    spec = resolve_head(run.config, head, threshold)
    module = ClassifierWithHead(run.net, run.normalization, spec).eval()
    report: ParityReport | None = None
    with atomic_file(target, overwrite=overwrite) as tmp:
        model, used, reason = module_to_onnx(
            module, run.config.input_size, opset=opset, exporter=exporter
        )
        model = finalize_graph(
            model,
            num_features=run.config.input_size,
            output_size=run.config.output_size,
            opset=opset,
        )
        metadata = export_metadata(
            run, spec, opset=opset, exporter=used, graph_digest=graph_weights_sha256(model)
        )
        _write_model(model, metadata, tmp)
        if verify:
            report = verify_model(tmp, run_dir=run, batch_sizes=batch_sizes, name=str(target))
            if report_path is not None:
                report.write_json(report_path)
            report.raise_for_failures()
            metadata[KEY_PARITY] = json.dumps(report.summary())
            _write_model(model, metadata, tmp)
    return ExportResult(
        path=target,
        task=run.task,
        head=spec.head,
        threshold=spec.threshold,
        opset=opset,
        exporter=used,
        fallback_reason=reason,
        size_bytes=target.stat().st_size,
        metadata=metadata,
        parity=report,
        seconds=time.perf_counter() - started,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
