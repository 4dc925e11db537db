"""Streaming readers and atomic writers for batch scoring.

Readers yield :class:`InputBatch` chunks of at most ``batch_rows`` rows, so memory
stays bounded whatever the input size:

* **NPY** is memory-mapped; each chunk is a row slice of the map, and the pages of a
  chunk are handed back to the kernel (``madvise(MADV_DONTNEED)``) once the next one
  is asked for, so the resident set does not grow with the file.
* **CSV** (``.csv``, ``.csv.gz``; comma-separated, UTF-8, a header row) is read in
  blocks of whole lines. A block is parsed by ``pyarrow.csv`` when pyarrow is
  installed; a block that pyarrow refuses, or whose rows cannot be matched to lines
  exactly (blank lines, quoted newlines), is parsed again with the stdlib ``csv``
  module, which locates every problem. Without pyarrow every block takes that path.
* **Parquet** (a file, or a folder of ``.parquet`` files read in name order) is read
  in record batches of the requested columns only. Needs pyarrow.
* **JSONL** (``.jsonl``, ``.ndjson``, optionally ``.gz``): one JSON object per line;
  the first record names the columns.

Readers split rows into fields; they do not judge values. A row that cannot be split
(wrong field count, invalid JSON) is returned in :attr:`InputBatch.malformed`; the
scoring step (:func:`onnxedge.runtime.score.score_batch`) checks the values.

Where things are (every message and the rejected-rows file use this): text formats
(CSV, JSONL) name the **line** as an editor shows it (1-based; a CSV's header is line
1); binary formats (NPY, Parquet) name the **row** as a 0-based index within the
named file, and say "(0-based)". NPY columns are 0-based indices; other formats name
columns.

Writers (:class:`AtomicOutput`) write CSV, Parquet or JSONL to a temporary file in
the target folder and rename it over the target only on :meth:`AtomicOutput.commit`;
on error or Ctrl-C the temporary file is removed and an existing file at the target
is left untouched.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import math
import mmap
import os
import zlib
from abc import ABC, abstractmethod
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
    "rejected_path_for",
]

INPUT_FORMATS: tuple[str, ...] = ("npy", "csv", "parquet", "jsonl")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl")

#: Bytes of CSV / JSONL text read per block (whole lines; a block is parsed at once).
DEFAULT_BLOCK_BYTES = 8 << 20

#: Name endings -> format; longest first so ``.csv.gz`` wins over ``.gz``.
_INPUT_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".csv.gz", "csv"),
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".npy", "npy"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
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
#: A block of text that grows past this many block sizes without a row boundary
#: means an unterminated quote (or no newlines at all): stop instead of buffering it all.
_MAX_BLOCKS_PER_ROW = 8
#: Rows sampled to decide which CSV columns are numeric when the model names none,
#: from at most this many bytes of text after the header.
_NUMERIC_SAMPLE_ROWS = 1000
_SAMPLE_BYTES = 1 << 20
#: Reasons quote at most this many characters of a bad value.
_QUOTE_CHARS = 40
_HEADER_NOTE = "line 1 is the header"


def _arrow_available() -> bool:
    """Whether pyarrow can be imported (tests turn it off to cover the stdlib paths)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _require_pyarrow(what: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs pyarrow, which is not installed: pip install 'onnxedge[parquet]'"
        ) from None
    return pyarrow


def quote_value(value: Any) -> str:
    """``repr`` of a value, cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


# --------------------------------------------------------------------------------------
# Formats and paths
# --------------------------------------------------------------------------------------


def _suffix_format(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    lowered = name.lower()
    for suffix, fmt in table:
        if lowered.endswith(suffix):
            return fmt
    return None


def input_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The input format of ``path``: ``override`` when given, else from the name.

    A folder is Parquet (a folder of ``.parquet`` files).

    Raises:
        DataError: unknown override, or a name whose format cannot be told.
    """
    if override is not None:
        fmt = override.lower()
        if fmt not in INPUT_FORMATS:
            raise DataError(f"unknown input format {override!r}; known: {', '.join(INPUT_FORMATS)}")
        return fmt
    p = Path(path)
    if p.is_dir():
        return "parquet"
    found = _suffix_format(p.name, _INPUT_SUFFIXES)
    if found is None:
        known = ", ".join(suffix for suffix, _ in _INPUT_SUFFIXES)
        raise DataError(
            f"{p}: cannot tell the input format from the name (known endings: {known}, or a "
            "folder of .parquet files); name it with --input-format"
        )
    return found


