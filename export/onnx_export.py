"""Any classifier module -> one self-contained, checked and verified ``.onnx`` file.

:func:`export_classifier` puts the module's preprocessing in front and its head behind
(:class:`ClassifierWithHead`), exports it with ``torch.onnx.export`` (dynamo, with a named
dynamic batch axis; TorchScript only as a recorded fallback), checks the graph, writes the
contract into ``metadata_props`` and verifies parity against the module, all in a temp
file renamed into place only when everything passed. :func:`checkpoint_to_onnx` does the
same for an onnxedge run folder.
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
import torch
from onnxedge.export.heads import (
    DEFAULT_THRESHOLD,
    HEAD_AUTO,
    HeadSpec,
    class_names_for,
    resolve_head,
)
from onnxedge.export.localize import KEY_NODE_MODULE
from onnxedge.export.verify import (
    ARCHITECTURE,
    ParityReport,
    graph_weights_sha256,
    onnxruntime_runner,
    signature_problems,
    synthetic_rows,
    verify_model,
)
from onnxedge.models.preprocess import Preprocess, Rescale
from onnxedge.runtime import contract
from onnxedge.runtime.atomic import atomic_file
from onnxedge.runtime.contract import (
    BATCH_AXIS,
    INPUT_NAME,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PREFIX,
    ModelContract,
)
from onnxedge.runtime.errors import (
    CheckpointError,
    ExportError,
    InputShapeError,
    ModelLoadError,
    OutputExistsError,
)
from onnxedge.runtime.version import library_versions
from torch import nn

if TYPE_CHECKING:
    import os

    import onnx
    from onnxedge.models.checkpoint import TrainedRun

#: The dynamo exporter's native opset (nothing is version-converted); onnxruntime >= 1.14.
DEFAULT_OPSET = 18
#: dynamo has no implementations below 18 and knows up to 23; TorchScript stops at 20.
MIN_OPSET = 18
MAX_OPSET = 23
TORCHSCRIPT_MAX_OPSET = 20
EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "torchscript")
#: The dynamo exporter's per-node metadata naming the module scopes a node came from.
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
#: torch.export turns a dimension whose example size is 0 or 1 into a constant.
EXAMPLE_BATCH = 3
EXPORT_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy")


class PreprocessModule(nn.Module):
    """A preprocessing step as graph arithmetic; its constants are buffers, so the graph's
    initializers are ``preprocess.mean`` / ``preprocess.std`` or ``preprocess.factor``."""

    factor: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, step: Preprocess) -> None:
        super().__init__()
        self.kind = "rescale" if isinstance(step, Rescale) else "standardize"
        if isinstance(step, Rescale):
            self.register_buffer("factor", torch.tensor(step.factor, dtype=torch.float32))
        else:
            self.register_buffer("mean", torch.from_numpy(np.array(step.mean, np.float32)))
            self.register_buffer("std", torch.from_numpy(np.array(step.std, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor if self.kind == "rescale" else (x - self.mean) / self.std


class ClassifierWithHead(nn.Module):
    """Raw rows in; ``(logits, probabilities, label)`` out (:mod:`onnxedge.export.heads`).

    Args:
        net: maps ``(batch, *input_shape)`` float32 to logits; its initializers in the graph
            are ``net.<its parameter names>``.
        preprocess: the step in front of the net, or None.
        spec: the head, from :func:`~onnxedge.export.heads.resolve_head`.
    """

    def __init__(self, net: nn.Module, preprocess: Preprocess | None, spec: HeadSpec) -> None:
        super().__init__()
        self.preprocess = PreprocessModule(preprocess) if preprocess is not None else None
        self.net = net
        self.head, self.threshold = spec.head, float(spec.threshold)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.net(self.preprocess(x) if self.preprocess is not None else x)
        if self.head == "softmax":
            probabilities = torch.softmax(logits, dim=1)
            return logits, probabilities, torch.argmax(probabilities, dim=1)
        probabilities = torch.sigmoid(logits)  # (batch, 1): P(positive class)
        return logits, probabilities, (probabilities.squeeze(1) >= self.threshold).to(torch.int64)


@dataclass
class ExportResult:
    """What :func:`export_classifier` / :func:`checkpoint_to_onnx` wrote: the file, what it
    computes, the exporter that produced it (and why dynamo was not used, if not), the
    metadata written and the parity report (None with ``verify=False``)."""

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
        """The parity report (the name benchmarks/models.py reads)."""
        return self.report

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the parity figures as their summary)."""
        fields = ("task", "head", "threshold", "opset", "exporter", "fallback_reason", "size_bytes")
        return {
            "path": str(self.path),
            **{k: getattr(self, k) for k in fields},
            "input_shape": list(self.input_shape),
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
    """Export a head module (``input`` -> logits, probabilities, label) to an in-memory model
    with a dynamic ``batch`` axis; ``auto`` falls back to TorchScript only if dynamo raises.

    Returns:
        The model, the exporter that produced it, and why dynamo was not used (or None).

    Raises:
        ExportError: the exporter(s) failed.
    """
    check_opset(opset, exporter)
    example = torch.zeros(EXAMPLE_BATCH, *input_shape, dtype=torch.float32)
    if exporter == "torchscript":
        return _torchscript_export(module, example, opset), "torchscript", None
    try:
        return _dynamo_export(module, example, opset), "dynamo", None
    except Exception as exc:  # the dynamo stack raises many types; the fallback is recorded
        if exporter == "dynamo":
            raise ExportError(f"the dynamo exporter failed: {_first_line(exc)}") from exc
        if opset > TORCHSCRIPT_MAX_OPSET:
            raise ExportError(
                f"the dynamo exporter failed ({_first_line(exc)}) and the TorchScript fallback "
                f"stops at opset {TORCHSCRIPT_MAX_OPSET}; asked for {opset}"
            ) from exc
        reason = f"dynamo exporter failed: {_first_line(exc)}"
    return _torchscript_export(module, example, opset), "torchscript", reason


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters' progress logs and deprecation chatter off (the result is checked)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _names(opset: int) -> dict[str, Any]:
    return {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES), "opset_version": opset}


