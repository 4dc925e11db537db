"""Edge variants of an exported fp32 model: int8 (onnxruntime.quantization) and fp16
(onnxconverter-common) of the net's layers, float32 in and out with a float32 head, each
checked against the fp32 model through the one comparator with its own
:class:`VariantBar`; ORT format for minimal builds.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import tempfile
import timeit
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.check_rows import BUNDLED_DATASETS
from onnxedge.export.compare import Check, compare, exact, failures, jsonable, render_checks
from onnxedge.export.localize import KEY_NODE_MODULE, node_outputs
from onnxedge.export.verify import load_onnx, onnxruntime_runner, row_losses, signature_problems
from onnxedge.export.wrap import checked
from onnxedge.runtime import contract as ct
from onnxedge.runtime import tolerances
from onnxedge.runtime.atomic import atomic_file, exists_message, place
from onnxedge.runtime.contract import decision_margins
from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    ExportError,
    MissingDependencyError,
    ModelLoadError,
    OutputExistsError,
    ParityError,
)

if TYPE_CHECKING:
    import onnx

    ModelLike = onnx.ModelProto | bytes | str | os.PathLike[str]

#: The variants this module builds (fp32 is the source itself).
VARIANTS: tuple[str, ...] = ("int8", "fp16")
INT8_METHODS: tuple[str, ...] = ("static", "dynamic", "auto")  # auto: see make_variant
KEEP_FLOAT_GROWTH = 2  # auto keeps the worst layers in float 1, then 2, then 4, ... at a time
CALIBRATION_BATCH = 128
#: rows drawn (seed 0) from a ``--data`` file to calibrate; the rest are the check rows.
DATA_CALIBRATION_ROWS = 256
NODE_ROWS = 256  # check rows of the per-node comparison (every node's output is held)
#: the latency gate: batch sizes, interleaved rounds, seconds per timed call group, and
#: the margin at every batch (short rounds put an equally fast variant either side of 1x).
LATENCY_BATCHES = (1, 256)
LATENCY_ROUNDS = 7
LATENCY_ROUND_SECONDS = 0.005
LATENCY_MIN_SPEEDUP = 1.05
LISTED = 20  # lists in the report are capped at this many entries (totals are given)
LAYER_OPS = frozenset({"MatMul", "Gemm", "Conv"})
#: float16's smallest subnormal and largest finite value (the converter's defaults clamp more).
FP16_MIN_POSITIVE = float(np.finfo(np.float16).smallest_subnormal)
FP16_MAX_FINITE = float(np.finfo(np.float16).max)

Timer = Callable[[str, int], float]  # (fp32 | variant, batch) -> seconds for one call
Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], Any]
PathLike = str | os.PathLike[str]
#: the outputs the bar's four tolerances (``VariantBar.names``) apply to.
BAR_CHECKS = (ct.OUTPUT_LABEL, "accuracy_drop", "loss", ct.OUTPUT_PROBABILITIES)


@dataclass(frozen=True)
class Int8Settings:
    """How an int8 variant is quantized (uint8 activations, int8 weights, QDQ, MinMax);
    ``keep_float``: the output tensor names of layers kept float32."""

    method: str = "static"
    per_channel: bool = False
    reduce_range: bool = False
    keep_float: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        """``static per-tensor``, ``static per-channel, 2 layers in float``, ..."""
        name = f"{self.method} {'per-channel' if self.per_channel else 'per-tensor'}"
        kept = len(self.keep_float)
        return name + (f", {kept} layer{'s' * (kept > 1)} in float" if kept else "")


def choose_int8_settings(
    method: str = "static", *, per_channel: bool | None = None
) -> Int8Settings:
    """int8 settings for this machine: per-tensor unless asked, 7-bit weights only on x86
    without VNNI; raises ExportError for a ``method`` other than ``static`` or ``dynamic``."""
    if method not in ("static", "dynamic"):
        raise ExportError(f"unknown int8 method {method!r}; expected one of static, dynamic")
    info = Path("/proc/cpuinfo")
    flags = info.read_text(errors="replace") if info.is_file() else ""
    x86 = platform.machine().lower() in {"x86_64", "amd64", "i686", "x86"}
    vnni = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return Int8Settings(method, bool(per_channel), x86 and not vnni)


@dataclass(frozen=True)
class VariantBar:
    """The bar a variant must clear against its fp32 source, with the tolerances' names."""

    min_label_agreement: float
    max_accuracy_drop: float
    max_loss_delta: float
    max_probability_error: float
    names: tuple[str, ...] = (
        "VARIANT_MIN_LABEL_AGREEMENT",
        "VARIANT_MAX_ACCURACY_DROP",
        "INT8_MAX_LOSS_DELTA",
        "INT8_MAX_PROBABILITY_ERROR",
    )

    @classmethod
    def for_variant(cls, variant: str) -> VariantBar:
        """The named bar of ``int8`` or ``fp16``."""
        prefix = variant.upper()
        names = (*cls.names[:2], f"{prefix}_MAX_LOSS_DELTA", f"{prefix}_MAX_PROBABILITY_ERROR")
        agreement, drop, loss, p = (float(getattr(tolerances, n)) for n in names)
        return cls(agreement, drop, loss, p, names=names)