def output_format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The output format of ``path``: ``override`` when given, else from the name.

    Raises:
        DataError: unknown override, or a name whose format cannot be told.
    """
    if override is not None:
        fmt = override.lower()
        if fmt not in OUTPUT_FORMATS:
            raise DataError(
                f"unknown output format {override!r}; known: {', '.join(OUTPUT_FORMATS)}"
            )
        return fmt
    p = Path(path)
    found = _suffix_format(p.name, _OUTPUT_SUFFIXES)
    if found is None:
        known = ", ".join(suffix for suffix, _ in _OUTPUT_SUFFIXES)
        raise DataError(
            f"{p}: cannot tell the output format from the name (known endings: {known}); "
            "name it with --output-format"
        )
    return found


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
            named formats; empty for NPY.
        matrix: ``(n, f)`` numeric array for NPY (a view of the memory map), else None.
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


class InputReader(ABC):
    """A file (or folder) of rows, opened and checked, ready to stream.

    Attributes:
        path: what was opened.
        format: ``npy``, ``csv``, ``parquet`` or ``jsonl``.
        columns: column names in file order; None for NPY (no names).
        numeric_columns: the columns whose values look numeric (from the schema, or
            sampled from the first rows), in file order; empty for NPY.
        num_columns: fields per row.
        total_rows: rows in the input when known without reading it (NPY, Parquet).
    """

    format: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        self.numeric_columns: list[str] = []
        self.num_columns = 0
        self.total_rows: int | None = None

    @property
    def name(self) -> str:
        """The input as messages name it."""
        return str(self.path)

    @abstractmethod
    def batches(
        self, *, features: Sequence[str], carry: Sequence[str], batch_rows: int
    ) -> Iterator[InputBatch]:
        """Yield the input in chunks of at most ``batch_rows`` rows (malformed included).

        Args:
            features: feature columns to read, in model order (ignored for NPY).
            carry: columns carried to the output as they are (ids, kept columns).
            batch_rows: the most rows one chunk holds.

        Raises:
            DataError: the file turns out to be unreadable part-way.
        """

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open between batches
        """Release files and maps (the reader can not be used afterwards)."""

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
        block_bytes: text read per block (CSV, JSONL).

    Raises:
        DataError: missing, empty, header-only, unreadable or corrupt input;
            unknown format.
        InputShapeError: an NPY array that is not 2-D.
        MissingDependencyError: Parquet without pyarrow.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist")
    kind = input_format_of(p, fmt)
    if p.is_dir() and kind != "parquet":
        raise DataError(f"input {p} is a folder; only Parquet input may be a folder of files")
    if kind == "npy":
        return NpyReader(p)
    if kind == "csv":
        return CsvReader(p, block_bytes=block_bytes)
    if kind == "jsonl":
        return JsonlReader(p, block_bytes=block_bytes)
    return ParquetReader(p)


# --- NPY -------------------------------------------------------------------------------


class NpyReader(InputReader):
    """A 2-D numeric ``.npy`` array, memory-mapped and read in row slices."""

    format = "npy"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (no NPY header)")
        with open(path, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:
            raise DataError(f"{path}: not an NPY file (it does not start with the NPY magic bytes)")
        try:
            # np.load parses and checks the header; the map itself is made below so
            # that pages can be released with the mmap module's public madvise().
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(
                f"{path}: not a readable NPY file: {' '.join(str(exc).split())}"
            ) from None
        if not isinstance(header, np.memmap):
            raise DataError(f"{path}: not a single NumPy array")
        shape, dtype, offset = header.shape, header.dtype, int(header.offset)
        fortran = bool(header.flags.f_contiguous and not header.flags.c_contiguous)
        del header
        if len(shape) != 2:
            raise InputShapeError(
                f"{path}: holds an array of shape {shape}; expected 2-D (rows, features)"
            )
        if dtype.kind not in "biuf":
            raise DataError(
                f"{path}: has dtype {dtype}; features must be real numbers (bool, int or float)"
            )
        if shape[0] == 0:
            raise DataError(f"{path}: no rows (shape {shape})")
        self.num_columns = int(shape[1])
        self.total_rows = int(shape[0])
        self._file = open(path, "rb")  # noqa: SIM115 - kept open for the map's lifetime
        try:
            self._map: mmap.mmap | None = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            self._file.close()
            raise DataError(f"{path}: cannot memory-map: {exc}") from None
        if hasattr(self._map, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._array = np.ndarray(
            shape, dtype=dtype, buffer=self._map, offset=offset, order="F" if fortran else "C"
        )
        self._offset = offset
        # Row slices of a Fortran-order array are strided over the whole file, so their
        # pages cannot be released chunk by chunk.
        self._releasable = not fortran and hasattr(mmap, "MADV_DONTNEED")

    def batches(
        self, *, features: Sequence[str] = (), carry: Sequence[str] = (), batch_rows: int
    ) -> Iterator[InputBatch]:
        array = self._array
        row_bytes = array.shape[1] * array.dtype.itemsize
        n = array.shape[0]
        for start in range(0, n, batch_rows):
            stop = min(n, start + batch_rows)
            yield InputBatch(
                source=self.name,
                matrix=array[start:stop],  # (rows, features), a view of the map
                rows=np.arange(start, stop, dtype=np.int64),
                location="row",
            )
            # The consumer asked for the next chunk: this one's pages can go.
            if self._releasable:
                self._release(self._offset + start * row_bytes, (stop - start) * row_bytes)

    def _release(self, begin: int, length: int) -> None:
        """Drop the mapped pages of ``[begin, begin + length)`` from this process.

        The file's pages stay in the page cache; only this process's resident set
        shrinks. Without this, reading a mapped file of N bytes leaves N bytes resident.
        """
        if self._map is None or length <= 0:
            return
        page = mmap.PAGESIZE
        first = (begin // page) * page
        end = min(begin + length, len(self._map))
        with contextlib.suppress(OSError, ValueError):
            self._map.madvise(mmap.MADV_DONTNEED, first, end - first)

    def close(self) -> None:
        # The map is not closed here: numpy views of it handed out as chunks may still
        # be alive, and closing would unmap their memory under them. Dropping the
        # references lets the map go with its last view.
        self._array = np.empty((0, self.num_columns), dtype=np.float32)
        self._map = None
        self._file.close()


# --- text blocks (CSV, JSONL) -----------------------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - returned to the caller
    magic = handle.read(2)
    handle.seek(0)
    if magic == _GZIP_MAGIC:
        # Opened by name, the gzip stream owns its file and closes it (a fileobj= it
        # would leave open until garbage collection).
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return handle


def _read_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read: {' '.join(str(exc).split()) or type(exc).__name__}")


_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


def _text_blocks(
    path: Path, handle: BinaryIO, block_bytes: int, *, quotes: bool, first_line: int
) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(block, line of its first byte, newlines in it)``; blocks end at row ends.

    With ``quotes`` a newline inside a double-quoted field is not a boundary: a
    newline ends a row only after an even number of quote characters (RFC 4180
    escapes a quote as two, which keeps the count even).
    """
    pending = b""
    line = first_line
    eof = False
    while not eof:
        try:
            data = handle.read(block_bytes)
        except _READ_ERRORS as exc:
            raise _read_error(path, exc) from None
        eof = not data
        buf = pending + data if pending else data
        if eof:
            if buf:
                yield buf, line, buf.count(b"\n")
            return
        cut = buf.rfind(b"\n")
        if quotes and b'"' in buf:  # a memchr; the parity count only where quotes are
            while cut >= 0 and buf.count(b'"', 0, cut) % 2:
                cut = buf.rfind(b"\n", 0, cut)
        if cut < 0:
            if len(buf) > _MAX_BLOCKS_PER_ROW * block_bytes:
                raise DataError(
                    f"{path}: line {line}: no end of row within {len(buf)} bytes "
                    "(an unterminated quoted field?)"
                )
            pending = buf
            continue
        block, pending = buf[: cut + 1], buf[cut + 1 :]
        newlines = block.count(b"\n")
        yield block, line, newlines
        line += newlines


