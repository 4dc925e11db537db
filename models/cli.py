"""``onnxedge train``: parses options, calls :func:`onnxedge.models.train.train`, prints."""

from __future__ import annotations

import json
from typing import Any

import click
from onnxedge.models.nets import ARCHS, DEFAULT_CHANNELS, DEFAULT_HIDDEN
from onnxedge.models.train import TrainOptions
from onnxedge.models.train import train as train_run


def _widths(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Parse comma-separated positive widths (``--hidden``, ``--channels``)."""
    try:
        widths = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"expected positive widths like 128,64; got {value!r}")
    return widths


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge train --dataset digits -o runs/digits\n"
        "  onnxedge train --dataset digits --arch cnn -o runs/digits-cnn\n"
        "  onnxedge train --dataset breast-cancer -o runs/bc --hidden 64,32 --seed 1\n"
        "  onnxedge train --dataset data.csv --label-column species -o runs/iris\n"
        "  onnxedge train --dataset train-images-idx3-ubyte \\\n"
        "      --labels train-labels-idx1-ubyte -o runs/mnist"
    )
)
@click.option(
    "--dataset",
    "source",
    required=True,
    help="digits, breast-cancer, or a .csv/.csv.gz/.npy/.npz/.parquet/IDX file.",
)
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(), help="Run folder to create."
)
@click.option(
    "--label-column", default=None, help="Label column (name for CSV/Parquet, index for NPY)."
)
@click.option(
    "--labels",
    "labels_path",
    default=None,
    type=click.Path(),
    help="Labels file for an IDX images file.",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "multiclass", "binary"]),
    default="auto",
    show_default=True,
    help="auto infers it from the labels (2 classes: binary).",
)
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    default="mlp",
    show_default=True,
    help="mlp (any data, standardized) or cnn (digits / IDX images, rescaled to 0..1).",
)
@click.option(
    "--channels",
    default=",".join(map(str, DEFAULT_CHANNELS)),
    show_default=True,
    callback=_widths,
    help="The CNN's conv widths, comma-separated (--arch cnn).",
)
@click.option(
    "--hidden",
    default=",".join(map(str, DEFAULT_HIDDEN)),
    show_default=True,
    callback=_widths,
    help="Hidden layer widths, comma-separated.",
)
@click.option(
    "--epochs",
    default=TrainOptions.epochs,
    show_default=True,
    type=int,
    help="Maximum epochs (early stopping on validation loss).",
)
@click.option(
    "--patience",
    default=TrainOptions.patience,
    show_default=True,
    type=int,
    help="Epochs without improvement before stopping.",
)
@click.option(
    "--lr", default=TrainOptions.lr, show_default=True, type=float, help="Adam learning rate."
)
@click.option("--batch-size", default=TrainOptions.batch_size, show_default=True, type=int)
@click.option("--seed", default=TrainOptions.seed, show_default=True, type=int)
@click.option(
    "--val-fraction",
    default=TrainOptions.val_fraction,
    show_default=True,
    type=float,
    help="Share of rows held out for validation (stratified).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(
    source: str,
    out_dir: str,
    label_column: str | None,
    labels_path: str | None,
    task: str,
    hidden: tuple[int, ...],
    overwrite: bool,
    quiet: bool,
    as_json: bool,
    **hyperparameters: Any,
) -> None:
    """Train a classifier on a dataset into a run folder."""
    task_or_auto = None if task == "auto" else task
    options = TrainOptions(task=task_or_auto, hidden_sizes=hidden, **hyperparameters)
    column: str | int | None = label_column
    if label_column is not None and label_column.lstrip("-").isdigit():
        column = int(label_column)
    result = train_run(
        source,
        out_dir,
        options,
        label_column=column,
        labels_path=labels_path,
        overwrite=overwrite,
        progress=False if quiet or as_json else None,
    )
    if as_json:
        numbers = ("best_epoch", "epochs_run", "val_accuracy", "val_loss", "train_accuracy")
        summary = {"run": str(result.path), "task": result.task, "arch": options.arch}
        summary |= {k: round(getattr(result, k), 6) for k in numbers}
        click.echo(json.dumps({**summary, "seconds": round(result.seconds, 2)}))
    else:
        click.echo(
            f"trained {result.task} {options.arch} in {result.seconds:.1f}s: best epoch "
            f"{result.best_epoch}/{result.epochs_run}, val accuracy {result.val_accuracy:.4f}, "
            f"val loss {result.val_loss:.4f} -> {result.path}"
        )
