"""Edge variants of an exported fp32 model: int8 (onnxruntime.quantization, the net's
Conv / MatMul / Gemm layers) and fp16 (onnxconverter-common, the net's body), float32 in
and out with a float32 head, each checked against the fp32 model through the one
comparator with its own :class:`VariantBar`; ORT format for minimal builds.

The report is a classifier's (per-class accuracy, confusion change, flipped rows, near
ties), names the first diverging node when the bar is missed (nodes matched by tensor
name, as onnxruntime's ``qdq_loss_debug`` does) and the speed against fp32 on this
machine; ``method="auto"`` repairs a static int8 variant that misses its bar.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.compare import Check, compare, exact, jsonable, render_checks
from onnxedge.export.verify import load_onnx, node_outputs, onnxruntime_runner
from onnxedge.runtime import contract as ct
from onnxedge.runtime import tolerances
from onnxedge.runtime.atomic import atomic_file, exists_message, place
from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    ExportError,
    MissingDependencyError,
    ModelLoadError,
    OnnxEdgeError,
    OutputExistsError,
    ParityError,
)

if TYPE_CHECKING:
    import onnx

#: The variants this module builds (fp32 is the source itself).
VARIANTS: tuple[str, ...] = ("int8", "fp16")
#: ``static`` / ``dynamic`` build that form; ``auto`` repairs a static form that misses
#: its bar and keeps only a form faster than fp32 here (:func:`make_variant`).
INT8_METHODS: tuple[str, ...] = ("static", "dynamic", "auto")
DEFAULT_INT8_METHOD = "static"
#: auto keeps the worst layers in float this many at a time (1, then 2, then 4, ...).
KEEP_FLOAT_GROWTH = 2
CALIBRATION_BATCH = 128
#: rows drawn (seed 0) from a ``--data`` file to calibrate; the rest are the check rows.
DATA_CALIBRATION_ROWS = 256
#: check rows the per-node comparison runs on (every node's output is held in memory).
NODE_ROWS = 256
#: per-node tolerance by variant: a node breaks it when ``max |variant - fp32|`` exceeds
#: this share of the node's fp32 range. Proposed for runtime/tolerances.py as
#: INT8_NODE_MAX_RELATIVE_ERROR = 0.3 / FP16_NODE_MAX_RELATIVE_ERROR = 5e-3; until then
#: the variant's probability bar, which has the same values.
NODE_TOLERANCE = {"int8": "INT8_MAX_PROBABILITY_ERROR", "fp16": "FP16_MAX_PROBABILITY_ERROR"}
#: the latency gate: batch sizes, interleaved rounds, and seconds per timed call group.
LATENCY_BATCHES = (1, 256)
LATENCY_ROUNDS = 7
LATENCY_ROUND_SECONDS = 0.005
#: a variant counts as faster only by this margin at every batch size: seven short rounds
#: on a shared machine put an equally fast variant on either side of 1.00x.
LATENCY_MIN_SPEEDUP = 1.05
#: lists in the report are capped at this many entries (the totals are always given).
LISTED = 20
LAYER_OPS = frozenset({"MatMul", "Gemm", "Conv"})
#: float16's smallest subnormal and largest finite value (the converter's defaults, 1e-7
#: and 1e4, clamp more than float16 needs).
FP16_MIN_POSITIVE = float(np.finfo(np.float16).smallest_subnormal)
FP16_MAX_FINITE = float(np.finfo(np.float16).max)

Timer = Callable[[str, int], float]  # (fp32 | variant, batch) -> seconds for one call


@dataclass(frozen=True)
class Int8Settings:
    """How an int8 variant is quantized (uint8 activations, int8 weights, QDQ, MinMax):
    ``static`` / ``dynamic``, per-channel weight scales, 7-bit weights (``reduce_range``),
    and the output tensor names of layers kept float32 (``keep_float``).
    """

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in the variant report)."""
        return {**asdict(self), "keep_float": list(self.keep_float), "form": self.form}


def choose_int8_settings(
    method: str = "static", *, per_channel: bool | None = None, reduce_range: bool | None = None
) -> Int8Settings:
    """int8 settings for this machine: per-tensor, 7-bit weights only on x86 without VNNI.

    Raises:
        ExportError: ``method`` is not ``static`` or ``dynamic``.
    """
    if method not in ("static", "dynamic"):
        raise ExportError(f"unknown int8 method {method!r}; expected one of static, dynamic")
    if reduce_range is None:
        info = Path("/proc/cpuinfo")
        flags = info.read_text(errors="replace") if info.is_file() else ""
        x86 = platform.machine().lower() in {"x86_64", "amd64", "i686", "x86"}
        reduce_range = x86 and not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return Int8Settings(method, bool(per_channel), reduce_range)


