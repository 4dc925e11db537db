"""Batch scoring: every format in and out, equality with Predictor, bad rows, streaming."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnxedge.runtime import Predictor
from onnxedge.runtime import io as oio
from onnxedge.runtime import score as score_mod
from onnxedge.runtime.atomic import TEMP_SUFFIX
from onnxedge.runtime.errors import DataError, InputShapeError, OutputExistsError
from onnxedge.runtime.io import InputBatch, columns_to_numpy
from onnxedge.runtime.score import (
    OUTPUT_OVERFLOW,
    REJECTED_COLUMNS,
    BadRowError,
    ScoredBatch,
    plan_scoring,
    probability_column_names,
    score_batch,
    score_file,
)
from onnxedge.runtime.tolerances import PROBABILITY_ATOL

from tests.runtime.onnx_models import ModelCase

INPUT_KINDS = ("npy", "csv", "csv.gz", "parquet", "parquet-folder", "jsonl")
OUTPUT_KINDS = ("csv", "csv.gz", "parquet", "jsonl")


# --- writing inputs and reading outputs -------------------------------------------------


def write_input(
    folder: Path,
    kind: str,
    x: np.ndarray,
    names: list[str],
    ids: list[str] | None = None,
    extra: dict[str, list[Any]] | None = None,
) -> Path:
    """``x`` (n, f) float32 as an input file of ``kind``, with an ``id`` column unless NPY."""
    n = x.shape[0]
    ids = ids if ids is not None else [f"row-{i}" for i in range(n)]
    extra = extra or {}
    if kind == "npy":
        path = folder / "in.npy"
        np.save(path, x)
        return path
    columns: dict[str, list[Any]] = {"id": ids}
    columns.update({name: x[:, j].tolist() for j, name in enumerate(names)})
    columns.update(extra)
    if kind in ("csv", "csv.gz"):
        path = folder / f"in.{kind}"
        # repr of the float64 holding a float32 value: parses back to the same float32
        lines = [",".join(columns)]
        lines += [",".join(_cell(columns[c][i]) for c in columns) for i in range(n)]
        text = "\n".join(lines) + "\n"
        if kind == "csv.gz":
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        return path
    if kind == "parquet":
        path = folder / "in.parquet"
        pq.write_table(_arrow(columns, names), path, row_group_size=7)
        return path
    if kind == "parquet-folder":
        path = folder / "parts"
        path.mkdir()
        table = _arrow(columns, names)
        cuts = [0, n // 3, 2 * n // 3, n]
        for k in range(3):
            pq.write_table(table.slice(cuts[k], cuts[k + 1] - cuts[k]), path / f"part-{k}.parquet")
        return path
    assert kind == "jsonl"
    path = folder / "in.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({c: columns[c][i] for c in columns}) + "\n")
    return path


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _arrow(columns: dict[str, list[Any]], names: list[str]) -> pa.Table:
    return pa.table(
        {
            c: pa.array(v, type=pa.float32()) if c in names else pa.array(v)
            for c, v in columns.items()
        }
    )


def read_output(path: Path) -> dict[str, list[Any]]:
    """An output file as column -> values (CSV cells as text)."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
    opener: Any = gzip.open if name.endswith(".gz") else open
    if ".jsonl" in name:
        with opener(path, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        return {k: [r[k] for r in records] for k in records[0]} if records else {}
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return {c: [r[j] for r in rows[1:]] for j, c in enumerate(rows[0])}


def assert_matches_predictor(
    out: dict[str, list[Any]], case: ModelCase, x: np.ndarray, class_names: list[str]
) -> None:
    """Labels equal, class names right, probabilities within PROBABILITY_ATOL, in order."""
    expected = Predictor(case.path).predict(x)
    labels = np.array([int(v) for v in out["label"]])
    np.testing.assert_array_equal(labels, expected.labels)
    assert out["class_name"] == [class_names[k] for k in expected.labels]
    columns = probability_column_names(class_names)
    got = np.array([[float(v) for v in out[c]] for c in columns], dtype=np.float32).T
    np.testing.assert_allclose(got, expected.probabilities, rtol=0, atol=PROBABILITY_ATOL)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


# --- every format in and out ----------------------------------------------------------


@pytest.mark.parametrize("in_kind", INPUT_KINDS)
@pytest.mark.parametrize("out_kind", OUTPUT_KINDS)
def test_every_format_in_and_out(
    tmp_path: Path, multiclass: ModelCase, in_kind: str, out_kind: str
) -> None:
    x = multiclass.rows(37, seed=3)
    source = write_input(tmp_path, in_kind, x, multiclass.feature_names or [])
    output = tmp_path / f"out.{out_kind}"
    id_column = None if in_kind == "npy" else "id"
    summary = score_file(
        multiclass.path, source, output, id_column=id_column, chunk_rows=10, progress=False
    )
    assert (summary.rows_scored, summary.rows_skipped) == (37, 0)
    assert summary.rejected_output is None
    out = read_output(output)
    prob_columns = ["prob_class_0", "prob_class_1", "prob_class_2"]
    expected_columns = ["label", "class_name", *prob_columns]
    if id_column:
        expected_columns.insert(0, "id")
        assert out["id"] == [f"row-{i}" for i in range(37)]  # carried, in input order
    assert list(out) == expected_columns == summary.columns
    assert_matches_predictor(out, multiclass, x, multiclass.class_names or [])
    assert sorted(
        p.name for p in tmp_path.iterdir() if p.is_file() and p.name.startswith("out")
    ) == [output.name]
    assert no_temp_files(tmp_path)


def test_binary_model_writes_both_class_probabilities(tmp_path: Path, binary: ModelCase) -> None:
    x = binary.rows(50, seed=1)
    source = write_input(tmp_path, "parquet", x, binary.feature_names or [])
    score_file(binary.path, source, tmp_path / "o.parquet", progress=False)
    out = read_output(tmp_path / "o.parquet")
    assert list(out) == ["label", "class_name", "prob_negative", "prob_positive"]
    assert_matches_predictor(out, binary, x, ["negative", "positive"])
    positive = np.array(out["prob_positive"], dtype=np.float32)
    np.testing.assert_array_equal(
        np.array(out["label"]), (positive >= binary.threshold).astype(int)
    )


def test_model_without_metadata_uses_numeric_columns_and_index_names(
    tmp_path: Path, plain: ModelCase
) -> None:
    x = plain.rows(20, seed=2)
    ids = [str(1000 + i) for i in range(20)]  # numeric ids: still not a feature
    source = write_input(tmp_path, "csv", x, ["a", "b", "c"], ids=ids, extra={"note": ["n"] * 20})
    summary = score_file(plain.path, source, tmp_path / "o.csv", id_column="id", progress=False)
    assert summary.features == ["a", "b", "c"]
    out = read_output(tmp_path / "o.csv")
    assert list(out) == ["id", "label", "class_name", "prob_0", "prob_1", "prob_2", "prob_3"]
    assert out["id"] == ids
    assert_matches_predictor(out, plain, x, ["0", "1", "2", "3"])


def test_feature_columns_are_found_by_name_in_any_order(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    x = multiclass.rows(25, seed=4)
    names = multiclass.feature_names or []
    shuffled = [names[k] for k in (3, 0, 4, 2, 1)]
    source = tmp_path / "in.csv"
    with open(source, "w") as f:
        f.write("junk," + ",".join(shuffled) + ",id\n")
        for i in range(25):
            cells = [repr(float(x[i, names.index(c)])) for c in shuffled]
            f.write("z," + ",".join(cells) + f",k{i}\n")
    summary = score_file(
        multiclass.path, source, tmp_path / "o.jsonl", id_column="id", progress=False
    )
    assert summary.features == names
    out = read_output(tmp_path / "o.jsonl")
    assert out["id"] == [f"k{i}" for i in range(25)]
    assert_matches_predictor(out, multiclass, x, multiclass.class_names or [])


def test_features_option_picks_and_orders_columns(tmp_path: Path, plain: ModelCase) -> None:
    x = plain.rows(15, seed=5)
    decoy = np.full((15, 1), 99.0, dtype=np.float32)
    # file columns: b, decoy, c, a -- the model wants (a, b, c)
    stacked = np.hstack([x[:, [1]], decoy, x[:, [2]], x[:, [0]]])
    source = write_input(tmp_path, "parquet", stacked, ["b", "decoy", "c", "a"])
    summary = score_file(
        plain.path, source, tmp_path / "o.parquet", features="a, b,c", progress=False
    )
    assert summary.features == ["a", "b", "c"]
    assert_matches_predictor(read_output(tmp_path / "o.parquet"), plain, x, ["0", "1", "2", "3"])


def test_keep_columns_and_no_probabilities(tmp_path: Path, multiclass: ModelCase) -> None:
    x = multiclass.rows(9)
    source = write_input(
        tmp_path,
        "jsonl",
        x,
        multiclass.feature_names or [],
        extra={"site": [f"s{i % 2}" for i in range(9)], "weight": [i * 1.5 for i in range(9)]},
    )
    score_file(
        multiclass.path,
        source,
        tmp_path / "o.csv",
        id_column="id",
        keep_columns=["weight", "site", "id"],
        probabilities=False,
        progress=False,
    )
    out = read_output(tmp_path / "o.csv")
    assert list(out) == ["id", "weight", "site", "label", "class_name"]
    assert out["site"] == [f"s{i % 2}" for i in range(9)]
    assert out["weight"] == [json.dumps(i * 1.5) for i in range(9)]  # JSONL carries text


def test_parquet_keeps_the_type_of_carried_columns(tmp_path: Path, multiclass: ModelCase) -> None:
    x = multiclass.rows(6)
    source = write_input(
        tmp_path, "parquet", x, multiclass.feature_names or [], extra={"n": list(range(6))}
    )
    score_file(multiclass.path, source, tmp_path / "o.parquet", keep_columns="n", progress=False)
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.schema.field("n").type == pa.int64()
    assert table["n"].to_pylist() == list(range(6))


def test_parquet_output_schema(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "csv", multiclass.rows(5), multiclass.feature_names or [])
    score_file(multiclass.path, source, tmp_path / "o.parquet", id_column="id", progress=False)
    schema = pq.read_schema(tmp_path / "o.parquet")
    assert schema.field("id").type == pa.string() and schema.field("id").nullable
    assert schema.field("label").type == pa.int64()
    # the class name is stored as a dictionary of the model's names (it reads back as such)
    assert schema.field("class_name").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("prob_class_0").type == pa.float32()
    computed = ["label", "class_name", "prob_class_0", "prob_class_1", "prob_class_2"]
    assert not any(schema.field(name).nullable for name in computed)


def test_model_as_predictor_or_bytes_gives_the_same_file(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    x = multiclass.rows(30)
    source = write_input(tmp_path, "npy", x, [])
    score_file(multiclass.path, source, tmp_path / "a.csv", progress=False)
    score_file(multiclass.data, source, tmp_path / "b.csv", progress=False)
    score_file(Predictor(multiclass.path), source, tmp_path / "c.csv", progress=False)
    a = (tmp_path / "a.csv").read_bytes()
    assert a == (tmp_path / "b.csv").read_bytes() == (tmp_path / "c.csv").read_bytes()


def test_csv_fields_far_over_128_kib(tmp_path: Path, multiclass: ModelCase) -> None:
    """A long text column the model does not read does not limit the file (issue 13)."""
    x = multiclass.rows(5, seed=8)
    names = list(multiclass.feature_names or [])
    long_name, long_cell = "n" * 200_000, "t" * 200_000
    lines = [",".join(["id", *names, long_name])]
    lines += [
        ",".join([f"r{i}", *map(repr, map(float, row)), long_cell]) for i, row in enumerate(x)
    ]
    source = tmp_path / "long.csv"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.parquet"
    score_file(multiclass.path, source, out, id_column="id", progress=False, features=names)
    assert_matches_predictor(read_output(out), multiclass, x, multiclass.class_names or [])

    # The long cell in a feature column: a located error, quoting the start of it.
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(names) + "\n" + ",".join([long_cell, *["1"] * (len(names) - 1)]) + "\n")
    with pytest.raises(
        BadRowError,
        match=rf"bad\.csv: line 2 \(line 1 is the header\), column "
        rf"'{names[0]}': cannot parse 'ttttt",
    ):
        score_file(multiclass.path, bad, tmp_path / "b.csv", progress=False)

    # 10 MiB without a newline: one header, no rows.
    flat = tmp_path / "flat.csv"
    flat.write_text("x" * (10 << 20))
    with pytest.raises(DataError, match=r"flat\.csv: header only, no data rows$"):
        score_file(multiclass.path, flat, tmp_path / "f.csv", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.csv",
        "flat.csv",
        "long.csv",
        "o.parquet",
    ]


def test_summary_line_and_json(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(12), [])
    summary = score_file(multiclass.path, source, tmp_path / "o.csv", progress=False)
    line = summary.line()
    assert line.startswith("scored 12 rows, skipped 0, in ")
    assert "rows/s) on CPUExecutionProvider -> " in line
    data = json.loads(json.dumps(dataclasses.asdict(summary)))
    assert data["rows_scored"] == 12 and data["provider"] == "CPUExecutionProvider"
    assert data["input_format"] == "npy" and data["output_format"] == "csv"


def test_progress_bar_counts_rows(
    tmp_path: Path, multiclass: ModelCase, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(40), [])
    score_file(multiclass.path, source, tmp_path / "o.csv", progress=True, chunk_rows=8)
    assert "rows" in capsys.readouterr().err
    score_file(multiclass.path, source, tmp_path / "p.csv", progress=False)
    assert capsys.readouterr().err == ""


# --- probability column names ----------------------------------------------------------


def test_probability_column_names_are_safe_and_unique() -> None:
    names = ["cat", "Dog food", "dog-food", "Dog food", "", "élan", "%"]
    assert probability_column_names(names) == (
        "prob_cat",
        "prob_Dog_food",
        "prob_dog_food",
        "prob_Dog_food_3",
        "prob_4",
        "prob_lan",
        "prob_6",
    )


# --- whole-input errors ------------------------------------------------------------------


def test_plan_errors(tmp_path: Path, multiclass: ModelCase, plain: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    names = multiclass.feature_names or []
    with pytest.raises(
        DataError, match=r"in\.csv: missing feature columns 'f4' \(named by the model\)"
    ):
        plan_scoring(predictor, source="in.csv", columns=["id", *names[:4]])
    with pytest.raises(DataError, match=r"missing columns 'key' \(asked by --id-column"):
        plan_scoring(predictor, source="in.csv", columns=names, id_column="key")
    with pytest.raises(DataError, match="output column 'label' would appear twice"):
        plan_scoring(predictor, source="in.csv", columns=[*names, "label"], keep_columns="label")
    with pytest.raises(InputShapeError, match=r"in\.npy: rows have 4 values; model .* expects 5"):
        plan_scoring(predictor, source="in.npy", columns=None, num_columns=4)
    with pytest.raises(InputShapeError, match=r"3 feature columns \(asked by --features\)"):
        plan_scoring(predictor, source="in.csv", columns=names, features="f0,f1,f2")
    with pytest.raises(DataError, match="on_bad_row must be one of fail, skip; got 'drop'"):
        plan_scoring(predictor, source="in.csv", columns=names, on_bad_row="drop")
    with pytest.raises(
        InputShapeError,
        match=r"expects 3 features but the input has 2 numeric columns .* --features",
    ):
        plan_scoring(
            Predictor(plain.path),
            source="in.csv",
            columns=["a", "b", "t"],
            numeric_columns=["a", "b"],
        )


def test_existing_output_is_refused_and_kept(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(5), [])
    target = tmp_path / "o.csv"
    target.write_text("keep me")
    with pytest.raises(OutputExistsError):
        score_file(multiclass.path, source, target, progress=False)
    assert target.read_text() == "keep me"
    score_file(multiclass.path, source, target, overwrite=True, progress=False)
    assert len(read_output(target)["label"]) == 5


# --- bad rows ------------------------------------------------------------------------------


BAD_CSV = (
    "id,f0,f1,f2,f3,f4\n"
    "a,1,2,3,4,5\n"  # line 2, row 0: good
    "b,1,x7,3,4,5\n"  # line 3, row 1: non-numeric
    "c,1,2,,4,5\n"  # line 4, row 2: empty
    "d,1,2,3,nan,5\n"  # line 5, row 3: NaN
    "e,-inf,2,3,4,5\n"  # line 6, row 4: -Inf
    "f,1,2,3\n"  # line 7, row 5: wrong field count
    "g,1,2,3,4,1e300\n"  # line 8, row 6: beyond float32
    "h,5,4,3,2,1\n"  # line 9, row 7: good
)


@pytest.mark.parametrize("chunk_rows", [3, 100])
def test_skip_policy_accounts_for_every_row(
    tmp_path: Path, multiclass: ModelCase, chunk_rows: int
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(BAD_CSV)
    summary = score_file(
        multiclass.path,
        source,
        tmp_path / "o.csv",
        id_column="id",
        on_bad_row="skip",
        chunk_rows=chunk_rows,
        progress=False,
    )
    assert (summary.rows_scored, summary.rows_skipped) == (2, 6)
    assert summary.rejected_output == str(tmp_path / "o.rejected.csv")
    out = read_output(tmp_path / "o.csv")
    assert out["id"] == ["a", "h"]
    good = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], dtype=np.float32)
    assert_matches_predictor(out, multiclass, good, multiclass.class_names or [])
    rejected = read_output(tmp_path / "o.rejected.csv")
    assert list(rejected) == list(REJECTED_COLUMNS)
    assert rejected["row"] == ["1", "2", "3", "4", "5", "6"]
    assert rejected["line"] == ["3", "4", "5", "6", "7", "8"]
    assert rejected["column"] == ["f1", "f2", "f3", "f0", "", "f4"]
    assert rejected["reason"] == [
        "cannot parse 'x7' as a number",
        "empty cell",
        "NaN (features must be finite)",
        "-Inf (features must be finite)",
        "has 4 fields, the header has 6",
        "'1e300' is beyond float32's range",
    ]
    assert rejected["raw"][4] == "f,1,2,3"
    assert json.loads(rejected["raw"][0])["id"] == "b"
    assert set(rejected["source"]) == {str(source)}


def test_fail_policy_names_the_first_bad_row_and_writes_nothing(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(BAD_CSV)
    with pytest.raises(BadRowError) as caught:
        score_file(multiclass.path, source, tmp_path / "o.parquet", chunk_rows=1, progress=False)
    assert str(caught.value) == (
        f"{source}: line 3 (line 1 is the header), column 'f1': cannot parse 'x7' as a number"
    )
    assert (caught.value.row, caught.value.line, caught.value.column) == (1, 3, "f1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_malformed_row_before_value_errors_in_one_chunk(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n1,2\n1,2,3,4,x\n")
    with pytest.raises(
        BadRowError, match=r"line 3 \(line 1 is the header\): has 2 fields, the header has 5$"
    ):
        score_file(multiclass.path, source, tmp_path / "o.csv", progress=False)


def test_npy_bad_rows_skip_and_fail(tmp_path: Path, multiclass: ModelCase) -> None:
    x = multiclass.rows(10).astype(np.float64)
    x[2, 4] = np.nan
    x[5, 0] = np.inf
    x[7, 1] = 1e39  # finite in float64, not in float32
    source = tmp_path / "in.npy"
    np.save(source, x)
    with pytest.raises(BadRowError, match=r"in\.npy: row 2 \(0-based\), column 4: NaN"):
        score_file(multiclass.path, source, tmp_path / "o.csv", progress=False)
    summary = score_file(
        multiclass.path, source, tmp_path / "o.csv", on_bad_row="skip", chunk_rows=4, progress=False
    )
    assert (summary.rows_scored, summary.rows_skipped) == (7, 3)
    keep = [i for i in range(10) if i not in (2, 5, 7)]
    assert_matches_predictor(
        read_output(tmp_path / "o.csv"),
        multiclass,
        x[keep].astype(np.float32),
        multiclass.class_names or [],
    )
    rejected = read_output(tmp_path / "o.rejected.csv")
    assert rejected["row"] == ["2", "5", "7"] and rejected["line"] == ["", "", ""]
    assert rejected["column"] == ["4", "0", "1"]
    assert rejected["reason"] == [
        "NaN (features must be finite)",
        "Inf (features must be finite)",
        "1e+39 is beyond float32's range",
    ]
    assert json.loads(rejected["raw"][2])[1] == 1e39


def test_parquet_nulls_and_text_cells(tmp_path: Path, plain: ModelCase) -> None:
    table = pa.table(
        {
            "a": pa.array([1.0, None, 3.0, 4.0], pa.float64()),
            "b": pa.array(["1.5", "2", "oops", "4"]),
            "c": pa.array([1, 2, 3, 4], pa.int32()),
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    summary = score_file(
        plain.path,
        source,
        tmp_path / "o.parquet",
        features="a,b,c",
        on_bad_row="skip",
        progress=False,
    )
    assert (summary.rows_scored, summary.rows_skipped) == (2, 2)
    rejected = read_output(tmp_path / "o.rejected.parquet")
    assert rejected["row"] == [1, 2] and rejected["line"] == [None, None]
    assert rejected["reason"] == ["missing value (null)", "cannot parse 'oops' as a number"]
    good = np.array([[1.0, 1.5, 1], [4.0, 4, 4]], dtype=np.float32)
    assert_matches_predictor(read_output(tmp_path / "o.parquet"), plain, good, ["0", "1", "2", "3"])


def test_skip_with_no_bad_rows_writes_an_empty_rejected_file(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    source = write_input(tmp_path, "csv", multiclass.rows(4), multiclass.feature_names or [])
    summary = score_file(
        multiclass.path, source, tmp_path / "o.parquet", on_bad_row="skip", progress=False
    )
    assert summary.rows_skipped == 0
    rejected = pq.read_table(tmp_path / "o.rejected.parquet")
    assert rejected.num_rows == 0 and rejected.column_names == list(REJECTED_COLUMNS)


def test_every_row_bad_still_writes_both_files(tmp_path: Path, multiclass: ModelCase) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": "x"}\n{"f0": 1}\nnope\n')
    summary = score_file(
        multiclass.path, source, tmp_path / "o.jsonl", on_bad_row="skip", progress=False
    )
    assert (summary.rows_scored, summary.rows_skipped) == (0, 3)
    assert (tmp_path / "o.jsonl").read_text() == ""
    reasons = [
        json.loads(line)["reason"]
        for line in (tmp_path / "o.rejected.jsonl").read_text().splitlines()
    ]
    assert reasons[0] == "cannot parse 'x' as a number"
    assert reasons[1] == "missing column 'f1'"
    assert reasons[2].startswith("invalid JSON (")


def test_an_integer_beyond_every_float_is_a_located_bad_row(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    source = tmp_path / "in.jsonl"
    big = 10**400  # JSON allows it; float() overflows
    source.write_text(
        '{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": 5}\n'
        f'{{"f0": 1, "f1": 2, "f2": {big}, "f3": 4, "f4": 5}}\n'
    )
    with pytest.raises(BadRowError) as caught:
        score_file(multiclass.path, source, tmp_path / "o.csv", progress=False)
    assert str(caught.value) == (
        f"{source}: line 2, column 'f2': {oio.quote_value(big)} is beyond float32's range"
    )
    summary = score_file(
        multiclass.path, source, tmp_path / "o.csv", on_bad_row="skip", progress=False
    )
    assert (summary.rows_scored, summary.rows_skipped) == (1, 1)


# --- interruption and streaming ----------------------------------------------------------


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_interruption_mid_stream_leaves_no_output(
    tmp_path: Path,
    multiclass: ModelCase,
    monkeypatch: pytest.MonkeyPatch,
    failure: type[BaseException],
) -> None:
    source = write_input(tmp_path, "csv", multiclass.rows(200), multiclass.feature_names or [])
    target = tmp_path / "o.parquet"
    target.write_bytes(b"yesterday's scores")
    calls = []
    real = score_mod.score_batch

    def failing(predictor: Predictor, batch: InputBatch, plan: Any) -> ScoredBatch:
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise failure("stop")
        return real(predictor, batch, plan)

    monkeypatch.setattr(score_mod, "score_batch", failing)
    with pytest.raises(failure):
        score_file(
            multiclass.path,
            source,
            target,
            overwrite=True,
            on_bad_row="skip",
            chunk_rows=20,
            progress=False,
        )
    assert calls == [20, 20, 20]  # two chunks were written to the temp file before
    assert target.read_bytes() == b"yesterday's scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "o.parquet"]


@pytest.mark.parametrize("out_kind", ["csv", "parquet", "jsonl"])
def test_a_failing_write_mid_stream_is_one_error_and_no_output(
    tmp_path: Path, multiclass: ModelCase, monkeypatch: pytest.MonkeyPatch, out_kind: str
) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(100), [])
    writes = []
    real = oio.AtomicOutput.write

    def disk_full(self: oio.AtomicOutput, columns: Any) -> None:
        writes.append(len(writes))
        if len(writes) == 3:
            raise OSError(28, "No space left on device")  # as the underlying writer would
        real(self, columns)

    monkeypatch.setattr(oio.AtomicOutput, "write", disk_full)
    target = tmp_path / f"o.{out_kind}"
    with pytest.raises(OSError, match="No space left on device"):
        score_file(multiclass.path, source, target, chunk_rows=10, progress=False)
    assert len(writes) == 3  # the error stopped the run at the next chunk or at the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_os_errors_from_writers_become_data_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "o.csv"
    with oio.AtomicOutput(target, "csv") as out:

        def full(columns: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(out, "_put", full)
        with pytest.raises(DataError, match=rf"^cannot write {target}: No space left on device$"):
            out.write({"a": np.arange(3)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("in_kind", INPUT_KINDS)
def test_scoring_streams_chunk_by_chunk(
    tmp_path: Path, multiclass: ModelCase, monkeypatch: pytest.MonkeyPatch, in_kind: str
) -> None:
    n, chunk = 3000, 128
    x = multiclass.rows(n, seed=9)
    source = write_input(tmp_path, in_kind, x, multiclass.feature_names or [])
    sizes: list[int] = []
    real = score_mod.score_batch

    def counting(predictor: Predictor, batch: InputBatch, plan: Any) -> ScoredBatch:
        sizes.append(batch.num_rows)
        return real(predictor, batch, plan)

    monkeypatch.setattr(score_mod, "score_batch", counting)
    if in_kind in ("csv", "csv.gz", "jsonl"):
        monkeypatch.setattr(oio, "DEFAULT_BLOCK_BYTES", 8192)
    score_file(multiclass.path, source, tmp_path / "o.parquet", chunk_rows=chunk, progress=False)
    assert sum(sizes) == n
    assert max(sizes) <= chunk  # never more than one chunk of the input at a time
    assert len(sizes) >= math.ceil(n / chunk)
    out = read_output(tmp_path / "o.parquet")
    assert_matches_predictor(out, multiclass, x, multiclass.class_names or [])


# --- the per-batch function, as another engine calls it ----------------------------------


def test_score_batch_on_engine_batches(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path, nonfinite="allow")
    names = multiclass.feature_names or []
    plan = plan_scoring(predictor, source="shard", columns=["id", *names], id_column="id")
    x = multiclass.rows(12)
    numpy_columns = {
        "id": np.arange(12),
        **{c: x[:, j].astype(np.float64) for j, c in enumerate(names)},
    }
    arrow_table = pa.table(numpy_columns)
    expected = predictor.predict(x)
    for columns in (numpy_columns, {c: arrow_table.column(c) for c in arrow_table.column_names}):
        result = score_batch(predictor, InputBatch(source="shard", columns=columns), plan)
        assert (result.num_scored, result.num_rejected, result.rejected) == (12, 0, None)
        out = columns_to_numpy(result.columns)
        assert list(out) == list(plan.output_columns)
        np.testing.assert_array_equal(out["id"], np.arange(12))
        np.testing.assert_array_equal(out["label"], expected.labels)
        assert out["class_name"].tolist() == [plan.class_names[k] for k in expected.labels]
        got = np.stack([out[c] for c in plan.probability_columns], axis=1)
        np.testing.assert_allclose(got, expected.probabilities, rtol=0, atol=PROBABILITY_ATOL)
    numpy_columns["f2"][5] = np.nan
    with pytest.raises(
        BadRowError, match=r"^shard: row 5 of the batch \(0-based\), column 'f2': NaN"
    ):
        score_batch(predictor, InputBatch(source="shard", columns=numpy_columns), plan)


_EXTREMES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 3.4028234663852886e38, 3.5e38, -3.5e38, 1e-45, 5e-324]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cells=st.lists(st.lists(_EXTREMES, min_size=5, max_size=5), min_size=1, max_size=8))
def test_extreme_values_are_scored_or_rejected_never_both(
    multiclass: ModelCase, cells: list[list[float]]
) -> None:
    predictor = Predictor(multiclass.path, nonfinite="allow")
    plan = plan_scoring(predictor, source="m", columns=None, num_columns=5, on_bad_row="skip")
    matrix = np.array(cells, dtype=np.float64)
    batch = InputBatch(source="m", matrix=matrix, rows=np.arange(len(cells), dtype=np.int64))
    result = score_batch(predictor, batch, plan)
    with np.errstate(over="ignore"):
        as_float32 = matrix.astype(np.float32)
    finite = np.isfinite(as_float32).all(axis=1)
    # A finite row is scored unless the model's own float32 arithmetic overflows on it
    # (then its output is no probability and the row is rejected, never written).
    with np.errstate(over="ignore", invalid="ignore"):
        out = predictor.predict(np.where(finite[:, None], as_float32, 0)).probabilities
    scorable = finite & np.isfinite(out).all(axis=1)
    assert result.num_scored == int(scorable.sum())
    assert result.num_scored + result.num_rejected == len(cells)
    if result.rejected is not None:
        assert result.rejected["row"].tolist() == np.flatnonzero(~scorable).tolist()
        for row, reason in zip(result.rejected["row"], result.rejected["reason"], strict=True):
            if finite[row]:
                assert reason == OUTPUT_OVERFLOW
            else:
                assert reason.startswith(("NaN", "Inf", "-Inf")) or reason.endswith(
                    "beyond float32's range"
                )
    finite = scorable
    if result.num_scored:
        expected = predictor.predict(as_float32[finite])
        np.testing.assert_array_equal(result.columns["label"], expected.labels)
        got = np.stack([result.columns[c] for c in plan.probability_columns], axis=1)
        np.testing.assert_allclose(got, expected.probabilities, rtol=0, atol=PROBABILITY_ATOL)


def test_the_scoring_predictor_does_not_spin(multiclass: ModelCase) -> None:
    # onnxruntime's spinning workers would hold the cores the writer thread needs.
    predictor = score_mod.scoring_predictor(multiclass.path, provider="cpu", threads=1)
    assert predictor.session_config == {"session.intra_op.allow_spinning": "0"}
    assert predictor.nonfinite == "allow"  # score_batch checks the rows itself


def test_gzip_input_closes_its_file(multiclass, tmp_path) -> None:
    """A .csv.gz input must not leave its raw file handle for the garbage collector."""
    import gzip
    import subprocess
    import sys

    names = multiclass.feature_names
    rows = multiclass.rows(20)
    text = ",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    source = tmp_path / "rows.csv.gz"
    source.write_bytes(gzip.compress(text.encode()))
    code = (
        "from onnxedge.runtime.score import score_file\n"
        f"s = score_file({str(multiclass.path)!r}, {str(source)!r}, "
        f"{str(tmp_path / 'out.csv')!r}, progress=False)\n"
        "print(s.rows_scored)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "20"
    assert "ResourceWarning" not in done.stderr, done.stderr


def _write_idx(path: Path, images: np.ndarray) -> Path:
    """IDX images by the format's own header (uint8, big-endian dims), gzipped for .gz."""
    header = bytes([0, 0, 0x08, images.ndim]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    payload = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


@pytest.mark.parametrize("name", ["x.idx3-ubyte", "x.idx3-ubyte.gz"])
def test_image_rows_from_npy_and_idx_score_like_flat_rows(
    tmp_path: Path, multiclass: ModelCase, name: str
) -> None:
    """(n, 1, f) images, from NPY or MNIST IDX, score as their flattened (n, f) rows."""
    images = np.random.default_rng(3).integers(0, 255, (9, 1, multiclass.num_features))
    flat = images.reshape(9, -1).astype(np.float32)
    np.save(tmp_path / "img.npy", images.astype(np.float32))
    score_file(multiclass.path, tmp_path / "img.npy", tmp_path / "a.parquet", progress=False)
    idx = _write_idx(tmp_path / name, images)
    score_file(multiclass.path, idx, tmp_path / "b.parquet", progress=False, input_format="idx")
    for out in ("a.parquet", "b.parquet"):
        assert_matches_predictor(
            read_output(tmp_path / out), multiclass, flat, multiclass.class_names or []
        )


def test_image_rows_of_another_shape_are_refused(tmp_path: Path, multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    predictor.input_shape = (1, multiclass.num_features)  # as an image model's contract says
    source = tmp_path / "img.npy"
    np.save(source, np.ones((4, multiclass.num_features, 1), np.float32))
    with pytest.raises(InputShapeError) as info:
        score_file(predictor, source, tmp_path / "o.csv", progress=False)
    assert str(info.value) == (
        f"{source}: rows of shape (5, 1); model {multiclass.path} expects rows of shape "
        "(1, 5) (or 5 values each)"
    )


@pytest.mark.parametrize(
    ("value", "finite"),
    [(1.0, True), (3e38, True), (-3e38, True), (np.nan, False), (np.inf, False), (-np.inf, False)],
)
def test_finiteness_check_fast_path_agrees_with_isfinite(value: float, finite: bool) -> None:
    # The dot-product pass overflows on large finite values; the exact check must clear them.
    from onnxedge.runtime.score import _all_finite

    matrix = np.ones((7, 5), dtype=np.float32)
    matrix[3, 2] = value
    assert _all_finite(matrix) is finite
    assert _all_finite(matrix) == bool(np.isfinite(matrix).all())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
        ({"batch_size": True}, "batch_size must be an integer >= 1; got True"),
        ({"workers": 0}, "workers must be an integer >= 1; got 0"),
        ({"threads_per_worker": 1.5}, "threads_per_worker must be an integer >= 1; got 1.5"),
    ],
)
def test_check_options_names_the_bad_option(options: dict[str, Any], message: str) -> None:
    # One rule for every engine's counts: the local engine's and Ray's.
    counts = {"batch_size": 8, **options}
    with pytest.raises(DataError) as info:
        score_mod.check_options("fail", **counts)
    assert str(info.value) == message
    score_mod.check_options("fail", 8, workers=None)  # None: not given, accepted


def test_bad_chunk_rows_is_refused_before_any_output(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(4), [])
    with pytest.raises(DataError, match=r"^chunk_rows must be an integer >= 1; got 0$"):
        score_file(multiclass.path, source, tmp_path / "o.csv", chunk_rows=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_a_failing_flush_is_a_data_error_and_no_output(
    tmp_path: Path, multiclass: ModelCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Delayed allocation can report a full disk only when the data are flushed.
    source = write_input(tmp_path, "npy", multiclass.rows(30), [])
    target = tmp_path / "o.parquet"

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(score_mod.os, "fdatasync", full)
    with pytest.raises(DataError, match=rf"^cannot write {target}: No space left on device$"):
        score_file(multiclass.path, source, target, chunk_rows=10, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]