def _dynamo_export(module: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            **_names(opset),
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

    with tempfile.TemporaryDirectory(prefix="onnxedge-export-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    **_names(opset),
                    dynamo=False,
                    dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)},
                )
        except Exception as exc:  # TorchScript tracing / symbolic errors of many types
            raise ExportError(f"the TorchScript exporter failed: {_first_line(exc)}") from exc
        return onnx.load(str(path))


def finalize_graph(
    model: onnx.ModelProto, *, input_shape: Sequence[int], output_size: int, opset: int
) -> onnx.ModelProto:
    """Strip exporter debug metadata (stack traces with the build machine's paths) but each
    node's torch module path, then check the graph and infer its shapes.

    Raises:
        ExportError: the checker or strict shape inference fails, the opset differs, a
            tensor is stored outside the file, or the signature breaks the contract.
    """
    import onnx
    from onnx import TensorProto

    graph = model.graph
    for node in graph.node:
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

    versions = {o.domain: o.version for o in model.opset_import}
    found = versions.get("", versions.get("ai.onnx"))
    problems = [f"opset is {found}, asked for {opset}"] if found != opset else []
    external = [t.name for t in graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if external:
        problems.append(f"tensors stored outside the file: {external}")
    row: list[int | str] = [BATCH_AXIS, output_size]
    dims: dict[str, list[int | str]] = {INPUT_NAME: [BATCH_AXIS, *input_shape]}
    dims[OUTPUT_LABEL] = [BATCH_AXIS]
    try:
        problems += signature_problems(
            model, {**dims, OUTPUT_LOGITS: row, OUTPUT_PROBABILITIES: row}
        )
    except ModelLoadError as exc:
        problems.append(str(exc))
    if problems:
        raise ExportError("the exported graph breaks the model contract: " + "; ".join(problems))
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph does not pass the ONNX checker: {exc}") from exc


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

    The graph reads raw rows ``input`` float32 ``[batch, *input_shape]`` and outputs
    ``logits``, ``probabilities`` and ``label``; the metadata records the contract. The file
    is put in place only once verified against ``module`` (:func:`verify_model`).

    Args:
        module: maps ``(batch, *input_shape)`` float32 (after ``preprocess``) to logits
            ``(batch, classes)`` or ``(batch, 1)``; put in eval mode.
        head, threshold, class_names, feature_names, preprocess: what the graph computes
            and the contract records (:func:`~onnxedge.export.heads.resolve_head`).
        verify_data: rows ``(x, y)`` (or rows alone) to verify on; default synthetic rows.
        opset, exporter: see :func:`check_opset`; ``verify``: verify before writing.
        report_path: also write the full parity report as JSON here (even on failure).
        extra_metadata: more ``onnxedge.*`` keys; ``run``: the run the module came from.

    Raises:
        ExportError: the module's output is not finite logits of ``input_shape`` rows,
            an option does not fit, the graph fails the checker, or a write fails.
        InputShapeError: ``verify_data`` does not have rows of ``input_shape``.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        ParityError: verification failed (every failing check is listed).
    """
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
    batch = (len(check_rows), *shape)
    module.eval()
    try:
        with torch.inference_mode():
            pre = preprocess.apply(check_rows) if preprocess is not None else check_rows
            logits = module(torch.from_numpy(np.ascontiguousarray(pre, dtype=np.float32)))
    except Exception as exc:  # whatever the user's forward raises on a wrong shape
        raise ExportError(
            f"the module rejects rows of input_shape {shape} (a batch of shape {batch}): "
            f"{_first_line(exc)}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != batch[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ExportError(
            f"the module must return logits of shape (batch, classes) or (batch, 1); for a "
            f"batch of shape {batch} it returned {got}"
        )
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise ExportError(f"the module's logits hold NaN / Inf on {bad} of {batch[0]} check rows")
    width = int(logits.shape[1])
    spec = resolve_head(width, head, None if threshold == DEFAULT_THRESHOLD else threshold)
    names = class_names_for(width, class_names)
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
            contract.KEY_GRAPH_WEIGHTS_SHA256: graph_weights_sha256(model),
            contract.KEY_VERSIONS: library_versions(*EXPORT_LIBRARIES),
            contract.KEY_EXPORTED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
            contract.KEY_OPSET: opset,
            contract.KEY_EXPORTER: used,
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
            extra={k.removeprefix(PREFIX): v for k, v in extra.items()},
        ).to_metadata()
        _write_model(model, metadata, tmp)
        if verify:
            rows = (
                None
                if run is not None
                else (check_rows, labels)
                if labels is not None
                else check_rows
            )
            report = verify_model(
                tmp, rows, module, run_dir=run, batch_sizes=batch_sizes, name=str(target)
            )
            if report_path is not None:
                report.write_json(report_path)
            report.raise_for_failures()
            metadata[contract.KEY_PARITY] = json.dumps(report.summary())
            metadata[contract.KEY_GOLDEN] = json.dumps(golden_set(model, check_rows))
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
    meta = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    out = onnxruntime_runner(model)(rows)
    return contract.golden_set(rows, out, head=meta.head or "softmax", threshold=meta.threshold)


def _check_data(
    data: tuple[np.ndarray, np.ndarray] | np.ndarray | None,
    shape: tuple[int, ...],
    step: Preprocess | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The check rows ``(n, *shape)`` float32 and their labels (None: the reference's)."""
    if data is None:
        return synthetic_rows(step, shape), None
    x, y = data if isinstance(data, tuple) else (data, None)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape[1:] != shape and x.shape[1] == math.prod(shape):
        x = x.reshape(len(x), *shape)
    if x.shape[1:] != shape or len(x) == 0:
        raise InputShapeError(
            f"verify_data must hold rows of shape {shape}; got an array of shape {x.shape}"
        )
    if y is not None and np.shape(y) != (len(x),):
        raise InputShapeError(f"verify_data labels must have shape ({len(x)},), got {np.shape(y)}")
    return np.ascontiguousarray(x), None if y is None else np.asarray(y).astype(np.int64)


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
    """Export an onnxedge run folder to one verified file: the net rebuilt from the run's
    config and weights, verified on its validation split against its own module.

    Args: as for :func:`export_classifier` (threshold None: 0.5; sigmoid only).

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
    metrics = run.metrics if isinstance(run.metrics, dict) else {}
    keys = ("best_epoch", "epochs_run", "train_rows", "val_rows")
    training = {
        "dataset": run.dataset,
        **{k: metrics.get(k) for k in keys},
        **{k: v for k, v in metrics.get("best", {}).items() if isinstance(v, int | float)},
        "options": run.info.get("training"),
    }
    return export_classifier(
        run.net,
        output,
        input_shape=run.input_shape,
        head=spec.head,
        class_names=list(run.class_names),
        feature_names=list(run.feature_names) if len(run.input_shape) == 1 else None,
        preprocess=run.preprocess,
        verify_data=run.validation() if verify else None,
        threshold=spec.threshold,
        opset=opset,
        overwrite=overwrite,
        exporter=exporter,
        verify=verify,
        report_path=report_path,
        batch_sizes=batch_sizes,
        extra_metadata={
            ARCHITECTURE: json.dumps(run.config.to_dict()),
            contract.KEY_TRAINING_METRICS: training,
            contract.KEY_WEIGHTS_SHA256: run.weights_sha256,
        },
        run=run,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
