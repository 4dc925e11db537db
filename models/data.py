"""Datasets for training: the bundled sklearn sets and IDX / CSV / NPY / NPZ / Parquet files,
read through :mod:`onnxedge.runtime.io`. Labels become ``0..C-1`` in sorted order (``{3, 7}``
-> ``{0, 1}``, class names ``["3", "7"]``); bad data raises DataError naming the file and the
place: a CSV line (1-based, the header is line 1), else a 0-based row.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.runtime.errors import DataError
from onnxedge.runtime.io import IDX_DTYPES, check_real, load_numpy, open_input, read_idx

#: Datasets that ship with scikit-learn and need no download.
BUNDLED = ("digits", "breast-cancer")
#: Label column names tried, in order, when a CSV / Parquet caller names none.
DEFAULT_LABEL_COLUMNS = ("label", "target", "class")
#: File name endings :func:`load_dataset` understands (case-insensitive).
SUPPORTED_SUFFIXES = (
    *(".csv", ".csv.gz", ".npy", ".npz", ".parquet"),
    *("-idx3-ubyte[.gz]", ".idx3-ubyte[.gz]", ".idx[.gz]"),
)
_IDX_IMAGE_ENDINGS = ("-idx3-ubyte", ".idx3-ubyte", ".idx")
_IDX_LABEL_ENDINGS = ("-idx1-ubyte", ".idx1-ubyte")
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 0x00000803, 0x00000801
_FLOAT32_MAX = float(np.finfo(np.float32).max)

Locate = Callable[[int, int], str]  # (row, column) -> where that cell is, for a message


@dataclasses.dataclass
class Dataset:
    """A classification dataset: ``(n, f)`` float32 C-contiguous ``features`` and ``(n,)``
    int64 ``labels`` (coerced on construction), label ``k`` meaning ``class_names[k]``, one
    of ``feature_names`` per column, a ``name`` (bundled or file name), the ``(C, H, W)``
    ``image_shape`` of image rows, and the ``pixel_scale`` mapping raw pixels to ``[0, 1]``.

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
        features, labels = np.asarray(self.features), np.asarray(self.labels)
        self.class_names = names = [str(c) for c in self.class_names]
        self.feature_names = [str(f) for f in self.feature_names]
        problem = None
        if features.ndim != 2:
            problem = f"features must be 2-D (rows, features), got shape {features.shape}"
        elif features.dtype.kind not in "biuf":
            problem = f"features must be real numbers, got dtype {features.dtype}"
        elif labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            problem = (
                f"labels must have shape ({features.shape[0]},) to match the features, "
                f"got {labels.shape}"
            )
        elif not np.issubdtype(labels.dtype, np.integer):
            problem = f"labels must be integer class indices, got dtype {labels.dtype}"
        elif len(names) < 2:
            problem = f"a classifier needs at least 2 classes, got {names}"
        elif len(set(names)) != len(names):
            problem = f"class names repeat: {names}"
        elif len(self.feature_names) != features.shape[1]:
            problem = (
                f"{len(self.feature_names)} feature names for {features.shape[1]} feature columns"
            )
        elif labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            problem = (
                f"labels must be in 0..{len(names) - 1}, got values from {labels.min()} to "
                f"{labels.max()}"
            )
        elif self.image_shape is not None and (
            len(self.image_shape) != 3 or math.prod(self.image_shape) != features.shape[1]
        ):
            problem = (
                f"image shape {self.image_shape} is not (C, H, W) of {features.shape[1]} values"
            )
        if problem is not None:
            raise DataError(f"dataset {self.name!r}: {problem}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """``C``, present in the rows or not."""
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        """``f``."""
        return int(self.features.shape[1])

    @property
    def num_rows(self) -> int:
        """``n``."""
        return int(self.features.shape[0])

    @property
    def task(self) -> str:
        """``"binary"`` for 2 classes, else ``"multiclass"``."""
        return "binary" if self.num_classes == 2 else "multiclass"

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The rows at ``indices`` (integers, negative from the end, or a boolean mask) as a
        new Dataset (a copy) with the same classes and names; DataError for an index out of
        range or a mask of the wrong length."""
        index, n, what = np.asarray(indices), self.num_rows, self.name
        index = index.astype(np.int64) if index.size == 0 else index
        if index.dtype.kind in "iu" and index.size and (index.min() < -n or index.max() >= n):
            raise DataError(
                f"dataset {what!r}: subset index out of range for {n} rows "
                f"(got {index.min()}..{index.max()})"
            )
        try:
            features, labels = self.features[index], self.labels[index]
        except IndexError as exc:  # a mask of another length, indices of another kind
            raise DataError(f"dataset {what!r}: subset indices: {exc}") from None
        return dataclasses.replace(self, features=features, labels=labels)


def load_dataset(
    source: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    labels_path: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a bundled dataset or a data file into a :class:`Dataset`.

    Args:
        source: a :data:`BUNDLED` name (it wins over a file of that name), or a file ending in
            one of :data:`SUPPORTED_SUFFIXES`: CSV (header row), Parquet, NPY (2-D, the label
            in one column), NPZ (``X`` and ``y``), IDX images (with ``labels_path``).
        label_column: CSV / Parquet: the label column's name or 0-based position (default:
            the first of :data:`DEFAULT_LABEL_COLUMNS`); NPY: its index (default: the last).
        labels_path: the IDX labels file, for IDX images only.

    Raises:
        DataError: a missing or unknown file, an option that does not apply, or contents
            that cannot be trained on.
        MissingDependencyError: a CSV or Parquet file without pyarrow.
    """
    if isinstance(source, str) and source in BUNDLED:
        if label_column is not None or labels_path is not None:
            raise DataError(
                f"bundled dataset {source!r} takes no label_column or labels_path; "
                "those are for data files"
            )
        return _load_bundled(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"file not found: {path} (bundled datasets: {', '.join(BUNDLED)})")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
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
    if kind == "npz" and label_column is not None:
        raise DataError(
            f"{path}: label_column does not apply to .npz files; labels are the array 'y'"
        )
    if kind in ("csv", "parquet"):
        return _load_table(path, label_column)
    return _load_npy(path, label_column) if kind == "npy" else _load_npz(path)


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.removesuffix(".gz").endswith(_IDX_LABEL_ENDINGS):
        raise DataError(
            f"{path} looks like an IDX labels file; pass the images file (-idx3-ubyte) as the "
            "dataset and this file as labels_path"
        )
    if name.removesuffix(".gz").endswith(_IDX_IMAGE_ENDINGS):
        return "idx"
    for kind in ("csv", "csv.gz", "npy", "npz", "parquet"):
        if name.endswith("." + kind):
            return kind.removesuffix(".gz")
    raise DataError(
        f"{path}: unknown file type; supported endings: {', '.join(SUPPORTED_SUFFIXES)}; "
        f"or a bundled dataset: {', '.join(BUNDLED)}"
    )


def _load_bundled(name: str) -> Dataset:
    from sklearn import datasets as sk_datasets  # a second of import time: training only

    digits = name == "digits"
    bunch = (sk_datasets.load_digits if digits else sk_datasets.load_breast_cancer)()
    # Digits: 8x8 images of pixel counts 0..16, flattened row-major.
    return Dataset(
        np.asarray(bunch.data, dtype=np.float32),
        np.asarray(bunch.target, dtype=np.int64),
        [str(c) for c in bunch.target_names],
        [str(f) for f in bunch.feature_names],
        name,
        (1, 8, 8) if digits else None,
        1 / 16 if digits else None,
    )


# --- checks shared by every file kind ----------------------------------------------------


def _finite_float32(path: Path, values: np.ndarray, locate: Locate) -> np.ndarray:
    """(n, f) float64 -> C-contiguous float32, refusing NaN / Inf and float32 overflow."""
    with np.errstate(over="ignore"):  # overflow is reported below, with its place
        out = np.ascontiguousarray(values, dtype=np.float32)
    for bad, why in (
        (~np.isfinite(values), "is not finite (NaN and Inf are not allowed in features)"),
        (~np.isfinite(out), f"overflows float32 (largest is {_FLOAT32_MAX:.4g})"),
    ):
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"{path}: {locate(row, col)}: feature value {values[row, col]} {why}")
    return out


def _encode_labels(
    path: Path, column: str, raw: np.ndarray | list[Any], locate_row: Callable[[int], str]
) -> tuple[np.ndarray, list[str]]:
    """Raw labels -> (int64 ``(n,)`` in 0..C-1, class names): whole-number labels (ints,
    integral floats, texts that parse so) sort numerically, other texts as strings."""
    values = raw if isinstance(raw, np.ndarray) and raw.dtype.kind in "biuf" else None
    if values is None:
        texts = [str(v).strip() for v in (raw.tolist() if isinstance(raw, np.ndarray) else raw)]
        if "" in texts:
            raise DataError(
                f"{path}: {locate_row(texts.index(''))}: empty label in column {column}"
            )
        try:
            values = np.array([float(t) for t in texts], dtype=np.float64)
        except ValueError:
            values = np.asarray(texts, dtype=str)
    if values.dtype.kind == "f":
        values = values.astype(np.float64)
        for bad, why in (
            (~np.isfinite(values), "is not finite"),
            (values != np.round(values), "is not a whole number; a classifier needs class ids "
             "or class names"),
        ):  # fmt: skip
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}: {locate_row(i)}: label {values[i]} in column {column} {why}"
                )
        values = values.astype(np.int64)
    uniques, labels = np.unique(values, return_inverse=True)
    names = [str(u) for u in uniques.tolist()]
    if len(names) < 2:
        raise DataError(
            f"{path}: label column {column} has a single class ({names[0]!r}); "
            "a classifier needs at least 2"
        )
    return np.asarray(labels, dtype=np.int64).reshape(-1), names


def _index_from(label_column: str | int) -> int | None:
    """An int, or a string of digits (``"3"``, ``"-1"``), as a column index; else None."""
    try:
        return None if isinstance(label_column, bool) else int(label_column)
    except ValueError:
        return None


def _pick_label_column(path: Path, columns: list[str], label_column: str | int | None) -> int:
    """Position of the label column among ``columns`` (CSV / Parquet)."""
    listing = ", ".join(repr(c) for c in columns)
    if label_column is None:
        found = next((c for c in DEFAULT_LABEL_COLUMNS if c in columns), None)
        if found is None:
            tried = ", ".join(repr(c) for c in DEFAULT_LABEL_COLUMNS)
            raise DataError(
                f"{path}: no label column (looked for {tried}); columns: {listing}; "
                "pass label_column="
            )
        return columns.index(found)
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


# --- CSV and Parquet ---------------------------------------------------------------------


def _load_table(path: Path, label_column: str | int | None) -> Dataset:
    with open_input(path) as reader:  # MissingDependencyError without pyarrow
        import pyarrow as pa

        text = reader.format == "csv"  # CSV cells come as text, located by line
        columns = list(reader.columns or [])
        label = columns[_pick_label_column(path, columns, label_column)]
        names = [c for c in columns if c != label]
        if not names:
            raise DataError(f"{path}: no feature columns besides the label {label!r}")
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
        if not _is_number(values.type):
            raise DataError(
                f"{path}: column {name!r} has type {values.type}, not a number (row 0 (0-based) "
                f"holds {values[0].as_py()!r}); feature columns must be numeric"
            )
        if values.null_count:
            first = _first_null(values)
            raise DataError(
                f"{path}: {locate(first, j)}: missing value (null); features must all be present"
            )
        blocks.append(np.asarray(values.to_numpy(), dtype=np.float64))
    features = _finite_float32(path, np.column_stack(blocks), locate)
    labels = column(label)
    if labels.null_count:
        raise DataError(
            f"{path}: {where(_first_null(labels))}: missing label (null) in column {label!r}"
        )
    numeric = _is_number(labels.type, decimal=False)
    raw = np.asarray(labels.to_numpy()) if numeric else [str(v) for v in labels.to_pylist()]
    encoded, class_names = _encode_labels(path, repr(label), raw, where)
    return Dataset(features, encoded, class_names, names, path.name)


def _is_number(kind: Any, *, decimal: bool = True) -> bool:
    import pyarrow as pa

    number = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    return any(is_(kind) for is_ in number) or (decimal and pa.types.is_decimal(kind))


def _first_null(values: Any) -> int:
    return int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])


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


# --- NPY / NPZ (through the runtime's numpy.load) ----------------------------------------


def _from_arrays(
    path: Path, x: np.ndarray, y: Any, label: str, row: str, locate: Locate
) -> Dataset:
    """A Dataset of feature rows ``x`` and raw labels ``y`` (``label`` and ``row`` name the
    labels and their rows in messages)."""
    features = _finite_float32(path, np.asarray(x, dtype=np.float64), locate)
    labels, class_names = _encode_labels(path, label, y, lambda i: f"{row}{i} (0-based)")
    names = [f"feature_{k}" for k in range(x.shape[1])]
    return Dataset(features, labels, class_names, names, path.name)


def _load_npy(path: Path, label_column: str | int | None) -> Dataset:
    array = load_numpy(path)
    if array.ndim != 2:
        raise DataError(
            f"{path}: expected a 2-D array (rows, columns) with the label in one column, "
            f"got shape {array.shape}"
        )
    check_real(path, array, "the array ")
    rows, cols = array.shape
    if rows == 0:
        raise DataError(f"{path}: no rows (shape {array.shape})")
    if cols < 2:
        raise DataError(
            f"{path}: {cols} column(s); need at least one feature column and the label column"
        )
    index = cols - 1 if label_column is None else _index_from(label_column)
    if index is None:
        raise DataError(
            f"{path}: .npy files have no column names; label_column must be a column "
            f"index, got {label_column!r}"
        )
    if not -cols <= index < cols:
        raise DataError(f"{path}: label column index {index} is out of range for {cols} columns")
    at = [j for j in range(cols) if j != index % cols]
    return _from_arrays(
        path,
        array[:, at],
        array[:, index % cols],
        f"index {index % cols}",
        "row ",
        lambda i, j: f"row {i} (0-based), column {at[j]}",
    )


def _load_npz(path: Path) -> Dataset:
    with load_numpy(path, npz=True) as archive:
        keys = sorted(archive.files)
        missing = [k for k in ("X", "y") if k not in keys]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(map(repr, missing))}; .npz needs 'X' "
                f"(rows, features) and 'y' (rows,); arrays there: {', '.join(map(repr, keys))}"
            )
        try:
            x, y = archive["X"], archive["y"]
        except ValueError as exc:
            raise DataError(f"{path}: cannot load: {exc} (object arrays are refused)") from None
    if x.ndim != 2:
        raise DataError(f"{path}: 'X' must be 2-D (rows, features), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{path}: 'y' must have shape ({x.shape[0]},) to match 'X' {x.shape}, got {y.shape}"
        )
    check_real(path, x, "'X' ")
    if 0 in x.shape:
        empty = "no rows" if x.shape[0] == 0 else "no feature columns"
        raise DataError(f"{path}: {empty} ('X' has shape {x.shape})")
    return _from_arrays(
        path, x, y, "'y'", "'y' row ", lambda i, j: f"'X' row {i} (0-based), column {j}"
    )


# --- IDX (MNIST format) ------------------------------------------------------------------


def _idx_of_kind(path: Path, magic: int, kind: str, meaning: str) -> np.ndarray:
    array = read_idx(path)
    code = next(c for c, dt in IDX_DTYPES.items() if dt.newbyteorder("=") == array.dtype)
    if (code << 8) | array.ndim != magic:
        raise DataError(
            f"{path}: expected IDX {kind} (magic 0x{magic:08x}: {meaning}), got magic "
            f"0x{(code << 8) | array.ndim:08x} ({array.dtype}, {array.ndim}-D)"
        )
    return array


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` (1-D or more; uint8, int8, int16, int32, float32 or float64) as an
    IDX file, gzipped when ``path`` ends in ``.gz``.

    Raises:
        DataError: the dtype has no IDX type code, or the shape does not fit the header.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    code = next((c for c, dt in IDX_DTYPES.items() if dt.newbyteorder("=") == native), None)
    if code is None:
        names = ", ".join(dt.newbyteorder("=").name for dt in IDX_DTYPES.values())
        raise DataError(f"IDX cannot store dtype {array.dtype}; supported: {names}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise DataError(f"IDX cannot store shape {array.shape} (1 to 255 dims, each < 2**32)")
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if str(path).lower().endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # the same array, the same bytes
    Path(path).write_bytes(payload)


def load_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> Dataset:
    """MNIST-format IDX images (``(n, rows, cols)`` uint8) and labels as a Dataset: raw
    pixels 0..255 flattened row-major, ``image_shape`` ``(1, rows, cols)``, ``pixel_scale``
    ``1 / 255``, features ``pixel_{r}_{c}``. Raises DataError if a file is missing, not
    IDX, of the wrong kind, or truncated, the counts differ, or nothing can be trained on."""
    images_file, labels_file = Path(images_path), Path(labels_path)
    images = _idx_of_kind(images_file, _IDX_IMAGES_MAGIC, "images", "uint8, 3-D")
    labels_raw = _idx_of_kind(labels_file, _IDX_LABELS_MAGIC, "labels", "uint8, 1-D")
    n, rows, cols = images.shape
    if n == 0:
        raise DataError(f"{images_file}: no images (shape {images.shape})")
    if labels_raw.shape[0] != n:
        raise DataError(
            f"{images_file} has {n} images but {labels_file} has {labels_raw.shape[0]} labels"
        )
    labels, class_names = _encode_labels(
        labels_file, "(IDX labels)", labels_raw, lambda i: f"label {i} (0-based)"
    )
    return Dataset(
        images.reshape(n, rows * cols).astype(np.float32),
        labels,
        class_names,
        [f"pixel_{r}_{c}" for r in range(rows) for c in range(cols)],
        images_file.name,
        (1, rows, cols),
        1 / 255,
    )


def train_val_split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into (train, val), stratified by class, in the original row order: each
    class of ``n_c >= 2`` rows puts ``round(n_c * val_fraction)`` of them (clamped to
    ``1..n_c - 1``) in validation, drawn with ``numpy.random.default_rng(seed)`` (the same
    seed, the same split); a single-row class stays in training.

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
        if members.size >= 2:
            take = min(max(math.floor(members.size * fraction + 0.5), 1), members.size - 1)
            val_parts.append(rng.permutation(members)[:take])
    if not val_parts:
        raise DataError(
            f"cannot split {ds.name!r} ({ds.num_rows} rows): no class has 2 or more rows"
        )
    in_val = np.zeros(ds.num_rows, dtype=bool)
    in_val[np.concatenate(val_parts)] = True
    return ds.subset(np.flatnonzero(~in_val)), ds.subset(np.flatnonzero(in_val))
