"""Streaming readers and atomic writers: formats, locations, chunking, atomicity."""

from __future__ import annotations

import gzip
import json
import os
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnxedge.runtime.errors import DataError, InputShapeError, OutputExistsError
from onnxedge.runtime.io import (
    AtomicOutput,
    CategoricalColumn,
    InputBatch,
    check_output_path,
    input_format_of,
    open_input,
    output_format_of,
    rejected_path_for,
)


def _text(values: Any) -> list[Any]:
    """A column of a batch as Python values (numpy or pyarrow)."""
    if isinstance(values, np.ndarray):
        return list(values.tolist())
    return list(values.to_pylist())


def _collect(batches: list[InputBatch]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": [], "lines": [], "malformed": [], "columns": {}}
    for batch in batches:
        out["rows"] += [] if batch.rows is None else batch.rows.tolist()
        out["lines"] += [] if batch.lines is None else batch.lines.tolist()
        out["malformed"] += [(m.row, m.line, m.reason, m.raw) for m in batch.malformed]
        for name, values in batch.columns.items():
            out["columns"].setdefault(name, []).extend(_text(values))
    return out


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- formats and paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.npy", "npy"),
        ("a.csv", "csv"),
        ("a.CSV.GZ", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.jsonl.gz", "jsonl"),
    ],
)
def test_input_format_from_name(name: str, fmt: str) -> None:
    assert input_format_of(name) == fmt


def test_input_format_of_folder_is_parquet(tmp_path: Path) -> None:
    assert input_format_of(tmp_path) == "parquet"


def test_unknown_input_name_asks_for_input_format() -> None:
    with pytest.raises(
        DataError, match=r"rows\.txt: cannot tell the input format .*--input-format"
    ):
        input_format_of("rows.txt")
    assert input_format_of("rows.txt", "CSV") == "csv"
    with pytest.raises(
        DataError, match="unknown input format 'xls'; known: npy, csv, parquet, jsonl"
    ):
        input_format_of("rows.txt", "xls")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("o.csv", "csv"), ("o.csv.gz", "csv"), ("o.parquet", "parquet"), ("o.jsonl", "jsonl")],
)
def test_output_format_from_name(name: str, fmt: str) -> None:
    assert output_format_of(name) == fmt


def test_unknown_output_name_asks_for_output_format() -> None:
    with pytest.raises(DataError, match=r"o\.npy: cannot tell the output format .*--output-format"):
        output_format_of("o.npy")
    assert output_format_of("o.npy", "jsonl") == "jsonl"


@pytest.mark.parametrize(
    ("output", "fmt", "rejected"),
    [
        ("scores.csv", "csv", "scores.rejected.csv"),
        ("scores.csv.gz", "csv", "scores.rejected.csv.gz"),
        ("scores.parquet", "parquet", "scores.rejected.parquet"),
        ("scores.jsonl", "jsonl", "scores.rejected.jsonl"),
        ("scores.out", "csv", "scores.out.rejected.csv"),
    ],
)
def test_rejected_path_keeps_the_ending(output: str, fmt: str, rejected: str) -> None:
    assert rejected_path_for(Path("d") / output, fmt) == Path("d") / rejected


def test_check_output_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"output folder '.*missing' does not exist"):
        check_output_path(tmp_path / "missing" / "o.csv", overwrite=True)
    with pytest.raises(DataError, match="is a folder"):
        check_output_path(tmp_path, overwrite=True)
    existing = tmp_path / "o.csv"
    existing.write_text("old")
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        check_output_path(existing, overwrite=False)
    assert check_output_path(existing, overwrite=True) == existing
    with pytest.raises(DataError, match="is the input file"):
        check_output_path(existing, overwrite=True, inputs=[existing])


# --- NPY -----------------------------------------------------------------------------


def test_npy_chunks_are_views_of_the_map_in_order(tmp_path: Path) -> None:
    data = np.arange(103 * 4, dtype=np.float32).reshape(103, 4)
    np.save(tmp_path / "x.npy", data)
    with open_input(tmp_path / "x.npy") as reader:
        assert (reader.total_rows, reader.num_columns, reader.columns) == (103, 4, None)
        batches = list(reader.batches(batch_rows=25))
    assert [b.num_rows for b in batches] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate([b.matrix for b in batches]), data)  # type: ignore[misc]
    assert np.concatenate([b.rows for b in batches]).tolist() == list(range(103))  # type: ignore[misc]
    assert all(b.lines is None and b.location == "row" for b in batches)


