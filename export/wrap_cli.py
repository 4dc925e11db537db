"""``onnxedge wrap`` (onnx and onnxruntime, no torch), and the click options ``onnxedge
export`` / ``verify`` / ``optimize`` share with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import click
import numpy as np
from onnxedge.export.compare import render_checks
from onnxedge.export.heads import HEAD_AUTO, HEAD_CHOICES
from onnxedge.export.wrap import WrapResult, add_head
from onnxedge.models.preprocess import Preprocess, Rescale, preprocess_from_dict
from onnxedge.runtime.errors import CheckpointError, ExportError, one_line

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def head_options(auto: str) -> Decorator:
    """``--head`` (``auto``: ``auto``'s help) and ``--threshold``."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        threshold = "Sigmoid head: label 1 where P(positive) >= this.  [default: 0.5]"
        f = click.option("--threshold", type=float, default=None, help=threshold)(f)
        choice = click.Choice(HEAD_CHOICES)
        help_ = f"Output head; auto: {auto}."
        return click.option(
            "--head", type=choice, default=HEAD_AUTO, show_default=True, help=help_
        )(f)

    return apply


def output_options(what: str) -> Decorator:
    """``--overwrite`` and ``--json`` (print ``what`` as JSON)."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")(f)
        return click.option("--overwrite", is_flag=True, help="Replace an existing output file.")(f)

    return apply


def parse_label_column(text: str | None) -> str | int | None:
    """``--label-column``: a name, or a number for a column index."""
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def preprocess_from_option(text: str) -> Preprocess:
    """The ``--preprocess`` option: ``standardize:FILE.json`` (``{"mean": [...], "std":
    [...]}``) or ``rescale:FACTOR`` (a number or a fraction such as ``1/255``).

    Raises:
        ExportError: another form, an unreadable file or values that make no valid step.
    """
    kind, _, value = text.partition(":")
    try:
        if kind == "rescale":
            try:
                factor = float(Fraction(value.strip()))
            except (ValueError, ZeroDivisionError):
                raise ExportError(
                    f"--preprocess {text}: {value!r} is not a number (like 0.0625 or 1/255)"
                ) from None
            return Rescale(factor)
        if kind == "standardize":
            stats = json.loads(Path(value).read_text(encoding="utf-8"))
            return cast(Preprocess, preprocess_from_dict({"kind": "standardize", **stats}))
    except (OSError, ValueError, TypeError, CheckpointError) as exc:
        raise ExportError(f"--preprocess {text}: {one_line(exc)}") from None
    raise ExportError(f"--preprocess {text}: expected standardize:MEAN_STD.json or rescale:FACTOR")


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge wrap model.onnx -o wrapped.onnx --classes setosa,versicolor,virginica\n"
        "  onnxedge wrap cnn.onnx -o cnn.wrapped.onnx --preprocess rescale:1/255\n"
        "  onnxedge wrap bc.onnx -o bc.wrapped.onnx --head sigmoid --threshold 0.3 \\\n"
        "      --preprocess standardize:mean_std.json --data val.csv --label-column target"
    )
)
@click.argument("model", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True, help="The file to write.")
@head_options("sigmoid for one logit, softmax for more")
@click.option(
    "--logits-output",
    default=None,
    help="The output holding the logits.  [default: the only output, or the one named logits]",
)
@click.option("--classes", default=None, help="Class names, comma-separated, in logit order.")
@click.option("--feature-names", default=None, help="Feature names, comma-separated.")
@click.option(
    "--preprocess",
    default=None,
    metavar="standardize:FILE.json|rescale:FACTOR",
    help='What the graph applies to raw rows first: {"mean": [...], "std": [...]} or a factor.',
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Verify on these raw rows (CSV/NPY/Parquet); report accuracy and loss.",
)
@click.option("--label-column", default=None, help="Label column of --data's file.")
@output_options("the result")
def wrap(
    model: str,
    output: str,
    classes: str | None,
    feature_names: str | None,
    preprocess: str | None,
    data: str | None,
    label_column: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Add softmax / sigmoid, label and the onnxedge contract to a logits-only ONNX model.

    The graph is kept as it is; the result is checked and verified (logits against
    MODEL's, probabilities and labels against numpy on its own logits) before it is written.
    """
    if label_column is not None and data is None:
        raise click.UsageError("--label-column needs --data")
    rows = None
    if data is not None:
        from onnxedge.models.data import load_dataset

        dataset = load_dataset(data, label_column=parse_label_column(label_column))
        # labels by name: the model's class names decide the indices
        rows = (dataset.features, np.asarray(dataset.class_names)[dataset.labels])
    result = add_head(
        model,
        output,
        class_names=_split(classes),
        feature_names=_split(feature_names),
        preprocess=preprocess_from_option(preprocess) if preprocess else None,
        data=rows,
        **options,
    )
    click.echo(json.dumps(result.to_dict()) if as_json else _describe(result))


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",")]


def _describe(result: WrapResult) -> str:
    batches = sorted({c.batch_size for c in result.checks if c.batch_size is not None})
    lines = [
        f"{result.source} (sha256 {result.source_sha256[:12]}) -> {result.path} "
        f"in {result.seconds:.2f} s",
        f"  input {result.input_name!r} (rows of shape {list(result.input_shape)}) -> 'input'; "
        f"{result.head} head on {result.logits_output!r}, classes: {', '.join(result.class_names)}",
        *(f"  note: {note}" for note in result.notes),
        f"  verified at batch {', '.join(map(str, batches))}:",
        *(f"    {line}" for line in render_checks(result.checks)),
    ]
    if m := result.metrics:
        lines.append(
            f"  on --data: {m['rows']} rows, accuracy {m['accuracy']:.4f}, loss {m['loss']:.6g}"
        )
    return "\n".join(lines)
