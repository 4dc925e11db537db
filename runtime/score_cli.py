"""``onnxedge score``: the click command over :func:`onnxedge.runtime.score.score_file`.

It parses options, calls the library once and prints the summary; the group in
:mod:`onnxedge.runtime.cli` turns library errors into one line ``Error: ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from onnxedge.runtime.io import INPUT_FORMATS, OUTPUT_FORMATS
from onnxedge.runtime.score import (
    BAD_ROW_POLICIES,
    DEFAULT_BATCH_SIZE,
    BadRowError,
    score_file,
)

_EPILOG = (
    "Examples:\n\n"
    "\b\n"
    "  onnxedge score digits.onnx rows.csv -o scores.parquet --id-column id\n"
    "  onnxedge score digits.onnx rows.npy -o scores.csv --no-probabilities --quiet\n"
    "  onnxedge score digits.onnx data/ -o scores.jsonl --on-bad-row skip --json\n"
    "\b\n"
    "Formats come from the names: input .npy, .csv, .csv.gz, .parquet (or a folder of\n"
    "them), .jsonl; output .csv, .csv.gz, .parquet, .jsonl. Output columns: the id and\n"
    "kept columns, label, class_name, prob_<class> per class. Bad rows are located by\n"
    "line (CSV, JSONL; line 1 is a CSV's header) or by 0-based row (NPY, Parquet).\n"
    "With --on-bad-row skip they go, with the reason, to OUTPUT's stem + .rejected.<ext>."
)


@click.command("score", epilog=_EPILOG)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="File to write."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows per onnxruntime run.",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Execution provider; cuda fails if CUDA is not available.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
@click.option("--id-column", default=None, help="Column copied first into the output.")
@click.option(
    "--features",
    default=None,
    help="Feature columns, comma-separated (default: the model's, else the numeric columns).",
)
@click.option("--keep-columns", default=None, help="More columns to copy, comma-separated.")
@click.option(
    "--input-format",
    type=click.Choice(INPUT_FORMATS),
    default=None,
    help="Read INPUT as this format whatever its name.",
)
@click.option(
    "--output-format",
    type=click.Choice(OUTPUT_FORMATS),
    default=None,
    help="Write OUTPUT as this format whatever its name.",
)
@click.option(
    "--probabilities/--no-probabilities",
    default=True,
    show_default=True,
    help="Write one prob_<class> column per class.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--on-bad-row",
    type=click.Choice(BAD_ROW_POLICIES),
    default="fail",
    show_default=True,
    help="fail: stop at the first bad row. skip: score the rest, write bad rows aside.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
def score(
    model: Path,
    input: Path,
    output: Path,
    batch_size: int,
    provider: str,
    threads: int | None,
    id_column: str | None,
    features: str | None,
    keep_columns: str | None,
    input_format: str | None,
    output_format: str | None,
    probabilities: bool,
    overwrite: bool,
    on_bad_row: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score every row of INPUT with MODEL into OUTPUT, streaming, in constant memory.

    OUTPUT is written to a temporary file beside it and renamed at the end: after an
    error or Ctrl-C nothing is left at OUTPUT, and a file already there is untouched.
    """
    try:
        summary = score_file(
            model,
            input,
            output,
            batch_size=batch_size,
            provider=provider.lower(),
            threads=threads,
            id_column=id_column,
            features=features,
            keep_columns=keep_columns,
            input_format=input_format,
            output_format=output_format,
            probabilities=probabilities,
            overwrite=overwrite,
            on_bad_row=on_bad_row,
            progress=False if quiet else None,
        )
    except BadRowError as exc:
        message = " ".join(str(exc).split())
        raise click.ClickException(
            f"{message} (--on-bad-row skip scores the other rows and writes bad ones aside)"
        ) from None
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    elif not quiet:
        click.echo(summary.line())
