"""Any classifier module (:func:`export_classifier`) or run folder (:func:`checkpoint_to_onnx`)
-> one ``.onnx`` file with preprocessing, head and contract, exported by dynamo (TorchScript
only as a recorded fallback), checked and verified in a temp file renamed into place last.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from onnxedge.export.check_rows import synthetic_rows
from onnxedge.export.heads import (
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
    verify_model,
    write_json_atomic,
)
from onnxedge.export.wrap import check_feature_names, checked, contract_metadata, write_model
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
    ModelContract,
)
from onnxedge.runtime.errors import CheckpointError, ExportError, InputShapeError, ModelLoadError
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
    """Raw rows through ``preprocess`` (or None) and ``net`` (initializers ``net.*``) to
    ``(logits, probabilities, label)`` by the head ``spec`` (:mod:`onnxedge.export.heads`)."""

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
    """What :func:`export_classifier` wrote, how, and its parity report (None unverified)."""

    path: Path
    task: str
    head: str
    threshold: float
    input_shape: tuple[int, ...]
    opset: int
    exporter: str
    fallback_reason: str | None
    size_bytes: int
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
    """The opset (None: ``DEFAULT_OPSET``); ExportError for an unknown exporter or an opset
    outside what that exporter writes."""
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


def _to_onnx(
    module: nn.Module, shape: tuple[int, ...], opset: int, exporter: str
) -> tuple[onnx.ModelProto, str, str | None]:
    """The model, the exporter that made it and why dynamo was not used (or None)."""
    example, reason = torch.zeros(EXAMPLE_BATCH, *shape, dtype=torch.float32), None
    if exporter != "torchscript":
        try:
            return _dynamo_export(module, example, opset), "dynamo", None
        except Exception as exc:  # the dynamo stack raises many types; the fallback is recorded
            reason = f"dynamo exporter failed: {_first_line(exc)}"
            if exporter == "dynamo" or opset > TORCHSCRIPT_MAX_OPSET:
                top = f"; TorchScript stops at opset {TORCHSCRIPT_MAX_OPSET}, asked for {opset}"
                raise ExportError(f"the {reason}{top if exporter == 'auto' else ''}") from exc
    return _torchscript_export(module, example, opset), "torchscript", reason


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters' progress logs and deprecation chatter off (the result is checked)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(action="ignore"):
            yield
    finally:
        logger.setLevel(level)


def _dynamo_export(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
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


def _torchscript_export(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import onnx

    buffer = io.BytesIO()
    try:
        with _quiet_exporter():
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript path writes file-likes
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=False,
                dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            )
    except Exception as exc:  # TorchScript tracing / symbolic errors of many types
        raise ExportError(f"the TorchScript exporter failed: {_first_line(exc)}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _finalize(
    model: onnx.ModelProto, shape: tuple[int, ...], width: int, opset: int
) -> onnx.ModelProto:
    """Strip exporter debug metadata (stack traces with the build machine's paths) but each
    node's torch module path; ExportError unless opset, signature and graph pass."""
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
    del graph.value_info[:]  # re-inferred by checked()

    versions = {o.domain: o.version for o in model.opset_import}
    found = versions.get("", versions.get("ai.onnx"))
    problems = [f"opset is {found}, asked for {opset}"] if found != opset else []
    dims: dict[str, list[int | str]] = {
        INPUT_NAME: [BATCH_AXIS, *shape],
        OUTPUT_LABEL: [BATCH_AXIS],
    }
    dims[OUTPUT_LOGITS] = dims[OUTPUT_PROBABILITIES] = [BATCH_AXIS, width]
    try:
        problems += signature_problems(model, dims)
    except ModelLoadError as exc:
        problems.append(str(exc))
    if problems:
        raise ExportError("the exported graph breaks the model contract: " + "; ".join(problems))
    return checked(model, "exported")


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
    threshold: float | None = None,
    opset: int | None = None,
    overwrite: bool = False,
    exporter: str = "auto",
    verify: bool = True,
    report_path: str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    extra_metadata: dict[str, Any] | None = None,
    run: TrainedRun | None = None,
) -> ExportResult:
    """Export a classifier module to one verified ONNX file with its head and preprocessing:
    raw rows ``input`` float32 ``[batch, *input_shape]`` in, ``logits``, ``probabilities``,
    ``label`` out, the contract in the metadata; written once verified (:func:`verify_model`).

    Args:
        module: maps ``(batch, *input_shape)`` float32 (after ``preprocess``) to logits
            ``(batch, classes)`` or ``(batch, 1)``; put in eval mode.
        head, threshold, class_names, feature_names, preprocess: what the graph computes
            and the contract records (:func:`~onnxedge.export.heads.resolve_head`).
        verify_data: rows ``(x, y)`` (or rows alone) to verify on; default synthetic rows.
        opset, exporter: see :func:`check_opset`; ``report_path``: also write the parity
            report here (even on failure); ``extra_metadata``: more ``onnxedge.*`` keys.

    Raises:
        ExportError: the module does not return finite logits, an option does not fit, the
            graph fails the checker, or a write fails.
        InputShapeError: ``verify_data`` does not have rows of ``input_shape``.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        ParityError: verification failed (every failing check is listed).
    """
    started = time.perf_counter()
    opset = check_opset(opset, exporter)
    target = Path(path)
    if target.is_dir():  # atomic_file refuses it too, without naming a model file
        raise ExportError(
            f"{target} is a folder; give the model's file name, like {target}/model.onnx"
        )
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ExportError(
            f"input_shape must be one or more positive sizes, got {tuple(input_shape)}"
        )
    check_feature_names(feature_names, shape)
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
    spec = resolve_head(width, head, threshold)
    names = class_names_for(width, class_names)
    wrapped = ClassifierWithHead(module, preprocess, spec).eval()
    report: ParityReport | None = None
    with atomic_file(target, overwrite=overwrite, error=ExportError) as tmp:
        model, used, reason = _to_onnx(wrapped, shape, opset, exporter)
        model = _finalize(model, shape, width, opset)
        extra = {
            **(extra_metadata or {}),
            contract.KEY_GRAPH_WEIGHTS_SHA256: graph_weights_sha256(model),
            contract.KEY_OPSET: opset,
        }
        libraries = ("torch", "onnxscript")
        metadata = contract_metadata(
            spec, names, shape, feature_names, preprocess, used, libraries, extra
        )
        write_model(model, metadata, tmp)
        if verify:
            rows = check_rows if labels is None else (check_rows, labels)
            report = verify_model(
                tmp,
                None if run is not None else rows,
                module,
                run_dir=run,
                batch_sizes=batch_sizes,
                name=str(target),
            )
            if report_path is not None:
                write_json_atomic(report_path, report.to_dict())
            report.raise_for_failures()
            metadata[contract.KEY_PARITY] = json.dumps(report.summary())
            metadata[contract.KEY_GOLDEN] = json.dumps(golden_set(model, check_rows))
            write_model(model, metadata, tmp)
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
    if x.shape[1:] != shape or len(x) == 0:
        raise InputShapeError(
            f"verify_data must hold rows of shape {shape}; got an array of shape {x.shape}"
        )
    if y is not None and np.shape(y) != (len(x),):
        raise InputShapeError(f"verify_data labels must have shape ({len(x)},), got {np.shape(y)}")
    return np.ascontiguousarray(x), None if y is None else np.asarray(y).astype(np.int64)


def checkpoint_to_onnx(
    run_dir: str | os.PathLike[str], output: str | os.PathLike[str], **options: Any
) -> ExportResult:
    """:func:`export_classifier` (``options`` as there) for a run folder: its net,
    preprocessing and names, verified on its validation split.

    Raises:
        CheckpointError: ``run_dir`` is a file, or a missing, incomplete or corrupt run.
        ExportError, OutputExistsError, ParityError: as for :func:`export_classifier`.
    """
    from onnxedge.models.checkpoint import load_run

    if Path(run_dir).is_file():
        raise CheckpointError(
            f"{run_dir} is a file; onnxedge export takes a run folder (what onnxedge train "
            "writes); export your own module with onnxedge.export.export_classifier"
        )
    run = load_run(run_dir)
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
        class_names=list(run.class_names),
        feature_names=list(run.feature_names) if len(run.input_shape) == 1 else None,
        preprocess=run.preprocess,
        verify_data=run.validation(),
        extra_metadata={
            ARCHITECTURE: json.dumps(run.config.to_dict()),
            contract.KEY_TRAINING_METRICS: training,
            contract.KEY_WEIGHTS_SHA256: run.weights_sha256,
        },
        run=run,
        **options,
    )


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of an exporter's or module's error (they run to pages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