def _decode(path: Path, block: bytes, line: int) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = line + block.count(b"\n", 0, exc.start)
        raise DataError(
            f"{path}: line {bad_line}: not UTF-8 text (byte {block[exc.start : exc.start + 1]!r}); "
            "save the file as UTF-8"
        ) from None


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --- CSV --------------------------------------------------------------------------------


class CsvReader(InputReader):
    """A comma-separated file with a header row (``.csv`` or gzip-compressed)."""

    format = "csv"

    def __init__(self, path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        super().__init__(path)
        self.block_bytes = int(block_bytes)
        with contextlib.closing(_open_binary(path)) as handle:
            blocks = _text_blocks(path, handle, self.block_bytes, quotes=True, first_line=1)
            first = next(blocks, None)
            if first is None or not first[0].strip():
                raise DataError(f"{path}: empty file (no header row)")
            text = first[0]
            # The header is the first record; what follows it starts at header_bytes.
            header_text, self._header_bytes = _first_record(path, text)
            sample_text = _decode(path, _head(text[self._header_bytes :]), 2)
            if not sample_text.strip():
                # The first block may end right after the header: look one block further.
                nxt = next(blocks, None)
                if nxt is not None:
                    sample_text = _decode(path, _head(nxt[0]), nxt[1])
        header = next(csv.reader([header_text]), [])
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]  # the byte-order mark spreadsheet programs write
        header = [name.strip() for name in header]
        if not header or header == [""]:
            raise DataError(f"{path}: line 1 is empty; expected a header row of column names")
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise DataError(f"{path}: column name {name!r} appears twice in the header")
            seen.add(name)
        rows = (row for row in csv.reader(io.StringIO(sample_text)) if row)
        sample = list(itertools.islice(rows, _NUMERIC_SAMPLE_ROWS))
        if not sample:
            raise DataError(f"{path}: header only, no data rows")
        self.columns = header
        self.num_columns = len(header)
        self._header_lines = header_text.count("\n") + 1
        sample = [row for row in sample if len(row) == len(header)]
        numeric = []
        for j, name in enumerate(header):
            cells = [row[j].strip() for row in sample if row[j].strip()]
            if cells and all(_looks_numeric(c) for c in cells):
                numeric.append(name)
        self.numeric_columns = numeric

    def batches(
        self, *, features: Sequence[str], carry: Sequence[str], batch_rows: int
    ) -> Iterator[InputBatch]:
        assert self.columns is not None
        wanted = list(dict.fromkeys([*features, *carry]))
        text_columns = set(carry)
        use_arrow = _arrow_available()
        row = 0
        with contextlib.closing(_open_binary(self.path)) as handle:
            try:
                handle.read(self._header_bytes)
            except _READ_ERRORS as exc:
                raise _read_error(self.path, exc) from None
            for block, line, newlines in _text_blocks(
                self.path, handle, self.block_bytes, quotes=True, first_line=self._header_lines + 1
            ):
                table = (
                    self._arrow_block(block, newlines, wanted, text_columns) if use_arrow else None
                )
                if table is not None:
                    for start in range(0, table.num_rows, batch_rows):
                        part = table.slice(start, batch_rows)
                        n = part.num_rows
                        yield InputBatch(
                            source=self.name,
                            columns={name: part.column(name) for name in wanted},
                            rows=np.arange(row, row + n, dtype=np.int64),
                            lines=np.arange(line + start, line + start + n, dtype=np.int64),
                            location="line",
                            header=True,
                        )
                        row += n
                    continue
                for batch in self._python_block(block, line, row, wanted, batch_rows):
                    row += batch.num_rows + len(batch.malformed)
                    yield batch

    def _arrow_block(
        self, block: bytes, newlines: int, wanted: list[str], text_columns: set[str]
    ) -> Any:
        """Parse a clean block with pyarrow; None when it needs the exact (stdlib) path."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        assert self.columns is not None
        types = {name: (pa.string() if name in text_columns else pa.float64()) for name in wanted}
        try:
            table = pacsv.read_csv(
                pa.py_buffer(block),
                read_options=pacsv.ReadOptions(column_names=self.columns, use_threads=True),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted,
                    column_types=types,
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        lines = newlines + (0 if block.endswith(b"\n") else 1)
        # One row per line is what makes line numbers exact; blank lines or quoted
        # newlines break it, and the stdlib path counts those itself.
        if table.num_rows != lines:
            return None
        return table

    def _python_block(
        self, block: bytes, line: int, row: int, wanted: list[str], batch_rows: int
    ) -> Iterator[InputBatch]:
        """Split a block with the stdlib csv module; every row's line is known exactly."""
        assert self.columns is not None
        width = len(self.columns)
        index = [self.columns.index(name) for name in wanted]
        text = _decode(self.path, block, line)
        reader = csv.reader(io.StringIO(text))
        physical: list[str] | None = None  # the block's lines, split only if a row is malformed
        cells: list[list[str]] = []
        rows: list[int] = []
        lines: list[int] = []
        malformed: list[RejectedRow] = []
        last_line = 0
        count = 0  # rows in the chunk being built, malformed included
        try:
            for fields in reader:
                first_line = line + last_line  # the record's first line
                last_line = reader.line_num
                if not fields:
                    continue  # a blank line is no row
                if len(fields) != width:
                    if physical is None:
                        physical = text.split("\n")
                    raw = "\n".join(physical[first_line - line : last_line]).rstrip("\r")
                    malformed.append(
                        RejectedRow(
                            row=row,
                            line=first_line,
                            column=None,
                            reason=f"has {len(fields)} fields, the header has {width}",
                            raw=raw,
                        )
                    )
                else:
                    cells.append([fields[j] for j in index])
                    rows.append(row)
                    lines.append(first_line)
                row += 1
                count += 1
                if count == batch_rows:
                    yield self._python_batch(wanted, cells, rows, lines, malformed)
                    cells, rows, lines, malformed, count = [], [], [], [], 0
        except csv.Error as exc:
            raise DataError(f"{self.path}: line {line + reader.line_num - 1}: {exc}") from None
        if count:
            yield self._python_batch(wanted, cells, rows, lines, malformed)

    def _python_batch(
        self,
        wanted: list[str],
        cells: list[list[str]],
        rows: list[int],
        lines: list[int],
        malformed: list[RejectedRow],
    ) -> InputBatch:
        columns: dict[str, Any] = {}
        for j, name in enumerate(wanted):
            column = np.empty(len(cells), dtype=object)
            column[:] = [r[j] for r in cells]
            columns[name] = column
        return InputBatch(
            source=self.name,
            columns=columns,
            rows=np.asarray(rows, dtype=np.int64),
            lines=np.asarray(lines, dtype=np.int64),
            malformed=malformed,
            location="line",
            header=True,
        )


