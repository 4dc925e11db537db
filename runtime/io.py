"""Streaming readers and atomic writers: the one file layer of score, verify and train.

Readers yield :class:`InputBatch` chunks of at most ``batch_rows`` rows, so memory
stays bounded whatever the input size:

* **NPY** through ``numpy.load(mmap_mode="r")``; each chunk is a map of its own rows
  only (``numpy.memmap`` at an offset), dropped with the chunk, so the resident set
  does not grow with the file. Rows of more than one axis (images, ``(n, 1, 8, 8)``)
  are flattened to ``(n, 64)`` views.
* **IDX** (MNIST images, ``.idx3-ubyte``, optionally gzipped) through :func:`read_idx`,
  flattened the same way.
* **CSV** (``.csv``, ``.csv.gz``; comma-separated, UTF-8, a header row) through
  ``pyarrow.csv.open_csv``; rows with the wrong number of fields are set aside with
  ``ParseOptions(invalid_row_handler=...)``. The bytes pass through :class:`_LineCounter`
  on their way to pyarrow, which notes the line each record starts on, so every
  message names a line exactly (blank lines and quoted newlines included).
* **Parquet** (a file, or a folder of ``.parquet`` files read in name order) through
  ``pyarrow.parquet``, in record batches of the requested columns only.
* **JSONL** (``.jsonl``, ``.ndjson``, optionally ``.gz``): one JSON object per line;
  the first record names the columns. Read with the stdlib ``json`` line by line:
  ``pyarrow.json`` stops at the first bad line, and a bad line must be set aside.

Readers split rows into fields; they do not judge values. A row that cannot be split
(wrong field count, invalid JSON) is returned in :attr:`InputBatch.malformed`; the
scoring step (:func:`onnxedge.runtime.score.score_batch`) checks the values.

Where things are (every message and the rejected-rows file use this): text formats
(CSV, JSONL) name the **line** as an editor shows it (1-based; a CSV's header is line
1); binary formats (NPY, IDX, Parquet) name the **row** as a 0-based index within the
named file, and say "(0-based)". NPY columns are 0-based indices; other formats name
columns.

Writers (:class:`AtomicOutput`) write CSV and Parquet through pyarrow (JSONL by text:
pyarrow has no JSON writer) to a temp file of the one atomic writer
(:mod:`onnxedge.runtime.atomic`), moved into place by :meth:`AtomicOutput.commit`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from onnxedge.runtime.atomic import Staged, exists_message
from onnxedge.runtime.errors import (
    DataError,
    InputShapeError,
    MissingDependencyError,
    OutputExistsError,
)

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "AtomicOutput",
    "CategoricalColumn",
    "InputBatch",
    "InputReader",
    "RejectedRow",
    "check_output_path",
    "columns_to_numpy",
    "describe_location",
    "input_format_of",
    "open_input",
    "output_format_of",
    "quote_value",
    "read_idx",
    "rejected_path_for",
]

INPUT_FORMATS: tuple[str, ...] = ("npy", "csv", "parquet", "jsonl", "idx")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl")

#: CSV bytes pyarrow parses at once; a record longer than this makes the reader try
#: again with blocks up to :data:`_MAX_BLOCK_BYTES` (a header of 10 MiB still opens).
DEFAULT_BLOCK_BYTES = 8 << 20
_MAX_BLOCK_BYTES = 1 << 30

#: Name endings -> format; longest first so ``.csv.gz`` wins over ``.gz``.
_INPUT_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".csv.gz", "csv"),
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".idx3-ubyte.gz", "idx"),
    (".npy", "npy"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".idx3-ubyte", "idx"),
)
_OUTPUT_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".csv.gz", "csv"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
)
_PARQUET_ENDINGS = (".parquet", ".pq")
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 0x00000803, 0x00000801
#: Reasons quote at most this many characters of a bad value.
_QUOTE_CHARS = 40
_HEADER_NOTE = "line 1 is the header"
_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


def _require_pyarrow(what: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs pyarrow, which is not installed: pip install 'onnxedge[cpu]'"
        ) from None
    return pyarrow


def quote_value(value: Any) -> str:
    """``repr`` of a value, cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------------------
# Formats and paths
# --------------------------------------------------------------------------------------