@dataclass(frozen=True)
class VariantBar:
    """The bar a variant must clear against its fp32 source (see ``tolerances``)."""

    min_label_agreement: float
    max_accuracy_drop: float
    max_loss_delta: float
    max_probability_error: float
    names: tuple[str, str, str, str] = (
        "VARIANT_MIN_LABEL_AGREEMENT",
        "VARIANT_MAX_ACCURACY_DROP",
        "INT8_MAX_LOSS_DELTA",
        "INT8_MAX_PROBABILITY_ERROR",
    )

    @classmethod
    def for_variant(cls, variant: str) -> VariantBar:
        """The named bar of ``int8`` or ``fp16``."""
        prefix = "FP16" if variant == "fp16" else "INT8"
        names = (*cls.names[:2], f"{prefix}_MAX_LOSS_DELTA", f"{prefix}_MAX_PROBABILITY_ERROR")
        a, d, loss, p = (float(getattr(tolerances, n)) for n in names)
        return cls(a, d, loss, p, names=names)

    def tolerances(self) -> dict[str, float]:
        """The comparator's tolerances by output name (labels: the share that may differ)."""
        return {
            ct.OUTPUT_PROBABILITIES: self.max_probability_error,
            ct.OUTPUT_LABEL: 1.0 - self.min_label_agreement,
            "loss": self.max_loss_delta,
        }