def _head(block: bytes) -> bytes:
    """The first :data:`_SAMPLE_BYTES` of a block, cut after a newline (a sample)."""
    if len(block) <= _SAMPLE_BYTES:
        return block
    cut = block.rfind(b"\n", 0, _SAMPLE_BYTES)
    return block[: cut + 1] if cut >= 0 else block[:_SAMPLE_BYTES]


def _first_record(path: Path, block: bytes) -> tuple[str, int]:
    """The header record's text and the byte offset where the data starts."""
    cut = -1
    while True:
        cut = block.find(b"\n", cut + 1)
        if cut < 0:
            end = len(block)
            break
        if block.count(b'"', 0, cut) % 2 == 0:
            end = cut + 1
            break
    header = _decode(path, block[:end], 1)
    return header.rstrip("\r\n"), end


# --- JSONL ------------------------------------------------------------------------------


class JsonlReader(InputReader):
    """One JSON object per line; the first record's keys name the columns."""

    format = "jsonl"

    def __init__(self, path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        super().__init__(path)
        self.block_bytes = int(block_bytes)
        first: dict[str, Any] | None = None
        with contextlib.closing(_open_binary(path)) as handle:
            for block, line, _ in _text_blocks(
                path, handle, self.block_bytes, quotes=False, first_line=1
            ):
                text = _decode(path, block, line)
                for offset, raw in enumerate(text.split("\n")):
                    if not raw.strip():
                        continue
                    try:
                        value = json.loads(raw)
                    except ValueError as exc:
                        raise DataError(
                            f"{path}: line {line + offset}: invalid JSON ({exc}); the first "
                            "record names the columns"
                        ) from None
                    if not isinstance(value, dict):
                        raise DataError(
                            f"{path}: line {line + offset}: not a JSON object "
                            f"(found {type(value).__name__}); each line must be one object"
                        )
                    first = value
                    break
                if first is not None:
                    break
        if first is None:
            raise DataError(f"{path}: empty file (no JSON records)")
        self.columns = [str(key) for key in first]
        self.num_columns = len(self.columns)
        self.numeric_columns = [
            str(key)
            for key, value in first.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]

    def batches(
        self, *, features: Sequence[str], carry: Sequence[str], batch_rows: int
    ) -> Iterator[InputBatch]:
        wanted = list(dict.fromkeys([*features, *carry]))
        carried = set(carry)
        row = 0
        state = _JsonlChunk(wanted)
        with contextlib.closing(_open_binary(self.path)) as handle:
            for block, line, _ in _text_blocks(
                self.path, handle, self.block_bytes, quotes=False, first_line=1
            ):
                text = _decode(self.path, block, line)
                for offset, raw in enumerate(text.split("\n")):
                    if not raw.strip():
                        continue
                    state.add(raw.rstrip("\r"), row, line + offset)
                    row += 1
                    if state.count == batch_rows:
                        yield state.batch(self.name, carried)
                        state = _JsonlChunk(wanted)
        if state.count:
            yield state.batch(self.name, carried)


class _JsonlChunk:
    """Rows of one JSONL chunk as they are parsed."""

    def __init__(self, wanted: list[str]) -> None:
        self.wanted = wanted
        self.values: list[list[Any]] = []
        self.rows: list[int] = []
        self.lines: list[int] = []
        self.malformed: list[RejectedRow] = []
        self.count = 0

    def add(self, raw: str, row: int, line: int) -> None:
        self.count += 1
        try:
            record = json.loads(raw)
        except ValueError as exc:
            self._reject(raw, row, line, None, f"invalid JSON ({exc})")
            return
        if not isinstance(record, dict):
            self._reject(raw, row, line, None, f"not a JSON object (found {type(record).__name__})")
            return
        missing = [name for name in self.wanted if name not in record]
        if missing:
            self._reject(raw, row, line, missing[0], f"missing column {missing[0]!r}")
            return
        self.values.append([record[name] for name in self.wanted])
        self.rows.append(row)
        self.lines.append(line)

    def _reject(self, raw: str, row: int, line: int, column: str | None, reason: str) -> None:
        self.malformed.append(
            RejectedRow(row=row, line=line, column=column, reason=reason, raw=raw)
        )

    def batch(self, source: str, carried: set[str]) -> InputBatch:
        columns: dict[str, Any] = {}
        for j, name in enumerate(self.wanted):
            column = np.empty(len(self.values), dtype=object)
            if name in carried:
                # Carried JSONL values are written as text: one type per output column
                # whatever each record holds (numbers keep their JSON spelling).
                column[:] = [_json_text(v[j]) for v in self.values]
            else:
                column[:] = [v[j] for v in self.values]
            columns[name] = column
        return InputBatch(
            source=source,
            columns=columns,
            rows=np.asarray(self.rows, dtype=np.int64),
            lines=np.asarray(self.lines, dtype=np.int64),
            malformed=self.malformed,
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
        schema_names: list[str] | None = None
        numeric: list[str] = []
        for file in files:
            if file.stat().st_size == 0:
                raise DataError(f"{file}: empty file (not Parquet)")
            try:
                meta = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{file}: not a readable Parquet file: {' '.join(str(exc).split())}"
                ) from None
            try:
                schema = meta.schema_arrow
                if schema_names is None:
                    schema_names = [str(n) for n in schema.names]
                    numeric = [str(f.name) for f in schema if _is_numeric_arrow(pa, f.type)]
                self._row_counts.append(int(meta.metadata.num_rows))
            finally:
                meta.close()
        assert schema_names is not None
        if len(set(schema_names)) != len(schema_names):
            twice = next(c for c in schema_names if schema_names.count(c) > 1)
            raise DataError(f"{files[0]}: column name {twice!r} appears twice")
        self.columns = schema_names
        self.numeric_columns = numeric
        self.num_columns = len(schema_names)
        self.total_rows = sum(self._row_counts)
        if self.total_rows == 0:
            raise DataError(f"{path}: no data rows (columns: {', '.join(map(repr, schema_names))})")

    def batches(
        self, *, features: Sequence[str], carry: Sequence[str], batch_rows: int
    ) -> Iterator[InputBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        wanted = list(dict.fromkeys([*features, *carry]))
        for file, count in zip(self.files, self._row_counts, strict=True):
            if count == 0:
                continue
            try:
                parquet = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{file}: not a readable Parquet file: {' '.join(str(exc).split())}"
                ) from None
            try:
                names = set(parquet.schema_arrow.names)
                missing = [name for name in wanted if name not in names]
                if missing:
                    raise DataError(
                        f"{file}: missing columns {', '.join(map(repr, missing))} "
                        f"(present in {self.files[0].name})"
                    )
                row = 0
                for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
                    n = record_batch.num_rows
                    yield InputBatch(
                        source=str(file),
                        columns={name: record_batch.column(name) for name in wanted},
                        rows=np.arange(row, row + n, dtype=np.int64),
                        location="row",
                    )
                    row += n
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{file}: cannot read (corrupt Parquet?): {' '.join(str(exc).split())}"
                ) from None
            finally:
                parquet.close()


