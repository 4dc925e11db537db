"""Deterministic training of the notebook's nets and the CNN on a Dataset, into a run folder."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.models.checkpoint import CURVES_FILE, save_run
from onnxedge.models.nets import ARCHS, DEFAULT_CHANNELS, DEFAULT_HIDDEN, MLP, NetConfig, build_net
from onnxedge.models.preprocess import Preprocess, Rescale, Standardize
from onnxedge.runtime.atomic import atomic_folder
from onnxedge.runtime.contract import TASKS
from onnxedge.runtime.errors import CheckpointError, DataError
from onnxedge.runtime.version import library_versions

CALIBRATION_ROWS = 1000  # training rows kept in the run folder for int8 calibration


@dataclass(frozen=True)
class TrainOptions:
    """Hyperparameters of one run, recorded in its config.json; DataError if out of range.

    ``task`` None infers it from the labels (2 classes: binary); ``arch`` ``mlp`` reads
    standardized rows, ``cnn`` rescaled images; training stops after ``patience`` epochs
    without a lower validation loss; ``seed`` seeds the split, the weights, the shuffling.
    """

    task: str | None = None
    arch: str = "mlp"
    hidden_sizes: tuple[int, ...] = DEFAULT_HIDDEN
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 20

    def __post_init__(self) -> None:
        for ok, message in [
            (self.task in (None, *TASKS), f"unknown task {self.task!r}; expected one of {TASKS}"),
            (self.arch in ARCHS, f"unknown arch {self.arch!r}; expected one of {ARCHS}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (0 < self.val_fraction < 1, f"val fraction must be in (0, 1), got {self.val_fraction}"),
        ]:  # the widths are the NetConfig's to check
            if not ok:
                raise DataError(message)


@dataclass
class TrainResult:
    """What a finished run reports: where it is and how well it learned."""

    path: Path
    task: str
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    val_loss: float
    train_accuracy: float
    seconds: float
    history: list[dict[str, float]]


def compute_normalization(x: np.ndarray) -> Standardize:
    """Mean and std per feature; a constant feature gets std 1 (it standardizes to 0)."""
    x64 = x.astype(np.float64)
    std = np.where(x64.std(axis=0) > 1e-12, x64.std(axis=0), 1.0)
    return Standardize(mean=x64.mean(axis=0).astype(np.float32), std=std.astype(np.float32))


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: NetConfig,
    options: TrainOptions,
    *,
    progress: bool | None = None,
) -> tuple[MLP, list[dict[str, float]], int]:
    """Train ``config``'s net on preprocessed rows ``(n, *input_shape)`` and int64 labels,
    early-stopping on validation loss; ``progress`` None shows a bar only on a terminal.
    Returns the net at its best epoch (eval mode), the per-epoch history, the best epoch.
    """
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    net = build_net(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    binary = config.task == "binary"
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()

    xt, xv = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in (x_train, x_val))
    yt, yv = (torch.from_numpy(y.astype(np.int64)) for y in (y_train, y_val))

    def targets(y: torch.Tensor) -> torch.Tensor:
        return y.float().unsqueeze(1) if binary else y  # BCE wants (n, 1) floats

    def predictions(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] >= 0).long() if binary else logits.argmax(dim=1)

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    quiet = None if progress is None else not progress  # tqdm: None is "not a terminal"
    bar = tqdm(range(1, options.epochs + 1), desc="train", unit="epoch", disable=quiet)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(xt), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(order), options.batch_size):
            idx = order[start : start + options.batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = net(xt[idx])
            loss = loss_fn(logits, targets(yt[idx]))
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += int((predictions(logits.detach()) == yt[idx]).sum())
        net.eval()
        with torch.inference_mode():
            val_logits = net(xv)
            val_loss = float(loss_fn(val_logits, targets(yv)))
            val_acc = float((predictions(val_logits) == yv).float().mean())
        row = {"epoch": float(epoch), "train_loss": total / len(xt)}
        row |= {"train_accuracy": correct / len(xt), "val_loss": val_loss, "val_accuracy": val_acc}
        history.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k != "epoch"})
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= options.patience:
            break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return net, history, best_epoch


def train(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    label_column: str | int | None = None,
    labels_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> TrainResult:
    """Load a dataset, train a net on it and write the run folder ``out_dir``, atomically.

    Args:
        source: a bundled dataset name (``digits``, ``breast-cancer``) or a data file.
        label_column: label column of a CSV / NPY / Parquet file.
        labels_path: labels file of an IDX images file.
        progress: show a progress bar (None: only on a terminal).

    Raises:
        DataError: data that cannot be trained on, or a task that does not fit the labels.
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is false.
    """
    from onnxedge.models.data import Dataset, load_dataset, train_val_split

    options = options or TrainOptions()
    started = time.perf_counter()
    dataset = load_dataset(source, label_column=label_column, labels_path=labels_path)
    task = options.task or dataset.task
    if task == "binary" and dataset.num_classes != 2:
        raise DataError(f"--task binary needs 2 classes; {dataset.name} has {dataset.num_classes}")
    train_ds, val_ds = train_val_split(dataset, options.val_fraction, options.seed)
    preprocess: Preprocess
    if options.arch == "cnn":
        if dataset.image_shape is None or dataset.pixel_scale is None:
            raise DataError(
                f"--arch cnn needs images (digits or an IDX file); {dataset.name} has flat "
                f"rows of {dataset.num_features} features (use --arch mlp)"
            )
        shape, preprocess = dataset.image_shape, Rescale(dataset.pixel_scale)
    else:
        shape, preprocess = (dataset.num_features,), compute_normalization(train_ds.features)
    channels = tuple(options.channels) if options.arch == "cnn" else ()
    sizes = (dataset.num_features, tuple(options.hidden_sizes), dataset.num_classes)
    config = NetConfig(task, *sizes, options.arch, shape, channels)

    def rows(ds: Dataset) -> np.ndarray:  # raw (n, *shape) float32
        return ds.features.reshape(ds.num_rows, *shape)

    x_train, x_val = (preprocess.apply(rows(ds)).astype(np.float32) for ds in (train_ds, val_ds))
    net, history, best_epoch = fit(
        x_train, train_ds.labels, x_val, val_ds.labels, config, options, progress=progress
    )
    best, seconds = history[best_epoch - 1], time.perf_counter() - started
    metrics: dict[str, Any] = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "best": {k: v for k, v in best.items() if k != "epoch"},
        "history": history,
        "train_rows": train_ds.num_rows,
        "val_rows": val_ds.num_rows,
        "seconds": round(seconds, 3),
    }
    rng = np.random.default_rng(options.seed)
    take = min(CALIBRATION_ROWS, train_ds.num_rows)
    calibration = rows(train_ds)[np.sort(rng.choice(train_ds.num_rows, take, replace=False))]
    info = {
        "task": task,
        "dataset": str(source),
        "training": {**asdict(options), "task": task, "channels": list(config.channels)},
        "versions": library_versions("torch", "numpy"),
    }
    with atomic_folder(out_dir, overwrite=overwrite, error=CheckpointError) as folder:
        save_run(
            folder,
            net=net,
            preprocess=preprocess,
            class_names=dataset.class_names,
            feature_names=dataset.feature_names,
            metrics=metrics,
            info=info,
            validation=(rows(val_ds), val_ds.labels),
            calibration=calibration,
        )
        plot_curves(history, folder / CURVES_FILE, title=f"{dataset.name} ({options.arch}, {task})")
    scores = best["val_accuracy"], best["val_loss"], best["train_accuracy"]
    return TrainResult(Path(out_dir), task, best_epoch, len(history), *scores, seconds, history)


def plot_curves(history: list[dict[str, float]], path: Path, *, title: str) -> None:
    """Write the loss and accuracy curves of a run as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, label in (("train", "train"), ("val", "validation")):
            ax.plot(epochs, [r[f"{split}_{metric}"] for r in history], label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
