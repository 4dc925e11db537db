"""``onnxedge optimize``: parse options, call :mod:`onnxedge.export.variants`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from onnxedge.export.variants import INT8_METHODS, make_variant, onnx_to_ort, variant_path
from onnxedge.export.wrap_cli import output_options
from onnxedge.runtime.cli import echo_json

EXAMPLES = """Examples:

\b
  onnxedge optimize digits.onnx --run runs/digits --int8
  onnxedge optimize digits.onnx --run runs/digits --int8 auto --json
  onnxedge optimize model.onnx --data rows.csv --int8 dynamic -o model.dyn.onnx
  onnxedge optimize bc.onnx --run runs/bc --fp16 -o bc.fp16.onnx --localize
  onnxedge optimize digits.onnx --ort -o digits.ort"""


@click.command(epilog=EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), help="The run folder MODEL was exported from.")
@click.option(
    "--data",
    help="A labelled data file (CSV / NPY / NPZ / Parquet) or bundled dataset to calibrate "
    "and check on.  [default: the bundled dataset MODEL records]",
)
@click.option(
    "--int8",
    type=click.Choice(INT8_METHODS),
    is_flag=False,
    flag_value="static",
    help="Quantize the layers to int8: static (calibrated; the default), dynamic, or auto: "
    "on a miss try per-channel weights, the worst layers kept in float, then dynamic, and "
    "keep the first that clears the bar and is faster than fp32 here (LATENCY_MIN_SPEEDUP "
    "at batch 1 and 256); if none is faster, write nothing and exit 0. 7-bit weights on x86 "
    "without VNNI.",
)
@click.option("--fp16", is_flag=True, help="Convert the layers to float16.")
@click.option("--per-channel/--per-tensor", default=None, help="int8 weight scales.")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="The file to write.  [default: MODEL's name with .int8 / .fp16; .ort with --ort alone]",
)
@click.option("--ort", is_flag=True, help="Also write ORT format (alone: convert MODEL).")
@click.option("--localize", is_flag=True, help="Compare every node even when the bar is met.")
@click.option("--accept-degradation", is_flag=True, help="Write the variant even on a miss.")
@output_options("the result")
def optimize(
    model: str,
    run_dir: str | None,
    int8: str | None,
    fp16: bool,
    output: str | None,
    ort: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """Make a smaller edge variant of an fp32 model (int8 or fp16), verified.

    The variant must agree with MODEL on labels (>= 99.5% of the check rows), lose at most
    0.5 accuracy points and keep loss and probabilities close, or nothing is written. The
    report adds per-class accuracy, confusion changes, flipped rows, near ties, its speed
    against fp32 here and, on a miss, the first diverging node.
    """
    if int8 and fp16:
        raise click.UsageError("choose one of --int8 and --fp16")
    if not (int8 or fp16 or ort):
        raise click.UsageError("choose --int8, --fp16 or --ort")
    if opts["per_channel"] is not None and int8 in (None, "auto"):
        raise click.UsageError(
            "--int8 auto chooses the weight scales; drop --per-channel"
            if int8
            else "--per-channel applies to --int8 only"
        )
    report, src = None, Path(model)
    if int8 or fp16:
        variant = "int8" if int8 else "fp16"
        src = Path(output) if output else variant_path(model, variant)
        report = make_variant(model, run_dir, variant, src, method=int8 or "static", **opts)
    dest = Path(output) if output and report is None else src.with_suffix(".ort")
    converted = ort and (report is None or report.written)
    ort_files = onnx_to_ort(src, dest, overwrite=opts["overwrite"]) if converted else None
    if as_json:
        out = report.to_dict() if report else {}
        if ort_files:
            out["ort"] = {"path": str(ort_files[0]), "operators_config": str(ort_files[1])}
        echo_json(out)
        return
    if report is not None:
        if report.written:
            click.echo(
                f"{report.variant} variant of {report.source} -> {report.output} "
                f"({report.size_bytes / 1024:.1f} KiB, {report.size_ratio:.0%} of "
                f"{report.source_size_bytes / 1024:.1f} KiB); {report.settings.get('form', 'fp16')}"
            )
        click.echo(report.render_table())
    if ort_files:
        size = ort_files[0].stat().st_size / 1024
        click.echo(f"ORT format -> {ort_files[0]} ({size:.1f} KiB); operators: {ort_files[1]}")
