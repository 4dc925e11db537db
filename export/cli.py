"""``onnxedge export`` and ``onnxedge verify``: parse options, call the library, print."""

from __future__ import annotations

import functools
from typing import Any

import click
from onnxedge.export.onnx_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    MAX_OPSET,
    MIN_OPSET,
    ExportResult,
    checkpoint_to_onnx,
)
from onnxedge.export.variants import (
    VariantReport,
    model_variant,
    raise_for_variant_failures,
    verify_variant_file,
)
from onnxedge.export.verify import ParityReport, verify_model, write_json_atomic
from onnxedge.export.wrap_cli import head_options, output_options, parse_label_column
from onnxedge.runtime.cli import echo_json
from onnxedge.runtime.errors import CheckpointError, OnnxEdgeError

#: ``--report PATH`` (into ``report_path``); each command gives its help.
report_option = functools.partial(click.option, "--report", "report_path", type=click.Path())


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge export runs/digits -o digits.onnx\n"
        "  onnxedge export runs/bc -o bc.onnx --threshold 0.3 --report bc.parity.json --json"
    )
)
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .onnx file to write.")
@head_options("softmax for multiclass runs, sigmoid for binary ones")
@click.option(
    "--opset",
    type=int,
    default=None,
    help=f"ai.onnx opset, {MIN_OPSET}..{MAX_OPSET}.  [default: {DEFAULT_OPSET}]",
)
@click.option(
    "--exporter",
    type=click.Choice(EXPORTERS),
    default="auto",
    show_default=True,
    help="auto: torch's dynamo exporter, TorchScript only if dynamo fails.",
)
@click.option("--no-verify", is_flag=True, help="Skip the parity check (no parity recorded).")
@report_option(help="Also write the full parity report as JSON here.")
@output_options("the result")
def export(run_dir: str, no_verify: bool, as_json: bool, **options: Any) -> None:
    """Export a run folder to one ONNX file with its preprocessing and head, written only
    once parity holds on the run's validation split (onnxruntime, PyTorch, numpy)."""
    result = checkpoint_to_onnx(run_dir, verify=not no_verify, **options)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(_describe(result))
    if result.report is not None:
        click.echo(result.report.render_table())
    else:
        click.echo("not verified (--no-verify); run `onnxedge verify` before shipping it")


def _describe(result: ExportResult) -> str:
    threshold = f", threshold {result.threshold:g}" if result.head == "sigmoid" else ""
    fallback = f" ({result.fallback_reason})" if result.fallback_reason else ""
    return (
        f"exported {result.task} model ({result.head} head{threshold}, opset {result.opset}, "
        f"{result.exporter} exporter{fallback}) -> {result.path} "
        f"({result.size_bytes / 1024:.1f} KiB) in {result.seconds:.1f}s"
    )


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge verify digits.onnx --run runs/digits --report digits.parity.json\n"
        "  onnxedge verify model.onnx --dataset rows.csv --label-column species --json"
    )
)
@click.argument("model", type=click.Path())
@click.option(
    "--run",
    "run_dir",
    type=click.Path(),
    default=None,
    help="The run folder the model came from (its module and validation split).",
)
@click.option(
    "--dataset",
    default=None,
    help="digits, breast-cancer, or a labelled .csv/.npy/.npz/.parquet/IDX file.",
)
@click.option("--label-column", default=None, help="Label column of --dataset's file.")
@click.option(
    "--labels",
    "labels_path",
    default=None,
    type=click.Path(),
    help="Labels file for IDX images given as --dataset.",
)
@report_option(help="Write the full report as JSON here (also when checks fail).")
@click.option("--localize", is_flag=True, help="Name the first diverging node even on a pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def verify(
    model: str,
    run_dir: str | None,
    label_column: str | None,
    report_path: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Check that MODEL computes what its torch module (with --run) and an independent
    forward compute, with the numpy head and losses on each one's own logits, at batch
    sizes 1, 37 and all rows (default rows: the dataset the model records, else synthetic).
    Every failing check is listed, exit code 1. An int8 / fp16 variant meets its own bar.
    """
    report: ParityReport | VariantReport
    try:
        variant = model_variant(model) != "fp32"
    except OnnxEdgeError:  # unreadable: verify_model says why
        variant = False
    if variant:
        if run_dir is None:
            raise CheckpointError(f"{model} is an edge variant; verify it with --run RUN_DIR")
        report = verify_variant_file(model, run_dir)
    else:
        label = parse_label_column(label_column)
        report = verify_model(model, run_dir=run_dir, label_column=label, **options)
    if report_path is not None:
        write_json_atomic(report_path, report.to_dict())
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.render_table())
    if isinstance(report, ParityReport):
        report.raise_for_failures()
    else:
        raise_for_variant_failures(report)