def _suffix_format(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    lowered = name.lower()
    return next((fmt for suffix, fmt in table if lowered.endswith(suffix)), None)


def _format_of(path: str | os.PathLike[str], override: str | None, what: str) -> str:
    known, table = (
        (INPUT_FORMATS, _INPUT_SUFFIXES) if what == "input" else (OUTPUT_FORMATS, _OUTPUT_SUFFIXES)
    )
    if override is not None:
        fmt = override.lower()
        if fmt not in known:
            raise DataError(f"unknown {what} format {override!r}; known: {', '.join(known)}")
        return fmt
    p = Path(path)
    if what == "input" and p.is_dir():
        return "parquet"
    found = _suffix_format(p.name, table)
    if found is None:
        endings = ", ".join(suffix for suffix, _ in table if not suffix.startswith(".idx"))
        folder = ", or a folder of .parquet files" if what == "input" else ""
        raise DataError(
            f"{p}: cannot tell the {what} format from the name (known endings: {endings}"
            f"{folder}); name it with --{what}-format"
        )
    return found


def input_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The input format of ``path``: ``override`` when given, else from the name.

    A folder is Parquet (a folder of ``.parquet`` files).

    Raises:
        DataError: unknown override, or a name whose format cannot be told.
    """
    return _format_of(path, override, "input")


def output_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The output format of ``path``: ``override`` when given, else from the name.

    Raises:
        DataError: unknown override, or a name whose format cannot be told.
    """
    return _format_of(path, override, "output")


def rejected_path_for(output: str | os.PathLike[str], fmt: str) -> Path:
    """Where rejected rows go: ``scores.csv`` -> ``scores.rejected.csv``.

    The ending is kept (``.csv.gz`` stays compressed); a name without a known ending
    gets ``.rejected.<fmt>`` appended.
    """
    p = Path(output)
    lowered = p.name.lower()
    for suffix, _ in _OUTPUT_SUFFIXES:
        if lowered.endswith(suffix):
            stem = p.name[: -len(suffix)]
            return p.with_name(f"{stem}.rejected{p.name[-len(suffix) :]}")
    return p.with_name(f"{p.name}.rejected.{fmt}")


def check_output_path(
    path: str | os.PathLike[str], *, overwrite: bool, inputs: Sequence[Path] = ()
) -> Path:
    """Check that ``path`` can be written before any work is done.

    Args:
        path: the output file.
        overwrite: whether an existing file may be replaced.
        inputs: input paths the output must not be.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        DataError: the folder does not exist, or ``path`` is a folder or an input.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"output folder {str(folder)!r} does not exist (for {p})")
    if p.is_dir():
        raise DataError(f"output {p} is a folder; give a file name")
    resolved = p.resolve()
    for source in inputs:
        if source.resolve() == resolved:
            raise DataError(f"output {p} is the input file; write the scores somewhere else")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output {exists_message(p)}")
    return p


# --------------------------------------------------------------------------------------
# What readers yield
# --------------------------------------------------------------------------------------


@dataclass
class RejectedRow:
    """A row set aside: where it was, which column, why, and the row as read.

    Attributes:
        row: 0-based data row index within ``source`` (the CSV header not counted),
            or None where not known.
        line: 1-based line in ``source`` for text formats, else None.
        column: the offending column (name, or 0-based index as text for NPY), or
            None when the row as a whole is bad.
        reason: what is wrong, e.g. ``cannot parse 'abc' as a number``.
        raw: the row as read (its text line when it could not be split into fields).
    """

    row: int | None
    line: int | None
    column: str | None
    reason: str
    raw: str


@dataclass
class InputBatch:
    """One chunk of input rows.

    Attributes:
        source: the file the rows come from, as messages name it.
        columns: name -> ``(n,)`` array (numpy, or pyarrow Array / ChunkedArray) for
            named formats; empty for NPY / IDX.
        matrix: ``(n, f)`` numeric array for NPY / IDX (rows flattened), else None.
        rows: ``(n,)`` int64 0-based data row indices within ``source``, or None
            where not known (e.g. a distributed engine).
        lines: ``(n,)`` int64 1-based line numbers for text formats, else None.
        malformed: rows that could not be split into fields, in file order.
        location: ``"line"`` (text formats) or ``"row"`` (binary): how messages
            locate a row.
        header: whether line 1 of ``source`` is a header (CSV), which messages note.
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
    """The place of a row in a message, by the module's convention."""
    if location == "line" and line is not None:
        return f"line {line} ({_HEADER_NOTE})" if header else f"line {line}"
    if row is not None:
        return f"row {row} (0-based)"
    return "a row"


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


class InputReader:
    """A file (or folder) of rows, opened and checked, ready to stream.

    Attributes:
        path: what was opened.
        format: ``npy``, ``idx``, ``csv``, ``parquet`` or ``jsonl``.
        columns: column names in file order; None for NPY / IDX (no names).
        numeric_columns: the columns whose values look numeric (from the schema, or
            inferred from the first block), in file order; empty for NPY / IDX.
        num_columns: values per row (for NPY / IDX, of the flattened row).
        row_shape: one row's shape for NPY / IDX (``(64,)``, ``(1, 8, 8)``), else None.
        total_rows: rows in the input when known without reading it (NPY, IDX, Parquet).
    """

    format: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        self.numeric_columns: list[str] = []
        self.num_columns = 0
        self.row_shape: tuple[int, ...] | None = None
        self.total_rows: int | None = None

    @property
    def name(self) -> str:
        """The input as messages name it."""
        return str(self.path)

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        """Yield the input in chunks of at most ``batch_rows`` rows (malformed included).

        Args:
            features: feature columns to read, in model order (ignored for NPY / IDX).
            carry: columns carried to the output as they are (ids, kept columns).
            batch_rows: the most rows one chunk holds.

        Raises:
            DataError: the file turns out to be unreadable part-way.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the reader holds (it can not be used afterwards)."""

    def __enter__(self) -> InputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> InputReader:
    """Open an input for streaming and check it as a whole.

    Args:
        path: a file, or for Parquet a file or a folder of ``.parquet`` files.
        fmt: one of :data:`INPUT_FORMATS`; None infers it from the name.
        block_bytes: CSV bytes parsed at once (grown for longer records).

    Raises:
        DataError: missing, empty, header-only, unreadable or corrupt input;
            unknown format.
        InputShapeError: an NPY array of one axis only.
        MissingDependencyError: CSV or Parquet without pyarrow.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist")
    kind = input_format_of(p, fmt)
    if p.is_dir() and kind != "parquet":
        raise DataError(f"input {p} is a folder; only Parquet input may be a folder of files")
    if kind == "npy":
        return NpyReader(p)
    if kind == "idx":
        return MatrixReader(p, read_idx(p), "idx")
    if kind == "csv":
        return CsvReader(p, block_bytes=block_bytes)
    if kind == "jsonl":
        return JsonlReader(p)
    return ParquetReader(p)


# --- NPY and IDX: a numeric array of rows -----------------------------------------------


class MatrixReader(InputReader):
    """Rows of a numeric array (an NPY map or IDX images), flattened to ``(n, f)``."""

    def __init__(self, path: Path, array: np.ndarray, fmt: str) -> None:
        super().__init__(path)
        self.format = fmt
        if array.ndim < 2:
            raise InputShapeError(
                f"{path}: holds an array of shape {array.shape}; expected 2-D (rows, features) "
                "or more (rows, *row shape)"
            )
        if array.dtype.kind not in "biuf":
            raise DataError(
                f"{path}: has dtype {array.dtype}; features must be real numbers "
                "(bool, int or float)"
            )
        if array.shape[0] == 0:
            raise DataError(f"{path}: no rows (shape {array.shape})")
        self.row_shape = tuple(int(d) for d in array.shape[1:])
        self.num_columns = math.prod(self.row_shape)
        self.total_rows = int(array.shape[0])
        self._array: np.ndarray | None = array

    def _chunk(self, start: int, stop: int) -> np.ndarray:
        assert self._array is not None
        return self._array[start:stop]

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        n = self.total_rows or 0
        for start in range(0, n, batch_rows):
            stop = min(n, start + batch_rows)
            yield InputBatch(
                source=self.name,
                matrix=self._chunk(start, stop).reshape(stop - start, self.num_columns),
                rows=np.arange(start, stop, dtype=np.int64),
                location="row",
            )

    def close(self) -> None:
        self._array = None


class NpyReader(MatrixReader):
    """An ``.npy`` array of rows; each chunk maps only its own rows of the file."""

    def __init__(self, path: Path) -> None:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (no NPY header)")
        with open(path, "rb") as handle:
            if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise DataError(
                    f"{path}: not an NPY file (it does not start with the NPY magic bytes)"
                )
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable NPY file: {_one_line(exc)}") from None
        if not isinstance(array, np.memmap):
            raise DataError(f"{path}: not a single NumPy array")
        super().__init__(path, array, "npy")
        self._offset = int(array.offset)
        # A map per chunk, released with it: the resident set stays one chunk. Row
        # slices of a Fortran-order array stride over the whole file, so those use the
        # one map.
        self._per_chunk = bool(array.flags.c_contiguous)

    def _chunk(self, start: int, stop: int) -> np.ndarray:
        assert self._array is not None
        if not self._per_chunk:
            return self._array[start:stop]
        row_bytes = self.num_columns * self._array.dtype.itemsize
        shape = (stop - start, *(self.row_shape or ()))
        offset = self._offset + start * row_bytes
        return np.memmap(self.path, dtype=self._array.dtype, mode="r", offset=offset, shape=shape)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format) into an array of its own shape and dtype.

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions, then
    each dimension as a big-endian uint32; the data follow, big-endian. MNIST images are
    magic ``0x00000803`` (uint8, 3-D), labels ``0x00000801`` (uint8, 1-D). Gzipped files
    (detected by content) are decompressed.

    Args:
        path: the IDX file.

    Returns:
        The data in native byte order, shaped as the header says.

    Raises:
        DataError: the file is missing, not IDX (bad magic), truncated, or longer than
            its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        data = path.read_bytes()
        packed = data.startswith(_GZIP_MAGIC)
        if packed:
            data = gzip.decompress(data)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    unpacked = " (after gunzip)" if packed else ""
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated IDX file: expected at least 4 header bytes, "
            f"got {len(data)}{unpacked}"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: magic 0x{magic:08x} (expected 0x{_IDX_IMAGES_MAGIC:08x} "
            f"for images, 0x{_IDX_LABELS_MAGIC:08x} for labels)"
        )
    dtype = IDX_DTYPES[type_code]
    header = 4 + 4 * ndim
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


# --- CSV --------------------------------------------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class _LineCounter:
    """A CSV's bytes on their way to pyarrow, noting the line where each record starts.

    A newline ends a record when an even number of quote characters precede it
    (RFC 4180 escapes a quote as two); a record that starts with a newline is a blank
    line, which pyarrow skips too. ``starts[k]`` is the 1-based line of record ``k``
    (the header is record 0), so pyarrow's record numbers map to lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = _open_binary(path)
        self.line = 1  # line of the next byte
        self.quoted = False  # inside a quoted field at the end of what was read
        self.pending: int | None = 1  # a record may start at the next byte, on this line
        self.parts: list[np.ndarray] = []
        self.base = 0  # the record number of the first line kept in parts
        self.last_start = 1  # the line the last record seen starts on
        self.blank = True  # only whitespace read so far
        self.eof = False
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.raw.read(size)
        except _READ_ERRORS as exc:
            raise DataError(f"{self.path}: cannot read: {_one_line(exc)}") from None
        if data:
            self._scan(data)
        else:
            self.eof = True
        return data

    def _scan(self, data: bytes) -> None:
        a = np.frombuffer(data, dtype=np.uint8)
        if self.blank and data.strip():
            self.blank = False
        newlines = np.flatnonzero(a == 10)
        quotes = a == 34
        if self.quoted or quotes.any():
            parity = (np.cumsum(quotes)[newlines] + self.quoted) & 1
            ends = newlines[parity == 0]
            self.quoted = bool((int(quotes.sum()) + self.quoted) & 1)
        else:
            ends = newlines
        # Candidate record starts: the byte after each record end (and the first byte
        # if a record was pending); a start on a newline or CR is a blank line.
        lines = self.line + np.searchsorted(newlines, ends) + 1
        positions = ends + 1
        starts = []
        if self.pending is not None and a[0] not in (10, 13):
            starts.append(np.array([self.pending], dtype=np.int64))
        keep = positions < len(a)
        inside = positions[keep]
        real = (a[inside] != 10) & (a[inside] != 13)
        starts.append(lines[keep][real].astype(np.int64))
        self.parts += [s for s in starts if s.size]
        if self.parts and self.parts[-1].size:
            self.last_start = int(self.parts[-1][-1])
        if len(ends) and ends[-1] == len(a) - 1:
            self.pending = int(lines[-1])
        elif len(ends) or (self.pending is not None and a[0] not in (10, 13)):
            self.pending = None
        self.line += len(newlines)

    def _joined(self) -> np.ndarray:
        if len(self.parts) != 1:
            self.parts = [np.concatenate(self.parts or [np.empty(0, dtype=np.int64)])]
        return self.parts[0]

    def at(self, records: np.ndarray) -> np.ndarray:
        """The first line of each record (record 0 is the header), ``(n,)`` int64."""
        return self._joined()[np.asarray(records, dtype=np.int64) - self.base]

    def forget(self, before: int) -> None:
        """Drop the lines of records before ``before``: memory stays one block's worth."""
        joined = self._joined()
        cut = min(max(0, before - self.base), joined.size)
        self.parts = [joined[cut:]]
        self.base += cut

    def close(self) -> None:
        self.closed = True
        self.raw.close()


def _csv_reader(
    path: Path, block_bytes: int, **convert: Any
) -> tuple[Any, _LineCounter, list[tuple[int, int, str]], int]:
    """``pyarrow.csv.open_csv`` over a :class:`_LineCounter`, malformed rows set aside.

    Returns the reader, its line counter, the list the malformed rows go to (as
    ``(record number, fields, text)``) and the block size that held the header.

    Raises:
        DataError: an empty file, or a record longer than the largest block.
    """
    pa = _require_pyarrow(f"reading {path}")
    import pyarrow.csv as pacsv

    malformed: list[tuple[int, int, str]] = []

    def set_aside(row: Any) -> str:
        malformed.append((int(row.number), int(row.actual_columns), str(row.text)))
        return "skip"

    size = block_bytes
    while True:
        counter = _LineCounter(path)
        try:
            reader = pacsv.open_csv(
                pa.PythonFile(counter, mode="r"),
                read_options=pacsv.ReadOptions(use_threads=False, block_size=size),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=set_aside
                ),
                convert_options=pacsv.ConvertOptions(**convert),
            )
            return reader, counter, malformed, size
        except pa.ArrowInvalid as exc:
            counter.close()
            if counter.blank:
                raise DataError(f"{path}: empty file (no header row)") from None
            if "UTF8" in str(exc):
                raise _utf8_error(path) from None
            if counter.eof and counter.line == 1:  # pyarrow wants a newline after the header
                raise DataError(f"{path}: header only, no data rows") from None
            if (
                counter.eof
                or size >= _MAX_BLOCK_BYTES
                or not any(text in str(exc) for text in ("Empty CSV file", "straddl"))
            ):
                raise _csv_error(path, exc, counter) from None
            size = min(4 * size, _MAX_BLOCK_BYTES)  # the header or first row outgrew a block
            malformed.clear()


