"""Streaming readers and atomic table writers: the one file layer of score, verify and train.

Readers yield :class:`InputBatch` chunks: NPY through ``numpy.load(mmap_mode="r")``, IDX
through :func:`read_idx`, CSV and Parquet through pyarrow, JSONL line by line with ``json``
(``pyarrow.json`` cannot set a bad line aside). Text formats locate a row by its 1-based
line (a CSV's header is line 1), binary ones by its 0-based row.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import itertools
import json
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.runtime.atomic import Staged, exists_message
from onnxedge.runtime.errors import (
    DataError,
    InputShapeError,
    MissingDependencyError,
    OutputExistsError,
    one_line,
)

INPUT_FORMATS: tuple[str, ...] = ("npy", "csv", "parquet", "jsonl", "idx")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl")

#: CSV bytes pyarrow parses at once: the longest record a CSV may hold.
DEFAULT_BLOCK_BYTES = 8 << 20

# Longest first, so ".csv.gz" wins over ".gz"; messages list them in this order.
_SUFFIXES = (
    ".csv.gz=csv .jsonl.gz=jsonl .ndjson.gz=jsonl .idx3-ubyte.gz=idx .npy=npy .csv=csv "
    ".parquet=parquet .pq=parquet .jsonl=jsonl .ndjson=jsonl .idx3-ubyte=idx"
)
_INPUT_SUFFIXES = tuple(tuple(pair.split("=")) for pair in _SUFFIXES.split())
_OUTPUT_SUFFIXES = tuple(
    (suffix, fmt)
    for suffix, fmt in _INPUT_SUFFIXES
    if fmt in OUTPUT_FORMATS and suffix not in (".jsonl.gz", ".ndjson.gz")
)
_GZIP_MAGIC = b"\x1f\x8b"
#: IDX type byte -> big-endian dtype (the MNIST format stores every number big-endian).
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    code: np.dtype(">" + kind)
    for code, kind in zip((8, 9, 11, 12, 13, 14), ("u1", "i1", "i2", "i4", "f4", "f8"), strict=True)
}
_QUOTE_CHARS = 40
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _require_pyarrow(what: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs pyarrow, which is not installed: pip install 'onnxedge[cpu]'"
        ) from None


def quote_value(value: Any) -> str:
    """``repr`` of a value, cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


# --- formats and paths -------------------------------------------------------------------


def _format_of(path: str | os.PathLike[str], override: str | None, what: str) -> str:
    known, table = (
        (INPUT_FORMATS, _INPUT_SUFFIXES) if what == "input" else (OUTPUT_FORMATS, _OUTPUT_SUFFIXES)
    )
    if override is not None:
        if override.lower() not in known:
            raise DataError(f"unknown {what} format {override!r}; known: {', '.join(known)}")
        return override.lower()
    p = Path(path)
    if what == "input" and p.is_dir():
        return "parquet"
    found = next((fmt for suffix, fmt in table if p.name.lower().endswith(suffix)), None)
    if found is None:
        endings = ", ".join(suffix for suffix, _ in table if not suffix.startswith(".idx"))
        folder = ", or a folder of .parquet files" if what == "input" else ""
        raise DataError(
            f"{p}: cannot tell the {what} format from the name (known endings: {endings}"
            f"{folder}); name it with --{what}-format"
        )
    return found


def input_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The input format: ``override``, else from the name (a folder is Parquet); raises
    DataError for an unknown override or a name that tells none."""
    return _format_of(path, override, "input")


def output_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The output format: ``override``, else from the name; raises DataError for an unknown
    override or a name that tells none."""
    return _format_of(path, override, "output")


def rejected_path_for(output: str | os.PathLike[str], fmt: str) -> Path:
    """Where rejected rows go: ``scores.csv.gz`` -> ``scores.rejected.csv.gz``."""
    p = Path(output)
    for suffix, _ in _OUTPUT_SUFFIXES:
        if p.name.lower().endswith(suffix):
            return p.with_name(f"{p.name[: -len(suffix)]}.rejected{p.name[-len(suffix) :]}")
    return p.with_name(f"{p.name}.rejected.{fmt}")