def test_npy_reader_holds_one_chunk_not_the_file(tmp_path: Path) -> None:
    # 32 MiB of float32 read 4,096 rows (1 MiB) at a time: the chunks are views of
    # the memory map, so Python-side allocations stay far below the file size.
    rows, cols = 131072, 64
    array = np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, cols)
    )
    array[:] = 1.5
    array.flush()
    del array
    size = (tmp_path / "big.npy").stat().st_size
    tracemalloc.start()
    try:
        seen = 0
        total = 0.0
        with open_input(tmp_path / "big.npy") as reader:
            for batch in reader.batches(batch_rows=4096):
                assert batch.matrix is not None and batch.matrix.shape[0] <= 4096
                total += float(batch.matrix[:, 0].sum())
                seen += batch.num_rows
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == rows and total == 1.5 * rows
    assert peak < size / 16


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), r"empty file \(no NPY header\)"),
        (lambda p: p.write_text("a,b\n1,2\n"), "not an NPY file"),
        (lambda p: np.save(p, np.zeros(5, np.float32)), r"shape \(5,\); expected 2-D"),
        (lambda p: np.save(p, np.zeros((0, 3), np.float32)), r"no rows \(shape \(0, 3\)\)"),
        (
            lambda p: np.save(p, np.array([["a", "b"]])),
            "has dtype <U1; features must be real numbers",
        ),
        (
            lambda p: np.save(p, np.array([[1, None]], dtype=object), allow_pickle=True),
            "not a readable NPY",
        ),
    ],
)
def test_npy_whole_file_errors(tmp_path: Path, make: Callable[[Path], Any], message: str) -> None:
    path = tmp_path / "x.npy"
    make(path)
    error = InputShapeError if "expected 2-D" in message else DataError
    with pytest.raises(error, match=message):
        open_input(path)