def _is_numeric_arrow(pa: Any, kind: Any) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoricalColumn:
    """A text column drawn from a few names, held as codes (e.g. the predicted class name).

    Writers turn it into text without building one Python string per row; call
    :meth:`to_numpy` for an ordinary object array.

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


class _TableWriter(ABC):
    """Writes batches of columns (name -> ``(n,)`` array) to an open path."""

    def __init__(self, path: Path, compress: bool, types: Mapping[str, str]) -> None:
        self.path = path
        self.compress = compress
        self.types = dict(types)  # column -> arrow type name, for columns of Python objects

    @abstractmethod
    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows (every column the same length; the same names every time)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close the file."""


def _to_arrow(values: Any, type_name: str | None = None) -> tuple[Any, bool]:
    """One column as a pyarrow Array, and whether it may hold nulls.

    Numeric numpy arrays and categorical columns never hold nulls; declaring them
    non-nullable spares the Parquet writer its definition levels (a quarter of the
    time it spends on float columns).
    """
    import pyarrow as pa

    if isinstance(values, CategoricalColumn):
        # Codes and names as they are: no string per row, and Parquet stores the
        # dictionary directly instead of hashing every value to rebuild it.
        codes = pa.array(np.asarray(values.codes, dtype=np.int32))
        names = pa.array(list(values.categories), type=pa.string())
        return pa.DictionaryArray.from_arrays(codes, names), False
    if isinstance(values, pa.ChunkedArray):
        return (values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)), True
    if isinstance(values, pa.Array):
        return values, True
    kind = pa.type_for_alias(type_name) if type_name else None
    if isinstance(values, np.ndarray) and values.dtype == object:
        # Directly from the object array: no intermediate list of Python objects.
        return pa.array(values, type=kind, from_pandas=False), True
    return pa.array(values, type=kind), False