class CsvReader(InputReader):
    """A comma-separated file with a header row (``.csv`` or gzip-compressed)."""

    format = "csv"

    def __init__(self, path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        super().__init__(path)
        pa = _require_pyarrow(f"reading {path}")
        reader, counter, malformed, self._block_bytes = _csv_reader(path, int(block_bytes))
        try:
            first = next(iter(reader), None)
        except pa.ArrowInvalid as exc:
            raise _csv_error(path, exc, counter) from None
        finally:
            counter.close()
        self._raw_names = [str(n) for n in reader.schema.names]
        header = [name.strip() for name in self._raw_names]
        if header == [""]:
            raise DataError(f"{path}: line 1 is empty; expected a header row of column names")
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise DataError(f"{path}: column name {name!r} appears twice in the header")
            seen.add(name)
        if (first is None or first.num_rows == 0) and not malformed:
            raise DataError(f"{path}: header only, no data rows")
        self.columns = header
        self.num_columns = len(header)
        self.numeric_columns = [
            name
            for name, kind in zip(header, reader.schema.types, strict=True)
            if pa.types.is_integer(kind) or pa.types.is_floating(kind)
        ]

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        import pyarrow as pa

        assert self.columns is not None
        wanted = list(dict.fromkeys([*features, *carry]))
        raw = dict(zip(self.columns, self._raw_names, strict=True))
        # Every wanted column as text: score parses the numbers and names bad cells.
        reader, counter, malformed, _ = _csv_reader(
            self.path,
            self._block_bytes,
            include_columns=[raw[name] for name in wanted],
            column_types={raw[name]: pa.string() for name in wanted},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        row = 0
        pending: list[tuple[int, int, str]] = []  # malformed rows not yet handed out
        try:
            while True:
                try:
                    table = reader.read_next_batch()
                except StopIteration:
                    table = None
                except pa.ArrowInvalid as exc:
                    raise _csv_error(self.path, exc, counter) from None
                pending = sorted(pending + malformed)
                malformed.clear()
                # A malformed row before this batch's last row belongs to it
                # (record number k is data row k - 2: 1-based, after the header).
                stop = row + (0 if table is None else table.num_rows)
                taken = 0
                while taken < len(pending) and (table is None or pending[taken][0] - 2 < stop):
                    stop += 1
                    taken += 1
                mine, pending = pending[:taken], pending[taken:]
                yield from self._split(table, row, stop, mine, wanted, counter, batch_rows)
                row = stop
                counter.forget(row + 1)
                if table is None:
                    break
        finally:
            counter.close()
        if counter.quoted:
            raise _unclosed(self.path, counter)

    def _split(
        self,
        table: Any,
        start: int,
        stop: int,
        bad: list[tuple[int, int, str]],
        wanted: list[str],
        counter: _LineCounter,
        batch_rows: int,
    ) -> Iterator[InputBatch]:
        """Data rows ``start:stop`` (``bad`` among them) in chunks of ``batch_rows`` rows."""
        assert self.columns is not None
        width = len(self.columns)
        numbers = np.array([number for number, _, _ in bad], dtype=np.int64)
        rows = np.setdiff1d(np.arange(start, stop, dtype=np.int64), numbers - 2)
        bad_lines = counter.at(numbers - 1).tolist()
        rejected = [
            RejectedRow(
                number - 2, line, None, f"has {fields} fields, the header has {width}", text
            )
            for (number, fields, text), line in zip(bad, bad_lines, strict=True)
        ]
        raw = dict(zip(self.columns, self._raw_names, strict=True))
        n = len(rows)
        bounds = list(range(0, n, batch_rows)) or [0]
        for k, begin in enumerate(bounds):
            end = min(n, begin + batch_rows)
            last = k == len(bounds) - 1
            mine = [r for r in rejected if last or int(r.row or 0) < rows[end - 1]]
            rejected = rejected[len(mine) :]  # in row order: what is handed out is a prefix
            if end == begin and not mine:
                return
            chunk = rows[begin:end]
            part = table.slice(begin, end - begin) if table is not None else None
            yield InputBatch(
                source=self.name,
                columns={
                    name: part.column(raw[name]) if part is not None else _empty_text()
                    for name in wanted
                },
                rows=chunk,
                lines=counter.at(chunk + 1),
                malformed=mine,
                location="line",
                header=True,
            )


def _empty_text() -> Any:
    import pyarrow as pa

    return pa.array([], type=pa.string())


def _csv_error(path: Path, exc: BaseException, counter: _LineCounter) -> DataError:
    """A pyarrow CSV error as a located DataError."""
    text = _one_line(exc)
    if "UTF8" in text or "UTF-8" in text:
        return _utf8_error(path)
    if counter.eof and counter.quoted:
        return _unclosed(path, counter)
    if "straddling" in text or "block" in text:
        return DataError(
            f"{path}: line {counter.last_start}: a row longer than the read block "
            "(an unterminated quoted field?)"
        )
    return DataError(f"{path}: cannot read: {text}")


def _unclosed(path: Path, counter: _LineCounter) -> DataError:
    return DataError(
        f"{path}: line {counter.last_start}: a quoted field is never closed (no end of row "
        "before the end of the file)"
    )


def _utf8_error(path: Path) -> DataError:
    """Where the first byte that is not UTF-8 is, as a DataError."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with contextlib.closing(_open_binary(path)) as handle:
        while block := handle.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                start = max(0, exc.start - len(decoder.getstate()[0]))
                line += block.count(b"\n", 0, start)
                return DataError(
                    f"{path}: line {line}: not UTF-8 text (byte {block[start : start + 1]!r}); "
                    "save the file as UTF-8"
                )
            line += block.count(b"\n")
    return DataError(f"{path}: not UTF-8 text; save the file as UTF-8")


# --- JSONL ------------------------------------------------------------------------------


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line."""
    with contextlib.closing(_open_binary(path)) as handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except _READ_ERRORS as exc:
                raise DataError(f"{path}: cannot read: {_one_line(exc)}") from None
            if not raw:
                return
            number += 1
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: line {number}: not UTF-8 text (byte "
                    f"{raw[exc.start : exc.start + 1]!r}); save the file as UTF-8"
                ) from None
            if text.strip():
                yield number, text


class JsonlReader(InputReader):
    """One JSON object per line; the first record's keys name the columns."""

    format = "jsonl"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        for line, text in _jsonl_lines(path):
            try:
                first = json.loads(text)
            except ValueError as exc:
                raise DataError(
                    f"{path}: line {line}: invalid JSON ({exc}); the first record names the columns"
                ) from None
            if not isinstance(first, dict):
                raise DataError(
                    f"{path}: line {line}: not a JSON object (found {type(first).__name__}); "
                    "each line must be one object"
                )
            break
        else:
            raise DataError(f"{path}: empty file (no JSON records)")
        self.columns = [str(key) for key in first]
        self.num_columns = len(self.columns)
        self.numeric_columns = [
            str(key)
            for key, value in first.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        wanted = list(dict.fromkeys([*features, *carry]))
        carried = set(carry)
        chunk: list[tuple[int, int, str]] = []
        for row, (line, text) in enumerate(_jsonl_lines(self.path)):
            chunk.append((row, line, text))
            if len(chunk) == batch_rows:
                yield self._batch(chunk, wanted, carried)
                chunk = []
        if chunk:
            yield self._batch(chunk, wanted, carried)

    def _batch(
        self, chunk: list[tuple[int, int, str]], wanted: list[str], carried: set[str]
    ) -> InputBatch:
        values: list[list[Any]] = []
        rows, lines, malformed = [], [], []
        for row, line, text in chunk:
            reason, column = None, None
            try:
                record = json.loads(text)
            except ValueError as exc:
                reason = f"invalid JSON ({exc})"
            else:
                if not isinstance(record, dict):
                    reason = f"not a JSON object (found {type(record).__name__})"
                else:
                    column = next((name for name in wanted if name not in record), None)
                    if column is not None:
                        reason = f"missing column {column!r}"
            if reason is not None:
                malformed.append(RejectedRow(row, line, column, reason, text))
                continue
            # Carried values are written as text: one type per output column whatever
            # each record holds (numbers keep their JSON spelling).
            values.append([_json_text(record[n]) if n in carried else record[n] for n in wanted])
            rows.append(row)
            lines.append(line)
        columns = {}
        for j, name in enumerate(wanted):
            columns[name] = np.empty(len(values), dtype=object)
            columns[name][:] = [v[j] for v in values]
        return InputBatch(
            source=self.name,
            columns=columns,
            rows=np.asarray(rows, dtype=np.int64),
            lines=np.asarray(lines, dtype=np.int64),
            malformed=malformed,
            location="line",
        )


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# --- Parquet ----------------------------------------------------------------------------


class ParquetReader(InputReader):
    """A Parquet file, or a folder of them (read in name order), in record batches."""

    format = "parquet"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        pa = _require_pyarrow(f"reading {path}")
        import pyarrow.parquet as pq

        if path.is_dir():
            # Like pyarrow datasets, Spark and Ray Data: names starting with "." or "_"
            # (_temporary/, _SUCCESS, .crc files) are not data.
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.lower().endswith(_PARQUET_ENDINGS)
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not files:
                raise DataError(f"{path}: folder holds no .parquet files")
        else:
            files = [path]
        self.files = files
        self._row_counts: list[int] = []
        for file in files:
            if file.stat().st_size == 0:
                raise DataError(f"{file}: empty file (not Parquet)")
            try:
                meta = pq.read_metadata(file)
                if self.columns is None:
                    schema = meta.schema.to_arrow_schema()
                    self.columns = [str(n) for n in schema.names]
                    self.numeric_columns = [
                        str(f.name)
                        for f in schema
                        if pa.types.is_integer(f.type)
                        or pa.types.is_floating(f.type)
                        or pa.types.is_decimal(f.type)
                    ]
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{file}: not a readable Parquet file: {_one_line(exc)}") from None
            self._row_counts.append(int(meta.num_rows))
        names = self.columns or []
        if len(set(names)) != len(names):
            twice = next(c for c in names if names.count(c) > 1)
            raise DataError(f"{files[0]}: column name {twice!r} appears twice")
        self.num_columns = len(names)
        self.total_rows = sum(self._row_counts)
        if self.total_rows == 0:
            raise DataError(f"{path}: no data rows (columns: {', '.join(map(repr, names))})")

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        wanted = list(dict.fromkeys([*features, *carry]))
        for file, count in zip(self.files, self._row_counts, strict=True):
            if count == 0:
                continue
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
                        n = part.num_rows
                        yield InputBatch(
                            source=str(file),
                            columns={name: part.column(name) for name in wanted},
                            rows=np.arange(row, row + n, dtype=np.int64),
                            location="row",
                        )
                        row += n
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{file}: cannot read (corrupt Parquet?): {_one_line(exc)}"
                ) from None


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoricalColumn:
    """A text column drawn from a few names, held as codes (e.g. the predicted class name).

    Written as an Arrow dictionary column: no string per row. Call :meth:`to_numpy`
    for an ordinary object array.

    Attributes:
        codes: ``(n,)`` integer indices into ``categories``.
        categories: the names.
    """

    codes: np.ndarray
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def to_numpy(self) -> np.ndarray:
        """``(n,)`` object array of the names."""
        return np.array(self.categories, dtype=object)[self.codes]


def columns_to_numpy(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every column as a numpy array (pyarrow columns and categorical ones converted)."""
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if isinstance(values, CategoricalColumn):
            out[name] = values.to_numpy()
        elif isinstance(values, np.ndarray):
            out[name] = values
        else:
            out[name] = np.asarray(values.to_numpy(zero_copy_only=False))
    return out


def _arrow_table(columns: Mapping[str, Any], types: Mapping[str, str]) -> Any:
    """The columns as a pyarrow Table (categorical columns as dictionary arrays).

    Numeric numpy columns are declared non-nullable: that spares the Parquet writer
    its definition levels.
    """
    import pyarrow as pa

    arrays, fields = [], []
    for name, values in columns.items():
        nullable = True
        if isinstance(values, CategoricalColumn):
            array = pa.DictionaryArray.from_arrays(
                pa.array(np.asarray(values.codes, dtype=np.int32)),
                pa.array(list(values.categories), type=pa.string()),
            )
            nullable = False
        elif isinstance(values, pa.ChunkedArray):
            array = values.combine_chunks()
        elif isinstance(values, pa.Array):
            array = values
        else:
            kind = pa.type_for_alias(types[name]) if name in types else None
            array = pa.array(values, type=kind, from_pandas=False)
            nullable = values.dtype == object
        if pa.types.is_null(array.type):  # an empty or all-null first chunk
            array = array.cast(pa.string())
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _json_texts(values: Any) -> list[str]:
    """One column as JSON value texts (NaN / Inf as null)."""
    if isinstance(values, CategoricalColumn):
        names = [json.dumps(name, ensure_ascii=False) for name in values.categories]
        return [names[k] for k in values.codes.tolist()]
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        texts = values.astype(str)
        if values.dtype.kind == "f":
            texts[~np.isfinite(values)] = "null"
        return list(texts.tolist())
    items = values.tolist() if isinstance(values, np.ndarray) else values.to_pylist()
    return [
        "null"
        if isinstance(v, float) and not math.isfinite(v)
        else json.dumps(v, ensure_ascii=False, default=str)
        for v in items
    ]


class AtomicOutput:
    """An output table (CSV, Parquet, JSONL) written to a temp file and moved into place.

    The temp file comes from the one atomic writer (:class:`onnxedge.runtime.atomic.Staged`):
    beside the target, flushed before :meth:`commit`, which never replaces a file that
    appeared meanwhile unless ``overwrite``. Use as a context manager: leaving the block
    by an exception (KeyboardInterrupt, SIGTERM included) without :meth:`commit` removes
    the temp file.

    Args:
        path: the target file.
        fmt: ``csv``, ``parquet`` or ``jsonl``; compressed when the name ends in ``.gz``.
        types: column -> pyarrow type alias (``int64``, ``string``, ...) for columns
            given as object arrays whose type cannot be inferred from an empty or
            all-null first chunk.
        overwrite: whether an existing target may be replaced.

    Raises:
        DataError: the folder cannot be written.
        OutputExistsError: the target exists and ``overwrite`` is false.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        *,
        types: Mapping[str, str] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path = Path(path)
        if fmt not in OUTPUT_FORMATS:
            raise DataError(f"unknown output format {fmt!r}; known: {', '.join(OUTPUT_FORMATS)}")
        if fmt != "jsonl":
            _require_pyarrow(f"writing {self.path}")
        self.format, self.types = fmt, dict(types or {})
        self.compress = self.path.name.lower().endswith(".gz")
        self._writer: Any = None
        self._schema: Any = None
        self._sink: Any = None
        self._first: Any = None  # an empty first table, kept for its schema until rows come
        self._staged = Staged(self.path, overwrite=overwrite, error=DataError)
        self.temp_path = self._staged.path
        self._done = False

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append a batch of rows (name -> ``(n,)`` array; same names every call).

        Raises:
            DataError: the file system refused the write (disk full, ...), or a column
                changed type.
        """
        try:
            self._write(columns)
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write(self, columns: Mapping[str, Any]) -> None:
        if self.format == "jsonl":
            if self._sink is None:
                opener: Any = gzip.open if self.compress else open
                self._sink = opener(self.temp_path, "wt", encoding="utf-8", newline="\n")
            keys = [json.dumps(str(name), ensure_ascii=False) + ":" for name in columns]
            encoded = [_json_texts(values) for values in columns.values()]
            self._sink.writelines(
                "{" + ",".join(k + v for k, v in zip(keys, row, strict=True)) + "}\n"
                for row in zip(*encoded, strict=True)
            )
            return
        import pyarrow as pa

        table = _arrow_table(columns, self.types)
        if self._writer is None:
            if table.num_rows == 0 and self._first is None:
                self._first = table
                return
            self._open(table.schema)
        elif not table.schema.equals(self._schema):
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise DataError(
                    f"output columns change type between chunks ({self._schema} then "
                    f"{table.schema}): {exc}"
                ) from None
        if table.num_rows:
            self._writer.write_table(table)

    def _open(self, schema: Any) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self._schema = schema
        if self.format == "parquet":
            # Dictionary-encode the text columns only: on float columns of distinct
            # values (probabilities) the default dictionary overflows and falls back.
            text = [f.name for f in schema if not pa.types.is_floating(f.type)]
            self._writer = pq.ParquetWriter(str(self.temp_path), schema, use_dictionary=text)
            return
        compression = "gzip" if self.compress else None
        self._sink = pa.output_stream(str(self.temp_path), compression=compression)
        self._writer = pacsv.CSVWriter(
            self._sink, schema, write_options=pacsv.WriteOptions(quoting_style="needed")
        )

    def finish(self) -> None:
        """Close the temporary file (everything written); :meth:`commit` moves it.

        Raises:
            DataError: the file system refused the last writes.
        """
        try:
            if self._writer is None and self._first is not None:
                self._open(self._first.schema)  # no rows at all: still the columns
                self._writer.write_table(self._first)  # type: ignore[attr-defined]
            if self._writer is not None:
                self._writer.close()
            if self._sink is not None:
                self._sink.close()
            elif self.format == "jsonl" and self.compress:
                self.temp_path.write_bytes(gzip.compress(b""))
        except OSError as exc:
            raise self._write_error(exc) from None

    def commit(self) -> Path:
        """Move the finished file to the target; returns the target path.

        Raises:
            OutputExistsError: the target appeared meanwhile and overwriting was not asked.
            DataError: the move failed.
        """
        self._staged.commit()
        self._done = True
        return self.path

    def _write_error(self, exc: OSError) -> DataError:
        reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
        return DataError(f"cannot write {self.path}: {reason}")

    def discard(self) -> None:
        """Close and remove the temporary file; the target is not touched."""
        if self._done:
            return
        self._done = True
        # Close what is open (nothing more is written); the temp is removed either way.
        for handle in (self._writer, self._sink):
            if handle is not None:
                with contextlib.suppress(OSError, ValueError):
                    handle.close()
        self._staged.discard()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            self.discard()
