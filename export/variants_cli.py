"""``onnxedge optimize``: parse options, call :mod:`onnxedge.export.variants`, print."""

from __future__ import annotations

import json
from pathlib import Path

import click
from onnxedge.export.variants import INT8_METHODS, make_variant, onnx_to_ort, variant_path


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge optimize digits.onnx --run runs/digits --int8\n"
        "  onnxedge optimize digits.onnx --run runs/digits --int8 auto --json\n"
        "  onnxedge optimize model.onnx --data rows.csv --int8 dynamic -o model.dyn.onnx\n"
        "  onnxedge optimize bc.onnx --run runs/bc --fp16 -o bc.fp16.onnx --localize\n"
        "  onnxedge optimize digits.onnx --ort -o digits.ort"
    )
)
@click.argument("model", type=click.Path())
@click.option(
    "--run",
    "run_dir",
    type=click.Path(),
    default=None,
    help="The run folder MODEL was exported from: calibration rows and validation split.",
)
@click.option(
    "--data",
    default=None,
    help="A labelled data file (CSV / NPY / NPZ / Parquet) or bundled dataset to calibrate "
    "and check on, for any exported model.  [default: the bundled dataset MODEL records]",
)
@click.option(
    "--int8",
    "int8",
    type=click.Choice(INT8_METHODS),
    is_flag=False,
    flag_value="static",
    default=None,
    help="Quantize the layers to int8: static (QDQ, calibrated; the default), dynamic, or "
    "auto: when static misses its bar, try per-channel weights, then the worst layers "
    "kept in float, then dynamic, and keep the first that clears the bar and is faster "
    "than fp32 here (by LATENCY_MIN_SPEEDUP, 5%) at batch 1 and 256. If some clear the "
    "bar but none is faster, auto "
    "writes nothing, says so and exits 0 (MODEL stays the one to ship); if none clears "
    "the bar it fails listing each attempt.",
)
@click.option("--fp16", is_flag=True, help="Convert the layers to float16.")
@click.option(
    "--per-channel/--per-tensor",
    default=None,
    help="int8 static / dynamic weight scales.  [default: per-tensor]",
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
    "--localize",
    is_flag=True,
    help="Compare every node with the fp32 model's (done anyway when the bar is missed).",
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
    data: str | None,
    int8: str | None,
    fp16: bool,
    per_channel: bool | None,
    reduce_range: bool | None,
    output: str | None,
    ort: bool,
    localize: bool,
    accept_degradation: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Make a smaller edge variant of an fp32 model (int8 or fp16), verified.

    The variant runs beside MODEL on check rows and must agree on labels (>= 99.5%),
    lose no more than 0.5 accuracy points and keep loss and probabilities close;
    otherwise nothing is written (unless --accept-degradation). The report adds
    per-class accuracy, confusion changes, flipped rows, near ties, its speed against
    fp32 on this machine, and on a miss the first node whose output diverges.
    """
    if int8 and fp16:
        raise click.UsageError("choose one of --int8 and --fp16")
    variant = "int8" if int8 else "fp16" if fp16 else None
    if variant is None:
        if not ort:
            raise click.UsageError("choose --int8, --fp16 or --ort")
        ort_path, config = onnx_to_ort(
            model, output or Path(model).with_suffix(".ort"), overwrite=overwrite
        )
        _echo_ort(ort_path, config, as_json)
        return
    if fp16 and (per_channel is not None or reduce_range is not None):
        raise click.UsageError("--per-channel / --reduce-range apply to --int8 only")
    if int8 == "auto" and per_channel is not None:
        raise click.UsageError("--int8 auto chooses the weight scales; drop --per-channel")
    target = Path(output) if output else variant_path(model, variant)
    report = make_variant(
        model,
        run_dir,
        variant,
        target,
        method=int8 or "static",
        per_channel=per_channel,
        reduce_range=reduce_range,
        accept_degradation=accept_degradation,
        overwrite=overwrite,
        data=data,
        localize=localize,
    )
    ort_files = (
        onnx_to_ort(target, target.with_suffix(".ort"), overwrite=overwrite)
        if ort and report.written
        else None
    )
    if as_json:
        out = report.to_dict()
        if ort_files:
            out["ort"] = {"path": str(ort_files[0]), "operators_config": str(ort_files[1])}
        click.echo(json.dumps(out))
        return
    if report.written:
        click.echo(
            f"{report.variant} variant of {report.source} -> {report.output} "
            f"({report.size_bytes / 1024:.1f} KiB, {report.size_ratio:.0%} of "
            f"{report.source_size_bytes / 1024:.1f} KiB); {report.settings.get('form', 'fp16')}"
        )
    click.echo(report.render_table())
    if ort_files:
        _echo_ort(*ort_files, as_json=False)


def _echo_ort(path: Path, config: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"ort": {"path": str(path), "operators_config": str(config)}}))
    else:
        click.echo(
            f"ORT format -> {path} ({path.stat().st_size / 1024:.1f} KiB); operators: {config}"
        )