def _arrow_table(columns: Mapping[str, Any], schema: Any, types: Mapping[str, str]) -> Any:
    import pyarrow as pa

    arrays, fields = [], []
    for name, values in columns.items():
        array, nullable = _to_arrow(values, types.get(name))
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=nullable))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if schema is not None and not table.schema.equals(schema):
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise DataError(
                f"output columns change type between chunks ({schema} then {table.schema}): {exc}"
            ) from None
    return table


def _widen_nulls(schema: Any) -> Any:
    """A schema where columns of null type (an empty first chunk) become strings."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(f.name, pa.string(), nullable=True) if pa.types.is_null(f.type) else f
            for f in schema
        ]
    )


def _parquet_writer(path: Path, schema: Any) -> Any:
    """A ParquetWriter that dictionary-encodes text columns and compresses non-floats.

    pyarrow tries a dictionary for every column by default; on float columns of
    distinct values (probabilities) it builds one, overflows and falls back, which
    made writing several times slower than the inference it records. Snappy does not
    shrink such floats at all (1M rows x 10 probabilities: 39.4 MB either way) and
    costs a fifth of their write time, so float columns are stored uncompressed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    compression = {f.name: "none" if pa.types.is_floating(f.type) else "snappy" for f in schema}
    return pq.ParquetWriter(str(path), schema, compression=compression, use_dictionary=text)


