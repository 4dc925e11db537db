"""``onnxedge wrap``: parse options, call :func:`onnxedge.export.wrap.add_head`, print.

Needs onnx and onnxruntime, not torch. Errors are raised as
:class:`~onnxedge.runtime.errors.OnnxEdgeError`; the ``onnxedge`` group turns them into
one line ``Error: ...`` and exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from onnxedge.export.compare import render_checks
from onnxedge.export.wrap import HEAD_CHOICES, WrapResult, add_head, preprocess_from_option


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge wrap model.onnx -o wrapped.onnx\n"
        "  onnxedge wrap model.onnx -o wrapped.onnx --classes setosa,versicolor,virginica\n"
        "  onnxedge wrap cnn.onnx -o cnn.wrapped.onnx --preprocess rescale:1/255\n"
        "  onnxedge wrap bc.onnx -o bc.wrapped.onnx --head sigmoid --threshold 0.3 \\\n"
        "      --preprocess standardize:mean_std.json --data val.csv --label-column target\n"
        "  onnxedge wrap two_outputs.onnx -o wrapped.onnx --logits-output scores --json"
    )
)
@click.argument("model", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True, help="The file to write.")
@click.option(
    "--head",
    type=click.Choice(HEAD_CHOICES),
    default="auto",
    show_default=True,
    help="auto: sigmoid for one logit, softmax for more.",
)
@click.option(
    "--logits-output",
    default=None,
    help="The output holding the logits.  [default: the only output, or the one named logits]",
)
@click.option("--classes", default=None, help="Class names, comma-separated, in logit order.")
@click.option(
    "--classes-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Class names, one per line.",
)
@click.option("--feature-names", default=None, help="Feature names, comma-separated.")
@click.option(
    "--preprocess",
    default=None,
    metavar="standardize:FILE.json|rescale:FACTOR",
    help='Preprocessing the graph applies to raw rows first: a JSON file {"mean": [...], '
    '"std": [...]} or a factor (1/255, 0.0625).',
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Sigmoid head: label 1 where p >= T.  [default: 0.5]",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Verify on these rows (CSV/NPY/Parquet, raw) and report accuracy and loss.  "
    "[default: random rows]",
)
@click.option("--label-column", default=None, help="Label column of --data's file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def wrap(
    model: str,
    output: str,
    head: str,
    logits_output: str | None,
    classes: str | None,
    classes_file: str | None,
    feature_names: str | None,
    preprocess: str | None,
    threshold: float | None,
    data: str | None,
    label_column: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Add softmax / sigmoid, label and the onnxedge contract to a logits-only ONNX model.

    For a model from torch.onnx.export, another team or another tool: the graph is kept
    as it is, its input renamed to `input`, its outputs to logits / probabilities /
    label; the result is checked and verified (probabilities and labels against numpy
    on its own logits, logits against MODEL's) before it is written.
    """
    if classes is not None and classes_file is not None:
        raise click.UsageError("give --classes or --classes-file, not both")
    if label_column is not None and data is None:
        raise click.UsageError("--label-column needs --data")
    names = _split(classes)
    if classes_file is not None:
        lines = Path(classes_file).read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip()]
    rows = None
    if data is not None:
        from onnxedge.models.data import load_dataset

        column: str | int | None = label_column
        if label_column is not None and label_column.lstrip("-").isdigit():
            column = int(label_column)
        dataset = load_dataset(data, label_column=column)
        # labels by name: the model's class names decide the indices
        rows = (dataset.features, np.asarray(dataset.class_names)[dataset.labels])
    result = add_head(
        model,
        output,
        head=head,
        logits_output=logits_output,
        class_names=names,
        feature_names=_split(feature_names),
        preprocess=preprocess_from_option(preprocess) if preprocess else None,
        threshold=threshold,
        data=rows,
        overwrite=overwrite,
    )
    click.echo(json.dumps(result.to_dict()) if as_json else _describe(result))


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",")]


def _describe(result: WrapResult) -> str:
    lines = [
        f"{result.source} (sha256 {result.source_sha256[:12]}) -> {result.path} "
        f"in {result.seconds:.2f} s",
        f"  input {result.input_name!r} (rows of shape {list(result.input_shape)}) -> 'input'; "
        f"{result.head} head on {result.logits_output!r}, classes: "
        + ", ".join(result.class_names),
        *(f"  note: {note}" for note in result.notes),
    ]
    batches = sorted({c.batch_size for c in result.checks if c.batch_size is not None})
    lines.append(f"  verified at batch {', '.join(map(str, batches))}:")
    lines += [f"    {line}" for line in render_checks(result.checks)]
    if result.metrics:
        m = result.metrics
        lines.append(
            f"  on --data: {m['rows']} rows, accuracy {m['accuracy']:.4f}, loss {m['loss']:.6g}"
        )
    return "\n".join(lines)