def test_truncated_npy_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((100, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"x\.npy: not a readable NPY file"):
        open_input(path)


def test_npy_integers_and_fortran_order_read_correctly(tmp_path: Path) -> None:
    data = np.asfortranarray(np.arange(30, dtype=np.int32).reshape(10, 3))
    np.save(tmp_path / "f.npy", data)
    with open_input(tmp_path / "f.npy") as reader:
        parts = [b.matrix for b in reader.batches(batch_rows=4)]
    np.testing.assert_array_equal(np.concatenate(parts), data)  # type: ignore[arg-type]


# --- CSV -----------------------------------------------------------------------------


def test_csv_columns_rows_and_lines(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "a.csv",
        ["id", "f0", "f1", "note"],
        [[f"r{i}", i, i * 0.5, "x"] for i in range(7)],
    )
    with open_input(path) as reader:
        assert reader.columns == ["id", "f0", "f1", "note"]
        assert reader.numeric_columns == ["f0", "f1"]
        got = _collect(list(reader.batches(features=["f1", "f0"], carry=["id"], batch_rows=3)))
    assert got["rows"] == list(range(7))
    assert got["lines"] == list(range(2, 9))
    assert got["columns"]["id"] == [f"r{i}" for i in range(7)]
    assert [float(v) for v in got["columns"]["f1"]] == [i * 0.5 for i in range(7)]
    assert "note" not in got["columns"]


def test_csv_chunks_stay_small_on_a_file_far_larger_than_one(tmp_path: Path) -> None:
    n = 20000
    path = _write_csv(tmp_path / "big.csv", ["a", "b"], [[i, i + 1] for i in range(n)])
    with open_input(path, block_bytes=4096) as reader:
        sizes = []
        lines: list[int] = []
        for batch in reader.batches(features=["a", "b"], carry=[], batch_rows=100):
            sizes.append(batch.num_rows)
            lines += batch.lines.tolist()  # type: ignore[union-attr]
    assert sum(sizes) == n and max(sizes) <= 100
    assert len(sizes) >= n // 100  # many chunks, never the whole file at once
    assert lines == list(range(2, n + 2))


def test_csv_blank_lines_quoted_newlines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(
        b'\xef\xbb\xbfid,f0,note\r\na,1,"plain"\r\n\r\nb,2,"two\r\nlines"\r\nc,3,"x"\r\n'
    )
    with open_input(path) as reader:
        assert reader.columns == ["id", "f0", "note"]
        got = _collect(list(reader.batches(features=["f0"], carry=["id", "note"], batch_rows=10)))
    assert got["columns"]["id"] == ["a", "b", "c"]
    assert got["columns"]["note"] == ["plain", "two\r\nlines", "x"]
    assert got["rows"] == [0, 1, 2]
    assert got["lines"] == [2, 4, 6]


def test_csv_wrong_field_count_is_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,f0,f1\na,1,2\nb,3\nc,4,5,6\nd,7,8\n")
    with open_input(path) as reader:
        got = _collect(list(reader.batches(features=["f0", "f1"], carry=["id"], batch_rows=10)))
    assert got["columns"]["id"] == ["a", "d"]
    assert got["rows"] == [0, 3] and got["lines"] == [2, 5]
    assert got["malformed"] == [
        (1, 3, "has 2 fields, the header has 3", "b,3"),
        (2, 4, "has 4 fields, the header has 3", "c,4,5,6"),
    ]


def test_csv_gz_reads_like_csv(tmp_path: Path) -> None:
    path = tmp_path / "a.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("f0,f1\n" + "".join(f"{i},{-i}\n" for i in range(50)))
    with open_input(path, block_bytes=64) as reader:
        got = _collect(list(reader.batches(features=["f0", "f1"], carry=[], batch_rows=7)))
    assert [float(v) for v in got["columns"]["f1"]] == [-float(i) for i in range(50)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty file \(no header row\)"),
        (b"\n\n", r"empty file \(no header row\)"),
        (b"f0,f1\n", "header only, no data rows"),
        (b"f0,f1\n\n\n", "header only, no data rows"),
        (b"f0,f0\n1,2\n", "column name 'f0' appears twice"),
        (b"f0,f1\n1,2\n3,\xff\n", r"line 3: not UTF-8 text"),
    ],
)
def test_csv_whole_file_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"e\.csv: {message}"), open_input(path) as reader:
        for _ in reader.batches(features=["f0", "f1"], carry=[], batch_rows=10):
            pass


