"""``onnxedge score``: the click command over :func:`onnxedge.runtime.score.score_file`.

It parses options, calls the library once and prints the summary; the group in
:mod:`onnxedge.runtime.cli` turns library errors into one line ``Error: ...``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from onnxedge.runtime.io import INPUT_FORMATS, OUTPUT_FORMATS
from onnxedge.runtime.score import (
    BAD_ROW_POLICIES,
    DEFAULT_BATCH_SIZE,
    BadRowError,
    ScoreSummary,
    score_file,
)

_EPILOG = (
    "Examples:\n\n"
    "\b\n"
    "  onnxedge score digits.onnx rows.csv -o scores.parquet --id-column id\n"
    "  onnxedge score digits.onnx rows.npy -o scores.csv --no-probabilities --quiet\n"
    "  onnxedge score digits.onnx data/ -o scores.jsonl --on-bad-row skip --json\n"
    "  onnxedge score digits.onnx data/ -o scores/ --engine ray --ray-address auto\n"
    "\b\n"
    "Formats come from the names: input .npy (rows, or images (n, 1, 8, 8)), .csv,\n"
    ".csv.gz, .parquet (or a folder of them), .jsonl, MNIST .idx3-ubyte[.gz] (or\n"
    "--input-format idx); output .csv, .csv.gz, .parquet, .jsonl. Output columns: the id and\n"
    "kept columns, label, class_name, prob_<class> per class. Bad rows are located by\n"
    "line (CSV, JSONL; line 1 is a CSV's header) or by 0-based row (NPY, Parquet).\n"
    "With --on-bad-row skip they go, with the reason, to OUTPUT's stem + .rejected.<ext>."
)
_PATH = click.Path(path_type=Path)


@click.command("score", epilog=_EPILOG, context_settings={"show_default": True})
@click.argument("model", type=_PATH)
@click.argument("input", type=_PATH)
@click.option("-o", "--output", required=True, type=_PATH, help="File to write.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    help="Rows per onnxruntime run.",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False),
    default="auto",
    help="Execution provider; cuda fails if CUDA is not available.",
)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads.")
@click.option("--id-column", help="Column copied first into the output.")
@click.option("--features", help="Feature columns, comma-separated (default: the model's).")
@click.option("--keep-columns", help="More columns to copy, comma-separated.")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), help="Read INPUT as this.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), help="Write OUTPUT as this.")
@click.option(
    "--probabilities/--no-probabilities",
    default=True,
    help="Write one prob_<class> column per class.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--on-bad-row",
    type=click.Choice(BAD_ROW_POLICIES),
    default="fail",
    help="fail: stop at the first bad row. skip: score the rest, write bad rows aside.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    help="ray: score on Ray Data workers (pip install 'onnxedge[ray]'); OUTPUT is then a "
    "folder of shards.",
)
@click.option("--ray-address", help="Ray cluster to join (auto, ray://host:port); default: local.")
@click.option("--workers", type=click.IntRange(min=1), help="Ray workers (default: CPUs allow).")
@click.option(
    "--threads-per-worker",
    type=click.IntRange(min=1),
    help="onnxruntime threads (and CPUs) per Ray worker [default: 1].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
def score(
    model: Path,
    input: Path,
    output: Path,
    threads: int | None,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    threads_per_worker: int | None,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Score every row of INPUT with MODEL into OUTPUT, streaming, in constant memory.

    OUTPUT is written to a temporary file beside it and renamed at the end: after an
    error or Ctrl-C nothing is left at OUTPUT, and a file already there is untouched.
    With --engine ray, OUTPUT is a folder of shards, staged and renamed the same way.
    """
    ray = {
        "--ray-address": ray_address,
        "--workers": workers,
        "--threads-per-worker": threads_per_worker,
    }
    given = ", ".join(name for name, value in ray.items() if value is not None)
    if engine == "local" and given:
        raise click.UsageError(f"{given} need --engine ray")
    if engine == "ray" and threads is not None:
        raise click.UsageError("--threads is for --engine local; use --threads-per-worker")
    options["progress"] = False if quiet else None
    summary: ScoreSummary
    try:
        if engine == "ray":
            from onnxedge.runtime.score_ray import score_ray

            summary = score_ray(
                model,
                input,
                output,
                address=ray_address,
                workers=workers,
                threads_per_worker=threads_per_worker or 1,
                **options,
            )
        else:
            summary = score_file(model, input, output, threads=threads, **options)
    except BadRowError as exc:
        message = " ".join(str(exc).split())
        raise click.ClickException(
            f"{message} (--on-bad-row skip scores the other rows and writes bad ones aside)"
        ) from None
    if as_json or not quiet:
        click.echo(json.dumps(dataclasses.asdict(summary)) if as_json else summary.line())
