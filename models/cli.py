"""``onnxedge train``: parses options, calls :func:`onnxedge.models.train.train`, prints."""

from __future__ import annotations

import json
from typing import Any

import click
from onnxedge.models.nets import ARCHS, DEFAULT_CHANNELS, DEFAULT_HIDDEN
from onnxedge.models.train import TrainOptions
from onnxedge.models.train import train as train_run
from onnxedge.runtime.contract import TASKS


def _default(widths: tuple[int, ...]) -> str:
    return ",".join(map(str, widths))


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
    context_settings={"show_default": True},
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge train --dataset digits -o runs/digits\n"
        "  onnxedge train --dataset digits --arch cnn -o runs/digits-cnn\n"
        "  onnxedge train --dataset breast-cancer -o runs/bc --hidden 64,32 --seed 1\n"
        "  onnxedge train --dataset data.csv --label-column species -o runs/iris\n"
        "  onnxedge train --dataset train-images-idx3-ubyte \\\n"
        "      --labels train-labels-idx1-ubyte -o runs/mnist"
    ),
)
@click.option("--dataset", "source", required=True, help="digits, breast-cancer, or a data file.")
@click.option("-o", "--output", "out_dir", required=True, help="Run folder to create.")
@click.option("--label-column", help="Label column (name for CSV/Parquet, index for NPY).")
@click.option("--labels", "labels_path", help="Labels file for an IDX images file.")
@click.option("--task", type=click.Choice(["auto", *TASKS]), default="auto")
@click.option("--arch", type=click.Choice(ARCHS), default="mlp", help="cnn: images only.")
@click.option(
    "--channels", default=_default(DEFAULT_CHANNELS), callback=_widths, help="Conv widths (cnn)."
)
@click.option(
    "--hidden",
    "hidden_sizes",
    default=_default(DEFAULT_HIDDEN),
    callback=_widths,
    help="Dense widths.",
)
@click.option("--epochs", default=TrainOptions.epochs, help="Maximum epochs (early stopping).")
@click.option("--patience", default=TrainOptions.patience, help="Epochs without improvement.")
@click.option("--lr", default=TrainOptions.lr, help="Adam learning rate.")
@click.option("--batch-size", default=TrainOptions.batch_size)
@click.option("--seed", default=TrainOptions.seed)
@click.option("--val-fraction", default=TrainOptions.val_fraction, help="Held out, stratified.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(
    source: str,
    out_dir: str,
    label_column: str | None,
    labels_path: str | None,
    task: str,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
    **hyperparameters: Any,
) -> None:
    """Train a classifier on a dataset (bundled, or a CSV / NPY / Parquet / IDX file) into a
    run folder; ``--task auto`` makes 2 classes binary."""
    options = TrainOptions(task=None if task == "auto" else task, **hyperparameters)
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
