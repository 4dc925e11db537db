"""Tests for onnxedge.models.data: bundled sets, IDX, CSV / NPY / NPZ / Parquet, splits."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnxedge.models.data import (
    BUNDLED,
    Dataset,
    load_dataset,
    load_idx,
    read_idx,
    train_val_split,
    write_idx,
)
from onnxedge.runtime.errors import DataError, MissingDependencyError

# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


@pytest.fixture
def mnist_like(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Six 28x28 uint8 images with labels 0..2, written as IDX files."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the scale
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    images_path = tmp_path / "train-images-idx3-ubyte"
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(images_path, images)
    write_idx(labels_path, labels)
    return images_path, labels_path, images, labels


def _toy(labels: list[int] | np.ndarray, num_classes: int | None = None) -> Dataset:
    labels = np.asarray(labels, dtype=np.int64)
    classes = num_classes or int(labels.max()) + 1
    # feature 0 is the row index, so a row can be traced through subset / split.
    features = np.stack([np.arange(labels.size), labels * 10.0], axis=1)
    return Dataset(features, labels, [f"c{k}" for k in range(classes)], ["row", "label10"], "toy")


# --------------------------------------------------------------------------------------
# bundled datasets
# --------------------------------------------------------------------------------------


def test_digits_shapes_and_names() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.features.shape == (1797, 64) and ds.labels.shape == (1797,)
    assert ds.features.dtype == np.float32 and ds.features.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert (ds.num_rows, ds.num_features, ds.num_classes) == (1797, 64, 10)
    assert ds.task == "multiclass"
    assert ds.class_names == [str(k) for k in range(10)]
    assert (
        ds.feature_names[:2] == ["pixel_0_0", "pixel_0_1"] and ds.feature_names[-1] == "pixel_7_7"
    )
    reference = load_digits()
    np.testing.assert_array_equal(ds.labels, reference.target)
    np.testing.assert_array_equal(ds.features, reference.data.astype(np.float32))
    # 8x8 images of raw pixel counts 0..16, flattened row-major.
    assert ds.image_shape == (1, 8, 8) and ds.pixel_scale == 1 / 16
    np.testing.assert_array_equal(ds.features.reshape(-1, 1, 8, 8)[:, 0], reference.images)
    assert ds.features.max() * ds.pixel_scale == 1.0
    assert load_dataset("breast-cancer").image_shape is None


def test_breast_cancer_shapes_and_names() -> None:
    ds = load_dataset("breast-cancer")
    assert ds.name == "breast-cancer"
    assert ds.features.shape == (569, 30)
    assert ds.num_classes == 2 and ds.task == "binary"
    assert ds.class_names == ["malignant", "benign"]
    assert ds.feature_names[0] == "mean radius" and len(ds.feature_names) == 30
    # 212 malignant (label 0), 357 benign (label 1), as the UCI data documents.
    assert np.bincount(ds.labels).tolist() == [212, 357]
    assert BUNDLED == ("digits", "breast-cancer")


def test_bundled_refuses_file_options() -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset("digits", label_column="label")
    assert _message(excinfo) == (
        "bundled dataset 'digits' takes no label_column or labels_path; those are for data files"
    )


# --------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------


def test_idx_round_trip(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    images_path, labels_path, images, labels = mnist_like
    np.testing.assert_array_equal(read_idx(images_path), images)
    np.testing.assert_array_equal(read_idx(labels_path), labels)
    raw = images_path.read_bytes()
    assert raw[:4] == bytes.fromhex("00000803")
    assert int.from_bytes(raw[4:8], "big") == 6 and len(raw) == 16 + 6 * 28 * 28
    assert labels_path.read_bytes()[:4] == bytes.fromhex("00000801")


def test_load_idx_keeps_raw_pixels_and_flattens(
    mnist_like: tuple[Path, Path, np.ndarray, np.ndarray],
) -> None:
    images_path, labels_path, images, labels = mnist_like
    ds = load_dataset(images_path, labels_path=labels_path)
    assert ds.name == "train-images-idx3-ubyte"
    assert ds.features.shape == (6, 784) and ds.features.dtype == np.float32
    # Raw 0..255 pixels: the /255 is the run's preprocessing, recorded, not done here.
    assert ds.features.min() == 0.0 and ds.features.max() == 255.0
    assert ds.image_shape == (1, 28, 28) and ds.pixel_scale == 1 / 255
    # Independent computation: pixel (r, c) of image i, read one by one.
    expected = [[images[i, r, c] for r in range(28) for c in range(28)] for i in range(6)]
    np.testing.assert_array_equal(ds.features, np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(ds.features.reshape(6, *ds.image_shape)[:, 0], images)
    assert ds.feature_names[0] == "pixel_0_0"
    assert ds.feature_names[29] == "pixel_1_1" and ds.feature_names[-1] == "pixel_27_27"
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names == ["0", "1", "2"]


def test_idx_gzip_round_trip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 3], dtype=np.uint8)
    images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(images_path, images)
    write_idx(labels_path, labels)
    assert images_path.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(images_path.read_bytes())[:4] == bytes.fromhex("00000803")
    np.testing.assert_array_equal(read_idx(images_path), images)
    ds = load_idx(images_path, labels_path)
    assert ds.features.shape == (2, 12)
    assert ds.feature_names[4] == "pixel_1_0"
    # labels {3, 7} map to 0, 1 in sorted order
    assert ds.class_names == ["3", "7"] and ds.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "name", ["a.idx3-ubyte", "a.idx", "a.idx.gz", "A-IDX3-UBYTE", "a.idx3-ubyte.gz"]
)
def test_idx_extensions_dispatch(tmp_path: Path, name: str) -> None:
    write_idx(tmp_path / name, np.zeros((2, 2, 2), dtype=np.uint8))
    write_idx(tmp_path / "labels.idx", np.array([0, 1], dtype=np.uint8))
    ds = load_dataset(tmp_path / name, labels_path=tmp_path / "labels.idx")
    assert ds.features.shape == (2, 4)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_dtypes_round_trip(tmp_path: Path, dtype: str) -> None:
    array = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", array)
    back = read_idx(tmp_path / "x.idx")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_idx_round_trip_any_array(array: np.ndarray) -> None:
    # tmp_path is shared by every hypothesis example; each example gets its own folder.
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.idx.gz"
        write_idx(path, array)
        back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)  # bit-exact, NaN where NaN


def test_idx_truncated(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    images_path, labels_path, _, _ = mnist_like
    images_path.write_bytes(images_path.read_bytes()[:-10])
    with pytest.raises(DataError) as excinfo:
        load_dataset(images_path, labels_path=labels_path)
    assert _message(excinfo) == (
        f"{images_path}: truncated IDX file: expected 4720 bytes for shape (6, 28, 28) "
        "of uint8, got 4710"
    )


def test_idx_truncated_gzip_and_header(tmp_path: Path) -> None:
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(bytes.fromhex("00000803") + (5).to_bytes(4, "big")))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert _message(excinfo) == (
        f"{path}: truncated IDX file: expected 16 header bytes for 3 dimensions, "
        "got 8 (after gunzip)"
    )
    short = tmp_path / "y.idx"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(DataError) as excinfo:
        read_idx(short)
    assert _message(excinfo) == (
        f"{short}: truncated IDX file: expected at least 4 header bytes, got 2"
    )


def test_idx_too_long(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    write_idx(path, np.array([1, 2], dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert _message(excinfo) == (
        f"{path}: IDX file too long: expected 10 bytes for shape (2,) of uint8, got 11"
    )


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert _message(excinfo) == (
        f"{path}: not an IDX file: magic 0x89504e47 (expected 0x00000803 for images, "
        "0x00000801 for labels)"
    )


def test_idx_wrong_kind_and_count(
    mnist_like: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images_path, labels_path, _, _ = mnist_like
    with pytest.raises(DataError) as excinfo:
        load_idx(labels_path, images_path)
    assert _message(excinfo) == (
        f"{labels_path}: expected IDX images (magic 0x00000803: uint8, 3-D), "
        "got magic 0x00000801 (uint8, 1-D)"
    )
    with pytest.raises(DataError) as excinfo:
        load_idx(images_path, images_path)
    assert _message(excinfo) == (
        f"{images_path}: expected IDX labels (magic 0x00000801: uint8, 1-D), "
        "got magic 0x00000803 (uint8, 3-D)"
    )
    five = tmp_path / "five-labels-idx1-ubyte"
    write_idx(five, np.array([0, 1, 0, 1, 0], dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_idx(images_path, five)
    assert _message(excinfo) == f"{images_path} has 6 images but {five} has 5 labels"


def test_idx_needs_labels_path(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    images_path, labels_path, _, _ = mnist_like
    with pytest.raises(DataError) as excinfo:
        load_dataset(images_path)
    assert _message(excinfo) == (
        f"{images_path}: IDX images need a labels file: pass labels_path= "
        "(e.g. train-labels-idx1-ubyte)"
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(labels_path)
    assert _message(excinfo) == (
        f"{labels_path} looks like an IDX labels file; pass the images file (-idx3-ubyte) "
        "as the dataset and this file as labels_path"
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(images_path, labels_path=labels_path.with_name("nope"))
    assert _message(excinfo) == f"IDX file not found: {labels_path.with_name('nope')}"


def test_write_idx_refuses_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
    assert _message(excinfo) == (
        "IDX cannot store dtype int64; supported: uint8, int8, int16, int32, float32, float64"
    )


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------


def test_csv_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "iris.csv",
        "sepal,petal,species\n1.5,0.25,setosa\n-2,1e3,virginica\n\n3.0, 4 ,setosa\n",
    )
    ds = load_dataset(path, label_column="species")
    assert ds.name == "iris.csv"
    assert ds.feature_names == ["sepal", "petal"]
    np.testing.assert_array_equal(
        ds.features, np.array([[1.5, 0.25], [-2, 1000], [3, 4]], dtype=np.float32)
    )
    assert ds.class_names == ["setosa", "virginica"] and ds.labels.tolist() == [0, 1, 0]


def test_csv_gz_default_label_column_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress("\ufeffx,y,target\n1,2,3\n4,5,7\n6,7,3\n".encode()))
    ds = load_dataset(path)
    assert ds.feature_names == ["x", "y"]
    # integer labels {3, 7} -> 0, 1 in sorted order; names keep the original values
    assert ds.class_names == ["3", "7"] and ds.labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("header", "expected_features"),
    [("label,a,target", ["a", "target"]), ("a,class,target", ["a", "class"])],
)
def test_csv_default_label_order(tmp_path: Path, header: str, expected_features: list[str]) -> None:
    # "label" wins over "target", which wins over "class".
    path = _write(tmp_path / "d.csv", f"{header}\n0,1,2\n1,1,3\n")
    assert load_dataset(path).feature_names == expected_features


def test_csv_label_column_by_index(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "y,a,b\n1,0.5,1\n2,0.5,2\n")
    for column in (0, "0", -3):
        ds = load_dataset(path, label_column=column)
        assert ds.feature_names == ["a", "b"] and ds.class_names == ["1", "2"]


def test_csv_label_mapping_numeric_sort(tmp_path: Path) -> None:
    # numerically sorted (2 < 10), integral floats are integers
    path = _write(tmp_path / "d.csv", "a,label\n0,10\n0,2\n0,2.0\n0,-1\n")
    ds = load_dataset(path)
    assert ds.class_names == ["-1", "2", "10"] and ds.labels.tolist() == [2, 1, 1, 0]


def test_csv_missing_label_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b,species\n1,2,x\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: no label column (looked for 'label', 'target', 'class'); "
        "columns: 'a', 'b', 'species'; pass label_column="
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, label_column="kind")
    assert _message(excinfo) == f"{path}: no label column 'kind'; columns: 'a', 'b', 'species'"
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, label_column=3)
    assert _message(excinfo) == (
        f"{path}: label column index 3 is out of range for 3 columns: 'a', 'b', 'species'"
    )


def test_csv_non_numeric_feature(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n\n3,abc,1\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    # line 4: the header is line 1 and the blank line 3 counts
    assert _message(excinfo) == (
        f"{path}: line 4 (line 1 is the header), column 'b': cannot parse 'abc' as a number"
    )


def test_csv_empty_cell(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b,label\n1,,0\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: line 2 (line 1 is the header), column 'b': cannot parse '' as a number"
    )


@pytest.mark.parametrize(("cell", "shown"), [("nan", "nan"), ("-inf", "-inf"), ("Infinity", "inf")])
def test_csv_non_finite_feature(tmp_path: Path, cell: str, shown: str) -> None:
    path = _write(tmp_path / "d.csv", f"a,b,label\n1,2,0\n3,{cell},1\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: line 3 (line 1 is the header), column 'b': feature value {shown} is not "
        "finite (NaN and Inf are not allowed in features)"
    )


def test_csv_float32_overflow(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,label\n1e39,0\n1,1\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: line 2 (line 1 is the header), column 'a': feature value 1e+39 overflows "
        "float32 (largest is 3.403e+38)"
    )


def test_csv_single_class(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,label\n1,cat\n2,cat\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: label column 'label' has a single class ('cat'); a classifier needs at least 2"
    )


def test_csv_empty_and_header_only(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError) as excinfo:
        load_dataset(empty)
    assert _message(excinfo) == f"{empty}: empty file (no header row)"
    header_only = _write(tmp_path / "h.csv", "a,label\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(header_only)
    assert _message(excinfo) == f"{header_only}: header only, no data rows"


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n1,2,3,0\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: line 3 has 4 fields, the header has 3 (line 1 is the header)"
    )


def test_csv_bad_labels(tmp_path: Path) -> None:
    empty_label = _write(tmp_path / "e.csv", "a,label\n1,0\n2,\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(empty_label)
    assert _message(excinfo) == (
        f"{empty_label}: line 3 (line 1 is the header): empty label in column 'label'"
    )
    fractional = _write(tmp_path / "f.csv", "a,label\n1,0\n2,0.5\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(fractional)
    assert _message(excinfo) == (
        f"{fractional}: line 3 (line 1 is the header): label 0.5 in column 'label' is not a "
        "whole number; a classifier needs class ids or class names"
    )


def test_csv_duplicate_column_and_label_only(tmp_path: Path) -> None:
    twice = _write(tmp_path / "t.csv", "a,a,label\n1,2,0\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(twice)
    assert _message(excinfo) == f"{twice}: column name 'a' appears twice in the header"
    only = _write(tmp_path / "o.csv", "label\n0\n1\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(only)
    assert _message(excinfo) == f"{only}: no feature columns besides the label 'label'"


# --------------------------------------------------------------------------------------
# files in general
# --------------------------------------------------------------------------------------


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as excinfo:
        load_dataset(missing)
    assert _message(excinfo) == (
        f"file not found: {missing} (bundled datasets: digits, breast-cancer)"
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path)
    assert _message(excinfo) == f"{tmp_path} is not a file"


def test_unknown_extension(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.xlsx", "x")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: unknown file type; supported endings: .csv, .csv.gz, .npy, .npz, .parquet, "
        "-idx3-ubyte[.gz], .idx3-ubyte[.gz], .idx[.gz]; or a bundled dataset: "
        "digits, breast-cancer"
    )


def test_labels_path_only_for_idx(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,label\n1,0\n2,1\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, labels_path=path)
    assert _message(excinfo) == (
        f"labels_path is only for IDX images files; {path} is a csv file, its labels are in "
        "one of its columns (label_column=)"
    )


# --------------------------------------------------------------------------------------
# NPY / NPZ
# --------------------------------------------------------------------------------------


def test_npy_default_last_column(tmp_path: Path) -> None:
    array = np.array([[0.5, 1, 1], [2, 3, 0], [4, 5, 1]], dtype=np.float64)
    np.save(tmp_path / "d.npy", array)
    ds = load_dataset(tmp_path / "d.npy")
    np.testing.assert_array_equal(ds.features, array[:, :2].astype(np.float32))
    assert ds.labels.tolist() == [1, 0, 1] and ds.class_names == ["0", "1"]
    assert ds.feature_names == ["feature_0", "feature_1"] and ds.name == "d.npy"


def test_npy_label_column_index(tmp_path: Path) -> None:
    array = np.array([[3, 10, 20], [7, 11, 21], [3, 12, 22]], dtype=np.int32)
    np.save(tmp_path / "d.npy", array)
    for column in (0, "0", -3):
        ds = load_dataset(tmp_path / "d.npy", label_column=column)
        np.testing.assert_array_equal(ds.features, array[:, 1:].astype(np.float32))
        assert ds.class_names == ["3", "7"] and ds.labels.tolist() == [0, 1, 0]
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "d.npy", label_column="species")
    assert _message(excinfo) == (
        f"{tmp_path / 'd.npy'}: .npy files have no column names; label_column must be a "
        "column index, got 'species'"
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "d.npy", label_column=3)
    assert _message(excinfo) == (
        f"{tmp_path / 'd.npy'}: label column index 3 is out of range for 3 columns"
    )


def test_npy_non_finite_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.array([[1.0, 2.0, 0], [np.inf, 2.0, 1]]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: row 1 (0-based), column 0: feature value inf is not finite "
        "(NaN and Inf are not allowed in features)"
    )
    np.save(path, np.zeros(4))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: expected a 2-D array (rows, columns) with the label in one column, got shape (4,)"
    )
    np.save(path, np.zeros((0, 3)))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == f"{path}: no rows (shape (0, 3))"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: the array has dtype <U1; features must be real numbers (bool, int or float)"
    )


def test_npy_single_class(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.array([[1.0, 4], [2.0, 4]]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: label column index 1 has a single class ('4'); a classifier needs at least 2"
    )


def test_npz_loads_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.savez(path, X=X, y=np.array(["dog", "cat", "dog", "bird"]))
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.features, X)
    assert ds.class_names == ["bird", "cat", "dog"] and ds.labels.tolist() == [2, 1, 2, 0]
    assert ds.feature_names == ["feature_0", "feature_1"]


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: missing array(s) 'X'; .npz needs 'X' (rows, features) and 'y' (rows,); "
        "arrays there: 'features', 'y'"
    )
    np.savez(path, X=np.zeros((2, 2)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == f"{path}: 'y' must have shape (2,) to match 'X' (2, 2), got (3,)"
    np.savez(path, X=np.array([[0.0, np.nan], [1, 1]]), y=np.array([0, 1]))
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: 'X' row 0 (0-based), column 1: feature value nan is not finite "
        "(NaN and Inf are not allowed in features)"
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(path, label_column="y")
    assert _message(excinfo) == (
        f"{path}: label_column does not apply to .npz files; labels are the array 'y'"
    )


# --------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------


def _write_parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_loads(tmp_path: Path) -> None:
    path = _write_parquet(
        tmp_path / "d.parquet",
        {"a": [1.5, 2.0, 3.0], "n": [1, 2, 3], "class": ["b", "a", "b"]},
    )
    ds = load_dataset(path)
    np.testing.assert_array_equal(
        ds.features, np.array([[1.5, 1], [2, 2], [3, 3]], dtype=np.float32)
    )
    assert ds.feature_names == ["a", "n"]
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [1, 0, 1]


def test_parquet_errors(tmp_path: Path) -> None:
    path = _write_parquet(
        tmp_path / "d.parquet", {"a": [1.0, 2.0], "s": ["x", "y"], "label": [1, 2]}
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: column 's' has type string, not a number (row 0 (0-based) holds 'x'); "
        "feature columns must be numeric"
    )
    _write_parquet(path, {"a": [1.0, None, 3.0], "label": [0, 1, 1]})
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: row 1 (0-based), column 'a': missing value (null); features must all be present"
    )
    _write_parquet(path, {"a": [1.0, float("nan")], "label": [0, 1]})
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: row 1 (0-based), column 'a': feature value nan is not finite "
        "(NaN and Inf are not allowed in features)"
    )
    _write_parquet(path, {"a": [1.0, 2.0], "y": [0, 1]})
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"{path}: no label column (looked for 'label', 'target', 'class'); "
        "columns: 'a', 'y'; pass label_column="
    )
    assert load_dataset(path, label_column="y").class_names == ["0", "1"]


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_parquet(tmp_path / "d.parquet", {"a": [1.0, 2.0], "label": [0, 1]})
    # A None entry in sys.modules makes `import pyarrow` raise ImportError.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError) as excinfo:
        load_dataset(path)
    assert _message(excinfo) == (
        f"reading {path} needs pyarrow, which is not installed: pip install 'onnxedge[cpu]'"
    )


def test_parquet_unreadable(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.parquet", "not parquet")
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    assert _message(excinfo).startswith(f"{path}: not a readable Parquet file: ")


# --------------------------------------------------------------------------------------
# Dataset, subset, split
# --------------------------------------------------------------------------------------


def test_dataset_checks_and_coerces() -> None:
    transposed = np.ones((3, 2), dtype=np.float64).T  # (2, 3), not C-contiguous
    ds = Dataset(transposed, np.array([0, 1], dtype=np.int32), ["a", "b"], ["x", "y", "z"], "t")
    assert ds.features.dtype == np.float32 and ds.features.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    with pytest.raises(DataError) as excinfo:
        Dataset(np.ones((2, 3)), np.array([0, 2]), ["a", "b"], ["x", "y", "z"], "t")
    assert _message(excinfo) == "dataset 't': labels must be in 0..1, got values from 0 to 2"
    with pytest.raises(DataError) as excinfo:
        Dataset(np.ones((2, 3)), np.array([0, 1]), ["a", "b"], ["x", "y"], "t")
    assert _message(excinfo) == "dataset 't': 2 feature names for 3 feature columns"
    with pytest.raises(DataError) as excinfo:
        Dataset(np.ones((2, 3)), np.array([0, 1]), ["a", "b"], ["x", "y", "z"], "t", (1, 2, 2))
    assert _message(excinfo) == "dataset 't': image shape (1, 2, 2) is not (C, H, W) of 3 values"


def test_subset() -> None:
    ds = _toy([0, 1, 2, 0, 1, 2])
    sub = ds.subset([4, 0])
    assert sub.features[:, 0].tolist() == [4, 0] and sub.labels.tolist() == [1, 0]
    assert sub.class_names == ds.class_names and sub.feature_names == ds.feature_names
    assert sub.name == "toy" and sub.features.flags.c_contiguous
    sub.features[0, 0] = -1  # a copy: the source is untouched
    assert ds.features[4, 0] == 4
    mask = ds.labels == 2
    assert ds.subset(mask).features[:, 0].tolist() == [2, 5]
    digits = load_dataset("digits").subset([3, 1])
    assert (digits.image_shape, digits.pixel_scale) == ((1, 8, 8), 1 / 16)
    with pytest.raises(DataError) as excinfo:
        ds.subset([6])
    assert _message(excinfo) == "dataset 'toy': subset index out of range for 6 rows (got 6..6)"


def test_split_stratified_disjoint_covering() -> None:
    ds = load_dataset("digits")
    train, val = train_val_split(ds, 0.2, seed=0)
    rows = np.concatenate([train.features, val.features])
    assert train.num_rows + val.num_rows == ds.num_rows
    # every row of ds appears exactly once across the two splits
    assert np.unique(rows, axis=0).shape[0] == np.unique(ds.features, axis=0).shape[0]
    counts = np.bincount(ds.labels)
    val_counts = np.bincount(val.labels, minlength=10)
    expected = np.floor(counts * 0.2 + 0.5).astype(int)
    np.testing.assert_array_equal(val_counts, expected)
    assert train.class_names == ds.class_names and val.num_features == 64


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=60),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(labels: list[int], fraction: float, seed: int) -> None:
    counts = np.bincount(labels)
    if counts.max() < 2:
        return  # no class can be split; covered by test_split_errors
    ds = _toy(labels, num_classes=5)
    train, val = train_val_split(ds, fraction, seed)
    train_rows = set(train.features[:, 0].astype(int).tolist())
    val_rows = set(val.features[:, 0].astype(int).tolist())
    assert not train_rows & val_rows and train_rows | val_rows == set(range(len(labels)))
    for k, n_k in enumerate(counts):
        in_val = int((val.labels == k).sum())
        if n_k >= 2:
            assert 1 <= in_val <= n_k - 1
            assert in_val == min(max(int(np.floor(n_k * fraction + 0.5)), 1), n_k - 1)
        else:
            assert in_val == 0
    # rows keep their label through the split (feature 1 is label * 10)
    np.testing.assert_array_equal(val.features[:, 1], val.labels * 10.0)


def test_split_deterministic_per_seed() -> None:
    ds = _toy(np.arange(200) % 3)
    first = train_val_split(ds, 0.3, seed=7)[1].features[:, 0]
    again = train_val_split(ds, 0.3, seed=7)[1].features[:, 0]
    other = train_val_split(ds, 0.3, seed=8)[1].features[:, 0]
    np.testing.assert_array_equal(first, again)
    assert set(first.tolist()) != set(other.tolist())


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_errors(fraction: float) -> None:
    ds = _toy([0, 1, 0, 1])
    with pytest.raises(DataError) as excinfo:
        train_val_split(ds, fraction, seed=0)
    assert _message(excinfo) == (
        f"val_fraction must be between 0 and 1 (exclusive), got {fraction}"
    )


def test_split_needs_a_class_with_two_rows() -> None:
    with pytest.raises(DataError) as excinfo:
        train_val_split(_toy([0, 1, 2]), 0.5, seed=0)
    assert _message(excinfo) == "cannot split 'toy' (3 rows): no class has 2 or more rows"