@dataclass
class VariantReport:
    """How a variant compares with its fp32 source on the same labelled check rows, with
    ``classes``, ``nodes``, ``latency``, ``auto``'s ``attempts`` and the ``verdict``."""

    variant: str
    task: str
    rows: int
    label_agreement: float
    accuracy_source: float
    accuracy_variant: float
    accuracy_drop: float
    loss_source: float
    loss_variant: float
    loss_delta: float
    max_probability_error: float
    finite: bool
    bar: VariantBar
    checks: list[Check]
    classes: dict[str, Any]
    nodes: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accepted_degradation: bool = False
    written: bool = False
    verdict: str = ""
    data: str = ""
    source: str = ""
    source_sha256: str = ""
    source_size_bytes: int = 0
    output: str = ""
    size_bytes: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """Every check that missed its bar, one line each."""
        return failures(self.checks)

    @property
    def passed(self) -> bool:
        """Every check cleared its bar."""
        return not self.failures

    @property
    def size_ratio(self) -> float:
        """Variant file size over source file size (0 when sizes are unknown)."""
        return self.size_bytes / self.source_size_bytes if self.source_size_bytes else 0.0

    @property
    def reached(self) -> str:
        """What this variant reached, in one phrase (an ``auto`` attempt's summary)."""
        said = f"label agreement {self.label_agreement:.4f}, loss delta {self.loss_delta:.3g}"
        if not self.passed:
            return f"{said} (misses {', '.join(c.name for c in self.checks if not c.passed)})"
        return said + (f", {self.latency['summary']}" if self.latency else "")

    def render_table(self) -> str:
        """The checks against their bar and the classifier figures, for people."""
        c, nodes = self.classes, self.nodes
        degraded = " (written with --accept-degradation)" if self.accepted_degradation else ""
        lines = render_checks(self.checks)
        lines.append(
            f"{self.rows} check rows; label agreement {self.label_agreement:.4f}, accuracy "
            f"{self.accuracy_source:.4f} -> {self.accuracy_variant:.4f}, loss "
            f"{self.loss_source:.4f} -> {self.loss_variant:.4f}; "
            f"{'passed' if self.passed else 'FAILED'}{degraded}"
        )
        lines += [
            f"  class {k['class']}: accuracy {k['fp32']:.4f} -> {k['variant']:.4f}"
            for k in c["per_class"]
            if k["fp32"] != k["variant"]
        ]
        lines += [
            f"  confusion true {k['true']} -> pred {k['pred']}: {k['fp32']} -> {k['variant']}"
            for k in c["confusion_change"]
        ]
        if c["flipped"]:
            rows = ", ".join(str(f["row"]) for f in c["flipped_rows"])
            lines.append(f"  {c['flipped']} rows flipped label (rows {rows})")
        lines.append(
            f"  {c['near_ties']} fp32 near ties (top-2 margin <= {c['near_tie_margin']:g}, "
            f"{c['near_tie_tolerance']}), {c['flipped_near_ties']} of them flipped"
        )
        if nodes is not None:
            first, limit = nodes["first_diverging"], f"{nodes['limit']:g} ({nodes['tolerance']})"
            lines.append(
                f"  first diverging node: {first['node']} ({first['op_type']}), error "
                f"{first['relative_error']:.3g} of its range > {limit}"
                if first
                else f"  every node within {limit}"
                if nodes["compared"]
                else f"  no node compared ({nodes['unmatched']} unmatched by name)"
            )
            worst = nodes["worst"][:5]
            lines += [f"    {n['node']} ({n['op_type']}): {n['relative_error']:.3g}" for n in worst]
        lines += [f"  tried {a['form']}: {a['reached']}" for a in self.attempts]
        lines += [f"  speed: {self.latency['summary']}"] if self.latency else []
        lines += [self.verdict] if self.verdict else []
        return "\n".join(lines + [f"  FAIL {f}" for f in self.failures])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what goes into ``onnxedge.variant_report``)."""
        data = jsonable({k: v for k, v in asdict(self).items() if k != "checks"})
        size_ratio = round(self.size_ratio, 6)
        return data | {"failures": self.failures, "passed": self.passed, "size_ratio": size_ratio}


def onnx_to_int8(
    model: onnx.ModelProto, settings: Int8Settings, calibration: np.ndarray | None = None
) -> onnx.ModelProto:
    """Quantize an fp32 model's Conv / MatMul / Gemm layers to int8 (``model`` unchanged;
    ``static``: QDQ, MinMax over the ``calibration`` rows, onnxruntime's defaults). Raises
    DataError (missing or bad rows) or ExportError (no layer feeds ``logits``)."""
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    static = settings.method == "static"
    if static and calibration is None:
        raise DataError("static int8 quantization needs calibration rows; none were given")
    rows = _rows(calibration, model, "calibration") if static else np.empty((0, 1), np.float32)
    starts = range(0, len(rows), CALIBRATION_BATCH)
    batches = iter([{ct.INPUT_NAME: rows[i : i + CALIBRATION_BATCH]} for i in starts])

    class _Reader(q.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    with tempfile.TemporaryDirectory(prefix="onnxedge-int8-") as tmp:
        pre, out = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "int8.onnx")
        quant_pre_process(_with_node_names(model), pre)
        prepared, keep = onnx.load(pre), set(settings.keep_float)
        # Exclude rather than list: quantize_dynamic splits each Gemm into MatMul + Add
        # under new names, which a nodes_to_quantize list would not match.
        excluded = _float_nodes(prepared)
        excluded += [n.name for n in prepared.graph.node if keep & set(n.output)]
        common: dict[str, Any] = {
            "op_types_to_quantize": sorted(LAYER_OPS),
            "nodes_to_exclude": excluded,
            "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range,
            "weight_type": q.QuantType.QInt8,  # signed weights, unsigned activations
        }
        if static:
            # Logits stay float: the head reads them unrequantized (faster, measured).
            common["extra_options"] = {"OpTypesToExcludeOutputQuantization": sorted(LAYER_OPS)}
            q.quantize_static(pre, out, _Reader(), activation_type=q.QuantType.QUInt8, **common)
        else:
            q.quantize_dynamic(pre, out, **common)
        return onnx.load(out)


def onnx_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert an fp32 model's layers to float16, float32 in and out: the net's body
    (standardized input to ``logits``) is extracted, converted and put back, so
    preprocessing, head and label stay float32 (a block list leaves them float16). Raises
    ExportError (no layer) or MissingDependencyError (no onnxconverter-common)."""
    from onnx.utils import Extractor

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError(
            "fp16 variants need onnxconverter-common: pip install 'onnxedge[edge]'"
        ) from None

    named = _with_node_names(model)
    kept = set(_float_nodes(named))
    body = [n for n in named.graph.node if n.name not in kept]
    rest = [n for n in named.graph.node if n.name in kept]
    known = {out for n in body for out in n.output} | {t.name for t in named.graph.initializer}
    inputs = sorted({i for n in body for i in n.input if i and i not in known})
    sub = Extractor(named).extract_model(inputs, [ct.OUTPUT_LOGITS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # once per clamped tensor
        limits = {"min_positive_val": FP16_MIN_POSITIVE, "max_finite_val": FP16_MAX_FINITE}
        half = float16.convert_float_to_float16(sub, keep_io_types=True, **limits)
    # A name both halves define (a shared initializer) is left to the ONNX checker to name.
    still_used = {i for n in rest for i in n.input}
    initializers = [t for t in named.graph.initializer if t.name in still_used]
    del named.graph.node[:], named.graph.initializer[:], named.graph.value_info[:]
    named.graph.node.extend([*rest, *half.graph.node])
    try:
        float16.sort_topology(named.graph)
    except AttributeError:  # it appends None for a node whose input nothing produces
        raise ExportError("the converted graph has a cycle or an unproduced input") from None
    named.graph.initializer.extend([*initializers, *half.graph.initializer])
    return named


def compare_nodes(
    source: onnx.ModelProto, variant_model: onnx.ModelProto, x: np.ndarray, variant: str
) -> dict[str, Any]:
    """Every fp32 node's output against the variant's tensor of the same name (QDQ and
    the fp16 converter keep the float names, as onnxruntime's ``qdq_loss_debug`` relies
    on); a node's error is ``max |variant - fp32|`` over its fp32 range, checked against
    the variant's ``*_MAX_PROBABILITY_ERROR``. Returns the first node in graph order that
    breaks it (or None) and the compared nodes worst first, each with the error it adds
    over its inputs'. Raises LocalizationError when a model cannot run every output.
    """
    name = f"{variant.upper()}_MAX_PROBABILITY_ERROR"
    limit = float(getattr(tolerances, name))
    ref, got = node_outputs(source, x), node_outputs(variant_model, x)
    nodes: list[dict[str, Any]] = []
    errors: dict[str, float] = {}
    unmatched = 0
    for i, node in enumerate(source.graph.node):
        out = node.output[0]
        a, b = ref.get(out), got.get(out)
        if a is None or not np.issubdtype(a.dtype, np.floating):
            continue
        if b is None or b.shape != a.shape:
            unmatched += 1
            continue
        scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.finfo(np.float32).tiny))
        (check,) = compare({out: a}, {out: b.astype(np.float32)}, {out: limit * scale})
        errors[out] = check.value / scale
        inherited = max((errors.get(t, 0.0) for t in node.input), default=0.0)
        nodes.append(
            {
                "node": node.name or f"{node.op_type}_{i}",
                "op_type": node.op_type,
                "output": out,
                "module": _props(node).get(KEY_NODE_MODULE),
                "relative_error": errors[out],
                "added_error": errors[out] - inherited,
                "passed": check.passed,
            }
        )
    return {
        "tolerance": name,
        "limit": limit,
        "rows": len(x),
        "compared": len(nodes),
        "unmatched": unmatched,
        "first_diverging": next((n for n in nodes if not n["passed"]), None),
        "worst": sorted(nodes, key=lambda n: -n["relative_error"]),
    }