def check_output_path(
    path: str | os.PathLike[str], *, overwrite: bool, inputs: Sequence[Path] = ()
) -> Path:
    """Check, before any work, that ``path`` can be written and is none of ``inputs``:
    DataError if its folder is missing or it is a folder or an input, OutputExistsError if
    it exists and ``overwrite`` is false."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"output folder {str(folder)!r} does not exist (for {p})")
    if p.is_dir():
        raise DataError(f"output {p} is a folder; give a file name")
    if any(source.resolve() == p.resolve() for source in inputs):
        raise DataError(f"output {p} is the input file; write the scores somewhere else")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output {exists_message(p)}")
    return p


# --- what readers yield ------------------------------------------------------------------


@dataclass
class RejectedRow:
    """A row set aside: its 0-based data ``row`` and 1-based ``line`` (None where not
    known), the offending ``column`` (None: the whole row), the ``reason``, the ``raw`` row.
    """

    row: int | None
    line: int | None
    column: str | None
    reason: str
    raw: str


@dataclass
class InputBatch:
    """One chunk of input rows from ``source``: ``columns`` (name -> ``(n,)`` numpy or
    pyarrow array) for named formats, or the ``(n, f)`` ``matrix`` (NPY / IDX); the 0-based
    data ``rows`` and 1-based ``lines`` (text formats) where known; the ``malformed`` rows
    that could not be split into fields; how messages locate a row (``location``: ``"line"``
    or ``"row"``), and whether line 1 is a ``header``.
    """

    source: str
    columns: dict[str, Any] = field(default_factory=dict)
    matrix: np.ndarray | None = None
    rows: np.ndarray | None = None
    lines: np.ndarray | None = None
    malformed: list[RejectedRow] = field(default_factory=list)
    location: str = "row"
    header: bool = False

    @property
    def num_rows(self) -> int:
        """Rows that were split into fields (``malformed`` not counted)."""
        if self.matrix is not None:
            return int(self.matrix.shape[0])
        for values in self.columns.values():
            return len(values)
        return 0 if self.rows is None else int(self.rows.shape[0])


def describe_location(location: str, *, row: int | None, line: int | None, header: bool) -> str:
    """A row's place in a message: ``line 3 (line 1 is the header)``, ``row 2 (0-based)``."""
    if location == "line" and line is not None:
        return f"line {line} (line 1 is the header)" if header else f"line {line}"
    return "a row" if row is None else f"row {row} (0-based)"


class InputReader:
    """A file (or folder) of rows, opened and checked, ready to stream: its ``path``, the
    ``name`` messages give it, ``format``, ``columns`` (None for NPY / IDX) and the
    ``numeric_columns`` among them, the ``num_columns`` values of a (flattened) row, an NPY /
    IDX ``row_shape``, and the ``total_rows`` where known without reading the input."""

    columns: list[str] | None = None
    numeric_columns: Sequence[str] = ()
    num_columns = 0
    row_shape: tuple[int, ...] | None = None
    total_rows: int | None = None

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.name, self.format = path, str(path), fmt

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        """Chunks of at most ``batch_rows`` rows of the ``features`` and ``carry`` columns
        (NPY / IDX: whole rows); DataError if the file turns out unreadable part-way."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the reader holds."""

    def __enter__(self) -> InputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(
    path: str | os.PathLike[str], fmt: str | None = None, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> InputReader:
    """Open ``path`` (Parquet: a file or a folder) of format ``fmt`` (None: from the name)
    for streaming and check it as a whole; ``block_bytes``: CSV bytes parsed at once.

    Raises:
        DataError: missing, empty, header-only, unreadable or corrupt input.
        InputShapeError: an NPY array of one axis only.
        MissingDependencyError: CSV or Parquet without pyarrow.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist")
    kind = input_format_of(p, fmt)
    if p.is_dir() and kind != "parquet":
        raise DataError(f"input {p} is a folder; only Parquet input may be a folder of files")
    if kind in ("npy", "idx"):
        return MatrixReader(p, load_numpy(p) if kind == "npy" else read_idx(p), kind)
    if kind == "jsonl":
        return JsonlReader(p)
    _require_pyarrow(f"reading {p}")
    return CsvReader(p, block_bytes=block_bytes) if kind == "csv" else ParquetReader(p)


# --- NPY and IDX -------------------------------------------------------------------------


def load_numpy(path: Path, *, npz: bool = False) -> Any:
    """``numpy.load(path, mmap_mode="r", allow_pickle=False)``: an array map (NPY), or with
    ``npz`` an ``NpzFile``; object arrays are refused (loading one would run code). Raises
    DataError for an empty or unreadable file, or one that does not hold what was asked."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (no NPY header)")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DataError(f"{path}: not an NPY file (it does not start with the NPY magic bytes)")
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable NPY file: {one_line(exc)}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile if npz else np.ndarray):
        raise DataError(
            f"{path}: " + ("not an .npz archive" if npz else "not a single NumPy array")
        )
    return loaded