def test_csv_unterminated_quote_stops_instead_of_buffering(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('f0,note\n1,"open\n' + "2,x\n" * 2000)
    with (
        pytest.raises(DataError, match=r"q\.csv: line 2: a quoted field is never closed"),
        open_input(path, block_bytes=256) as reader,
    ):
        list(reader.batches(features=["f0"], carry=[], batch_rows=10))


@pytest.mark.parametrize("rows", [1, 200])
def test_csv_header_longer_than_the_block_is_refused(tmp_path: Path, rows: int) -> None:
    # The block is the longest record a CSV may hold, the header included (small file or not).
    path = tmp_path / "h.csv"
    path.write_text(",".join(f"col{i}" for i in range(40)) + "\n" + ("1," * 39 + "1\n") * rows)
    with pytest.raises(DataError) as info:
        open_input(path, block_bytes=64)
    assert str(info.value) == f"{path}: line 1 or after: a row longer than the read block"


@pytest.mark.parametrize("block_bytes", [64, 1024, 1 << 20])
@pytest.mark.parametrize("keep", [0.03, 0.5, 0.97])
def test_corrupt_gzip_is_a_data_error(tmp_path: Path, block_bytes: int, keep: float) -> None:
    # Wherever the stream ends (in the first block or far on), the read error is the one
    # message: the reader keeps no byte map of its own that pyarrow's reads could outrun.
    path = tmp_path / "c.csv.gz"
    data = gzip.compress(b"f0\n" + b"1\n" * 100000)
    path.write_bytes(data[: int(len(data) * keep)])
    with (
        pytest.raises(
            DataError,
            match=r"c\.csv\.gz: cannot read: Compressed file ended before the end-of-stream marker",
        ),
        open_input(path, block_bytes=block_bytes) as reader,
    ):
        list(reader.batches(features=["f0"], carry=[], batch_rows=1000))


def test_csv_quote_open_to_the_end_of_a_file_read_in_one_block(tmp_path: Path) -> None:
    # pyarrow takes such a field to the end of the file as one value; the quote count
    # catches it.
    path = tmp_path / "q.csv"
    path.write_text('f0,note\n1,x\n2,"open\n3,y\n4,z\n')
    with (
        pytest.raises(DataError, match=r"q\.csv: line 3: a quoted field is never closed"),
        open_input(path) as reader,
    ):
        list(reader.batches(features=["f0"], carry=[], batch_rows=10))


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_csv_blank_lines_are_skipped(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(newline.join(["f0,f1", "1,2", "", "", "3,4", ""]).encode())
    with open_input(path) as reader:
        got = _collect(list(reader.batches(features=["f0", "f1"], carry=[], batch_rows=10)))
    assert got["rows"] == [0, 1] and got["lines"] == [2, 5]
    assert got["columns"]["f1"] == ["2", "4"]


def test_csv_a_row_of_empty_cells_is_refused_not_dropped(tmp_path: Path) -> None:
    # pyarrow reads a blank line and ",," alike; dropping ",," would shift every later
    # prediction against its input row.
    path = tmp_path / "e.csv"
    path.write_text("f0,f1\n1,2\n\n,\n3,4\n")
    with open_input(path) as reader, pytest.raises(DataError) as info:
        list(reader.batches(features=["f0", "f1"], carry=[], batch_rows=10))
    assert str(info.value) == (
        f"{path}: line 4 or before: a row whose every cell is empty "
        "(blank lines are skipped; a row of empty cells is not)"
    )


def _expected_csv(text: str) -> dict[str, Any]:
    """Rows, lines and malformed rows by the stdlib csv module (an independent parser)."""
    import csv
    import io as stdlib_io

    reader = csv.reader(stdlib_io.StringIO(text, newline=""))
    header = next(reader)
    out: dict[str, Any] = {"rows": [], "lines": [], "malformed": [], "ids": []}
    row, end = 0, reader.line_num
    for record in reader:
        start, end = end + 1, reader.line_num
        if all(cell == "" for cell in record):
            continue  # a blank line
        if len(record) != len(header):
            out["malformed"].append((row, start))
        else:
            out["rows"].append(row)
            out["lines"].append(start)
            out["ids"].append(record[0])
        row += 1
    return out


@pytest.mark.parametrize("block_bytes", [64, 512, 1 << 20])
def test_csv_lines_match_an_independent_parser(tmp_path: Path, block_bytes: int) -> None:
    rng = np.random.default_rng(0)
    lines = ["id,f0,note"]
    for i in range(400):
        kind = rng.integers(0, 6)
        note = {0: '"two\nlines"', 1: '"a, ""quoted""\n\nvalue"', 2: "plain"}.get(int(kind), "x")
        if kind == 3:
            lines.append("")  # blank line
        if kind == 4:
            lines.append(f"r{i},{i}")  # a field short
        else:
            lines.append(f"r{i},{i},{note}")
    text = "\n".join(lines) + "\n"
    path = tmp_path / "l.csv"
    path.write_text(text, newline="")
    with open_input(path, block_bytes=block_bytes) as reader:
        got = _collect(list(reader.batches(features=["f0"], carry=["id"], batch_rows=7)))
    expected = _expected_csv(text)
    assert got["rows"] == expected["rows"] and got["lines"] == expected["lines"]
    assert got["columns"]["id"] == expected["ids"]
    assert [(row, line) for row, line, _, _ in got["malformed"]] == expected["malformed"]


# --- JSONL ---------------------------------------------------------------------------


def test_jsonl_records_bad_lines_and_carried_text(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"id": 7, "f0": 0.5, "f1": 2}\n'
        "\n"
        '{"id": "x", "f0": "abc"}\n'
        "not json\n"
        "[1, 2]\n"
        '{"id": null, "f0": 1, "f1": null, "extra": true}\n'
    )
    with open_input(path) as reader:
        assert reader.columns == ["id", "f0", "f1"]
        assert reader.numeric_columns == ["id", "f0", "f1"]
        got = _collect(list(reader.batches(features=["f0", "f1"], carry=["id"], batch_rows=2)))
    assert got["columns"]["id"] == ["7", None]
    assert got["columns"]["f1"] == [2, None]
    assert got["rows"] == [0, 4] and got["lines"] == [1, 6]
    reasons = [(row, line, reason) for row, line, reason, _ in got["malformed"]]
    assert reasons[0] == (1, 3, "missing column 'f1'")
    assert reasons[1][:2] == (2, 4) and reasons[1][2].startswith("invalid JSON (")
    assert reasons[2] == (3, 5, "not a JSON object (found list)")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"empty file \(no JSON records\)"),
        ("\n \n", r"empty file \(no JSON records\)"),
        ("{oops\n", r"line 1: invalid JSON .*the first record names the columns"),
        ("\n[1]\n", r"line 2: not a JSON object \(found list\)"),
    ],
)
def test_jsonl_whole_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"e\.jsonl: {message}"):
        open_input(path)


