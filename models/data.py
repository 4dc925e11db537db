"""Datasets for training: bundled real data, MNIST-format IDX files, CSV / NPY / Parquet.

Every loader returns a :class:`Dataset`: C-contiguous float32 features ``(n, f)``, int64
labels ``(n,)`` in ``0..C-1`` and the class names those indices stand for. Labels are
mapped to ``0..C-1`` in sorted order whatever they were in the file (``{3, 7}`` becomes
``{0, 1}`` with class names ``["3", "7"]``; strings are sorted the same way), so a
model's label index always means ``class_names[index]``.

Bad data raises :class:`~onnxedge.runtime.errors.DataError` with a one-line message
that names the file and the place. Places in a CSV file are *line numbers* as an editor
shows them (1-based, the header is line 1); places in NPY / NPZ / Parquet files are
0-based row indices, and the message says so.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.runtime.errors import DataError
from onnxedge.runtime.io import IDX_DTYPES

__all__ = [
    "BUNDLED",
    "DEFAULT_LABEL_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "Dataset",
    "load_dataset",
    "load_idx",
    "read_idx",
    "train_val_split",
    "write_idx",
]

#: Datasets that ship with scikit-learn and need no download.
BUNDLED = ("digits", "breast-cancer")

#: Label column names tried, in order, when a CSV / Parquet caller names none.
DEFAULT_LABEL_COLUMNS = ("label", "target", "class")

#: File name endings :func:`load_dataset` understands (matched case-insensitively).
SUPPORTED_SUFFIXES = (
    ".csv",
    ".csv.gz",
    ".npy",
    ".npz",
    ".parquet",
    "-idx3-ubyte[.gz]",
    ".idx3-ubyte[.gz]",
    ".idx[.gz]",
)

_IDX_IMAGE_ENDINGS = ("-idx3-ubyte", ".idx3-ubyte", ".idx")
_IDX_LABEL_ENDINGS = ("-idx1-ubyte", ".idx1-ubyte")

# IDX type byte -> big-endian numpy dtype (the format stores every number big-endian).
# The IDX type codes: one table, the runtime reader's (write_idx writes the same codes).
_IDX_DTYPES = IDX_DTYPES
_IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3-D: (n, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # uint8, 1-D: (n,)
_GZIP_MAGIC = b"\x1f\x8b"

_FLOAT32_MAX = float(np.finfo(np.float32).max)

# (row, column) -> where that cell is, in the words of the file's own format.
Locate = Callable[[int, int], str]


@dataclass
class Dataset:
    """Features and integer labels of a classification dataset.

    Construction checks shapes and coerces dtypes: features become C-contiguous float32,
    labels int64.

    Attributes:
        features: ``(n, f)`` float32, C-contiguous.
        labels: ``(n,)`` int64, values in ``0..C-1``.
        class_names: ``C`` names; ``class_names[k]`` is what label ``k`` stands for. For
            string labels the original strings, sorted; for integer labels ``str(value)``.
        feature_names: ``f`` names, one per feature column.
        name: ``"digits"``, ``"breast-cancer"``, or the file name the data came from.
        image_shape: ``(C, H, W)`` when each row is a flattened image (row-major), else
            None.
        pixel_scale: the factor that maps raw pixel values to ``[0, 1]`` (``1 / 16`` for
            digits, ``1 / 255`` for IDX); the features stay raw, a run records the
            scaling as its preprocessing. None for tabular data.

    Raises:
        DataError: shapes disagree, features are not real numbers, labels are not
            integers in ``0..C-1``, or there are fewer than 2 classes.
    """

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    feature_names: list[str]
    name: str
    image_shape: tuple[int, ...] | None = None
    pixel_scale: float | None = None

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        labels = np.asarray(self.labels)
        if features.ndim != 2:
            raise DataError(
                f"dataset {self.name!r}: features must be 2-D (rows, features), "
                f"got shape {features.shape}"
            )
        if not (np.issubdtype(features.dtype, np.number) or features.dtype == np.bool_) or (
            np.issubdtype(features.dtype, np.complexfloating)
        ):
            raise DataError(
                f"dataset {self.name!r}: features must be real numbers, got dtype {features.dtype}"
            )
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise DataError(
                f"dataset {self.name!r}: labels must have shape ({features.shape[0]},) to match "
                f"the features, got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"dataset {self.name!r}: labels must be integer class indices, "
                f"got dtype {labels.dtype}"
            )
        self.class_names = [str(c) for c in self.class_names]
        self.feature_names = [str(f) for f in self.feature_names]
        if len(self.class_names) < 2:
            raise DataError(
                f"dataset {self.name!r}: a classifier needs at least 2 classes, "
                f"got {self.class_names}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"dataset {self.name!r}: class names repeat: {self.class_names}")
        if len(self.feature_names) != features.shape[1]:
            raise DataError(
                f"dataset {self.name!r}: {len(self.feature_names)} feature names for "
                f"{features.shape[1]} feature columns"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataError(
                f"dataset {self.name!r}: labels must be in 0..{len(self.class_names) - 1}, "
                f"got values from {labels.min()} to {labels.max()}"
            )
        if self.image_shape is not None and (
            len(self.image_shape) != 3 or math.prod(self.image_shape) != features.shape[1]
        ):
            raise DataError(
                f"dataset {self.name!r}: image shape {self.image_shape} is not (C, H, W) of "
                f"{features.shape[1]} values"
            )
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` (``len(class_names)``), present in the rows or not."""
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        """Number of feature columns ``f``."""
        return int(self.features.shape[1])

    @property
    def num_rows(self) -> int:
        """Number of rows ``n``."""
        return int(self.features.shape[0])

    @property
    def task(self) -> str:
        """``"binary"`` for 2 classes, else ``"multiclass"``."""
        return "binary" if self.num_classes == 2 else "multiclass"

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """Return the rows at ``indices`` as a new Dataset (a copy, same classes and names).

        Args:
            indices: 1-D integer row indices (negative ones count from the end) or a
                boolean mask of length ``num_rows``.

        Raises:
            DataError: an index is out of range, or the mask has the wrong length.
        """
        index = np.asarray(indices)
        if index.size == 0:
            index = index.astype(np.int64)
        if index.ndim != 1:
            raise DataError(f"dataset {self.name!r}: subset indices must be 1-D, got {index.shape}")
        if index.dtype == np.bool_:
            if index.shape[0] != self.num_rows:
                raise DataError(
                    f"dataset {self.name!r}: boolean mask has {index.shape[0]} entries "
                    f"for {self.num_rows} rows"
                )
        elif np.issubdtype(index.dtype, np.integer):
            if index.size and (index.min() < -self.num_rows or index.max() >= self.num_rows):
                raise DataError(
                    f"dataset {self.name!r}: subset index out of range for {self.num_rows} rows "
                    f"(got {index.min()}..{index.max()})"
                )
        else:
            raise DataError(
                f"dataset {self.name!r}: subset indices must be integers or a boolean mask, "
                f"got dtype {index.dtype}"
            )
        return Dataset(
            features=self.features[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            feature_names=list(self.feature_names),
            name=self.name,
            image_shape=self.image_shape,
            pixel_scale=self.pixel_scale,
        )


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def load_dataset(
    source: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    labels_path: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a bundled dataset or a data file into a :class:`Dataset`.

    Args:
        source: ``"digits"`` (8x8 digit images, 1797 rows, 10 classes) or
            ``"breast-cancer"`` (569 rows, 30 features, 2 classes), both from scikit-learn
            with no download; or a file path. A bundled name wins over a file of the same
            name in the working directory. File types, by name ending (case-insensitive):
            ``.csv`` / ``.csv.gz`` (header row), ``.npy`` (2-D array with the label in
            one column), ``.npz`` (arrays ``X`` and ``y``), ``.parquet`` (needs pyarrow),
            IDX images ``-idx3-ubyte`` / ``.idx3-ubyte`` / ``.idx``, each optionally
            ``.gz`` (needs ``labels_path``; see :func:`load_idx`).
        label_column: CSV / Parquet: the label column's name, or its 0-based position as
            an int (or a string of digits that names no column); default: the first of
            ``label``, ``target``, ``class`` that exists. NPY: the column index (an int
            or a string of digits, negative counts from the end); default: the last
            column. Not used for NPZ, IDX or bundled datasets.
        labels_path: the IDX labels file (``-idx1-ubyte``) for IDX images; only for IDX.

    Raises:
        DataError: the file is missing or of an unknown type, an option does not apply
            to it, or its contents cannot be trained on (missing label column,
            non-numeric or non-finite features, a single class, empty, ragged, ...).
        MissingDependencyError: a Parquet file without pyarrow installed.
    """
    if isinstance(source, str) and source in BUNDLED:
        if label_column is not None or labels_path is not None:
            raise DataError(
                f"bundled dataset {source!r} takes no label_column or labels_path; "
                "those are for data files"
            )
        return _load_bundled(source)

    path = _existing_file(source, "file")
    kind = _file_kind(path)
    if kind == "idx":
        if labels_path is None:
            raise DataError(
                f"{path}: IDX images need a labels file: pass labels_path= "
                "(e.g. train-labels-idx1-ubyte)"
            )
        if label_column is not None:
            raise DataError(f"{path}: label_column does not apply to IDX files; use labels_path")
        return load_idx(path, labels_path)
    if labels_path is not None:
        raise DataError(
            f"labels_path is only for IDX images files; {path} is a {kind} file, "
            "its labels are in one of its columns (label_column=)"
        )
    if kind in ("csv", "parquet"):
        return _load_table(path, label_column)
    if kind == "npy":
        return _load_npy(path, label_column)
    if kind == "npz":
        if label_column is not None:
            raise DataError(
                f"{path}: label_column does not apply to .npz files; labels are the array 'y'"
            )
        return _load_npz(path)
    raise AssertionError(kind)


def _existing_file(source: str | os.PathLike[str], what: str) -> Path:
    path = Path(source)
    if not path.exists():
        hint = f" (bundled datasets: {', '.join(BUNDLED)})" if what == "file" else ""
        raise DataError(f"{what} not found: {path}{hint}")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    return path


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_IDX_LABEL_ENDINGS) or name.removesuffix(".gz").endswith(_IDX_LABEL_ENDINGS):
        raise DataError(
            f"{path} looks like an IDX labels file; pass the images file (-idx3-ubyte) as the "
            "dataset and this file as labels_path"
        )
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".parquet"):
        return "parquet"
    if name.removesuffix(".gz").endswith(_IDX_IMAGE_ENDINGS):
        return "idx"
    raise DataError(
        f"{path}: unknown file type; supported endings: {', '.join(SUPPORTED_SUFFIXES)}; "
        f"or a bundled dataset: {', '.join(BUNDLED)}"
    )


# --------------------------------------------------------------------------------------
# Bundled datasets
# --------------------------------------------------------------------------------------


def _load_bundled(name: str) -> Dataset:
    # sklearn costs a second of import time; only training needs it.
    from sklearn import datasets as sk_datasets

    digits = name == "digits"
    bunch = (sk_datasets.load_digits if digits else sk_datasets.load_breast_cancer)()
    # (n, f) float64 -> float32; targets are already 0..C-1 indices into target_names.
    # Digits are 8x8 images of pixel counts 0..16, flattened row-major.
    return Dataset(
        features=np.asarray(bunch.data, dtype=np.float32),
        labels=np.asarray(bunch.target, dtype=np.int64),
        class_names=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
        name=name,
        image_shape=(1, 8, 8) if digits else None,
        pixel_scale=1 / 16 if digits else None,
    )


# --------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------


def _finite_float32(path: Path, values: np.ndarray, locate: Locate) -> np.ndarray:
    """(n, f) float64 -> C-contiguous float32, refusing NaN / Inf and float32 overflow."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {locate(row, col)}: feature value {values[row, col]} is not finite "
            "(NaN and Inf are not allowed in features)"
        )
    with np.errstate(over="ignore"):  # overflow is reported below, with its place
        out = np.ascontiguousarray(values, dtype=np.float32)
    over = ~np.isfinite(out)
    if over.any():
        row, col = (int(v) for v in np.argwhere(over)[0])
        raise DataError(
            f"{path}: {locate(row, col)}: feature value {values[row, col]} overflows float32 "
            f"(largest is {_FLOAT32_MAX:.4g})"
        )
    return out


def _encode_labels(
    path: Path, column: str, raw: np.ndarray | list[Any], locate_row: Callable[[int], str]
) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..C-1 in sorted order; return (labels int64 (n,), class names).

    Integer-valued labels (ints, integral floats, strings that parse as such) sort
    numerically; anything else sorts as strings.
    """
    values = raw if isinstance(raw, np.ndarray) and raw.dtype != object else None
    if values is not None and (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        ints = values
    elif values is not None and np.issubdtype(values.dtype, np.floating):
        ints = _integral_labels(path, column, values.astype(np.float64), locate_row)
    else:
        texts = [str(v).strip() for v in (raw.tolist() if isinstance(raw, np.ndarray) else raw)]
        for i, text in enumerate(texts):
            if text == "":
                raise DataError(f"{path}: {locate_row(i)}: empty label in column {column}")
        parsed = _parse_numbers(texts)
        if parsed is None:
            uniques, labels = np.unique(np.asarray(texts, dtype=str), return_inverse=True)
            return _checked_classes(path, column, labels, [str(u) for u in uniques])
        ints = _integral_labels(path, column, parsed, locate_row)
    uniques, labels = np.unique(ints, return_inverse=True)
    return _checked_classes(path, column, labels, [str(u) for u in uniques.tolist()])


def _parse_numbers(texts: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(t) for t in texts], dtype=np.float64)
    except ValueError:
        return None


def _integral_labels(
    path: Path, column: str, values: np.ndarray, locate_row: Callable[[int], str]
) -> np.ndarray:
    nonfinite = np.flatnonzero(~np.isfinite(values))
    if nonfinite.size:
        i = int(nonfinite[0])
        raise DataError(
            f"{path}: {locate_row(i)}: label {values[i]} in column {column} is not finite"
        )
    fractional = np.flatnonzero(values != np.round(values))
    if fractional.size:
        i = int(fractional[0])
        raise DataError(
            f"{path}: {locate_row(i)}: label {values[i]} in column {column} is not a whole "
            "number; a classifier needs class ids or class names"
        )
    return values.astype(np.int64)


def _checked_classes(
    path: Path, column: str, labels: np.ndarray, names: list[str]
) -> tuple[np.ndarray, list[str]]:
    if len(names) < 2:
        raise DataError(
            f"{path}: label column {column} has a single class ({names[0]!r}); "
            "a classifier needs at least 2"
        )
    return np.asarray(labels, dtype=np.int64).reshape(-1), names


def _index_from(label_column: str | int) -> int | None:
    """An int, or a string of digits (``"3"``, ``"-1"``), as a column index; else None."""
    if isinstance(label_column, bool):
        return None
    if isinstance(label_column, int):
        return label_column
    try:
        return int(label_column.strip())
    except ValueError:
        return None


def _pick_label_column(path: Path, columns: list[str], label_column: str | int | None) -> int:
    """Position of the label column among ``columns`` (CSV / Parquet)."""
    listing = ", ".join(repr(c) for c in columns)
    if label_column is None:
        for candidate in DEFAULT_LABEL_COLUMNS:
            if candidate in columns:
                return columns.index(candidate)
        tried = ", ".join(repr(c) for c in DEFAULT_LABEL_COLUMNS)
        raise DataError(
            f"{path}: no label column (looked for {tried}); columns: {listing}; pass label_column="
        )
    if isinstance(label_column, str) and label_column in columns:
        return columns.index(label_column)
    index = _index_from(label_column)
    if index is None:
        raise DataError(f"{path}: no label column {label_column!r}; columns: {listing}")
    if not -len(columns) <= index < len(columns):
        raise DataError(
            f"{path}: label column index {index} is out of range for {len(columns)} "
            f"columns: {listing}"
        )
    return index % len(columns)


# --------------------------------------------------------------------------------------
# CSV and Parquet: through the runtime's reader layer (one parser for train and score)
# --------------------------------------------------------------------------------------


def _load_table(path: Path, label_column: str | int | None) -> Dataset:
    # Whole-file read: training data fits in memory; scoring streams the same reader.
    from onnxedge.runtime.io import open_input

    with open_input(path) as reader:  # MissingDependencyError without pyarrow
        import pyarrow as pa

        text = reader.format == "csv"
        columns = list(reader.columns or [])
        label_at = _pick_label_column(path, columns, label_column)
        names = [c for j, c in enumerate(columns) if j != label_at]
        if not names:
            raise DataError(f"{path}: no feature columns besides the label {columns[label_at]!r}")
        label = columns[label_at]
        batches = list(reader.batches(features=names, carry=[label], batch_rows=1 << 16))
    for bad in (bad for batch in batches for bad in batch.malformed):
        raise DataError(f"{path}: line {bad.line} {bad.reason} (line 1 is the header)")
    lines = np.concatenate([b.lines for b in batches if b.lines is not None] or [np.empty(0)])

    def where(i: int) -> str:
        return f"line {int(lines[i])} (line 1 is the header)" if text else f"row {i} (0-based)"

    def locate(i: int, j: int) -> str:
        return f"{where(i)}, column {names[j]!r}"

    def column(name: str) -> Any:
        return pa.chunked_array([b.columns[name] for b in batches])

    blocks = []  # one (n,) float64 per feature column
    for j, name in enumerate(names):
        values = column(name)
        if text:
            blocks.append(_parse_cells(path, values.to_pylist(), functools.partial(locate, j=j)))
            continue
        kind = values.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)
        ):
            raise DataError(
                f"{path}: column {name!r} has type {kind}, not a number (row 0 (0-based) "
                f"holds {values[0].as_py()!r}); feature columns must be numeric"
            )
        if values.null_count:
            first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{path}: {locate(first, j)}: missing value (null); features must all be present"
            )
        blocks.append(np.asarray(values.to_numpy(), dtype=np.float64))
    features = _finite_float32(path, np.column_stack(blocks), locate)

    labels_column = column(label)
    if labels_column.null_count:
        first = int(np.flatnonzero(labels_column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: {where(first)}: missing label (null) in column {label!r}")
    kind = labels_column.type
    raw: np.ndarray | list[Any]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        raw = np.asarray(labels_column.to_numpy())
    else:
        raw = [str(v) for v in labels_column.to_pylist()]
    labels, class_names = _encode_labels(path, repr(label), raw, where)
    return Dataset(features, labels, class_names, names, path.name)


def _parse_cells(path: Path, cells: list[str], locate: Callable[[int], str]) -> np.ndarray:
    """Text cells as float64; the first cell that is not a number is named."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        for i, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                raise DataError(f"{path}: {locate(i)}: cannot parse {cell!r} as a number") from None
        raise


# --------------------------------------------------------------------------------------
# NPY / NPZ
# --------------------------------------------------------------------------------------


def _load_array(path: Path) -> Any:
    try:
        # allow_pickle=False: an object array would run arbitrary code on load.
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{path}: cannot load: {exc} (object arrays are refused; save numbers or strings)"
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable NumPy file: {exc}") from None


def _require_numeric(path: Path, what: str, array: np.ndarray) -> None:
    kind = array.dtype.kind
    if kind not in "biuf":
        raise DataError(
            f"{path}: {what} has dtype {array.dtype}; features must be real numbers "
            "(bool, int or float)"
        )


def _load_npy(path: Path, label_column: str | int | None) -> Dataset:
    array = _load_array(path)
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: not a single NumPy array")
    if array.ndim != 2:
        raise DataError(
            f"{path}: expected a 2-D array (rows, columns) with the label in one column, "
            f"got shape {array.shape}"
        )
    _require_numeric(path, "the array", array)
    rows, cols = array.shape
    if rows == 0:
        raise DataError(f"{path}: no rows (shape {array.shape})")
    if cols < 2:
        raise DataError(
            f"{path}: {cols} column(s); need at least one feature column and the label column"
        )
    if label_column is None:
        label_at = cols - 1
    else:
        index = _index_from(label_column)
        if index is None:
            raise DataError(
                f"{path}: .npy files have no column names; label_column must be a column "
                f"index, got {label_column!r}"
            )
        if not -cols <= index < cols:
            raise DataError(
                f"{path}: label column index {index} is out of range for {cols} columns"
            )
        label_at = index % cols
    feature_at = [j for j in range(cols) if j != label_at]

    def locate(i: int, j: int) -> str:
        return f"row {i} (0-based), column {feature_at[j]}"

    features = _finite_float32(path, array[:, feature_at].astype(np.float64), locate)
    labels, class_names = _encode_labels(
        path, f"index {label_at}", array[:, label_at], lambda i: f"row {i} (0-based)"
    )
    names = [f"feature_{k}" for k in range(len(feature_at))]
    return Dataset(features, labels, class_names, names, path.name)


def _load_npz(path: Path) -> Dataset:
    archive = _load_array(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive")
    with archive:
        keys = sorted(archive.files)
        missing = [k for k in ("X", "y") if k not in keys]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(map(repr, missing))}; .npz needs 'X' "
                f"(rows, features) and 'y' (rows,); arrays there: {', '.join(map(repr, keys))}"
            )
        try:
            X = archive["X"]
            y = archive["y"]
        except ValueError as exc:
            raise DataError(f"{path}: cannot load: {exc} (object arrays are refused)") from None
    if X.ndim != 2:
        raise DataError(f"{path}: 'X' must be 2-D (rows, features), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(
            f"{path}: 'y' must have shape ({X.shape[0]},) to match 'X' {X.shape}, got {y.shape}"
        )
    _require_numeric(path, "'X'", X)
    if X.shape[0] == 0:
        raise DataError(f"{path}: no rows ('X' has shape {X.shape})")
    if X.shape[1] == 0:
        raise DataError(f"{path}: no feature columns ('X' has shape {X.shape})")

    def locate(i: int, j: int) -> str:
        return f"'X' row {i} (0-based), column {j}"

    features = _finite_float32(path, X.astype(np.float64), locate)
    labels, class_names = _encode_labels(path, "'y'", y, lambda i: f"'y' row {i} (0-based)")
    names = [f"feature_{k}" for k in range(X.shape[1])]
    return Dataset(features, labels, class_names, names, path.name)