@dataclass
class VariantReport:
    """How a variant compares with its fp32 source on the same labelled check rows.

    Besides the bar's figures and ``checks``: ``classes`` (:func:`class_figures`),
    ``nodes`` (:func:`compare_nodes`, when the bar is missed or ``localize``), ``latency``
    (:func:`latency_gate`), ``attempts`` (``auto``'s, in order, each with what it
    reached), ``written`` (``auto`` may keep fp32), ``verdict`` and ``data`` (the rows).
    """

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
    checks: list[Check] = field(default_factory=list)
    classes: dict[str, Any] = field(default_factory=dict)
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
        return [f"{c.label}: {c.detail}" for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        """Every check cleared its bar."""
        return not self.failures

    @property
    def size_ratio(self) -> float:
        """Variant file size over source file size (0 when sizes are unknown)."""
        return self.size_bytes / self.source_size_bytes if self.source_size_bytes else 0.0

    def render_table(self) -> str:
        """The checks against their bar and the classifier figures, for people."""
        lines = render_checks(self.checks)
        lines.append(
            f"{self.rows} check rows; label agreement {self.label_agreement:.4f}, accuracy "
            f"{self.accuracy_source:.4f} -> {self.accuracy_variant:.4f}, loss "
            f"{self.loss_source:.4f} -> {self.loss_variant:.4f}; "
            f"{'passed' if self.passed else 'FAILED'}"
            + (" (written with --accept-degradation)" if self.accepted_degradation else "")
        )
        c = self.classes
        changed = [k for k in c.get("per_class", []) if k["fp32"] != k["variant"]]
        lines += [
            f"  class {k['class']}: accuracy {k['fp32']:.4f} -> {k['variant']:.4f}" for k in changed
        ]
        lines += [
            f"  confusion true {k['true']} -> pred {k['pred']}: {k['fp32']} -> {k['variant']}"
            for k in c.get("confusion_change", [])
        ]
        if c.get("flipped"):
            rows = ", ".join(str(f["row"]) for f in c["flipped_rows"])
            lines.append(f"  {c['flipped']} rows flipped label (rows {rows})")
        if "near_ties" in c:
            lines.append(
                f"  {c['near_ties']} fp32 near ties (top-2 margin <= {c['near_tie_margin']:g}, "
                f"{c['near_tie_tolerance']}), {c['flipped_near_ties']} of them flipped"
            )
        if self.nodes is not None:
            first, limit = self.nodes["first_diverging"], f"{self.nodes['limit']:g}"
            lines.append(
                f"  first diverging node: {first['node']} ({first['op_type']}), error "
                f"{first['relative_error']:.3g} of its range > {limit} ({self.nodes['tolerance']})"
                if first
                else f"  every node within {limit} ({self.nodes['tolerance']})"
                if self.nodes["compared"]
                else f"  no node compared ({self.nodes.get('unmatched', 0)} unmatched by name)"
            )
            worst = self.nodes["worst"][:5]
            lines += [f"    {n['node']} ({n['op_type']}): {n['relative_error']:.3g}" for n in worst]
        lines += [f"  tried {a['form']}: {a['reached']}" for a in self.attempts]
        if self.latency is not None:
            lines.append(f"  speed: {self.latency['summary']}")
        if self.verdict:
            lines.append(self.verdict)
        lines.extend(f"  FAIL {f}" for f in self.failures)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what goes into ``onnxedge.variant_report``)."""
        data = jsonable({k: v for k, v in asdict(self).items() if k != "checks"})
        data["failures"] = self.failures
        data["passed"] = self.passed
        data["size_ratio"] = round(self.size_ratio, 6)
        return dict(data)


# --- conversion -------------------------------------------------------------------------


def onnx_to_int8(
    model: onnx.ModelProto, settings: Int8Settings, calibration: np.ndarray | None = None
) -> onnx.ModelProto:
    """Quantize an fp32 model's Conv / MatMul / Gemm layers to int8 (``model`` unchanged);
    ``calibration`` rows are needed for ``static``.

    Raises:
        DataError: static quantization without calibration rows, or bad rows.
        ExportError: the model has no quantizable layer feeding ``logits``.
    """
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = np.empty((0, 0), dtype=np.float32)
    if settings.method == "static":
        rows = _check_rows(calibration, _row_shape_of(model), "calibration")

    class _Reader(q.CalibrationDataReader):
        def __init__(self, x: np.ndarray) -> None:
            self._batches: Iterator[np.ndarray] = (
                x[i : i + CALIBRATION_BATCH] for i in range(0, len(x), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {ct.INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="onnxedge-int8-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("src.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(_with_node_names(model), src)
        quant_pre_process(src, pre)
        prepared = onnx.load(pre)
        _, others = _split_layers(prepared)
        keep = set(settings.keep_float)
        common: dict[str, Any] = {
            "op_types_to_quantize": sorted(LAYER_OPS),
            # Exclude rather than list: quantize_dynamic splits each Gemm into MatMul +
            # Add under new names, which a nodes_to_quantize list would not match.
            "nodes_to_exclude": others
            + [n.name for n in prepared.graph.node if keep & set(n.output)],
            "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range,
            "weight_type": q.QuantType.QInt8,
        }
        if settings.method == "static":
            q.quantize_static(
                pre,
                out,
                _Reader(rows),
                quant_format=q.QuantFormat.QDQ,
                activation_type=q.QuantType.QUInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
                # Logits stay float: the head reads them unrequantized (faster, measured).
                extra_options={"OpTypesToExcludeOutputQuantization": sorted(LAYER_OPS)},
                **common,
            )
        else:
            q.quantize_dynamic(pre, out, **common)
        return onnx.load(out)


def onnx_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert an fp32 model's layers to float16 with float32 inputs and outputs.

    The net's body (standardized input to ``logits``) is extracted, converted with
    ``convert_float_to_float16(keep_io_types=True)`` and put back, so preprocessing, head
    and label stay float32 (a block list instead leaves ``probabilities`` float16).

    Raises:
        ExportError: no MatMul / Gemm layer feeds ``logits``, or names collide.
        MissingDependencyError: onnxconverter-common is not installed.
    """
    import onnx
    from onnx.utils import Extractor

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError(
            "fp16 variants need onnxconverter-common: pip install 'onnxedge[edge]'"
        ) from None

    named = _with_node_names(model)
    _, others = _split_layers(named)
    kept = set(others)
    body = [n for n in named.graph.node if n.name not in kept]
    rest = [n for n in named.graph.node if n.name in kept]
    produced = {out for n in body for out in n.output}
    constants = {t.name for t in named.graph.initializer}
    inputs = sorted({i for n in body for i in n.input if i and i not in produced | constants})
    sub = Extractor(named).extract_model(inputs, [ct.OUTPUT_LOGITS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # once per clamped tensor; counted instead
        half = float16.convert_float_to_float16(
            sub,
            keep_io_types=True,
            min_positive_val=FP16_MIN_POSITIVE,
            max_finite_val=FP16_MAX_FINITE,
        )
    still_used = {i for n in rest for i in n.input}
    initializers = [t for t in named.graph.initializer if t.name in still_used]
    clash = {t.name for t in initializers} & {t.name for t in half.graph.initializer}
    clash |= {o for n in rest for o in n.output} & {o for n in half.graph.node for o in n.output}
    if clash:
        raise ExportError(f"fp16 body names collide with the rest of the graph: {sorted(clash)}")
    out = onnx.ModelProto()
    out.CopyFrom(named)
    graph = out.graph
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    graph.node.extend(_topological([*rest, *half.graph.node], named.graph))
    graph.initializer.extend([*initializers, *half.graph.initializer])
    return out


def _topological(nodes: list[Any], graph: Any) -> list[Any]:
    """``nodes`` in an order where every input is produced before it is read (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(nodes), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("the converted graph has a cycle or an unproduced input")
        for n in ready:
            available.update(n.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    return ordered


# --- where a variant diverges, what it does to the classes, how fast it is ---------------


def compare_nodes(
    source: onnx.ModelProto, variant_model: onnx.ModelProto, x: np.ndarray, variant: str
) -> dict[str, Any]:
    """Every fp32 node's output against the variant's tensor of the same name.

    QDQ and the fp16 converter keep the float tensor names, so nodes are matched by output
    name (as onnxruntime's ``qdq_loss_debug`` does). A node's error is ``max |variant -
    fp32|`` over its fp32 range; the comparator checks it against ``NODE_TOLERANCE``.
    Returns the first node in fp32 graph order that breaks it (or None) and the compared
    nodes worst first, each with the error it adds over its inputs'.

    Raises:
        ModelLoadError: onnxruntime cannot run a model with every output exposed.
    """
    name = NODE_TOLERANCE[variant]
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
        module = {p.key: p.value for p in node.metadata_props}.get("onnxedge.module")
        nodes.append(
            {
                "node": node.name or f"{node.op_type}_{i}",
                "op_type": node.op_type,
                "output": out,
                "module": module,
                "relative_error": errors[out],
                "added_error": errors[out]
                - max((errors.get(t, 0.0) for t in node.input), default=0.0),
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
    ref: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
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
    per_class = [
        {"class": c, "rows": int(n), "fp32": before[c, c] / n, "variant": after[c, c] / n}
        for c, n in enumerate(before.sum(axis=1))
        if n
    ]
    changed = np.argwhere(before != after)
    flipped = np.flatnonzero(a != b)

    def probs(p: np.ndarray, r: int) -> dict[str, float]:
        if p.shape[1] == 1:  # sigmoid: P(positive)
            return {"1": float(p[r, 0])}
        return {str(c): float(p[r, c]) for c in dict.fromkeys((a[r], b[r]))}

    if pa.shape[1] == 1:
        margins = np.abs(pa[:, 0] - threshold)
    else:
        top2 = np.sort(pa, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
    ties = margins <= margin
    return {
        "per_class": per_class,
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
    fp32: Callable[[np.ndarray], Any],
    variant: Callable[[np.ndarray], Any],
    rows: np.ndarray,
    *,
    timer: Timer | None = None,
) -> dict[str, Any]:
    """Time ``variant`` against ``fp32`` (runners) side by side at ``LATENCY_BATCHES``, rows
    tiled to each batch, in interleaved rounds (the order alternates); each figure is the
    fp32 median over the variant's, and ``faster`` needs every one above 1. ``timer``
    (``(model, batch) -> seconds``; tests inject one) defaults to the wall clock.
    """
    runners = {"fp32": fp32, "variant": variant}
    xs = {b: np.ascontiguousarray(np.resize(rows, (b, *rows.shape[1:]))) for b in LATENCY_BATCHES}
    calls: dict[tuple[str, int], int] = {}

    def wall(model: str, batch: int) -> float:
        run, x = runners[model], xs[batch]
        if (model, batch) not in calls:  # warm up, then enough calls to fill a round
            run(x)
            start = time.perf_counter()
            run(x)
            calls[model, batch] = max(
                1, int(LATENCY_ROUND_SECONDS / (time.perf_counter() - start + 1e-9))
            )
        n = calls[model, batch]
        start = time.perf_counter()
        for _ in range(n):
            run(x)
        return (time.perf_counter() - start) / n

    clock = timer or wall
    speedup = {}
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
        "summary": f"faster than fp32 here: {figures}"
        if faster
        else f"not faster than fp32 here: {figures}",
    }


# --- verification -----------------------------------------------------------------------


def verify_variant(
    variant_model: onnx.ModelProto | bytes | str | os.PathLike[str],
    source_model: onnx.ModelProto | bytes | str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    *,
    variant: str,
    task: str | None = None,
    bar: VariantBar | None = None,
) -> VariantReport:
    """Run a variant beside its fp32 source (protos, bytes or paths) on check rows ``x``
    with true labels ``y`` and check it against its bar (``bar`` or the variant's).

    Raises:
        DataError: rows / labels empty, mismatched or not finite.
        ModelLoadError: a model cannot be opened by onnxruntime.
    """
    rows = _check_rows(x, None, "check")
    ref = onnxruntime_runner(_as_bytes(source_model), "the source model")(rows)
    return _compare(_as_bytes(variant_model), ref, rows, y, variant=variant, task=task, bar=bar)


def model_variant(model: str | os.PathLike[str]) -> str:
    """The ``onnxedge.variant`` a model file records (default ``fp32``); raises
    ModelLoadError when the file cannot be read as ONNX."""
    return {p.key: p.value for p in load_onnx(model).metadata_props}.get(ct.KEY_VARIANT, "fp32")


def raise_for_variant_failures(report: VariantReport) -> None:
    """Raise :class:`ParityError` listing every check a variant failed, if any."""
    if report.failures:
        raise ParityError(
            f"{report.variant} variant misses its bar: " + "; ".join(report.failures),
            report.failures,
        )


def verify_variant_file(
    model: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
) -> VariantReport:
    """Re-verify a written variant on its run's validation split against the fp32
    ``source`` model, else the run's own torch module with the variant's head.

    Raises:
        ModelLoadError: the model cannot be read or is not a variant.
        CheckpointError, DataError: the run folder is unusable or does not fit.
    """
    from onnxedge.export.heads import build_head_module
    from onnxedge.export.verify import torch_runner
    from onnxedge.models.checkpoint import load_run

    proto = load_onnx(model)
    props = {p.key: p.value for p in proto.metadata_props}
    contract = ct.ModelContract.from_metadata(props)
    variant = props.get(ct.KEY_VARIANT, "fp32")
    if variant not in VARIANTS:
        raise ModelLoadError(f"{model} is not an int8 / fp16 variant (onnxedge.variant={variant})")
    run = load_run(run_dir)
    x_val, y_val = run.validation()
    rows = _check_rows(x_val, _row_shape_of(proto), "validation")
    if source is not None:
        ref = onnxruntime_runner(_as_bytes(source), "the source model")(rows)
    else:
        head = contract.head or "auto"
        threshold = float(contract.threshold) if head == "sigmoid" else None
        ref = torch_runner(build_head_module(run, head, threshold))(rows)
    data = proto.SerializeToString()
    report = _compare(
        data, ref, rows, y_val, variant=variant, task=run.task, threshold=float(contract.threshold)
    )
    report.source = str(source) if source is not None else f"{run.path} (the run's torch module)"
    report.output, report.size_bytes, report.written = str(model), Path(model).stat().st_size, True
    report.source_sha256 = props.get(ct.KEY_SOURCE_SHA256, "")
    return report


def _compare(
    variant_bytes: bytes,
    ref: dict[str, np.ndarray],
    rows: np.ndarray,
    y: np.ndarray,
    *,
    variant: str,
    task: str | None,
    bar: VariantBar | None = None,
    threshold: float = 0.5,
) -> VariantReport:
    """The variant's outputs on ``rows`` against ``ref`` through the one comparator."""
    from onnxedge.models.reference import binary_cross_entropy_with_logits, cross_entropy

    bar = bar or VariantBar.for_variant(variant)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if len(labels) != len(rows):
        raise DataError(f"the check rows are {len(rows)} but the labels {len(labels)}")
    out = onnxruntime_runner(variant_bytes, "the variant")(rows)
    ref = {k: np.asarray(v) for k, v in ref.items()}
    if task not in ("multiclass", "binary"):
        task = "binary" if ref[ct.OUTPUT_LOGITS].shape[1] == 1 else "multiclass"

    def loss(logits: np.ndarray) -> float:
        z = logits.astype(np.float64)  # (n, classes) or (n, 1)
        if task == "binary":
            return float(binary_cross_entropy_with_logits(z[:, 0], labels.astype(np.float64)))
        return float(cross_entropy(z, labels))

    names = dict(
        zip((ct.OUTPUT_LABEL, "", "loss", ct.OUTPUT_PROBABILITIES), bar.names, strict=True)
    )
    subject = f"{variant}~fp32"
    checks = compare(ref, out, bar.tolerances(), subject=subject, names=names)
    finite = all(np.isfinite(out[k]).all() for k in (ct.OUTPUT_LOGITS, ct.OUTPUT_PROBABILITIES))
    loss_src = loss(ref[ct.OUTPUT_LOGITS])
    loss_var = loss(out[ct.OUTPUT_LOGITS]) if finite else math.inf
    checks += compare(
        {"loss": np.array(loss_src)},
        {"loss": np.array(loss_var)},
        bar.tolerances(),
        subject=subject,
        names=names,
    )
    acc_src = float(np.mean(ref[ct.OUTPUT_LABEL] == labels))
    acc_var = float(np.mean(out[ct.OUTPUT_LABEL] == labels))
    drop = acc_src - acc_var
    ok = drop <= bar.max_accuracy_drop
    detail = f"accuracy {acc_src:.4f} -> {acc_var:.4f}"
    checks.append(
        Check("accuracy_drop", subject, None, drop, bar.max_accuracy_drop, bar.names[1], ok, detail)
    )
    f32 = head_reads_float32(variant_bytes)
    checks.append(exact("float32_head", variant, f32, "the head / label nodes do not read float32"))
    p_err = np.abs(out[ct.OUTPUT_PROBABILITIES].astype(np.float64) - ref[ct.OUTPUT_PROBABILITIES])
    return VariantReport(
        variant=variant,
        task=str(task),
        rows=len(rows),
        label_agreement=float(np.mean(out[ct.OUTPUT_LABEL] == ref[ct.OUTPUT_LABEL])),
        accuracy_source=acc_src,
        accuracy_variant=acc_var,
        accuracy_drop=drop,
        loss_source=loss_src,
        loss_variant=loss_var,
        loss_delta=abs(loss_var - loss_src),
        max_probability_error=float(p_err.max()) if finite else math.inf,
        finite=bool(finite),
        bar=bar,
        checks=checks,
        classes=class_figures(
            labels,
            ref,
            out,
            margin=bar.max_probability_error,
            margin_name=bar.names[3],
            threshold=threshold,
        ),
    )


def head_reads_float32(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> bool:
    """True when every Softmax / Sigmoid / ArgMax / comparison node reads float32."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(_as_bytes(model))
    graph = onnx.shape_inference.infer_shapes(proto).graph
    types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    head_ops = {"Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "Greater", "GreaterOrEqual"}
    heads = [n for n in graph.node if n.op_type in head_ops]
    return bool(heads) and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in heads)


# --- the whole step ---------------------------------------------------------------------


def variant_path(source: str | os.PathLike[str], variant: str) -> Path:
    """Where a variant goes by default: ``digits.onnx`` -> ``digits.int8.onnx``."""
    source = Path(source)
    return source.with_name(f"{source.stem}.{variant}{source.suffix or '.onnx'}")


def make_variant(
    source_onnx: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None,
    variant: str,
    output: str | os.PathLike[str],
    *,
    method: str = DEFAULT_INT8_METHOD,
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    accept_degradation: bool = False,
    overwrite: bool = False,
    calibration: np.ndarray | None = None,
    data: str | os.PathLike[str] | None = None,
    localize: bool = False,
    timer: Timer | None = None,
) -> VariantReport:
    """Build an int8 or fp16 variant of an fp32 model, verify it and write it atomically.

    Check rows: the run's validation split (``run_dir``), else ``data`` (a file or bundled
    dataset: ``DATA_CALIBRATION_ROWS`` rows, seed 0, calibrate; the rest check), else the
    bundled dataset the metadata records. ``method="auto"`` tries static per-tensor,
    static per-channel, per-channel with the layers that add the most error kept in float
    (1, 2, 4, ...; one stays int8), then dynamic, and keeps the first that clears its bar
    and is faster than fp32 here (:func:`latency_gate`). If some clear the bar but none
    is faster, nothing is written (``written=False``; ``verdict`` says why).

    Args:
        method: int8 ``static`` / ``dynamic`` / ``auto``; per_channel, reduce_range:
            see :func:`choose_int8_settings`.
        accept_degradation: write even if the bar is missed (``auto``: best agreement).
        calibration: rows to calibrate with instead of the run's / data's.
        localize: run the per-node comparison even when the bar is cleared.
        timer: the latency gate's timer (tests inject one).

    Raises:
        ExportError: unknown variant / method, a source that is a variant, no layer.
        ModelLoadError: the source cannot be read or is not an onnxedge model.
        CheckpointError: the run folder is unusable or belongs to another model.
        DataError: no rows to check on, or rows that do not fit the model.
        OutputExistsError: ``output`` exists (without ``overwrite``) or is the source.
        ParityError: the bar (``auto``: every attempt's) is missed; nothing is written.
    """
    import onnx
    from onnxedge.models.checkpoint import sha256_file

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if method not in INT8_METHODS:
        raise ExportError(
            f"unknown int8 method {method!r}; expected one of {', '.join(INT8_METHODS)}"
        )
    source_path, out_path = Path(source_onnx), Path(output)
    if out_path.exists() and out_path.resolve() == source_path.resolve():
        raise OutputExistsError(f"output {out_path} is the source model; choose another path")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} already exists; pass --overwrite to replace it")
    source = load_onnx(source_path)
    props = {p.key: p.value for p in source.metadata_props}
    outputs, inputs = {o.name for o in source.graph.output}, [i.name for i in source.graph.input]
    if not set(ct.OUTPUT_NAMES) <= outputs or ct.INPUT_NAME not in inputs:
        raise ModelLoadError(
            f"{source_path} is not an onnxedge model: inputs {inputs}, outputs {sorted(outputs)} "
            f"(expected input {ct.INPUT_NAME!r} and outputs logits, probabilities, label)"
        )
    if props.get(ct.KEY_VARIANT, "fp32") != "fp32":
        raise ExportError(
            f"{source_path} is already an {props[ct.KEY_VARIANT]} variant; make variants from "
            "the fp32 model that onnxedge export wrote"
        )
    contract = ct.ModelContract.from_metadata(props)
    x_cal, x_val, y_val, task, described = _variant_rows(
        source_path, props, contract, run_dir, data
    )
    shape = _row_shape_of(source)
    x_val = _check_rows(x_val, shape, "check")
    if calibration is not None:
        x_cal = calibration
    fp32 = onnxruntime_runner(source, "the source model")
    ref = fp32(x_val)
    threshold = float(contract.threshold)

    def build(settings: Int8Settings | None) -> tuple[onnx.ModelProto, VariantReport]:
        if settings is None:
            built = onnx_to_fp16(source)
            how: dict[str, Any] = {"converter": "onnxconverter_common.float16"}
        else:
            built = onnx_to_int8(source, settings, x_cal if settings.method == "static" else None)
            how = settings.to_dict()
            if settings.method == "static":
                how["calibration_rows"] = len(x_cal)
        _strip_debug_info(built)
        try:
            onnx.checker.check_model(built)
        except onnx.checker.ValidationError as exc:
            raise ExportError(
                f"the {variant} graph does not pass the ONNX checker: {exc}"
            ) from None
        report = _compare(
            built.SerializeToString(),
            ref,
            x_val,
            y_val,
            variant=variant,
            task=task,
            threshold=threshold,
        )
        report.settings, report.data = how, described
        if localize or not report.passed:
            report.nodes = compare_nodes(source, built, x_val[:NODE_ROWS], variant)
        return built, report

    def gate(built: onnx.ModelProto, report: VariantReport) -> None:
        runner = onnxruntime_runner(built.SerializeToString(), "the variant")
        report.latency = latency_gate(fp32, runner, x_val, timer=timer)

    tried: list[tuple[onnx.ModelProto, VariantReport]] = []
    int8 = choose_int8_settings(
        "static" if method == "auto" else method, per_channel=per_channel, reduce_range=reduce_range
    )
    if variant == "fp16" or method != "auto":
        built, report = build(None if variant == "fp16" else int8)
        if report.passed or accept_degradation:
            gate(built, report)
    else:
        chosen = _auto(build, gate, tried, int8.reduce_range)
        built, report = (
            chosen if chosen else max(tried, key=lambda t: (t[1].label_agreement, -t[1].loss_delta))
        )
        report.attempts = [r.settings | {"reached": _reached(r)} for _, r in tried]
        if not chosen and any(r.passed for _, r in tried):
            best = next(r for _, r in tried if r.passed)
            best.attempts, best.data = report.attempts, described
            best.source, best.output = str(source_path), ""
            passing = "; ".join(
                f"{r.settings['form']}: {_reached(r)}" for _, r in tried if r.passed
            )
            best.verdict = f"kept fp32 {source_path}: no int8 form that clears its bar is faster "
            best.verdict += f"than fp32 here ({passing})"
            return best
    report.source = str(source_path)
    report.source_sha256 = sha256_file(source_path)
    report.source_size_bytes = source_path.stat().st_size
    report.output = str(out_path)
    if report.failures and not accept_degradation:
        if tried:
            failures = [f"{r.settings['form']}: {f}" for _, r in tried for f in r.failures]
            what = (
                "every int8 form tried ("
                + "; ".join(f"{r.settings['form']} reached {_reached(r)}" for _, r in tried)
                + ")"
            )
        else:
            failures, what = report.failures, f"the {variant} variant"
            if report.nodes and report.nodes["first_diverging"]:
                first = report.nodes["first_diverging"]
                what += f" (first diverging node {first['node']}, {first['op_type']})"
        raise ParityError(
            f"{what} of {source_path} misses its bar: "
            + "; ".join(failures)
            + " (pass --accept-degradation to write it anyway"
            + (", or try --int8 auto)" if variant == "int8" and not tried else ")"),
            failures=failures,
        )
    report.accepted_degradation = bool(report.failures)
    report.verdict = report.verdict or (f"chose {report.settings['form']}" if tried else "")
    serialized = _serialize_with_size(built, props, report)
    with atomic_file(out_path, overwrite=overwrite, error=ExportError) as tmp:
        tmp.write_bytes(serialized)
    report.written = True
    return report


def _auto(
    build: Callable[[Int8Settings], tuple[Any, VariantReport]],
    gate: Callable[[Any, VariantReport], None],
    tried: list[tuple[Any, VariantReport]],
    reduce_range: bool,
) -> tuple[Any, VariantReport] | None:
    """``auto``'s repairs in order; the first attempt that clears the bar and the gate."""

    def attempt(settings: Int8Settings) -> bool:
        built, report = build(settings)
        tried.append((built, report))
        if report.passed:
            gate(built, report)
        return report.passed and bool(report.latency and report.latency["faster"])

    static = Int8Settings("static", False, reduce_range)
    for settings in (static, replace(static, per_channel=True)):
        if attempt(settings):
            return tried[-1]
    last = tried[-1][1]
    if not last.passed and last.nodes:
        layers = [n for n in last.nodes["worst"] if n["op_type"] in LAYER_OPS]
        ranked = [n["output"] for n in sorted(layers, key=lambda n: -n["added_error"])]
        count = 1
        while count < len(ranked):  # one layer at least stays int8
            if attempt(replace(static, per_channel=True, keep_float=tuple(ranked[:count]))):
                return tried[-1]
            count *= KEEP_FLOAT_GROWTH
    return tried[-1] if attempt(Int8Settings("dynamic", False, reduce_range)) else None


def _reached(report: VariantReport) -> str:
    """What an attempt reached, in one phrase."""
    said = f"label agreement {report.label_agreement:.4f}, loss delta {report.loss_delta:.3g}"
    if not report.passed:
        return said + " (misses " + ", ".join(c.name for c in report.checks if not c.passed) + ")"
    return said + (f", {report.latency['summary']}" if report.latency else "")


def _variant_rows(
    path: Path,
    props: dict[str, str],
    contract: ct.ModelContract,
    run_dir: str | os.PathLike[str] | None,
    data: str | os.PathLike[str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None, str]:
    """Calibration rows, check rows and labels, the task, and where they came from."""
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
        x_val, y_val = run.validation()
        return run.calibration(), x_val, y_val, run.task, f"validation split of {run.path}"
    metrics = contract.extra.get("training_metrics")
    recorded_set = metrics.get("dataset") if isinstance(metrics, dict) else None
    if data is None and recorded_set not in ("digits", "breast-cancer"):
        raise DataError(
            f"a variant of {path} needs rows to calibrate and check on: pass --run RUN_DIR "
            "or --data FILE (the model records no bundled dataset)"
        )
    ds = load_dataset(data if data is not None else str(recorded_set))
    y = ds.labels
    if contract.class_names and list(ds.class_names) != list(contract.class_names):
        raise DataError(
            f"{ds.name} has classes {ds.class_names}; the model's are {contract.class_names}"
        )
    order = np.random.default_rng(0).permutation(len(y))
    cal, check = (
        order[: min(DATA_CALIBRATION_ROWS, len(y) // 4)],
        order[min(DATA_CALIBRATION_ROWS, len(y) // 4) :],
    )
    if len(cal) == 0:
        raise DataError(f"{ds.name} has {len(y)} rows; a variant needs at least 4")
    task = "binary" if contract.head == "sigmoid" else None
    return (
        ds.features[cal],
        ds.features[check],
        y[check],
        task,
        f"{ds.name}: {len(cal)} calibration rows, {len(check)} check rows",
    )


def _serialize_with_size(
    model: onnx.ModelProto, props: dict[str, str], report: VariantReport
) -> bytes:
    """Serialize with the source's metadata plus the variant's own keys.

    The report's ``size_bytes`` is part of the metadata it measures, so iterate to the
    fixed point (it settles within two rounds).
    """
    import onnx
    from onnxedge.export.onnx_export import golden_set
    from onnxedge.export.verify import graph_weights_sha256

    # The source's parity figures describe the fp32 graph; the digest is this graph's.
    own = (ct.KEY_VARIANT, ct.KEY_SOURCE_SHA256, ct.KEY_VARIANT_REPORT, ct.KEY_PARITY)
    base = {k: v for k, v in props.items() if k not in own}
    if ct.KEY_GRAPH_WEIGHTS_SHA256 in base:
        base[ct.KEY_GRAPH_WEIGHTS_SHA256] = graph_weights_sha256(model)
    if ct.KEY_GOLDEN in base:  # the self-test holds a device to this graph's own outputs
        rows = np.asarray(json.loads(base[ct.KEY_GOLDEN])["rows"], np.float32)
        shape = _row_shape_of(model) or rows.shape[1:]
        try:
            base[ct.KEY_GOLDEN] = json.dumps(golden_set(model, rows.reshape(len(rows), *shape)))
        except ExportError:  # every golden row a tie: a collapsed variant carries none
            del base[ct.KEY_GOLDEN]
    data = b""
    for _ in range(4):
        # size_ratio stays out: its digits would change with the size it describes; file
        # names only: a deployed model should not carry the build machine's paths.
        recorded = {k: v for k, v in report.to_dict().items() if k != "size_ratio"}
        recorded["source"], recorded["output"] = Path(report.source).name, Path(report.output).name
        recorded["written"] = True
        del model.metadata_props[:]
        onnx.helper.set_model_props(
            model,
            {
                **base,
                ct.KEY_VARIANT: report.variant,
                ct.KEY_SOURCE_SHA256: report.source_sha256,
                ct.KEY_VARIANT_REPORT: json.dumps(recorded, sort_keys=True),
            },
        )
        data = model.SerializeToString()
        if len(data) == report.size_bytes:
            return data
        report.size_bytes = len(data)
    raise ExportError("cannot settle the variant's recorded size")  # pragma: no cover


def onnx_to_ort(
    model: str | os.PathLike[str], output: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Convert an ONNX model to ORT format (onnxruntime's minimal builds); returns the
    ``.ort`` file and the ``<stem>.required_operators.config`` written beside it.

    Raises:
        ModelLoadError: ``model`` does not exist.
        OutputExistsError: an output exists and ``overwrite`` is false.
        ExportError: the converter fails or the folder cannot be written.
    """
    import contextlib
    import io
    import shutil

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
            staged = Path(tmp) / f"{out.stem}.onnx"
            shutil.copyfile(source, staged)
            with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates
                style = [tool.OptimizationStyle.Fixed]
                tool.convert_onnx_models_to_ort(
                    staged, Path(tmp) / "out", optimization_styles=style
                )
            # the config first, so an .ort file is never in place without its operator list
            place(Path(tmp) / "out" / config.name, config, overwrite=overwrite, error=ExportError)
            place(
                Path(tmp) / "out" / f"{out.stem}.ort", out, overwrite=overwrite, error=ExportError
            )
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except OnnxEdgeError:  # place()'s own errors say what they are
        raise
    except Exception as exc:  # the converter raises onnxruntime's untyped errors
        raise ExportError(f"cannot convert {source} to ORT format: {exc}") from None
    return out, config


# --- small pieces -----------------------------------------------------------------------


def _as_bytes(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        return bytes(load_onnx(model).SerializeToString())
    return bytes(model.SerializeToString())


def _row_shape_of(model: onnx.ModelProto) -> tuple[int, ...] | None:
    """One row's shape from the input's static non-batch dims (None where any is symbolic)."""
    for info in model.graph.input:
        if info.name == ct.INPUT_NAME:
            dims = info.type.tensor_type.shape.dim[1:]
            if dims and all(d.HasField("dim_value") for d in dims):
                return tuple(int(d.dim_value) for d in dims)
    return None


def _check_rows(x: np.ndarray | None, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    if x is None:
        raise DataError(f"static int8 quantization needs {what} rows; none were given")
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if rows.ndim < 2 or len(rows) == 0:
        raise DataError(f"{what} rows must be a non-empty (rows, ...) array, got {rows.shape}")
    if shape is not None and rows.shape[1:] != shape:
        if rows.ndim != 2 or rows.shape[1] != math.prod(shape):
            raise DataError(
                f"{what} rows have shape {rows.shape[1:]}; the model expects rows of shape {shape}"
            )
        rows = rows.reshape(len(rows), *shape)
    bad = np.argwhere(~np.isfinite(rows.reshape(len(rows), -1)))
    if len(bad):
        raise DataError(f"{what} row {bad[0][0]} column {bad[0][1]} is not finite")
    return rows


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


def _split_layers(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Node names of the net's layers, and of everything else (kept float32).

    The body is every node downstream of a layer and upstream of (or producing)
    ``logits``: preprocessing sits before the first layer, head and label after logits.

    Raises:
        ExportError: no node produces ``logits``, or no layer feeds it.
    """
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    if ct.OUTPUT_LOGITS not in producer:
        raise ExportError(f"no node produces {ct.OUTPUT_LOGITS!r}; is this an onnxedge model?")

    def reach(start: list[int], step: Callable[[int], list[int]]) -> set[int]:
        seen: set[int] = set()
        while start:
            i = start.pop()
            if i not in seen:
                seen.add(i)
                start.extend(step(i))
        return seen

    upstream = reach(
        [producer[ct.OUTPUT_LOGITS]],
        lambda i: [producer[n] for n in nodes[i].input if n in producer],
    )
    outs = {i: set(n.output) for i, n in enumerate(nodes)}
    downstream = reach(
        [i for i in upstream if nodes[i].op_type in LAYER_OPS],
        lambda i: [j for j, n in enumerate(nodes) if outs[i] & set(n.input)],
    )
    body = upstream & downstream
    layers = [nodes[i].name for i in sorted(body) if nodes[i].op_type in LAYER_OPS]
    if not layers:
        raise ExportError(f"no MatMul / Gemm layer feeds {ct.OUTPUT_LOGITS!r}; nothing to convert")
    return layers, [nodes[i].name for i in range(len(nodes)) if i not in body]


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