def check_real(path: Path, array: np.ndarray, what: str = "") -> None:
    """DataError unless ``array`` (``what``, for the message) holds bools, ints or floats."""
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {what}has dtype {array.dtype}; features must be real numbers "
            "(bool, int or float)"
        )


class MatrixReader(InputReader):
    """Rows of a numeric array (an NPY map or IDX images), flattened to ``(n, f)``."""

    def __init__(self, path: Path, array: np.ndarray, fmt: str) -> None:
        super().__init__(path, fmt)
        if array.ndim < 2:
            raise InputShapeError(
                f"{path}: holds an array of shape {array.shape}; expected 2-D (rows, features) "
                "or more (rows, *row shape)"
            )
        check_real(path, array)
        if array.shape[0] == 0:
            raise DataError(f"{path}: no rows (shape {array.shape})")
        self.row_shape = tuple(int(d) for d in array.shape[1:])
        self.num_columns = math.prod(self.row_shape)
        self.total_rows = int(array.shape[0])
        self._array = array
        # A map per chunk, dropped with it, keeps the resident set at one chunk (peak RSS
        # flat in the file size, make bench-score); Fortran order strides over the file.
        mapped = isinstance(array, np.memmap) and array.flags.c_contiguous
        self._offset = int(array.offset) if mapped else None  # type: ignore[attr-defined]

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        n, dtype = self.total_rows or 0, self._array.dtype
        for start in range(0, n, batch_rows):
            stop = min(n, start + batch_rows)
            if self._offset is None:
                chunk = self._array[start:stop]
            else:
                offset = self._offset + start * self.num_columns * dtype.itemsize
                chunk = np.memmap(self.path, dtype, "r", offset, (stop - start, self.num_columns))
            yield InputBatch(
                source=self.name,
                matrix=chunk.reshape(stop - start, self.num_columns),
                rows=np.arange(start, stop, dtype=np.int64),
            )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """One IDX file (the MNIST format; gzip detected by content) as an array of its own
    shape and dtype, in native byte order. Raises DataError if the file is missing, not
    IDX, truncated, or longer than its header says."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"IDX file not found: {path}")
    try:
        data = path.read_bytes()
        packed = data.startswith(_GZIP_MAGIC)
        data = gzip.decompress(data) if packed else data
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    unpacked = " (after gunzip)" if packed else ""
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated IDX file: expected at least 4 header bytes, "
            f"got {len(data)}{unpacked}"
        )
    magic, ndim = int.from_bytes(data[:4], "big"), data[3]
    if data[:2] != b"\0\0" or data[2] not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: magic 0x{magic:08x} (expected 0x00000803 for images, "
            "0x00000801 for labels)"
        )
    dtype, header = IDX_DTYPES[data[2]], 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated IDX file: expected {header} header bytes for {ndim} "
            f"dimensions, got {len(data)}{unpacked}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated IDX file" if len(data) < expected else "IDX file too long"
        raise DataError(
            f"{path}: {problem}: expected {expected} bytes for shape {shape} of "
            f"{dtype.newbyteorder('=').name}, got {len(data)}{unpacked}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


# --- CSV ---------------------------------------------------------------------------------

#: the end of a line (LF, CRLF or CR) followed at once by another line end: an empty line.
_EMPTY_LINE = re.compile(b"(?:\n|\r(?!\n))(?=[\r\n])")


class _Source:
    """A file's bytes (gunzipped if they start with the gzip magic) on their way to pyarrow:
    read errors become DataErrors; quotes (an odd count: a quoted field never closed, which
    pyarrow would take to the end of the file) and empty lines are counted."""

    def __init__(self, path: Path) -> None:
        self.path, self.size, self.quotes, self.empty_lines, self._tail = path, 0, 0, 0, b""
        self.blank, self.eof, self.closed, self.line_end = True, False, False, False
        with open(path, "rb") as handle:
            packed = handle.read(2) == _GZIP_MAGIC
        self.raw: Any = gzip.open(path, "rb") if packed else open(path, "rb")  # noqa: SIM115

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self.raw.read(size)
        except _READ_ERRORS as exc:
            raise DataError(f"{self.path}: cannot read: {one_line(exc)}") from None
        self.eof = self.eof or not data
        self.blank = self.blank and not data.strip()
        self.size, self.quotes = self.size + len(data), self.quotes + data.count(b'"')
        self.line_end = self.line_end or b"\n" in data or b"\r" in data
        seen = self._tail + data
        if b"\n\n" in seen or b"\n\r" in seen or b"\r\r" in seen:  # rare: count exactly
            self.empty_lines += len(_EMPTY_LINE.findall(seen))
        self._tail = seen[-1:]
        return data

    def close(self) -> None:
        self.closed = True
        self.raw.close()


def _open_csv(path: Path, block: int, **convert: Any) -> tuple[Any, _Source, list[Any]]:
    """``pyarrow.csv.open_csv`` over a :class:`_Source`: the reader, the source, and the list
    malformed rows go to. Blank lines stay records, so a record's number is its line but for
    the newlines inside quoted values before it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    source, malformed = _Source(path), list[Any]()
    try:
        reader = pacsv.open_csv(
            pa.PythonFile(source, mode="r"),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=block),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=lambda row, bad=malformed: bad.append(row) or "skip",
            ),
            convert_options=pacsv.ConvertOptions(**convert),
        )
    except pa.ArrowInvalid as exc:
        source.close()
        if source.blank:
            raise DataError(f"{path}: empty file (no header row)") from None
        # no record ends in the first block: the file is one header line, or has a longer one
        one_line_only = source.size <= block or not source.line_end
        if "Empty CSV file" in str(exc) and source.eof and one_line_only:
            raise DataError(f"{path}: header only, no data rows") from None
        raise _csv_error(path, exc, source, 1 if "Empty CSV file" in str(exc) else 2) from None
    return reader, source, malformed


