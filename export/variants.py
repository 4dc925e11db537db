"""Edge variants of an exported fp32 model: int8 and fp16, each held to its own bar.

- ``int8`` through ``onnxruntime.quantization`` (its pre-processing step, then static QDQ
  with MinMax calibration over the run's calibration rows, or dynamic). Only the net's
  Conv / MatMul / Gemm layers are quantized (uint8 activations, int8 weights); the
  preprocessing, the logits, the head and the label stay float32 (the fastest form
  measured, ``benchmarks/results_variants.md``). ``method="auto"`` tries static
  per-tensor, static per-channel, then dynamic, and keeps the first that clears the bar.
- ``fp16`` through onnxconverter-common on the net's body only, float32 in and out.
- ORT format (``.ort``) for onnxruntime's minimal builds (:func:`onnx_to_ort`).

A variant runs beside its source on the validation split and goes through the same
comparator as parity (:func:`onnxedge.export.compare.compare`) with its own tolerances
(:class:`VariantBar`: label agreement, probability error, loss delta, plus accuracy drop
and a float32 head). The figures go into its metadata (``onnxedge.variant``,
``onnxedge.source_sha256``, ``onnxedge.variant_report``, its own ``onnxedge.golden``). A
miss raises :class:`~onnxedge.runtime.errors.ParityError` naming every failing check,
unless ``accept_degradation`` is set. int8 settings follow this CPU (``/proc/cpuinfo``):
7-bit weights (``reduce_range``) only on x86 without VNNI, where u8s8 kernels saturate.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.compare import Check, compare, exact, jsonable, render_checks
from onnxedge.export.verify import onnxruntime_runner
from onnxedge.runtime import tolerances
from onnxedge.runtime.atomic import atomic_file, exists_message, place
from onnxedge.runtime.contract import (
    INPUT_NAME,
    KEY_GOLDEN,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_HEAD,
    KEY_PARITY,
    KEY_SOURCE_SHA256,
    KEY_THRESHOLD,
    KEY_VARIANT,
    KEY_VARIANT_REPORT,
    KEY_WEIGHTS_SHA256,
    OUTPUT_LABEL,
    OUTPUT_LOGITS,
    OUTPUT_PROBABILITIES,
)
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

#: The variants this module builds (fp32 is the source itself).
VARIANTS: tuple[str, ...] = ("int8", "fp16")
#: int8 quantization methods. ``auto`` (the default) tries the int8 forms fastest first
#: (:data:`AUTO_INT8_FORMS`, in the order measured in benchmarks/results_variants.md) and
#: keeps the first that clears the bar; ``static`` / ``dynamic`` build that form only.
INT8_METHODS: tuple[str, ...] = ("auto", "static", "dynamic")
DEFAULT_INT8_METHOD = "auto"
#: (method, per_channel) in the order ``auto`` tries them: static QDQ per-tensor was the
#: fastest int8 form on every model measured, static per-channel next (it rescues models
#: whose layers' weight ranges differ a lot), dynamic last (no calibration: it survives
#: calibration rows that do not represent the data).
AUTO_INT8_FORMS: tuple[tuple[str, bool], ...] = (
    ("static", False),
    ("static", True),
    ("dynamic", False),
)
#: Rows per calibration batch fed to onnxruntime's calibrator.
CALIBRATION_BATCH = 128
#: The layers that are quantized / converted; everything else stays float32.
LAYER_OPS = frozenset({"MatMul", "Gemm", "Conv"})
#: float16's smallest subnormal and largest finite value: the converter clamps weights to
#: these (its own defaults, 1e-7 and 1e4, clamp more than float16 needs).
FP16_MIN_POSITIVE = float(np.finfo(np.float16).smallest_subnormal)
FP16_MAX_FINITE = float(np.finfo(np.float16).max)
#: CPU flags that give onnxruntime's int8 kernels the VNNI dot-product instructions.
VNNI_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuInt8Support:
    """What this machine's CPU offers int8 inference.

    Attributes:
        machine: ``platform.machine()`` (``x86_64``, ``aarch64``, ...).
        x86: an x86 CPU (reduce_range only matters there).
        vnni: VNNI present (``avx512_vnni``, ``avx_vnni`` or ``amx_int8`` in the flags).
        flags: the int8-relevant flags found.
    """

    machine: str
    x86: bool
    vnni: bool
    flags: tuple[str, ...]


def detect_cpu_int8_support(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuInt8Support:
    """Read the CPU flags that decide int8 settings.

    Args:
        cpuinfo: the file to read (``/proc/cpuinfo``); a missing or unreadable file
            (not Linux) counts as no flags.
    """
    machine = platform.machine().lower()
    x86 = machine in {"x86_64", "amd64", "i386", "i686", "x86"}
    found: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            found.update(value.split())
    relevant = tuple(
        f for f in ("avx2", "avx512f", "avx512bw", *VNNI_FLAGS, "asimddp", "i8mm") if f in found
    )
    return CpuInt8Support(
        machine=machine,
        x86=x86,
        vnni=any(f in found for f in VNNI_FLAGS),
        flags=relevant,
    )


@dataclass(frozen=True)
class Int8Settings:
    """How an int8 variant is quantized, and why.

    Attributes:
        method: ``static`` (QDQ, calibrated) or ``dynamic``.
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights (for x86 CPUs without VNNI).
        activation_type: ``uint8`` (onnxruntime's fast u8s8 kernels on x86).
        weight_type: ``int8``.
        calibrate_method: ``minmax`` (static only).
        quant_format: static only: ``qdq`` (QuantizeLinear / DequantizeLinear pairs that
            onnxruntime fuses into its int8 kernels) or ``qoperator`` (QGemm /
            QLinearMatMul nodes written directly). Measured the same speed here after
            onnxruntime's fusion; QDQ is onnxruntime's recommended form.
        requantize_logits: static only: also quantize the last layer's output, so the
            head reads logits rounded to 8 bits (onnxruntime's default; off here: it
            loses probability precision and was slower).
        reason: how the CPU-dependent choices were made, in words.
    """

    method: str = "static"
    per_channel: bool = False
    reduce_range: bool = False
    activation_type: str = "uint8"
    weight_type: str = "int8"
    calibrate_method: str = "minmax"
    quant_format: str = "qdq"
    requantize_logits: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in the variant report)."""
        return asdict(self)


def choose_int8_settings(
    method: str = "static",
    *,
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    cpu: CpuInt8Support | None = None,
) -> Int8Settings:
    """Pick int8 settings for a target CPU (this machine's unless ``cpu`` is given).

    Args:
        method: ``static`` or ``dynamic`` (``auto`` is resolved by :func:`int8_candidates`).
        per_channel: None chooses per-tensor (measured faster here).
        reduce_range: None chooses from the CPU: True only on x86 without VNNI.
        cpu: the target's int8 support; None reads this machine's.

    Raises:
        ExportError: unknown ``method``.
    """
    if method not in INT8_METHODS or method == "auto":
        raise ExportError(
            f"unknown int8 method {method!r}; expected one of {', '.join(INT8_METHODS)}"
        )
    cpu = cpu or detect_cpu_int8_support()
    reasons = []
    if reduce_range is None:
        reduce_range = cpu.x86 and not cpu.vnni
        if not cpu.x86:
            reasons.append(f"{cpu.machine}: full 8-bit weights (reduce_range matters on x86 only)")
        elif cpu.vnni:
            vnni = next(f for f in cpu.flags if f in VNNI_FLAGS)
            reasons.append(f"{vnni} present: full 8-bit weights (no u8s8 saturation with VNNI)")
        else:
            reasons.append("x86 without VNNI: 7-bit weights (reduce_range) against u8s8 saturation")
    else:
        reasons.append(f"reduce_range={reduce_range} as asked")
    if per_channel is None:
        per_channel = False
        reasons.append("per-tensor weight scales (per-channel measured slower)")
    else:
        reasons.append(f"per_channel={per_channel} as asked")
    return Int8Settings(
        method=method,
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibrate_method="minmax" if method == "static" else "none",
        reason="; ".join(reasons),
    )


def int8_candidates(
    method: str = DEFAULT_INT8_METHOD,
    *,
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    cpu: CpuInt8Support | None = None,
) -> list[Int8Settings]:
    """The int8 forms to try, in order: one for ``static`` / ``dynamic``, several for ``auto``.

    Args:
        method: ``auto``, ``static`` or ``dynamic``.
        per_channel: None leaves it to the method (``auto`` tries both); True / False
            keeps only the forms with that setting.
        reduce_range, cpu: as for :func:`choose_int8_settings`.

    Raises:
        ExportError: unknown ``method``.
    """
    if method not in INT8_METHODS:
        raise ExportError(
            f"unknown int8 method {method!r}; expected one of {', '.join(INT8_METHODS)}"
        )
    cpu = cpu or detect_cpu_int8_support()
    if method != "auto":
        return [
            choose_int8_settings(
                method, per_channel=per_channel, reduce_range=reduce_range, cpu=cpu
            )
        ]
    return [
        choose_int8_settings(m, per_channel=pc, reduce_range=reduce_range, cpu=cpu)
        for m, pc in AUTO_INT8_FORMS
        if per_channel is None or pc == per_channel
    ]


def int8_form(settings: Int8Settings) -> str:
    """A short name for an int8 form: ``static per-tensor``, ``dynamic per-channel``."""
    return f"{settings.method} {'per-channel' if settings.per_channel else 'per-tensor'}"


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
        names = (
            "VARIANT_MIN_LABEL_AGREEMENT",
            "VARIANT_MAX_ACCURACY_DROP",
            f"{prefix}_MAX_LOSS_DELTA",
            f"{prefix}_MAX_PROBABILITY_ERROR",
        )
        a, d, loss, p = (float(getattr(tolerances, n)) for n in names)
        return cls(a, d, loss, p, names=names)

    def tolerances(self) -> dict[str, float]:
        """The comparator's tolerances by output name (labels: the share that may differ)."""
        return {
            OUTPUT_PROBABILITIES: self.max_probability_error,
            OUTPUT_LABEL: 1.0 - self.min_label_agreement,
            "loss": self.max_loss_delta,
        }


@dataclass
class VariantReport:
    """How a variant compares with its fp32 source on the same labelled rows.

    Attributes:
        variant: ``int8`` or ``fp16``.
        task: ``multiclass`` or ``binary``.
        rows: validation rows compared.
        label_agreement: share of rows where both models give the same label.
        accuracy_source, accuracy_variant, accuracy_drop: against the true labels.
        loss_source, loss_variant, loss_delta: mean cross-entropy / BCE from the logits.
        max_probability_error, mean_probability_error: ``|p_variant - p_source|``.
        finite: the variant's logits and probabilities hold no NaN / Inf.
        float32_head: the head and label nodes read float32 tensors.
        bar: the thresholds applied.
        checks: the comparator's checks (:func:`onnxedge.export.compare.compare`).
        accepted_degradation: the variant was written despite failures.
        source, source_sha256, source_size_bytes: the fp32 model it was made from.
        output, size_bytes: where the variant was written and its file size.
        settings: how it was made (int8 settings, or the fp16 converter's options).
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
    mean_probability_error: float
    finite: bool
    float32_head: bool
    bar: VariantBar
    checks: list[Check] = field(default_factory=list)
    accepted_degradation: bool = False
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
        """The checks against their bar, for people (the same table as parity's)."""
        lines = render_checks(self.checks)
        lines.append(
            f"{self.rows} validation rows; label agreement {self.label_agreement:.4f}, accuracy "
            f"{self.accuracy_source:.4f} -> {self.accuracy_variant:.4f}, loss "
            f"{self.loss_source:.4f} -> {self.loss_variant:.4f}; "
            f"{'passed' if self.passed else 'FAILED'}"
            + (" (written with --accept-degradation)" if self.accepted_degradation else "")
        )
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
    model: onnx.ModelProto,
    settings: Int8Settings,
    calibration: np.ndarray | None = None,
) -> onnx.ModelProto:
    """Quantize an fp32 model's MatMul / Gemm layers to int8.

    Runs ``quant_pre_process`` first, then ``quantize_static`` (QDQ, MinMax calibration
    over ``calibration``) or ``quantize_dynamic``. Standardization, head, label and
    logits stay float32. Metadata is not touched here (see :func:`make_variant`).

    Args:
        model: the fp32 model (left unchanged).
        settings: from :func:`choose_int8_settings`.
        calibration: raw feature rows ``(n, features)`` float32; needed for ``static``.

    Raises:
        DataError: static quantization without calibration rows, rows of the wrong
            width, or rows holding NaN / Inf.
        ExportError: the model has no quantizable layer feeding ``logits``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if settings.quant_format not in formats or settings.activation_type not in qtype:
        raise ExportError(
            f"unsupported int8 settings: quant_format {settings.quant_format!r} (expected "
            f"qdq or qoperator), activation_type {settings.activation_type!r} (expected "
            "uint8 or int8)"
        )
    rows = np.empty((0, 0), dtype=np.float32)
    if settings.method == "static":
        rows = _check_rows(calibration, _row_shape_of(model), "calibration")

    class _Reader(CalibrationDataReader):
        """Feeds the calibration rows to onnxruntime's calibrator, batch by batch."""

        def __init__(self, x: np.ndarray) -> None:
            self._batches: Iterator[np.ndarray] = (
                x[i : i + CALIBRATION_BATCH] for i in range(0, len(x), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="onnxedge-int8-") as tmp:
        named = _with_node_names(model)
        src, pre, out = (os.path.join(tmp, n) for n in ("src.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(named, src)
        quant_pre_process(src, pre)
        prepared = onnx.load(pre)
        _, others = _split_layers(prepared)
        common: dict[str, Any] = {
            "op_types_to_quantize": sorted(LAYER_OPS),
            # Exclude rather than list: quantize_dynamic splits each Gemm into MatMul +
            # Add under new names, which a nodes_to_quantize list would not match.
            "nodes_to_exclude": others,
            "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range,
            "weight_type": qtype[settings.weight_type],
        }
        if settings.method == "static":
            quantize_static(
                pre,
                out,
                _Reader(rows),
                quant_format=formats[settings.quant_format],
                activation_type=qtype[settings.activation_type],
                calibrate_method=CalibrationMethod.MinMax,
                # Logits stay float: the head reads them unrequantized, and onnxruntime
                # then fuses DQ -> Gemm into QGemm with a float output.
                extra_options=(
                    {}
                    if settings.requantize_logits
                    else {"OpTypesToExcludeOutputQuantization": sorted(LAYER_OPS)}
                ),
                **common,
            )
        else:
            quantize_dynamic(pre, out, **common)
        return onnx.load(out)


def onnx_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert an fp32 model's layers to float16 with float32 inputs and outputs.

    The net's body (from the standardized input to ``logits``) is extracted as a model of
    its own and converted by onnxconverter-common's
    ``convert_float_to_float16(keep_io_types=True)``, then put back in place of the
    fp32 body. Standardization, head and label stay float32 with their constants.
    (Converting the whole graph with a block list instead casts every value between
    two blocked nodes to float16 and back, and leaves ``probabilities`` float16 when
    ``label`` reads it: both lose the float32 head this module promises.)

    Raises:
        ExportError: the model has no MatMul / Gemm layer feeding ``logits``, or the
            converted body's names collide with the rest of the graph.
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
    inputs = sorted(
        {i for n in body for i in n.input if i and i not in produced and i not in constants}
    )
    sub = Extractor(named).extract_model(inputs, [OUTPUT_LOGITS])
    with warnings.catch_warnings():
        # It warns once per clamped tensor; fp16_clamped_weights counts them instead.
        warnings.simplefilter("ignore", UserWarning)
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


def fp16_clamped_weights(model: onnx.ModelProto) -> int:
    """How many of the layers' weights float16 cannot hold (they get clamped on conversion).

    Counts nonzero magnitudes below ``FP16_MIN_POSITIVE`` (they become that value) or
    above ``FP16_MAX_FINITE`` (they become that value), in the initializers the net's
    MatMul / Gemm layers read.
    """
    from onnx import numpy_helper

    named = _with_node_names(model)
    layers, _ = _split_layers(named)
    wanted = {i for n in named.graph.node if n.name in layers for i in n.input}
    count = 0
    for tensor in named.graph.initializer:
        if tensor.name in wanted and tensor.data_type == 1:  # TensorProto.FLOAT
            a = np.abs(numpy_helper.to_array(tensor))
            count += int(np.sum(((a > 0) & (a < FP16_MIN_POSITIVE)) | (a > FP16_MAX_FINITE)))
    return count


def _topological(nodes: list[Any], graph: Any) -> list[Any]:
    """``nodes`` in an order where every input is produced before it is read (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {t.name for n in nodes if n.op_type == "Constant" for t in n.output}
    pending, ordered = list(nodes), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("the converted graph has a cycle or an unproduced input")
        for n in ready:
            available.update(n.output)
            ordered.append(n)
        pending = [n for n in pending if all(n is not r for r in ready)]
    return ordered


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
    """Run a variant beside its fp32 source in onnxruntime and check it against its bar.

    Args:
        variant_model, source_model: models as protos, serialized bytes or file paths.
        x: raw rows ``(n, *input_shape)`` float32 (the validation split).
        y: true labels ``(n,)`` in ``0..C-1``.
        variant: ``int8`` or ``fp16`` (chooses the bar when ``bar`` is None).
        task: ``multiclass`` or ``binary``; None: from the logits' width.
        bar: thresholds; None uses :meth:`VariantBar.for_variant`.

    Returns:
        The report; ``failures`` lists every missed check (nothing is raised here).

    Raises:
        DataError: ``x`` / ``y`` are empty, of mismatched lengths or hold NaN / Inf.
        ModelLoadError: a model cannot be opened by onnxruntime.
    """
    source_bytes = _as_bytes(source_model)
    rows = _check_rows(x, None, "validation")
    ref = onnxruntime_runner(source_bytes, "the source model")(rows)
    return _compare(_as_bytes(variant_model), ref, rows, y, variant=variant, task=task, bar=bar)


def model_variant(model: str | os.PathLike[str]) -> str:
    """The ``onnxedge.variant`` a model file records (``fp32`` when it records none).

    Raises:
        ModelLoadError: the file cannot be read as ONNX.
    """
    return _metadata(_as_bytes(model)).get(KEY_VARIANT, "fp32")


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
    """Re-verify a written variant on its run's validation split, against its bar.

    The expected outputs are the fp32 ``source`` model's in onnxruntime when given, else
    the run's own torch module with the variant's head and threshold.

    Raises:
        ModelLoadError: the model cannot be read or is not a variant.
        CheckpointError: the run folder is unusable.
        DataError: the validation split does not fit the model.
    """
    from onnxedge.export.heads import build_head_module
    from onnxedge.export.verify import torch_runner
    from onnxedge.models.checkpoint import load_run

    data = _as_bytes(model)
    props = _metadata(data)
    variant = props.get(KEY_VARIANT, "fp32")
    if variant not in VARIANTS:
        raise ModelLoadError(f"{model} is not an int8 / fp16 variant (onnxedge.variant={variant})")
    run = load_run(run_dir)
    x_val, y_val = run.validation()
    rows = _check_rows(x_val, _row_shape_of(data), "validation")
    if source is not None:
        ref = onnxruntime_runner(_as_bytes(source), "the source model")(rows)
    else:
        head = props.get(KEY_HEAD) or None
        threshold = (
            float(props[KEY_THRESHOLD]) if head == "sigmoid" and KEY_THRESHOLD in props else None
        )
        ref = torch_runner(build_head_module(run, head or "auto", threshold))(rows)
    report = _compare(data, ref, rows, y_val, variant=variant, task=run.task, bar=None)
    report.source = str(source) if source is not None else f"{run.path} (the run's torch module)"
    report.output = str(model)
    report.size_bytes = len(data)
    try:
        recorded = json.loads(props.get(KEY_VARIANT_REPORT, "{}"))
    except ValueError:
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    report.source_sha256 = props.get(KEY_SOURCE_SHA256, "")
    report.source_size_bytes = int(recorded.get("source_size_bytes", 0) or 0)
    report.settings = dict(recorded.get("settings") or {})
    return report


def _compare(
    variant_bytes: bytes,
    ref: dict[str, np.ndarray],
    rows: np.ndarray,
    y: np.ndarray,
    *,
    variant: str,
    task: str | None,
    bar: VariantBar | None,
) -> VariantReport:
    """The variant's outputs on ``rows`` against ``ref`` through the one comparator."""
    from onnxedge.models.reference import binary_cross_entropy_with_logits, cross_entropy

    bar = bar or VariantBar.for_variant(variant)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if len(labels) != len(rows):
        raise DataError(f"validation has {len(rows)} rows but {len(labels)} labels")
    out = onnxruntime_runner(variant_bytes, "the variant")(rows)
    ref = {k: np.asarray(v) for k, v in ref.items()}
    if task not in ("multiclass", "binary"):
        task = "binary" if ref[OUTPUT_LOGITS].shape[1] == 1 else "multiclass"

    def loss(logits: np.ndarray) -> float:
        z = logits.astype(np.float64)  # (n, classes) or (n, 1)
        if task == "binary":
            return float(binary_cross_entropy_with_logits(z[:, 0], labels.astype(np.float64)))
        return float(cross_entropy(z, labels))

    names = dict(zip((OUTPUT_LABEL, "", "loss", OUTPUT_PROBABILITIES), bar.names, strict=True))
    subject = f"{variant}~fp32"
    checks = compare(ref, out, bar.tolerances(), subject=subject, names=names)
    finite = all(np.isfinite(out[k]).all() for k in (OUTPUT_LOGITS, OUTPUT_PROBABILITIES))
    loss_src = loss(ref[OUTPUT_LOGITS])
    loss_var = loss(out[OUTPUT_LOGITS]) if finite else math.inf
    checks += compare(
        {"loss": np.array(loss_src)},
        {"loss": np.array(loss_var)},
        bar.tolerances(),
        subject=subject,
        names=names,
    )
    acc_src = float(np.mean(ref[OUTPUT_LABEL] == labels))
    acc_var = float(np.mean(out[OUTPUT_LABEL] == labels))
    drop = acc_src - acc_var
    checks.append(
        Check(
            "accuracy_drop",
            subject,
            None,
            drop,
            bar.max_accuracy_drop,
            bar.names[1],
            drop <= bar.max_accuracy_drop,
            f"accuracy {acc_src:.4f} -> {acc_var:.4f}",
        )
    )
    float32_head = head_reads_float32(variant_bytes)
    checks.append(
        exact("float32_head", variant, float32_head, "the head / label nodes do not read float32")
    )
    p_err = np.abs(out[OUTPUT_PROBABILITIES].astype(np.float64) - ref[OUTPUT_PROBABILITIES])
    return VariantReport(
        variant=variant,
        task=str(task),
        rows=len(rows),
        label_agreement=float(np.mean(out[OUTPUT_LABEL] == ref[OUTPUT_LABEL])),
        accuracy_source=acc_src,
        accuracy_variant=acc_var,
        accuracy_drop=drop,
        loss_source=loss_src,
        loss_variant=loss_var,
        loss_delta=abs(loss_var - loss_src),
        max_probability_error=float(p_err.max()) if finite else math.inf,
        mean_probability_error=float(p_err.mean()) if finite else math.inf,
        finite=bool(finite),
        float32_head=float32_head,
        bar=bar,
        checks=checks,
    )


def head_reads_float32(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> bool:
    """True when every Softmax / Sigmoid / ArgMax / comparison node reads float32
    (types from ONNX shape inference over the whole graph)."""
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
    run_dir: str | os.PathLike[str],
    variant: str,
    output: str | os.PathLike[str],
    *,
    method: str = DEFAULT_INT8_METHOD,
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    accept_degradation: bool = False,
    overwrite: bool = False,
    calibration: np.ndarray | None = None,
) -> VariantReport:
    """Build an int8 or fp16 variant of an fp32 model, verify it and write it atomically.

    Args:
        source_onnx: the fp32 model written by ``onnxedge export``.
        run_dir: the run folder it was exported from (calibration and validation rows).
        variant: ``int8`` or ``fp16``.
        output: the variant's path (written via a temporary file in the same folder).
        method: int8 only: ``auto`` (default: the fastest form that clears the bar, see
            :data:`AUTO_INT8_FORMS`), ``static`` (QDQ, calibrated) or ``dynamic``.
        per_channel, reduce_range: int8 only; see :func:`int8_candidates`.
        accept_degradation: write the variant even if it misses its bar (the failures
            are recorded in its report; with ``auto``, the form with the best label
            agreement is written).
        overwrite: replace an existing ``output``.
        calibration: raw rows to calibrate with instead of the run's sample.

    Returns:
        The report, also stored in the variant's metadata.

    Raises:
        ExportError: unknown variant, a source that is itself a variant, or a model
            with no layer to convert.
        ModelLoadError: the source cannot be read.
        CheckpointError: the run folder is unusable or belongs to another model.
        OutputExistsError: ``output`` exists and ``overwrite`` is false, or it is the
            source itself.
        ParityError: the variant misses its bar and ``accept_degradation`` is false;
            ``failures`` lists every missed check. Nothing is written.
    """
    import onnx
    from onnxedge.models.checkpoint import load_run, sha256_file

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    source_path, out_path = Path(source_onnx), Path(output)
    if out_path.exists() and out_path.resolve() == source_path.resolve():
        raise OutputExistsError(f"output {out_path} is the source model; choose another path")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} already exists; pass --overwrite to replace it")
    source = _load_source(source_path)
    props = {p.key: p.value for p in source.metadata_props}
    if props.get(KEY_VARIANT, "fp32") != "fp32":
        raise ExportError(
            f"{source_path} is already an {props[KEY_VARIANT]} variant; make variants from "
            "the fp32 model that onnxedge export wrote"
        )

    run = load_run(run_dir)
    recorded = props.get(KEY_WEIGHTS_SHA256)
    if recorded and recorded != run.weights_sha256:
        raise CheckpointError(
            f"{source_path} was exported from weights {recorded[:12]}..., but run folder "
            f"{run.path} holds weights {run.weights_sha256[:12]}...; pass the model's own run"
        )
    shape = _row_shape_of(source)
    x_val, y_val = run.validation()
    x_val = _check_rows(x_val, shape, "validation")

    ref = onnxruntime_runner(source, "the source model")(x_val)

    def build(settings: Int8Settings | None) -> tuple[onnx.ModelProto, VariantReport]:
        if settings is None:
            built = onnx_to_fp16(source)
            how: dict[str, Any] = {
                "converter": "onnxconverter_common.float16",
                "keep_io_types": True,
                "clamped_weights": fp16_clamped_weights(source),
            }
        else:
            static = settings.method == "static"
            rows = calibration if calibration is not None else run.calibration()
            built = onnx_to_int8(source, settings, rows if static else None)
            how = {**settings.to_dict(), "form": int8_form(settings)}
            if static:
                how["calibration_rows"] = len(rows)
        _strip_debug_info(built)
        try:
            onnx.checker.check_model(built)
        except onnx.checker.ValidationError as exc:
            raise ExportError(
                f"the {variant} graph does not pass the ONNX checker: {exc}"
            ) from None
        report = _compare(
            built.SerializeToString(), ref, x_val, y_val, variant=variant, task=run.task, bar=None
        )
        report.settings = how
        return built, report

    if variant == "fp16":
        built, report = build(None)
        tried = [report]
    else:
        tried, builds = [], []
        for candidate in int8_candidates(
            method, per_channel=per_channel, reduce_range=reduce_range
        ):
            built, report = build(candidate)
            tried.append(report)
            builds.append(built)
            if report.passed:
                break
        # none passed: the best agreement (then smallest loss delta) is the one to keep
        best = max(
            range(len(tried)), key=lambda i: (tried[i].label_agreement, -tried[i].loss_delta)
        )
        if not report.passed:
            built, report = builds[best], tried[best]
        if len(tried) > 1:
            report.settings["tried"] = [
                {
                    "form": r.settings["form"],
                    "passed": r.passed,
                    "failures": r.failures,
                    "label_agreement": r.label_agreement,
                }
                for r in tried
            ]
    report.source = str(source_path)
    report.source_sha256 = sha256_file(source_path)
    report.source_size_bytes = source_path.stat().st_size
    report.output = str(out_path)
    if report.failures and not accept_degradation:
        if len(tried) > 1:
            failures = [f"{r.settings['form']}: {f}" for r in tried for f in r.failures]
            what = f"every int8 form tried ({', '.join(r.settings['form'] for r in tried)})"
        else:
            failures, what = report.failures, f"the {variant} variant"
        raise ParityError(
            f"{what} of {source_path} misses its bar: "
            + "; ".join(failures)
            + " (pass --accept-degradation to write it anyway)",
            failures=failures,
        )
    report.accepted_degradation = bool(report.failures)
    data = _serialize_with_size(built, props, report)
    with atomic_file(out_path, overwrite=overwrite, error=ExportError) as tmp:
        tmp.write_bytes(data)
    return report


def _serialize_with_size(
    model: onnx.ModelProto, props: dict[str, str], report: VariantReport
) -> bytes:
    """Serialize with the source's metadata plus the variant's own keys.

    The report's ``size_bytes`` is part of the metadata it measures, so iterate to the
    fixed point (the length grows only when its number of digits does, so it settles
    within two rounds).
    """
    import onnx
    from onnxedge.export.verify import graph_weights_sha256

    # The source's parity figures describe the fp32 graph, not this one: the variant
    # report replaces them. The graph digest is recomputed so tampering still shows.
    own = (KEY_VARIANT, KEY_SOURCE_SHA256, KEY_VARIANT_REPORT, KEY_PARITY)
    base = {k: v for k, v in props.items() if k not in own}
    if KEY_GRAPH_WEIGHTS_SHA256 in base:
        base[KEY_GRAPH_WEIGHTS_SHA256] = graph_weights_sha256(model)
    if KEY_GOLDEN in base:  # the self-test holds a device to this graph's own outputs
        from onnxedge.export.onnx_export import golden_set

        rows = np.asarray(json.loads(base[KEY_GOLDEN])["rows"], np.float32)
        shape = _row_shape_of(model) or rows.shape[1:]
        try:
            base[KEY_GOLDEN] = json.dumps(golden_set(model, rows.reshape(len(rows), *shape)))
        except ExportError:
            # A variant that labels every golden row a tie has collapsed: it fails its bar,
            # and carries no golden set a device could pass.
            del base[KEY_GOLDEN]
    data = b""
    for _ in range(4):
        # size_ratio stays out: its digits would change with the size it describes.
        recorded = {k: v for k, v in report.to_dict().items() if k != "size_ratio"}
        # file names only: a deployed model should not carry the build machine's paths
        recorded["source"] = Path(report.source).name
        recorded["output"] = Path(report.output).name
        del model.metadata_props[:]
        onnx.helper.set_model_props(
            model,
            {
                **base,
                KEY_VARIANT: report.variant,
                KEY_SOURCE_SHA256: report.source_sha256,
                KEY_VARIANT_REPORT: json.dumps(recorded, sort_keys=True),
            },
        )
        data = model.SerializeToString()
        if len(data) == report.size_bytes:
            return data
        report.size_bytes = len(data)
    raise ExportError("cannot settle the variant's recorded size")  # pragma: no cover


def onnx_to_ort(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Convert an ONNX model to ORT format for onnxruntime's minimal (mobile) builds.

    Uses onnxruntime's own converter (``convert_onnx_models_to_ort``, fixed optimization
    style, hardware-specific layout transforms off) and writes, beside ``output``, the
    ``<stem>.required_operators.config`` a minimal build is compiled with. The ORT file
    keeps the model's metadata; a full onnxruntime opens it like an ``.onnx`` file.

    Returns:
        The ``.ort`` file and the operators config.

    Raises:
        ModelLoadError: ``model`` does not exist.
        OutputExistsError: ``output`` exists and ``overwrite`` is false.
        ExportError: the converter fails or the folder cannot be written.
    """
    import contextlib
    import io
    import logging
    import shutil

    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    source, out = Path(model), Path(output)
    if not source.is_file():
        raise ModelLoadError(f"model {source} does not exist")
    config = out.with_name(f"{out.stem}.required_operators.config")
    for target in (out, config):
        if target.exists() and not overwrite:
            raise OutputExistsError(exists_message(target))
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ExportError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    tool_log = logging.getLogger("ort_format_model.utils")
    level = tool_log.level
    try:
        staged = tmp / f"{out.stem}.onnx"
        shutil.copyfile(source, staged)
        tool_log.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates on stdout
            convert_onnx_models_to_ort(
                staged, tmp / "out", optimization_styles=[OptimizationStyle.Fixed]
            )
        # The one writer's final step (never replaces without overwrite); the config
        # first, so an .ort file is never in place without its operator list.
        built = tmp / "out"
        place(built / config.name, config, overwrite=overwrite, error=ExportError)
        place(built / f"{out.stem}.ort", out, overwrite=overwrite, error=ExportError)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except Exception as exc:  # the converter raises onnxruntime's untyped errors
        raise ExportError(f"cannot convert {source} to ORT format: {exc}") from None
    finally:
        tool_log.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
    return out, config


# --- small pieces -----------------------------------------------------------------------


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _load_source(path: Path) -> onnx.ModelProto:
    from onnxedge.export.verify import load_onnx

    model = load_onnx(path)
    outputs = {o.name for o in model.graph.output}
    inputs = [i.name for i in model.graph.input]
    if any(n not in outputs for n in (OUTPUT_LOGITS, OUTPUT_PROBABILITIES, OUTPUT_LABEL)) or (
        INPUT_NAME not in inputs
    ):
        raise ModelLoadError(
            f"{path} is not an onnxedge model: inputs {inputs}, outputs {sorted(outputs)} "
            f"(expected input {INPUT_NAME!r} and outputs logits, probabilities, label)"
        )
    return model


def _row_shape_of(model: onnx.ModelProto | bytes) -> tuple[int, ...] | None:
    """One row's shape from the input's static non-batch dims (None where any is symbolic)."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
    for info in proto.graph.input:
        if info.name == INPUT_NAME:
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

    The net's body is every node that lies downstream of a MatMul / Gemm and upstream of
    (or producing) ``logits``: standardization sits before the first layer, the head and
    the label after ``logits``. The layers are the MatMul / Gemm nodes of that body.

    Raises:
        ExportError: no node produces ``logits``, or no MatMul / Gemm feeds it.
    """
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    if OUTPUT_LOGITS not in producer:
        raise ExportError(f"no node produces {OUTPUT_LOGITS!r}; is this an onnxedge model?")

    upstream: set[int] = set()
    stack = [producer[OUTPUT_LOGITS]]
    while stack:
        i = stack.pop()
        if i not in upstream:
            upstream.add(i)
            stack.extend(producer[name] for name in nodes[i].input if name in producer)
    downstream: set[int] = set()
    stack = [i for i in upstream if nodes[i].op_type in LAYER_OPS]
    while stack:
        i = stack.pop()
        if i not in downstream:
            downstream.add(i)
            stack.extend(c for out in nodes[i].output for c in consumers.get(out, []))
    body = upstream & downstream
    layers = [nodes[i].name for i in sorted(body) if nodes[i].op_type in LAYER_OPS]
    if not layers:
        raise ExportError(f"no MatMul / Gemm layer feeds {OUTPUT_LOGITS!r}; nothing to convert")
    others = [nodes[i].name for i in range(len(nodes)) if i not in body]
    return layers, others


def _strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop per-node metadata, doc strings and opset imports no node uses.

    The quantizer's pre-processing step saves the model through onnxruntime, which
    imports every domain it knows (training, preview, nchwc, aten, ...); a device
    runtime needs only the domains the graph's nodes use.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _as_bytes(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        try:
            return Path(model).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model {model}: {exc.strerror or exc}") from None
    return bytes(model.SerializeToString())


def _metadata(model: bytes) -> dict[str, str]:
    import onnx

    return _props(onnx.load_from_string(model))
