"""The rows a check runs on: given, loaded, a run's validation split, or synthetic (the
one builder of synthetic rows, for ``verify``, ``export`` and ``wrap``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from onnxedge.runtime.contract import ModelContract
from onnxedge.runtime.errors import DataError, InputShapeError

if TYPE_CHECKING:
    from onnxedge.models.checkpoint import TrainedRun
    from onnxedge.models.preprocess import Preprocess

SYNTHETIC_ROWS = 256
BUNDLED_DATASETS = ("digits", "breast-cancer")


def synthetic_rows(
    step: Preprocess | None, row_shape: Sequence[int], rows: int = SYNTHETIC_ROWS
) -> np.ndarray:
    """Rows ``(rows, *row_shape)`` float32 that are standard normal after ``step`` (for a
    rescale: uniform over its input range), on a 1/16 grid: exact in float32 and short in
    a golden set's JSON. Seeded: the same rows every time."""
    from onnxedge.models.preprocess import Rescale

    rng = np.random.default_rng(0)
    size = (rows, *row_shape)
    if isinstance(step, Rescale):
        return (np.round(rng.uniform(0, 1 / abs(step.factor), size) * 16) / 16).astype(np.float32)
    z = np.round(rng.standard_normal(size) * 16) / 16
    return (step.mean + step.std * z if step is not None else z).astype(np.float32)


def rows_to_verify(
    data: tuple[np.ndarray, np.ndarray] | np.ndarray | None,
    dataset: str | os.PathLike[str] | None,
    label_column: str | int | None,
    labels_path: str | os.PathLike[str] | None,
    run: TrainedRun | None,
    contract: ModelContract,
    row_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Rows ``(n, *row_shape)`` float32, their labels (None: unknown) and where they came
    from, in words: ``data``, a dataset, the run's validation split, the dataset recorded
    in the metadata, or synthetic rows.

    Raises:
        DataError: labels that are not the model's class indices, or no rows.
        InputShapeError: rows or labels of the wrong shape.
    """
    from onnxedge.models.preprocess import preprocess_from_dict

    y: np.ndarray | None = None
    metrics = contract.extra.get("training_metrics")
    recorded = metrics.get("dataset") if isinstance(metrics, dict) else None
    if data is not None:
        x, y = data if isinstance(data, tuple) else (data, None)
        description = f"given rows, {len(x)}"
    elif dataset is not None or (run is None and recorded in BUNDLED_DATASETS):
        from onnxedge.models.data import load_dataset

        source = dataset if dataset is not None else str(recorded)
        note = "" if dataset is not None else " (recorded in the model's metadata)"
        ds = load_dataset(source, label_column=label_column, labels_path=labels_path)
        description = f"dataset {ds.name}{note}"
        x = _shaped(ds.features, row_shape, description)
        y = _labels_for(ds.labels, ds.class_names, contract.class_names, ds.name)
    elif run is not None:
        x, y = run.validation()
        description = f"validation split of {run.path}"
    else:
        if 0 in row_shape:
            raise DataError(
                "the model's input has symbolic row dims; pass labelled rows (--dataset)"
            )
        x = synthetic_rows(preprocess_from_dict(contract.preprocess), row_shape)
        step = (contract.preprocess or {}).get("kind", "no")
        description = (
            f"{len(x)} synthetic rows drawn from the recorded {step} preprocessing, "
            "labelled by the reference"
        )
    x = _shaped(np.asarray(x, dtype=np.float32), row_shape, description)
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise InputShapeError(
                f"{description}: labels have shape {y.shape}, expected ({len(x)},)"
            )
        classes = len(contract.class_names) if contract.class_names else None
        if classes is not None and y.size and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{description}: labels must be class indices 0..{classes - 1}")
        y = y.astype(np.int64)
    if len(x) == 0:
        raise DataError(f"no rows to verify on ({description})")
    return np.ascontiguousarray(x), y, description


def _shaped(x: np.ndarray, row_shape: tuple[int, ...], description: str) -> np.ndarray:
    """``(n, *row_shape)``; rows of the right size in another shape (flat) are reshaped."""
    if 0 in row_shape or x.shape[1:] == row_shape:
        return x
    if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(row_shape)):
        return x.reshape(len(x), *row_shape)
    raise InputShapeError(
        f"the model expects rows of shape {row_shape}; {description} has rows of shape "
        f"{x.shape[1:]}"
    )


def _labels_for(
    labels: np.ndarray, data_classes: list[str], model_classes: list[str] | None, name: str
) -> np.ndarray:
    """Map a dataset's label indices onto the model's classes, by class name."""
    if model_classes is None or list(data_classes) == list(model_classes):
        return labels
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise DataError(
            f"dataset {name} has classes the model does not know: {unknown}; "
            f"the model's classes are {model_classes}"
        )
    return np.asarray([index[c] for c in data_classes], dtype=np.int64)[labels]