def _blank_rows(table: Any) -> np.ndarray:
    """``(n,)`` bool: rows whose every cell is empty."""
    import pyarrow as pa
    import pyarrow.compute as pc

    blank = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        empty = pc.is_null(column)
        if pa.types.is_string(column.type):
            empty = pc.or_(empty, pc.fill_null(pc.equal(column, ""), True))
        blank &= np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
    return blank


def _numeric(schema: Any, names: list[str]) -> list[str]:
    """The ``names`` of the ``schema``'s fields of a number type."""
    import pyarrow as pa

    number = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    kinds = [f.type for f in schema]
    return [n for n, k in zip(names, kinds, strict=True) if any(is_(k) for is_ in number)]


def _unique(path: Path, names: list[str], where: str = "") -> None:
    twice = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if twice is not None:
        raise DataError(f"{path}: column name {twice!r} appears twice{where}")


class CsvReader(InputReader):
    """A comma-separated UTF-8 file with a header row (``.csv`` or gzip-compressed)."""

    def __init__(self, path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        import pyarrow as pa

        super().__init__(path, "csv")
        self._block = int(block_bytes)
        reader, source, malformed = _open_csv(path, self._block)
        with contextlib.closing(source):
            try:
                first = next(iter(reader), None)
            except pa.ArrowInvalid as exc:
                raise _csv_error(path, exc, source, 2) from None
        self._raw_names = [str(n) for n in reader.schema.names]
        header = [name.strip() for name in self._raw_names]
        if header == [""]:
            if source.blank:
                raise DataError(f"{path}: empty file (no header row)")
            raise DataError(f"{path}: line 1 is empty; expected a header row of column names")
        _unique(path, header, " in the header")
        if (first is None or _blank_rows(first).all()) and not malformed:
            raise DataError(f"{path}: header only, no data rows")
        self.columns, self.num_columns = header, len(header)
        self.numeric_columns = _numeric(reader.schema, header)

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc

        raw = dict(zip(self.columns or [], self._raw_names, strict=True))
        wanted = list(dict.fromkeys([*features, *carry]))
        # Every column as text: score parses the numbers, and a newline inside any value
        # moves the lines of the rows after it.
        reader, source, malformed = _open_csv(
            self.path,
            self._block,
            column_types={name: pa.string() for name in self._raw_names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        record, row = 2, 0  # the next record's number (the header is 1) and data row
        line = 2 + sum(name.count("\n") for name in self._raw_names)  # the next record's line
        last, empties, pending = line, 0, list[Any]()
        with contextlib.closing(source):
            while True:
                try:
                    table = reader.read_next_batch()
                except StopIteration:
                    table = None
                except pa.ArrowInvalid as exc:
                    raise _csv_error(self.path, exc, source, line) from None
                pending += [malformed.pop(0) for _ in range(len(malformed))]  # atomic pops
                pending.sort(key=lambda r: r.number)
                stop = record + (0 if table is None else table.num_rows)
                taken = 0  # malformed records before this batch's end belong to it
                while taken < len(pending) and (table is None or pending[taken].number < stop):
                    stop, taken = stop + 1, taken + 1
                bad, pending = pending[:taken], pending[taken:]
                is_bad = np.isin(np.arange(record, stop), [r.number for r in bad])
                newlines = np.zeros(stop - record, dtype=np.int64)
                blank = np.zeros(stop - record, dtype=bool)
                if table is not None and table.num_rows:
                    newlines[~is_bad] = sum(
                        np.asarray(pc.count_substring(column, "\n")) for column in table.columns
                    )
                    blank[~is_bad] = _blank_rows(table)
                newlines[is_bad] = [r.text.count("\n") for r in bad]
                lines = line + np.arange(stop - record) + np.cumsum(newlines) - newlines
                # pyarrow reads a blank line and a row of empty cells (",,") alike; more such
                # records than empty lines in the bytes means a row of values was empty, and
                # it is refused, not dropped (a quoted value holding an empty line can hide
                # one; it never makes a blank line an error).
                empties += int(blank.sum())
                if empties > source.empty_lines:
                    raise DataError(
                        f"{self.path}: line {int(lines[np.flatnonzero(blank)[-1]])} or before: a "
                        "row whose every cell is empty (blank lines are skipped; a row of empty "
                        "cells is not)"
                    )
                rows = row + np.cumsum(~blank) - 1
                rejected = [
                    RejectedRow(int(n), int(k), None, f"has {r.actual_columns} fields, "
                                f"the header has {self.num_columns}", r.text)
                    for n, k, r in zip(rows[is_bad], lines[is_bad], bad, strict=True)
                ]  # fmt: skip
                keep = ~is_bad & ~blank
                if table is None:
                    part = pa.table({name: pa.array([], pa.string()) for name in wanted})
                else:
                    part = table.filter(pa.array(keep[~is_bad])).select([raw[n] for n in wanted])
                    part = part.rename_columns(wanted)
                yield from self._chunks(part, rows[keep], lines[keep], rejected, batch_rows)
                last = int(lines[-1]) if len(lines) else last  # where the last record starts
                line += stop - record + int(newlines.sum())
                row, record = row + int((~blank).sum()), stop
                if table is None:
                    break
        if source.quotes % 2:
            raise DataError(_UNCLOSED.format(self.path, last))

    def _chunks(
        self, part: Any, rows: np.ndarray, lines: np.ndarray, bad: list[RejectedRow], size: int
    ) -> Iterator[InputBatch]:
        """``part`` in chunks of ``size`` rows, each with the malformed rows before its end."""
        n = part.num_rows
        for begin in range(0, max(n, 1), size):
            end = min(n, begin + size)
            mine = [r for r in bad if end == n or (r.row or 0) < rows[end - 1]]
            bad = bad[len(mine) :]
            if end > begin or mine:
                yield InputBatch(
                    self.name,
                    {
                        name: part.column(name).slice(begin, end - begin)
                        for name in part.column_names
                    },
                    rows=rows[begin:end],
                    lines=lines[begin:end],
                    malformed=mine,
                    location="line",
                    header=True,
                )


_UNCLOSED = "{}: line {}: a quoted field is never closed (no end of row before the end of the file)"
_NOT_UTF8 = "{}: line {}: not UTF-8 text (byte {!r}); save the file as UTF-8"


def _csv_error(path: Path, exc: BaseException, source: _Source, line: int) -> DataError:
    """A pyarrow CSV error as a DataError; ``line`` starts the block that failed (a UTF-8
    error is located by a second read in 1 MiB blocks: a file without line ends too)."""
    text = one_line(exc)
    if "UTF8" in text or "UTF-8" in text:
        decoder, number = codecs.getincrementaldecoder("utf-8")(), 1
        with contextlib.closing(_Source(path)) as again:
            while block := again.read(1 << 20):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as bad:
                    start = max(0, bad.start - len(decoder.getstate()[0]))
                    number += block.count(b"\n", 0, start)
                    return DataError(_NOT_UTF8.format(path, number, block[start : start + 1]))
                number += block.count(b"\n")
        return DataError(f"{path}: not UTF-8 text; save the file as UTF-8")
    if ("straddl" in text or "Empty CSV" in text) and source.quotes % 2:
        return DataError(_UNCLOSED.format(path, line))
    if "straddl" in text or "Empty CSV" in text:
        return DataError(f"{path}: line {line} or after: a row longer than the read block")
    return DataError(f"{path}: cannot read: {text}")


# --- JSONL -------------------------------------------------------------------------------


def _jsonl_records(path: Path) -> Iterator[tuple[int, str, Any, str | None]]:
    """``(line, text, record, why it is not a JSON object or None)`` of non-blank lines."""
    with contextlib.closing(_Source(path)) as source:
        try:
            for line, raw in enumerate(source.raw, 1):
                try:
                    text = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        _NOT_UTF8.format(path, line, raw[exc.start : exc.start + 1])
                    ) from None
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    yield line, text, None, f"invalid JSON ({exc})"
                    continue
                found = None if isinstance(record, dict) else type(record).__name__
                yield line, text, record, found and f"not a JSON object (found {found})"
        except _READ_ERRORS as exc:
            raise DataError(f"{path}: cannot read: {one_line(exc)}") from None


class JsonlReader(InputReader):
    """One JSON object per line; the first record's keys name the columns."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "jsonl")
        line, _, first, reason = next(_jsonl_records(path), (0, "", {}, None))
        if not line:
            raise DataError(f"{path}: empty file (no JSON records)")
        if reason is not None:
            hint = (
                "the first record names the columns"
                if first is None
                else "each line must be one object"
            )
            raise DataError(f"{path}: line {line}: {reason}; {hint}")
        self.columns, self.num_columns = list(first), len(first)
        # json.loads gives int, float or bool itself, never a subclass: type() excludes bool
        self.numeric_columns = [k for k, v in first.items() if type(v) in (int, float)]

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        wanted = list(dict.fromkeys([*features, *carry]))
        records = _jsonl_records(self.path)
        for start in itertools.count(0, batch_rows):
            if not (part := list(itertools.islice(records, batch_rows))):
                return
            good, malformed = [], []
            for row, (line, text, record, reason) in enumerate(part, start):
                missing = None if reason else next((n for n in wanted if n not in record), None)
                if reason is None and missing is None:
                    good.append((row, line, record))
                else:
                    why = reason or f"missing column {missing!r}"
                    malformed.append(RejectedRow(row, line, missing, why, text))
            columns = {name: np.empty(len(good), dtype=object) for name in wanted}
            for name, values in columns.items():
                # Carried values as text: one type per output column whatever each record holds.
                values[:] = [_json_text(r[name]) if name in carry else r[name] for *_, r in good]
            yield InputBatch(
                self.name,
                columns,
                rows=np.array([g[0] for g in good], dtype=np.int64),
                lines=np.array([g[1] for g in good], dtype=np.int64),
                malformed=malformed,
                location="line",
            )


def _json_text(value: Any) -> str | None:
    text = value is None or isinstance(value, str)
    return value if text else json.dumps(value, ensure_ascii=False)


# --- Parquet -----------------------------------------------------------------------------


class ParquetReader(InputReader):
    """A Parquet file, or a folder of them (read in name order), in record batches."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, "parquet")
        # Like Spark, Ray Data and pyarrow datasets: names starting "." or "_" are not data.
        self.files = [path]
        if path.is_dir():
            self.files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.lower().endswith((".parquet", ".pq"))
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not self.files:
                raise DataError(f"{path}: folder holds no .parquet files")
        self.total_rows = 0
        for file in self.files:  # pyarrow names an empty file "Parquet file size is 0 bytes"
            try:
                meta = pq.read_metadata(file)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{file}: not a readable Parquet file: {one_line(exc)}") from None
            if self.columns is None:
                schema = meta.schema.to_arrow_schema()
                self.columns = list(schema.names)
                self.numeric_columns = _numeric(schema, self.columns)
            self.total_rows += int(meta.num_rows)
        names = self.columns or []
        _unique(self.files[0], names)
        self.num_columns = len(names)
        if self.total_rows == 0:
            raise DataError(f"{path}: no data rows (columns: {', '.join(map(repr, names))})")

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        wanted = list(dict.fromkeys([*features, *carry]))
        for file in self.files:
            try:
                with pq.ParquetFile(file) as parquet:
                    missing = [n for n in wanted if n not in parquet.schema_arrow.names]
                    if missing:
                        raise DataError(
                            f"{file}: missing columns {', '.join(map(repr, missing))} "
                            f"(present in {self.files[0].name})"
                        )
                    row = 0
                    for part in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
                        rows = np.arange(row, row + part.num_rows, dtype=np.int64)
                        columns = {name: part.column(name) for name in wanted}
                        yield InputBatch(source=str(file), columns=columns, rows=rows)
                        row += part.num_rows
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{file}: cannot read (corrupt Parquet?): {one_line(exc)}"
                ) from None


# --- writers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoricalColumn:
    """A text column drawn from a few names (the class name): ``(n,)`` integer ``codes``
    into ``categories``, written as an Arrow dictionary column."""

    codes: np.ndarray
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def to_numpy(self, zero_copy_only: bool = False) -> np.ndarray:
        """``(n,)`` object array of the names (``zero_copy_only`` as pyarrow's: ignored)."""
        return np.array(self.categories, dtype=object)[self.codes]


def columns_to_numpy(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every column as a numpy array (pyarrow columns and categorical ones converted)."""
    return {
        name: values
        if isinstance(values, np.ndarray)
        else np.asarray(values.to_numpy(zero_copy_only=False))
        for name, values in columns.items()
    }


def _arrow_table(columns: Mapping[str, Any], types: Mapping[str, str]) -> Any:
    """The columns as a pyarrow Table; numeric numpy columns are non-nullable (no
    definition levels for the Parquet writer to write)."""
    import pyarrow as pa

    arrays, fields = [], []
    for name, values in columns.items():
        nullable = True
        if isinstance(values, CategoricalColumn):
            codes = pa.array(np.asarray(values.codes, dtype=np.int32))
            array = pa.DictionaryArray.from_arrays(codes, pa.array(values.categories, pa.string()))
            nullable = False
        elif isinstance(values, pa.ChunkedArray | pa.Array):
            array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        else:
            kind = pa.type_for_alias(types[name]) if name in types else None
            array = pa.array(values, type=kind, from_pandas=False)
            nullable = values.dtype == object
        if pa.types.is_null(array.type):  # an empty or all-null first chunk
            array = array.cast(pa.string())
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


_JSON: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "default": str}


def _json_lines(table: Any) -> bytes:
    """The rows as JSON lines: NaN and Inf as null, float32 in its shortest form."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_float32(column.type):  # 0.1, not 0.10000000149011612
            column = pc.cast(pc.cast(column, pa.string()), pa.float64())
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_finite(column), column, None)
        columns.append(column.to_pylist())
    names = table.column_names
    return "".join(
        json.dumps(dict(zip(names, row, strict=True)), **_JSON) + "\n"
        for row in zip(*columns, strict=True)
    ).encode()


class AtomicOutput:
    """An output table at ``path`` in ``fmt`` (CSV and JSONL gzipped when the name ends in
    ``.gz``), written through pyarrow to the ``temp_path`` of a
    :class:`~onnxedge.runtime.atomic.Staged` that :meth:`commit` moves into place; leaving a
    ``with`` block without a commit removes it. ``types``: column -> pyarrow type alias for
    object columns an empty or all-null first chunk cannot type.

    Raises:
        DataError: unknown format, or the folder cannot be written.
        OutputExistsError: the target exists and ``overwrite`` is false.
        MissingDependencyError: pyarrow is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        *,
        types: Mapping[str, str] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path, self.format = Path(path), output_format_of(path, fmt)
        _require_pyarrow(f"writing {self.path}")
        self.types = dict(types or {})
        self._writer: Any = None  # pyarrow's Parquet or CSV writer (JSONL goes to the sink)
        self._sink: Any = None
        self._schema: Any = None  # the file's, from the first table with rows
        self._first: Any = None  # an empty first table: the schema if no rows ever come
        self._staged = Staged(self.path, overwrite=overwrite, error=DataError)
        self.temp_path = self._staged.path

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows (name -> ``(n,)`` array, the same names every call); DataError if the
        file system refuses or a column changes type."""
        import pyarrow as pa

        table = _arrow_table(columns, self.types)
        if self._schema is None and not table.num_rows:
            self._first = table if self._first is None else self._first
            return
        if self._schema is not None and not table.schema.equals(self._schema):
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise DataError(
                    f"output columns change type between chunks ({self._schema} then "
                    f"{table.schema}): {exc}"
                ) from None
        try:
            if self._schema is None:
                self._open(table.schema)
            if table.num_rows:
                self._put(table)
        except OSError as exc:
            raise self._write_error(exc) from None

    def _open(self, schema: Any) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self._schema = schema
        if self.format == "parquet":
            # Floats (probabilities) get neither dictionary pages, which overflow and fall
            # back, nor snappy, which saves 0.3% of their bytes for 15% of the write time
            # (bench-score's 1M rows).
            floats = {f.name for f in schema if pa.types.is_floating(f.type)}
            self._writer = pq.ParquetWriter(
                str(self.temp_path),
                schema,
                use_dictionary=[f.name for f in schema if f.name not in floats],
                compression={f.name: "none" if f.name in floats else "snappy" for f in schema},
            )
            return
        gzipped = self.path.name.lower().endswith(".gz")
        self._sink = pa.output_stream(str(self.temp_path), compression="gzip" if gzipped else None)
        if self.format == "csv":
            options = pacsv.WriteOptions(quoting_style="needed")
            self._writer = pacsv.CSVWriter(self._sink, schema, write_options=options)

    def _put(self, table: Any) -> None:
        if self._writer is None:
            self._sink.write(_json_lines(table))
        else:
            self._writer.write_table(table)

    def finish(self) -> None:
        """Close the temp file, everything written (DataError if the file system refuses)."""
        import pyarrow as pa

        try:
            if self._schema is None:  # no rows at all: still the columns
                first = self._first if self._first is not None else pa.table({})
                self._open(first.schema)
                self._put(first)
            for handle in (self._writer, self._sink):
                if handle is not None:
                    handle.close()
        except OSError as exc:
            raise self._write_error(exc) from None

    def commit(self) -> Path:
        """Flush the finished file and move it to the target (returned); OutputExistsError if
        the target appeared meanwhile without ``overwrite``, DataError if the move fails."""
        return self._staged.commit()

    def _write_error(self, exc: OSError) -> DataError:
        return DataError(f"cannot write {self.path}: {exc.strerror or one_line(exc)}")

    def discard(self) -> None:
        """Close and remove the temp file (nothing after a commit); the target is not touched."""
        if not self._staged.done:
            for handle in (self._writer, self._sink):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    handle.close()
            self._staged.discard()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