# --- Parquet -------------------------------------------------------------------------


def _parquet(path: Path, start: int, n: int, **extra: Any) -> Path:
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(start, start + n)],
            "f0": np.arange(start, start + n, dtype=np.float64),
            **extra,
        }
    )
    pq.write_table(table, path, row_group_size=4)
    return path


def test_parquet_folder_in_name_order_with_rows_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    _parquet(folder / "part-1.parquet", 10, 5)
    _parquet(folder / "part-0.parquet", 0, 10)
    (folder / "_SUCCESS").write_text("")
    # Spark / Ray leftovers are not data (Ray Data skips them too).
    (folder / "_temporary").mkdir()
    _parquet(folder / "_temporary" / "part-9.parquet", 100, 4)
    _parquet(folder / ".part-2.parquet", 200, 4)
    with open_input(folder) as reader:
        assert reader.total_rows == 15
        assert reader.numeric_columns == ["f0"]
        batches = list(reader.batches(features=["f0"], carry=["id"], batch_rows=3))
    assert max(b.num_rows for b in batches) <= 3
    got = _collect(batches)
    assert got["columns"]["id"] == [f"r{i}" for i in range(15)]
    assert got["rows"] == list(range(10)) + list(range(5))
    assert {b.source for b in batches} == {
        str(folder / "part-0.parquet"),
        str(folder / "part-1.parquet"),
    }


def test_parquet_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"folder holds no \.parquet files"):
        open_input(empty)
    corrupt = tmp_path / "c.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match=r"c\.parquet: not a readable Parquet file"):
        open_input(corrupt)
    zero = tmp_path / "z.parquet"
    pq.write_table(pa.table({"f0": pa.array([], pa.float64())}), zero)
    with pytest.raises(DataError, match=r"z\.parquet: no data rows \(columns: 'f0'\)"):
        open_input(zero)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _parquet(mixed / "a.parquet", 0, 3)
    pq.write_table(pa.table({"id": ["x"]}), mixed / "b.parquet")
    with (
        pytest.raises(DataError, match=r"b\.parquet: missing columns 'f0'"),
        open_input(mixed) as reader,
    ):
        list(reader.batches(features=["f0"], carry=["id"], batch_rows=10))