def class_figures(
    y: np.ndarray,
    ref: Outputs,
    out: Outputs,
    *,
    margin: float,
    margin_name: str,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Per-class accuracy before / after, the confusion cells that changed, the flipped
    rows (ids, both models' probabilities of the two labels) and the fp32 near ties (top-2
    margin, or distance to the threshold, at most ``margin``)."""
    a, b = ref[ct.OUTPUT_LABEL].astype(np.int64), out[ct.OUTPUT_LABEL].astype(np.int64)
    pa, pb = ref[ct.OUTPUT_PROBABILITIES].astype(np.float64), out[ct.OUTPUT_PROBABILITIES]
    k = max(int(ref[ct.OUTPUT_LOGITS].shape[1]), 2, int(max(y.max(), a.max(), b.max())) + 1)
    before, after = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
    np.add.at(before, (y, a), 1)
    np.add.at(after, (y, b), 1)
    changed, flipped = np.argwhere(before != after), np.flatnonzero(a != b)

    def probs(p: np.ndarray, r: int) -> dict[str, float]:
        if p.shape[1] == 1:  # sigmoid: P(positive)
            return {"1": float(p[r, 0])}
        return {str(c): float(p[r, c]) for c in dict.fromkeys((a[r], b[r]))}

    ties = decision_margins(pa, "sigmoid" if pa.shape[1] == 1 else "softmax", threshold) <= margin
    return {
        "per_class": [
            {"class": c, "rows": int(n), "fp32": before[c, c] / n, "variant": after[c, c] / n}
            for c, n in enumerate(before.sum(axis=1))
            if n
        ],
        "confusion_change": [
            {"true": int(t), "pred": int(p), "fp32": int(before[t, p]), "variant": int(after[t, p])}
            for t, p in changed[:LISTED]
        ],
        "confusion_cells_changed": len(changed),
        "flipped": len(flipped),
        "flipped_rows": [
            {"row": int(r), "true": int(y[r]), "fp32": probs(pa, r), "variant": probs(pb, r)}
            for r in flipped[:LISTED]
        ],
        "near_ties": int(ties.sum()),
        "near_tie_rows": [int(r) for r in np.flatnonzero(ties)[:LISTED]],
        "near_tie_margin": margin,
        "near_tie_tolerance": margin_name,
        "flipped_near_ties": int(ties[flipped].sum()),
    }


def latency_gate(
    fp32: Runner, variant: Runner, rows: np.ndarray, *, timer: Timer | None = None
) -> dict[str, Any]:
    """Time ``variant`` against ``fp32`` (runners) at ``LATENCY_BATCHES``, rows tiled to
    each batch, in interleaved rounds (the order alternates); each figure is the fp32
    median over the variant's, and ``faster`` needs every one at ``LATENCY_MIN_SPEEDUP``.
    ``timer`` (``(model, batch) -> seconds``; tests inject one) defaults to the wall clock.
    """
    runners = {"fp32": fp32, "variant": variant}
    xs = {b: np.ascontiguousarray(np.resize(rows, (b, *rows.shape[1:]))) for b in LATENCY_BATCHES}
    calls: dict[tuple[str, int], int] = {}

    def wall(model: str, batch: int) -> float:
        run = functools.partial(runners[model], xs[batch])
        if (model, batch) not in calls:  # warm up, then enough calls to fill a round
            run()
            once = timeit.timeit(run, number=1)
            calls[model, batch] = max(1, int(LATENCY_ROUND_SECONDS / (once + 1e-9)))
        return timeit.timeit(run, number=calls[model, batch]) / calls[model, batch]

    clock, speedup = timer or wall, {}
    for batch in LATENCY_BATCHES:
        times: dict[str, list[float]] = {"fp32": [], "variant": []}
        for i in range(LATENCY_ROUNDS):
            for model in ("fp32", "variant") if i % 2 == 0 else ("variant", "fp32"):
                times[model].append(clock(model, batch))
        speedup[batch] = statistics.median(times["fp32"]) / statistics.median(times["variant"])
    faster = all(s >= LATENCY_MIN_SPEEDUP for s in speedup.values())
    figures = ", ".join(f"batch-{b} {s:.2f}x" for b, s in speedup.items())
    return {
        "batches": list(LATENCY_BATCHES),
        "speedup": {str(b): s for b, s in speedup.items()},
        "faster": faster,
        "summary": f"{'' if faster else 'not '}faster than fp32 here: {figures}",
    }


def verify_variant(
    variant_model: ModelLike,
    source_model: ModelLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    variant: str,
    bar: VariantBar | None = None,
) -> VariantReport:
    """Run a variant beside its fp32 source (protos, bytes or paths) on check rows ``x``
    with true labels ``y`` and check it against its bar (``bar`` or the variant's). Raises
    DataError (bad rows or labels) or ModelLoadError (a model onnxruntime cannot open)."""
    rows = _rows(x, None, "check")
    ref = onnxruntime_runner(_as_bytes(source_model), "the source model")(rows)
    return _compare(_as_bytes(variant_model), ref, rows, y, variant=variant, bar=bar)


def model_variant(model: PathLike) -> str:
    """The ``onnxedge.variant`` a model file records (default ``fp32``); raises
    ModelLoadError when the file cannot be read as ONNX."""
    return _props(load_onnx(model)).get(ct.KEY_VARIANT, "fp32")


def raise_for_variant_failures(report: VariantReport) -> None:
    """Raise :class:`ParityError` listing every check a variant failed, if any."""
    if report.failures:
        message = f"{report.variant} variant misses its bar: " + "; ".join(report.failures)
        raise ParityError(message, report.failures)


def verify_variant_file(
    model: PathLike, run_dir: PathLike, *, source: PathLike | None = None
) -> VariantReport:
    """Re-verify a written variant on its run's validation split against the fp32
    ``source`` model, else the run's own torch module with the variant's head. Raises
    ModelLoadError (not a variant), CheckpointError or DataError (a run that does not fit).
    """
    from onnxedge.export.heads import build_head_module
    from onnxedge.export.verify import torch_runner
    from onnxedge.models.checkpoint import load_run

    proto = load_onnx(model)
    props = _props(proto)
    contract = ct.ModelContract.from_metadata(props)
    if contract.variant not in VARIANTS:
        raise ModelLoadError(f"{model} is not an int8 / fp16 variant (onnxedge.variant=fp32)")
    run = load_run(run_dir)
    x_val, y_val = run.validation()
    rows = _rows(x_val, proto, "validation")
    threshold, head = float(contract.threshold), contract.head or "auto"
    if source is not None:
        ref = onnxruntime_runner(_as_bytes(source), "the source model")(rows)
    else:
        module = build_head_module(run, head, threshold if head == "sigmoid" else None)
        ref = torch_runner(module)(rows)
    data = proto.SerializeToString()
    report = _compare(data, ref, rows, y_val, variant=contract.variant, threshold=threshold)
    report.source = str(source) if source is not None else f"{run.path} (the run's torch module)"
    report.output, report.size_bytes, report.written = str(model), Path(model).stat().st_size, True
    report.source_sha256 = props.get(ct.KEY_SOURCE_SHA256, "")
    return report


def _compare(
    variant_bytes: bytes,
    ref: Outputs,
    rows: np.ndarray,
    y: np.ndarray,
    *,
    variant: str,
    bar: VariantBar | None = None,
    threshold: float = 0.5,
) -> VariantReport:
    """The variant's outputs on ``rows`` against ``ref`` through the one comparator (the
    task, and so the loss, follows from the logits: one column is binary)."""
    bar = bar or VariantBar.for_variant(variant)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if len(labels) != len(rows):
        raise DataError(f"the check rows are {len(rows)} but the labels {len(labels)}")
    out = onnxruntime_runner(variant_bytes, "the variant")(rows)
    binary, z = ref[ct.OUTPUT_LOGITS].shape[1] == 1, ct.OUTPUT_LOGITS
    head = "sigmoid" if binary else "softmax"
    losses = (row_losses(o[z].astype(np.float64), labels, head) for o in (ref, out))
    loss_src, loss_var = (float(np.mean(rows_loss)) for rows_loss in losses)
    finite = all(np.isfinite(out[k]).all() for k in (z, ct.OUTPUT_PROBABILITIES))
    acc_src, acc_var = (float(np.mean(o[ct.OUTPUT_LABEL] == labels)) for o in (ref, out))
    subject, drop = f"{variant}~fp32", acc_src - acc_var
    limits = {
        ct.OUTPUT_PROBABILITIES: bar.max_probability_error,
        ct.OUTPUT_LABEL: 1 - bar.min_label_agreement,  # the share of labels that may differ
        "loss": bar.max_loss_delta,
    }
    checks = compare(
        {**ref, "loss": np.array(loss_src)},
        {**out, "loss": np.array(loss_var)},
        limits,
        subject=subject,
        names=dict(zip(BAR_CHECKS, bar.names, strict=True)),
    )
    limit, detail = bar.max_accuracy_drop, f"accuracy {acc_src:.4f} -> {acc_var:.4f}"
    checks.append(
        Check(BAR_CHECKS[1], subject, None, drop, limit, bar.names[1], drop <= limit, detail)
    )
    f32 = head_reads_float32(variant_bytes)
    checks.append(exact("float32_head", variant, f32, "the head / label nodes do not read float32"))
    p_err = np.abs(out[ct.OUTPUT_PROBABILITIES].astype(np.float64) - ref[ct.OUTPUT_PROBABILITIES])
    margin, margin_name = bar.max_probability_error, bar.names[3]
    return VariantReport(
        variant=variant,
        task="binary" if binary else "multiclass",
        rows=len(rows),
        label_agreement=float(np.mean(out[ct.OUTPUT_LABEL] == ref[ct.OUTPUT_LABEL])),
        accuracy_source=acc_src,
        accuracy_variant=acc_var,
        accuracy_drop=drop,
        loss_source=loss_src,
        loss_variant=loss_var,
        loss_delta=abs(loss_var - loss_src) if finite else math.inf,
        max_probability_error=float(p_err.max()) if finite else math.inf,
        finite=bool(finite),
        bar=bar,
        checks=checks,
        classes=class_figures(
            labels, ref, out, margin=margin, margin_name=margin_name, threshold=threshold
        ),
    )


def head_reads_float32(model: bytes) -> bool:
    """True when every Softmax / Sigmoid / ArgMax / comparison node reads float32."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load_from_string(model)).graph
    types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    head_ops = {"Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "Greater", "GreaterOrEqual"}
    heads = [n for n in graph.node if n.op_type in head_ops]
    return bool(heads) and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in heads)


def variant_path(source: PathLike, variant: str) -> Path:
    """Where a variant goes by default: ``digits.onnx`` -> ``digits.int8.onnx``."""
    source = Path(source)
    return source.with_name(f"{source.stem}.{variant}{source.suffix or '.onnx'}")


def make_variant(
    source_onnx: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None,
    variant: str,
    output: str | os.PathLike[str],
    *,
    method: str = "static",
    per_channel: bool | None = None,
    accept_degradation: bool = False,
    overwrite: bool = False,
    calibration: np.ndarray | None = None,
    data: str | os.PathLike[str] | None = None,
    localize: bool = False,
    timer: Timer | None = None,
) -> VariantReport:
    """Build an int8 or fp16 variant of an fp32 model, verify it and write it atomically.

    Rows: the run's validation split (``run_dir``), else ``data``, else the bundled dataset
    the metadata records. ``auto`` keeps the first of :func:`_auto_forms` that clears its
    bar and is faster than fp32 here (none faster: writes nothing, says why in ``verdict``).
    ``accept_degradation`` writes a miss (``auto``: the best agreement); ``localize``
    compares every node even on a pass.

    Raises:
        ExportError, ModelLoadError, CheckpointError, DataError: a bad variant / method,
            source, run folder or rows; OutputExistsError: ``output`` exists or is the source.
        ParityError: the bar (``auto``: every attempt's) is missed; nothing is written.
    """
    from onnxedge.models.checkpoint import sha256_file

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if method not in INT8_METHODS:
        methods = ", ".join(INT8_METHODS)
        raise ExportError(f"unknown int8 method {method!r}; expected one of {methods}")
    source_path, out_path = Path(source_onnx), Path(output)
    if out_path.exists() and out_path.resolve() == source_path.resolve():
        raise OutputExistsError(f"output {out_path} is the source model; choose another path")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(exists_message(out_path))
    source = load_onnx(source_path)
    signature_problems(source)  # raises ModelLoadError without the contract's input / outputs
    props = _props(source)
    contract = ct.ModelContract.from_metadata(props)
    if contract.variant != "fp32":
        raise ExportError(
            f"{source_path} is already an {contract.variant} variant; make variants from "
            "the fp32 model that onnxedge export wrote"
        )
    x_cal, x_val, y_val, where = _variant_rows(source_path, props, contract, run_dir, data)
    x_val = _rows(x_val, source, "check")
    x_cal = x_cal if calibration is None else calibration
    fp32 = onnxruntime_runner(source, "the source model")
    ref, threshold = fp32(x_val), float(contract.threshold)

    def attempt(
        settings: Int8Settings | None, timed: bool = False
    ) -> tuple[onnx.ModelProto, VariantReport]:
        """Build one form and check it; time it when it passes (or ``timed``)."""
        if settings is None:
            built, how = onnx_to_fp16(source), {"converter": "onnxconverter_common.float16"}
        else:
            static = settings.method == "static"
            built = onnx_to_int8(source, settings, x_cal if static else None)
            how = jsonable({**asdict(settings), "form": settings.form})
            how |= {"calibration_rows": len(x_cal)} if static else {}
        _strip_debug_info(built)
        checked(built, variant, data_prop=False)
        serialized = built.SerializeToString()
        report = _compare(serialized, ref, x_val, y_val, variant=variant, threshold=threshold)
        report.settings, report.data = how, where
        if localize or not report.passed:
            report.nodes = compare_nodes(source, built, x_val[:NODE_ROWS], variant)
        if report.passed or timed:
            runner = onnxruntime_runner(serialized, "the variant")
            report.latency = latency_gate(fp32, runner, x_val, timer=timer)
        return built, report

    int8 = choose_int8_settings("static" if method == "auto" else method, per_channel=per_channel)
    tried: list[tuple[onnx.ModelProto, VariantReport]] = []
    if variant == "fp16" or method != "auto":
        built, report = attempt(None if variant == "fp16" else int8, timed=accept_degradation)
    else:
        for settings in _auto_forms(replace(int8, per_channel=False), tried):
            tried.append(attempt(settings))
            built, report = tried[-1]
            if report.passed and report.latency and report.latency["faster"]:
                break
        else:  # none kept: the best of them (a pass first)
            built, report = max(
                tried, key=lambda t: (t[1].passed, t[1].label_agreement, -t[1].loss_delta)
            )
            if report.passed:  # it clears its bar but is no faster: fp32 stays, nothing written
                listed = "; ".join(
                    f"{r.settings['form']}: {r.reached}" for _, r in tried if r.passed
                )
                report.verdict = (
                    f"kept fp32 {source_path}: no int8 form that clears its bar is faster "
                    f"than fp32 here ({listed})"
                )
        report.attempts = [r.settings | {"reached": r.reached} for _, r in tried]
    report.source, report.source_sha256 = str(source_path), sha256_file(source_path)
    report.source_size_bytes = source_path.stat().st_size
    if report.verdict:
        return report
    if report.failures and not accept_degradation:
        failures, what = report.failures, f"the {variant} variant"
        if tried:
            failures = [f"{r.settings['form']}: {f}" for _, r in tried for f in r.failures]
            what = "; ".join(f"{r.settings['form']} reached {r.reached}" for _, r in tried)
            what = f"every int8 form tried ({what})"
        elif first := report.nodes and report.nodes["first_diverging"]:
            what += f" (first diverging node {first['node']}, {first['op_type']})"
        hint = ", or try --int8 auto" if variant == "int8" and not tried else ""
        raise ParityError(
            f"{what} of {source_path} misses its bar: {'; '.join(failures)} "
            f"(pass --accept-degradation to write it anyway{hint})",
            failures=failures,
        )
    report.output, report.accepted_degradation = str(out_path), bool(report.failures)
    report.verdict = f"chose {report.settings['form']}" if tried else ""
    serialized = _serialize_with_size(built, props, report)
    with atomic_file(out_path, overwrite=overwrite, error=ExportError) as tmp:
        tmp.write_bytes(serialized)
    report.written = True
    return report


def _auto_forms(
    static: Int8Settings, tried: list[tuple[Any, VariantReport]]
) -> Iterator[Int8Settings]:
    """``auto``'s forms in order: static per-tensor, per-channel, on a miss the layers that
    add the most error (per ``tried[-1]``'s node comparison) kept in float, 1, 2, 4, ...
    (one layer at least stays int8), then dynamic."""
    yield static
    channel = replace(static, per_channel=True)
    yield channel
    last = tried[-1][1]
    if not last.passed and last.nodes:
        layers = [n for n in last.nodes["worst"] if n["op_type"] in LAYER_OPS]
        ranked = [n["output"] for n in sorted(layers, key=lambda n: -n["added_error"])]
        count = 1
        while count < len(ranked):
            yield replace(channel, keep_float=tuple(ranked[:count]))
            count *= KEEP_FLOAT_GROWTH
    yield replace(static, method="dynamic")


def _variant_rows(
    path: Path,
    props: dict[str, str],
    contract: ct.ModelContract,
    run_dir: PathLike | None,
    data: PathLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Calibration rows, check rows and labels, and where they came from."""
    from onnxedge.models.checkpoint import load_run
    from onnxedge.models.data import load_dataset

    if run_dir is not None:
        run = load_run(run_dir)
        recorded = props.get(ct.KEY_WEIGHTS_SHA256)
        if recorded and recorded != run.weights_sha256:
            raise CheckpointError(
                f"{path} was exported from weights {recorded[:12]}..., but run folder "
                f"{run.path} holds weights {run.weights_sha256[:12]}...; pass the model's own run"
            )
        return run.calibration(), *run.validation(), f"validation split of {run.path}"
    metrics = contract.extra.get("training_metrics")
    recorded_set = metrics.get("dataset") if isinstance(metrics, dict) else None
    if data is None and recorded_set not in BUNDLED_DATASETS:
        raise DataError(
            f"a variant of {path} needs rows to calibrate and check on: pass --run RUN_DIR "
            "or --data FILE (the model records no bundled dataset)"
        )
    ds = load_dataset(data if data is not None else str(recorded_set))
    if contract.class_names and list(ds.class_names) != list(contract.class_names):
        raise DataError(
            f"{ds.name} has classes {ds.class_names}; the model's are {contract.class_names}"
        )
    n_cal = min(DATA_CALIBRATION_ROWS, len(ds.labels) // 4)
    if n_cal == 0:
        raise DataError(f"{ds.name} has {len(ds.labels)} rows; a variant needs at least 4")
    order = np.random.default_rng(0).permutation(len(ds.labels))
    cal, check = order[:n_cal], order[n_cal:]
    described = f"{ds.name}: {len(cal)} calibration rows, {len(check)} check rows"
    return ds.features[cal], ds.features[check], ds.labels[check], described


def _serialize_with_size(
    model: onnx.ModelProto, props: dict[str, str], report: VariantReport
) -> bytes:
    """Serialize with the source's metadata plus the variant's own keys; the report's
    ``size_bytes`` is part of the metadata it measures, so iterate to the fixed point."""
    import onnx
    from onnxedge.export.onnx_export import golden_set
    from onnxedge.export.verify import graph_weights_sha256

    # The source's parity figures describe the fp32 graph; the digest is this graph's.
    own = (ct.KEY_VARIANT, ct.KEY_SOURCE_SHA256, ct.KEY_VARIANT_REPORT, ct.KEY_PARITY)
    base = {k: v for k, v in props.items() if k not in own}
    if ct.KEY_GRAPH_WEIGHTS_SHA256 in base:
        base[ct.KEY_GRAPH_WEIGHTS_SHA256] = graph_weights_sha256(model)
    if ct.KEY_GOLDEN in base:  # the self-test holds a device to this graph's own outputs
        rows = _rows(json.loads(base[ct.KEY_GOLDEN])["rows"], model, "golden")
        try:
            base[ct.KEY_GOLDEN] = json.dumps(golden_set(model, rows))
        except ExportError:  # every golden row a tie: a collapsed variant carries none
            del base[ct.KEY_GOLDEN]
    base |= {ct.KEY_VARIANT: report.variant, ct.KEY_SOURCE_SHA256: report.source_sha256}
    for _ in range(4):
        # size_ratio stays out: its digits would change with the size it describes; file
        # names only: a deployed model should not carry the build machine's paths.
        recorded = {k: v for k, v in report.to_dict().items() if k != "size_ratio"}
        names = {"source": Path(report.source).name, "output": Path(report.output).name}
        report_json = json.dumps(recorded | names | {"written": True}, sort_keys=True)
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {**base, ct.KEY_VARIANT_REPORT: report_json})
        data = model.SerializeToString()
        if len(data) == report.size_bytes:
            return data
        report.size_bytes = len(data)
    raise ExportError("cannot settle the variant's recorded size")  # pragma: no cover


def onnx_to_ort(model: PathLike, output: PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Convert an ONNX model to ORT format (onnxruntime's minimal builds); returns the
    ``.ort`` file and the ``<stem>.required_operators.config`` written beside it. Raises
    ModelLoadError (no model), OutputExistsError, ExportError (conversion or writing)."""
    import contextlib
    import io

    from onnxruntime.tools import convert_onnx_models_to_ort as tool

    source, out = Path(model), Path(output)
    if not source.is_file():
        raise ModelLoadError(f"model {source} does not exist")
    config = out.with_name(f"{out.stem}.required_operators.config")
    for target in (out, config):
        if target.exists() and not overwrite:
            raise OutputExistsError(exists_message(target))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates
                    style = [tool.OptimizationStyle.Fixed]
                    tool.convert_onnx_models_to_ort(source, Path(tmp), optimization_styles=style)
            except Exception as exc:  # the converter raises onnxruntime's untyped errors
                raise ExportError(f"cannot convert {source} to ORT format: {exc}") from None
            # the config first, so an .ort file is never in place without its operator list
            for suffix, target in ((".required_operators.config", config), (".ort", out)):
                converted = Path(tmp, source.with_suffix(suffix).name)
                place(converted, target, overwrite=overwrite, error=ExportError)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out, config


def _props(proto: Any) -> dict[str, str]:
    """A model's (or node's) metadata as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


def _as_bytes(model: ModelLike) -> bytes:
    if isinstance(model, str | os.PathLike):
        model = load_onnx(model)
    return model if isinstance(model, bytes) else bytes(model.SerializeToString())


def _rows(x: Any, model: onnx.ModelProto | None, what: str) -> np.ndarray:
    """``x`` as float32 rows of the model's static row shape (flat rows of that size are
    reshaped; no model: as given). DataError: another shape (an image of the same size in
    another layout too), a value that is not finite."""
    rows = np.asarray(x, dtype=np.float32)
    feed = [i for i in model.graph.input if i.name == ct.INPUT_NAME] if model is not None else []
    dims = feed[0].type.tensor_type.shape.dim[1:] if feed else []
    static = bool(dims) and all(d.dim_value for d in dims)
    shape = tuple(int(d.dim_value) for d in dims) if static else rows.shape[1:]
    if rows.ndim < 2 or not len(rows) or rows.shape[1:] not in (shape, (math.prod(shape),)):
        raise DataError(
            f"{what} rows have shape {rows.shape[1:]}; the model expects rows of shape {shape}"
        )
    bad = np.argwhere(~np.isfinite(rows.reshape(len(rows), -1)))
    if len(bad):
        raise DataError(f"{what} row {bad[0][0]} column {bad[0][1]} is not finite")
    return np.ascontiguousarray(rows.reshape(len(rows), *shape))


def _with_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every node has a unique name (node lists select by name)."""
    import onnx

    named = onnx.ModelProto()
    named.CopyFrom(model)
    seen: set[str] = set()
    for i, node in enumerate(named.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return named


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes outside the net's body (kept float32): the body is every node
    downstream of a layer and upstream of (or producing) ``logits``, so preprocessing sits
    before it, head and label after. ExportError: no layer feeds logits."""
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    if ct.OUTPUT_LOGITS not in producer:
        raise ExportError(f"no node produces {ct.OUTPUT_LOGITS!r}; is this an onnxedge model?")
    upstream: set[int] = set()
    stack = [producer[ct.OUTPUT_LOGITS]]
    while stack:
        if (i := stack.pop()) not in upstream:
            upstream.add(i)
            stack += [producer[n] for n in nodes[i].input if n in producer]
    body: set[int] = set()
    fed: set[str] = set()  # one pass suffices: an ONNX graph is topologically sorted
    for i, node in enumerate(nodes):
        if i in upstream and (node.op_type in LAYER_OPS or fed & set(node.input)):
            body.add(i)
            fed.update(node.output)
    if not body:
        raise ExportError(f"no MatMul / Gemm layer feeds {ct.OUTPUT_LOGITS!r}; nothing to convert")
    return [nodes[i].name for i in range(len(nodes)) if i not in body]


def _strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop per-node metadata, doc strings and the opset imports no node uses (the
    quantizer's pre-processing imports every domain onnxruntime knows)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
