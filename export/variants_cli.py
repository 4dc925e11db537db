"""``onnxedge optimize``: parse options, call :mod:`onnxedge.export.variants`, print.

Errors are raised as :class:`~onnxedge.runtime.errors.OnnxEdgeError`; the ``onnxedge``
group turns them into one line ``Error: ...`` and exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from onnxedge.export.variants import (
    DEFAULT_INT8_METHOD,
    VariantReport,
    make_variant,
    onnx_to_ort,
    variant_path,
)


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge optimize digits.onnx --run runs/digits --int8\n"
        "  onnxedge optimize digits.onnx --run runs/digits --int8 --dynamic -o digits.dyn.onnx\n"
        "  onnxedge optimize bc.onnx --run runs/bc --fp16 -o bc.fp16.onnx --json\n"
        "  onnxedge optimize digits.onnx --run runs/digits --int8 --ort\n"
        "  onnxedge optimize digits.onnx --ort -o digits.ort"
    )
)
@click.argument("model", type=click.Path())
@click.option(
    "--run",
    "run_dir",
    type=click.Path(),
    default=None,
    help="The run folder MODEL was exported from: its calibration rows (int8) and "
    "validation split (the variant's bar). Needed for --int8 / --fp16.",
)
@click.option(
    "--int8",
    "variant",
    flag_value="int8",
    default=None,
    help="Quantize the layers to int8 (uint8 activations, int8 weights).",
)
@click.option("--fp16", "variant", flag_value="fp16", help="Convert the layers to float16.")
@click.option(
    "--static",
    "method",
    flag_value="static",
    help="int8: static QDQ quantization only (calibrated on the run's rows).",
)
@click.option(
    "--dynamic",
    "method",
    flag_value="dynamic",
    help="int8: dynamic quantization only (no calibration).  [default: the fastest int8 "
    "form that clears the bar: static per-tensor, static per-channel, then dynamic]",
)
@click.option(
    "--per-channel/--per-tensor",
    default=None,
    help="int8 weight scales.  [default: per-tensor first, per-channel if needed]",
)
@click.option(
    "--reduce-range/--no-reduce-range",
    default=None,
    help="int8: 7-bit weights, for x86 targets without VNNI.  [default: from this CPU]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="The file to write.  [default: MODEL's name with .int8 / .fp16 (.ort with --ort alone)]",
)
@click.option(
    "--ort",
    is_flag=True,
    help="Also write the result in ORT format (.ort, plus the operators config a minimal "
    "onnxruntime build needs). Alone: convert MODEL itself.",
)
@click.option(
    "--accept-degradation",
    is_flag=True,
    help="Write the variant even if it misses its bar (the failures are recorded in it).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def optimize(
    model: str,
    run_dir: str | None,
    variant: str | None,
    method: str | None,
    per_channel: bool | None,
    reduce_range: bool | None,
    output: str | None,
    ort: bool,
    accept_degradation: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Make a smaller edge variant of an fp32 model (int8 or fp16), verified.

    The variant runs beside MODEL on the run's validation split and must agree on
    labels (>= 99.5%), lose no more than 0.5 accuracy points, and keep the loss and
    probabilities close; otherwise nothing is written (unless --accept-degradation).
    Input standardization, softmax / sigmoid head and label stay float32.
    """
    if variant is None:
        if not ort:
            raise click.UsageError("choose --int8, --fp16 or --ort")
        if method or per_channel is not None or reduce_range is not None:
            raise click.UsageError(
                "--static / --dynamic / --per-channel / --reduce-range need --int8"
            )
        ort_path, config = onnx_to_ort(
            model, output or Path(model).with_suffix(".ort"), overwrite=overwrite
        )
        _echo_ort(ort_path, config, as_json)
        return
    if run_dir is None:
        raise click.UsageError(f"--{variant} needs --run RUN_DIR (calibration and validation)")
    if variant == "fp16" and (method or per_channel is not None or reduce_range is not None):
        raise click.UsageError(
            "--static / --dynamic / --per-channel / --reduce-range apply to --int8 only"
        )
    target = Path(output) if output else variant_path(model, variant)
    report = make_variant(
        model,
        run_dir,
        variant,
        target,
        method=method or DEFAULT_INT8_METHOD,
        per_channel=per_channel,
        reduce_range=reduce_range,
        accept_degradation=accept_degradation,
        overwrite=overwrite,
    )
    ort_files = (
        onnx_to_ort(target, target.with_suffix(".ort"), overwrite=overwrite) if ort else None
    )
    if as_json:
        data = report.to_dict()
        if ort_files:
            data["ort"] = {"path": str(ort_files[0]), "operators_config": str(ort_files[1])}
        click.echo(json.dumps(data))
        return
    click.echo(_describe(report))
    click.echo(report.render_table())
    if ort_files:
        _echo_ort(*ort_files, as_json=False)


def _describe(report: VariantReport) -> str:
    settings = report.settings
    if report.variant == "int8":
        how = (
            f"int8 {settings.get('form')}, {settings.get('activation_type')} activations / "
            f"{settings.get('weight_type')} weights, "
            f"reduce_range {'on' if settings.get('reduce_range') else 'off'} "
            f"({settings.get('reason')})"
        )
        for tried in settings.get("tried", []):
            verdict = "passed" if tried["passed"] else "; ".join(tried["failures"])
            how += f"\n  tried {tried['form']}: {verdict}"
    else:
        how = "fp16 layers, float32 inputs / outputs / head"
    return (
        f"{report.variant} variant of {report.source} -> {report.output} "
        f"({report.size_bytes / 1024:.1f} KiB, {report.size_ratio:.0%} of "
        f"{report.source_size_bytes / 1024:.1f} KiB)\n{how}"
    )


def _echo_ort(path: Path, config: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"ort": {"path": str(path), "operators_config": str(config)}}))
    else:
        click.echo(
            f"ORT format -> {path} ({path.stat().st_size / 1024:.1f} KiB); operators: {config}"
        )