class _ParquetWriter(_TableWriter):
    def __init__(self, path: Path, compress: bool, types: Mapping[str, str]) -> None:
        super().__init__(path, compress, types)
        _require_pyarrow("writing Parquet")
        self._writer: Any = None
        self._pending: Any = None  # an empty first chunk, kept for its schema

    def write(self, columns: Mapping[str, Any]) -> None:

        table = _arrow_table(columns, self._writer.schema if self._writer else None, self.types)
        if self._writer is None:
            if table.num_rows == 0:
                self._pending = table
                return
            schema = _widen_nulls(table.schema)
            table = table.cast(schema)
            self._writer = _parquet_writer(self.path, schema)
        if table.num_rows:
            self._writer.write_table(table)

    def close(self) -> None:

        if self._writer is None:
            if self._pending is None:
                return
            # No rows at all: still a valid Parquet file with the columns.
            schema = _widen_nulls(self._pending.schema)
            self._writer = _parquet_writer(self.path, schema)
            self._writer.write_table(self._pending.cast(schema))
        self._writer.close()


class _CsvWriter(_TableWriter):
    """CSV with a header; pyarrow's writer when available, else the stdlib's."""

    def __init__(self, path: Path, compress: bool, types: Mapping[str, str]) -> None:
        super().__init__(path, compress, types)
        self._arrow = _arrow_available()
        self._writer: Any = None
        self._sink: Any = None
        self._schema: Any = None
        self._header_pending: list[str] | None = None

    def write(self, columns: Mapping[str, Any]) -> None:
        if self._arrow:
            self._write_arrow(columns)
        else:
            self._write_python(columns)

    def _write_arrow(self, columns: Mapping[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = _arrow_table(columns, self._schema, self.types)
        if self._writer is None:
            if table.num_rows == 0:
                self._header_pending = list(columns)  # written at close if no rows come
                return
            self._schema = _widen_nulls(table.schema)
            table = table.cast(self._schema)
            if self.compress:
                self._sink = pa.CompressedOutputStream(str(self.path), "gzip")
            else:
                self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pacsv.CSVWriter(
                self._sink, self._schema, write_options=pacsv.WriteOptions(quoting_style="needed")
            )
        if table.num_rows:
            self._writer.write_table(table)

    def _write_python(self, columns: Mapping[str, Any]) -> None:
        if self._writer is None:
            self._sink = (
                gzip.open(self.path, "wt", encoding="utf-8", newline="")  # noqa: SIM115
                if self.compress
                else open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            )
            self._writer = csv.writer(self._sink, lineterminator="\n")
            self._writer.writerow(list(columns))
        texts = [_csv_texts(values) for values in columns.values()]
        self._writer.writerows(zip(*texts, strict=True))

    def close(self) -> None:
        if self._arrow:
            if self._writer is None and self._header_pending is not None:
                self._write_header_only()
                return
            if self._writer is not None:
                self._writer.close()
                self._sink.close()
            return
        if self._sink is not None:
            self._sink.close()

    def _write_header_only(self) -> None:
        assert self._header_pending is not None
        opener = gzip.open if self.compress else open
        with opener(self.path, "wt", encoding="utf-8", newline="") as sink:
            csv.writer(sink, lineterminator="\n").writerow(self._header_pending)


def _csv_texts(values: Any) -> list[str]:
    """One column as CSV cell texts (floats in their shortest round-trip form)."""
    if isinstance(values, CategoricalColumn):
        return [values.categories[k] for k in values.codes.tolist()]
    if not isinstance(values, np.ndarray) and hasattr(values, "to_pylist"):
        values = np.array(values.to_pylist(), dtype=object)
    array = np.asarray(values)
    if array.dtype.kind == "f":
        texts = array.astype(str)
        bad = ~np.isfinite(array)
        if bad.any():
            texts[bad & np.isnan(array)] = ""
        return texts.tolist()
    if array.dtype.kind in "iub":
        return array.astype(str).tolist()
    return ["" if v is None else str(v) for v in array.tolist()]


class _JsonlWriter(_TableWriter):
    """One JSON object per line, keys in column order."""

    def __init__(self, path: Path, compress: bool, types: Mapping[str, str]) -> None:
        super().__init__(path, compress, types)
        self._sink: Any = (
            gzip.open(path, "wt", encoding="utf-8", newline="\n")  # noqa: SIM115
            if compress
            else open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        )

    def write(self, columns: Mapping[str, Any]) -> None:
        keys = [json.dumps(str(name), ensure_ascii=False) + ":" for name in columns]
        encoded = [_json_texts(values) for values in columns.values()]
        lines = [
            "{" + ",".join(k + v for k, v in zip(keys, row, strict=True)) + "}\n"
            for row in zip(*encoded, strict=True)
        ]
        self._sink.writelines(lines)

    def close(self) -> None:
        self._sink.close()


def _json_texts(values: Any) -> list[str]:
    """One column as JSON value texts (floats shortest; NaN / Inf as null)."""
    if isinstance(values, CategoricalColumn):
        names = [json.dumps(name, ensure_ascii=False) for name in values.categories]
        return [names[k] for k in values.codes.tolist()]
    if not isinstance(values, np.ndarray):
        values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)
        return [_json_value(v) for v in values]
    if values.dtype.kind == "f":
        texts = values.astype(str)
        bad = ~np.isfinite(values)
        if bad.any():
            texts[bad] = "null"
        return texts.tolist()
    if values.dtype.kind in "iu":
        return values.astype(str).tolist()
    if values.dtype.kind == "b":
        return ["true" if v else "false" for v in values.tolist()]
    return [_json_value(v) for v in values.tolist()]


def _json_value(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    return json.dumps(value, ensure_ascii=False, default=str)


_WRITERS: dict[str, type[_TableWriter]] = {
    "csv": _CsvWriter,
    "parquet": _ParquetWriter,
    "jsonl": _JsonlWriter,
}


class AtomicOutput:
    """An output table written under a temporary name and moved into place.

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
        if fmt not in _WRITERS:
            raise DataError(f"unknown output format {fmt!r}; known: {', '.join(OUTPUT_FORMATS)}")
        self.format = fmt
        self._staged = Staged(self.path, overwrite=overwrite, error=DataError)
        self.temp_path = self._staged.path
        self._done = False
        try:
            compress = self.path.name.lower().endswith(".gz")
            self._writer = _WRITERS[fmt](self.temp_path, compress, types or {})
        except BaseException:
            self._staged.discard()
            raise

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append a batch of rows (name -> ``(n,)`` array; same names every call).

        Raises:
            DataError: the file system refused the write (disk full, ...).
        """
        try:
            self._writer.write(columns)
        except OSError as exc:
            raise self._write_error(exc) from None

    def finish(self) -> None:
        """Close the temporary file (everything written); :meth:`commit` renames it.

        Raises:
            DataError: the file system refused the last writes.
        """
        try:
            self._writer.close()
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
        with contextlib.suppress(Exception):
            self._writer.close()
        self._staged.discard()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            self.discard()