def test_parquet_truncated_mid_file_names_the_file(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", 0, 1000)
    data = path.read_bytes()
    path.write_bytes(data[:100] + data[-(len(data) - 200) :])  # footer intact, pages broken
    with (
        pytest.raises(DataError, match=r"t\.parquet: (cannot read|not a readable)"),
        open_input(path) as reader,
    ):
        list(reader.batches(features=["f0"], carry=["id"], batch_rows=10))


# --- writers -------------------------------------------------------------------------


def _columns(n: int, start: int = 0) -> dict[str, Any]:
    return {
        "id": np.array([f"r{i}" for i in range(start, start + n)], dtype=object),
        "label": np.arange(start, start + n, dtype=np.int64) % 3,
        "class_name": CategoricalColumn(np.arange(start, start + n) % 3, ("a", "b, c", 'd"q')),
        "p": (np.arange(start, start + n, dtype=np.float32) / 7).astype(np.float32),
    }


def _read_back(path: Path, fmt: str) -> dict[str, list[Any]]:
    if fmt == "parquet":
        return {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
    if fmt == "jsonl":
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            records = [json.loads(line) for line in f]
        return {k: [r[k] for r in records] for k in records[0]} if records else {}
    import csv

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        rows = list(csv.reader(f))
    return {name: [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("o.csv", "csv"),
        ("o.csv.gz", "csv"),
        ("o.parquet", "parquet"),
        ("o.jsonl", "jsonl"),
        ("o.jsonl.gz", "jsonl"),
    ],
)
def test_writers_round_trip(tmp_path: Path, name: str, fmt: str) -> None:
    target = tmp_path / name
    with AtomicOutput(target, fmt) as out:
        out.write(_columns(5))
        out.write(_columns(0))  # an empty chunk changes nothing
        out.write(_columns(4, start=5))
        out.finish()
        out.commit()
    got = _read_back(target, fmt)
    assert list(got) == ["id", "label", "class_name", "p"]
    assert got["id"] == [f"r{i}" for i in range(9)]
    assert [int(v) for v in got["label"]] == [i % 3 for i in range(9)]
    assert got["class_name"] == [("a", "b, c", 'd"q')[i % 3] for i in range(9)]
    # float32 written in its shortest round-trip form: parsing gives the same float32
    expected = (np.arange(9, dtype=np.float32) / 7).astype(np.float32)
    np.testing.assert_array_equal(
        np.array([float(v) for v in got["p"]], dtype=np.float32), expected
    )
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_jsonl_floats_in_shortest_form_non_finite_as_null(tmp_path: Path) -> None:
    target = tmp_path / "o.jsonl"
    with AtomicOutput(target, "jsonl") as out:
        out.write(
            {
                "p": np.array([0.1, np.nan, -np.inf], dtype=np.float32),
                "x": np.array([1e300, 2.5, np.nan]),
                "n": np.array(["a", None, "é\n"], dtype=object),
            }
        )
        out.finish()
        out.commit()
    assert target.read_text(encoding="utf-8").splitlines() == [
        '{"p":0.1,"x":1e+300,"n":"a"}',
        '{"p":null,"x":2.5,"n":null}',
        '{"p":null,"x":null,"n":"é\\n"}',
    ]


def test_output_never_written_is_still_a_valid_file(tmp_path: Path) -> None:
    for name, fmt in (("o.parquet", "parquet"), ("o.jsonl.gz", "jsonl"), ("o.csv", "csv")):
        with AtomicOutput(tmp_path / name, fmt) as out:
            out.finish()
            out.commit()
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 0
    assert gzip.decompress((tmp_path / "o.jsonl.gz").read_bytes()) == b""
    assert (tmp_path / "o.csv").read_bytes() == b""


@pytest.mark.parametrize(
    ("name", "fmt"), [("o.csv", "csv"), ("o.parquet", "parquet"), ("o.jsonl", "jsonl")]
)
def test_writer_with_no_rows_still_writes_the_columns(tmp_path: Path, name: str, fmt: str) -> None:
    target = tmp_path / name
    with AtomicOutput(target, fmt, types={"row": "int64"}) as out:
        out.write({"row": np.empty(0, dtype=object), "reason": np.empty(0, dtype=object)})
        out.finish()
        out.commit()
    if fmt == "parquet":
        schema = pq.read_schema(target)
        assert schema.names == ["row", "reason"] and schema.field("row").type == pa.int64()
    elif fmt == "csv":
        assert target.read_text().strip().replace('"', "") == "row,reason"
    else:
        assert target.read_text() == ""


def test_typed_object_columns_with_nulls(tmp_path: Path) -> None:
    target = tmp_path / "r.parquet"
    with AtomicOutput(target, "parquet", types={"line": "int64"}) as out:
        out.write({"line": np.array([None, None], dtype=object)})
        out.write({"line": np.array([3, None], dtype=object)})
        out.finish()
        out.commit()
    table = pq.read_table(target)
    assert table.schema.field("line").type == pa.int64()
    assert table["line"].to_pylist() == [None, None, 3, None]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_failure_leaves_no_temp_and_the_old_file_untouched(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"o.{fmt}"
    target.write_bytes(b"old contents")
    with pytest.raises(KeyboardInterrupt), AtomicOutput(target, fmt) as out:
        out.write(_columns(3))
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_committed_file_has_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "o.csv"
    with AtomicOutput(target, "csv") as out:
        out.write(_columns(2))
        out.finish()
        out.commit()
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