# --------------------------------------------------------------------------------------
# IDX (MNIST format)
# --------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format) into an array of its own shape and dtype.

    The reader is :func:`onnxedge.runtime.io.read_idx` (scoring reads IDX images too).

    Raises:
        DataError: the file is missing, not IDX (bad magic), truncated, or longer than
            its header says.
    """
    from onnxedge.runtime.io import read_idx as read

    return read(_existing_file(path, "IDX file"))


def _read_idx(path: Path) -> tuple[np.ndarray, int]:
    """The array and its magic number (type code and number of dimensions)."""
    array = read_idx(path)
    code = next(c for c, dt in _IDX_DTYPES.items() if dt.newbyteorder("=") == array.dtype)
    return array, (code << 8) | array.ndim


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Images for :func:`load_idx` are uint8 ``(n, rows, cols)`` (magic ``0x00000803``),
    labels uint8 ``(n,)`` (magic ``0x00000801``).

    Args:
        path: the file to write (replaced if it exists).
        array: 1-D or more; dtype uint8, int8, int16, int32, float32 or float64.

    Raises:
        DataError: the dtype has no IDX type code, or the rank or a dimension does not
            fit in the header.
    """
    array = np.asarray(array)
    code = next(
        (
            c
            for c, dt in _IDX_DTYPES.items()
            if dt.newbyteorder("=") == array.dtype.newbyteorder("=")
        ),
        None,
    )
    if code is None:
        names = ", ".join(dt.newbyteorder("=").name for dt in _IDX_DTYPES.values())
        raise DataError(f"IDX cannot store dtype {array.dtype}; supported: {names}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise DataError(f"IDX cannot store shape {array.shape} (1 to 255 dims, each < 2**32)")
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    target = Path(path)
    if target.name.lower().endswith(".gz"):
        # mtime=0: the same array always gives the same bytes.
        payload = gzip.compress(payload, mtime=0)
    target.write_bytes(payload)


def load_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> Dataset:
    """Load MNIST-format IDX images and labels into a :class:`Dataset`.

    Images ``(n, rows, cols)`` uint8 (28x28 for MNIST) are flattened row-major to
    ``(n, rows * cols)`` float32 raw pixel values 0..255, with ``image_shape``
    ``(1, rows, cols)`` and ``pixel_scale`` ``1 / 255`` (a run puts that scaling in its
    preprocessing, so a device feeds raw pixels); feature names are ``pixel_{r}_{c}``.
    Labels are mapped to ``0..C-1`` in sorted order, class names are the original values
    as strings (``"0"``..``"9"`` for MNIST).

    Args:
        images_path: the images file (magic ``0x00000803``), optionally gzipped.
        labels_path: the labels file (magic ``0x00000801``), optionally gzipped.

    Raises:
        DataError: either file is missing, not IDX, of the wrong kind, truncated; the
            counts differ; there are no images; or the labels hold a single class.
    """
    images_file, labels_file = Path(images_path), Path(labels_path)
    images, images_magic = _read_idx(images_file)
    if images_magic != _IDX_IMAGES_MAGIC:
        raise DataError(
            f"{images_file}: expected IDX images (magic 0x{_IDX_IMAGES_MAGIC:08x}: uint8, "
            f"3-D), got magic 0x{images_magic:08x} ({images.dtype}, {images.ndim}-D)"
        )
    labels_raw, labels_magic = _read_idx(labels_file)
    if labels_magic != _IDX_LABELS_MAGIC:
        raise DataError(
            f"{labels_file}: expected IDX labels (magic 0x{_IDX_LABELS_MAGIC:08x}: uint8, "
            f"1-D), got magic 0x{labels_magic:08x} ({labels_raw.dtype}, {labels_raw.ndim}-D)"
        )
    n, rows, cols = images.shape
    if n == 0:
        raise DataError(f"{images_file}: no images (shape {images.shape})")
    if labels_raw.shape[0] != n:
        raise DataError(
            f"{images_file} has {n} images but {labels_file} has {labels_raw.shape[0]} labels"
        )
    features = images.reshape(n, rows * cols).astype(np.float32)  # raw pixels, exact
    labels, class_names = _encode_labels(
        labels_file, "(IDX labels)", labels_raw, lambda i: f"label {i} (0-based)"
    )
    feature_names = [f"pixel_{r}_{c}" for r in range(rows) for c in range(cols)]
    return Dataset(
        features, labels, class_names, feature_names, images_file.name, (1, rows, cols), 1 / 255
    )


# --------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------


def train_val_split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into training and validation sets, stratified by class.

    Each class with ``n_c >= 2`` rows puts ``round(n_c * val_fraction)`` of them
    (clamped to ``1..n_c - 1``) in validation, so every such class is in both splits; a
    class with a single row stays in training. Rows are drawn with
    ``numpy.random.default_rng(seed)``: the same seed gives the same split. Both splits
    keep the original row order, every class name and the dataset name.

    Args:
        ds: the dataset to split.
        val_fraction: share of each class held out, strictly between 0 and 1.
        seed: seeds the draw.

    Returns:
        ``(train, val)``: disjoint, and together every row of ``ds``.

    Raises:
        DataError: ``val_fraction`` is not in (0, 1), or no class has 2 rows to split.
    """
    fraction = float(val_fraction)
    if not 0.0 < fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_parts = []
    for k in range(ds.num_classes):
        members = np.flatnonzero(ds.labels == k)
        if members.size < 2:
            continue
        take = min(max(math.floor(members.size * fraction + 0.5), 1), members.size - 1)
        val_parts.append(rng.permutation(members)[:take])
    if not val_parts:
        raise DataError(
            f"cannot split {ds.name!r} ({ds.num_rows} rows): no class has 2 or more rows"
        )
    in_val = np.zeros(ds.num_rows, dtype=bool)
    in_val[np.concatenate(val_parts)] = True
    return ds.subset(np.flatnonzero(~in_val)), ds.subset(np.flatnonzero(in_val))
