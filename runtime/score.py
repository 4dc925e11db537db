"""Batch scoring: a file of rows in, a file of predictions out, in constant memory.

:func:`score_batch` checks and scores one :class:`~onnxedge.runtime.io.InputBatch` under a
:class:`ScorePlan` (:func:`plan_scoring`); the local engine (:func:`score_file`) and the Ray
engine (``score_ray``) both call it. Output columns: the id and kept columns as read,
``label``, ``class_name`` and one float32 ``prob_<class>`` per class. Under ``skip``
rejected rows go to ``<output stem>.rejected.<ending>`` (:data:`REJECTED_COLUMNS`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.runtime import io as rio
from onnxedge.runtime.errors import DataError, InputShapeError, InputValueError
from onnxedge.runtime.io import AtomicOutput, CategoricalColumn, InputBatch, RejectedRow

if TYPE_CHECKING:  # pragma: no cover
    from onnxedge.runtime.predictor import Predictor

#: Rows per ``session.run``: the activations of these MLPs stay in cache.
DEFAULT_BATCH_SIZE = 8192
#: Rows read, checked and written at once (a chunk of 64 float32 features is 16 MiB).
DEFAULT_CHUNK_ROWS = 65536
BAD_ROW_POLICIES: tuple[str, ...] = ("fail", "skip")
#: The input file, then :class:`RejectedRow`'s fields in their order (rows are its astuple).
REJECTED_COLUMNS: tuple[str, ...] = ("source", *(f.name for f in fields(RejectedRow)))
#: Arrow types of the rejected-rows table (its object columns may be all null).
REJECTED_TYPES = {name: "string" for name in REJECTED_COLUMNS} | {"row": "int64", "line": "int64"}
RESERVED_COLUMNS = ("label", "class_name")
#: The reason recorded for a finite row whose outputs overflow the model's arithmetic.
OUTPUT_OVERFLOW = (
    "the model's probabilities are NaN or Inf for this row (its values overflow float32 arithmetic)"
)
_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


@dataclass(eq=False)
class BadRowError(InputValueError):
    """A row that cannot be scored, under ``on_bad_row="fail"``: its ``source`` (file),
    ``row`` (0-based) and ``line`` (1-based, text formats), each None where unknown, the
    ``column`` (None: the row as a whole) and the ``reason``."""

    message: str
    source: str
    row: int | None
    line: int | None
    column: str | None
    reason: str

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by its fields (Ray ships it)
        return (type(self), astuple(self))


# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorePlan:
    """What to compute for every batch of one input, resolved once and shared by engines:
    ``features`` in model order (None for a matrix input), ``carry`` (copied as read, the
    id column first), one name per class, the probability columns (or none), the
    features per row, the bad-row policy and the rows per ``session.run``."""

    features: tuple[str, ...] | None
    carry: tuple[str, ...]
    class_names: tuple[str, ...]
    probability_columns: tuple[str, ...]
    num_features: int
    on_bad_row: str = "fail"
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The output's column names, in order."""
        return (*self.carry, *RESERVED_COLUMNS, *self.probability_columns)

    @property
    def read_columns(self) -> list[str]:
        """The input columns a batch must hold (features, then carried ones)."""
        return list(dict.fromkeys([*(self.features or ()), *self.carry]))


def probability_column_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """``prob_<name>`` per class: runs of characters other than ASCII letters, digits and
    ``_`` become ``_``, an empty name uses its index, a repeat gets ``_<index>``."""
    out: list[str] = []
    for index, name in enumerate(class_names):
        column = f"prob_{_UNSAFE.sub('_', str(name)).strip('_') or index}"
        out.append(f"{column}_{index}" if column in out else column)
    return tuple(out)


def _split_names(value: str | Sequence[str] | None) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value or ()]


def _listing(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _twice(names: Sequence[str]) -> str | None:
    return next((name for name in names if names.count(name) > 1), None)


def check_options(on_bad_row: str, batch_size: int, **counts: int | None) -> None:
    """Check the options every engine shares, and any named ``counts`` (None: unset).

    Raises:
        DataError: ``on_bad_row`` is not a policy, or a count is not an int >= 1.
    """
    if on_bad_row not in BAD_ROW_POLICIES:
        policies = ", ".join(BAD_ROW_POLICIES)
        raise DataError(f"on_bad_row must be one of {policies}; got {on_bad_row!r}")
    for name, value in {"batch_size": batch_size, **counts}.items():
        if value is not None and (type(value) is not int or value < 1):  # bool is no count
            raise DataError(f"{name} must be an integer >= 1; got {value!r}")


def plan_scoring(
    predictor: Predictor,
    *,
    source: str,
    columns: Sequence[str] | None,
    numeric_columns: Sequence[str] = (),
    num_columns: int | None = None,
    row_shape: Sequence[int] | None = None,
    features: str | Sequence[str] | None = None,
    id_column: str | None = None,
    keep_columns: str | Sequence[str] | None = None,
    probabilities: bool = True,
    on_bad_row: str = "fail",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ScorePlan:
    """Decide the feature and output columns for one input.

    Features: ``features`` as given, else the model's ``feature_names``, else every
    numeric column (``numeric_columns``) that is neither the id nor a kept column.
    ``columns`` is None for a matrix input, which gives ``num_columns`` values a row
    (``row_shape`` before flattening). The other options are :func:`score_file`'s.

    Raises:
        DataError: a named column is missing, names are asked of a matrix input, an
            output column would appear twice, or an option is invalid.
        InputShapeError: the feature count or the image row shape is not the model's.
    """
    check_options(on_bad_row, batch_size)
    wanted = _split_names(features)
    carry = list(dict.fromkeys(([id_column] if id_column else []) + _split_names(keep_columns)))
    expected = predictor.num_features
    model = predictor.model_label
    chosen: list[str] | None = None
    if columns is None:
        if wanted or carry:
            raise DataError(
                f"{source}: an NPY array has no column names; --features, --id-column and "
                "--keep-columns need CSV, Parquet or JSONL input"
            )
        width = int(num_columns or 0)
        # Rows of the model's shape or flattened; another image shape of that size is not.
        shape = tuple(predictor.input_shape or (expected,))
        given = tuple(row_shape or (width,))
        if len(given) > 1 and len(shape) > 1 and given != shape:
            raise InputShapeError(
                f"{source}: rows of shape {given}; model {model} expects rows "
                f"of shape {shape} (or {expected} values each)"
            )
        if expected is not None and width != expected:
            raise InputShapeError(
                f"{source}: rows have {width} values; model {model} expects {expected} features"
            )
    else:
        missing = [name for name in carry if name not in columns]
        if missing:
            raise DataError(
                f"{source}: missing columns {_listing(missing)} (asked by --id-column / "
                f"--keep-columns); the input has {_listing(columns)}"
            )
        if wanted:
            chosen, origin = wanted, "asked by --features"
        elif predictor.contract.feature_names:
            chosen, origin = list(predictor.contract.feature_names), "named by the model"
        else:
            chosen = [name for name in numeric_columns if name not in carry]
            origin = "numeric columns of the input"
            if expected is not None and len(chosen) != expected:
                raise InputShapeError(
                    f"{source}: the model expects {expected} features but the input has "
                    f"{len(chosen)} numeric columns besides the id / kept columns "
                    f"({_listing(chosen)}); name the features with --features"
                )
            if not chosen:
                raise DataError(f"{source}: no numeric columns to use as features")
        missing = [name for name in chosen if name not in columns]
        if missing:
            raise DataError(
                f"{source}: missing feature columns {_listing(missing)} ({origin}); "
                f"the input has {_listing(columns)}"
            )
        if (twice := _twice(chosen)) is not None:
            raise DataError(f"{source}: feature column {twice!r} is named twice ({origin})")
        if expected is not None and len(chosen) != expected:
            raise InputShapeError(
                f"{source}: {len(chosen)} feature columns ({origin}); model "
                f"{model} expects {expected} features"
            )
        width = len(chosen)
    if predictor.class_names:
        class_names = tuple(str(name) for name in predictor.class_names)
    else:
        count = predictor.num_classes
        if count is None:  # neither metadata nor the graph says: one row of zeros tells
            count = predictor.predict(np.zeros((1, width), np.float32)).probabilities.shape[1]
        class_names = tuple(str(k) for k in range(int(count)))
    prob_columns = probability_column_names(class_names) if probabilities else ()
    if (twice := _twice([*carry, *RESERVED_COLUMNS, *prob_columns])) is not None:
        raise DataError(
            f"{source}: output column {twice!r} would appear twice; leave it out of "
            "--id-column / --keep-columns (or rename it in the input)"
        )
    return ScorePlan(
        tuple(chosen) if chosen is not None else None,
        tuple(carry),
        class_names,
        prob_columns,
        width,
        on_bad_row,
        batch_size,
    )


# --- one batch ---------------------------------------------------------------------------


@dataclass
class ScoredBatch:
    """One scored batch: output ``columns`` in plan order (``class_name`` a
    :class:`~onnxedge.runtime.io.CategoricalColumn`, carried columns as read), the
    ``rejected`` rows (:data:`REJECTED_COLUMNS` -> object arrays, or None) and counts."""

    columns: dict[str, Any]
    rejected: dict[str, np.ndarray] | None
    num_scored: int
    num_rejected: int


#: A bad row: (its index in the batch, its first bad column or None for the row, reason).
_Problem = tuple[int, str | None, str]


def score_batch(predictor: Predictor, batch: InputBatch, plan: ScorePlan) -> ScoredBatch:
    """Check, score and shape one batch of rows (from a reader or an engine's adapter).

    Every feature value (text that parses as a number included) and every output must be
    finite in float32. Under ``fail`` the first bad row in input order raises; under
    ``skip`` bad rows are returned in :attr:`ScoredBatch.rejected`.

    Raises:
        BadRowError: a bad row under ``fail``.
        InputShapeError: a matrix batch of the wrong width.
        ModelLoadError: the model's outputs are not probabilities.
    """
    matrix, problems = _feature_matrix(batch, plan)
    if plan.on_bad_row == "fail" and (problems or batch.malformed):
        raise _first_error(batch, plan, problems)
    good = np.ones(matrix.shape[0], dtype=bool)
    good[[index for index, _, _ in problems]] = False
    prediction = predictor.predict(matrix[good] if problems else matrix, batch_size=plan.batch_size)
    probabilities, labels = prediction.probabilities, prediction.labels
    # Finite rows can overflow the model's float32 arithmetic: such an output is no
    # probability, so the row is bad. One sum proves the batch finite.
    if not np.isfinite(probabilities.sum()):
        finite = np.isfinite(probabilities).all(axis=1)
        overflow = np.flatnonzero(good)[~finite]
        problems = sorted(
            problems + [(int(i), None, OUTPUT_OVERFLOW) for i in overflow], key=lambda p: p[0]
        )
        if plan.on_bad_row == "fail":
            raise _first_error(batch, plan, problems)
        probabilities, labels, good[overflow] = probabilities[finite], labels[finite], False
    predictor.check_probabilities(probabilities)  # every batch, not only the first
    count = len(plan.class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        bad = int(labels[(labels < 0) | (labels >= count)][0])
        raise InputValueError(f"the model predicted label {bad}, outside its {count} classes")
    columns: dict[str, Any] = {
        name: _take(batch.columns[name], good) if problems else batch.columns[name]
        for name in plan.carry
    }
    columns["label"] = labels
    columns["class_name"] = CategoricalColumn(labels, plan.class_names)
    for k, name in enumerate(plan.probability_columns):
        columns[name] = probabilities[:, k]
    num_rejected = len(problems) + len(batch.malformed)
    rejected = None
    if num_rejected:
        records = [(batch.source, *astuple(r)) for _, r in _records(batch, plan, problems, True)]
        rejected = {
            name: np.array(values, dtype=object)
            for name, values in zip(REJECTED_COLUMNS, zip(*records, strict=True), strict=True)
        }
    return ScoredBatch(columns, rejected, int(labels.shape[0]), num_rejected)


def _take(values: Any, mask: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[mask]
    import pyarrow as pa

    return values.filter(pa.array(mask))


def _cells(values: Any, indices: Sequence[int]) -> list[Any]:
    """Cells of one column as Python values."""
    if isinstance(values, np.ndarray):
        return list(values[np.asarray(indices, dtype=np.int64)].tolist())
    return list(values.take(indices).to_pylist())


def _feature_matrix(batch: InputBatch, plan: ScorePlan) -> tuple[np.ndarray, list[_Problem]]:
    """``(n, f)`` float32 features and the first bad cell of each bad row, in row order."""
    if batch.matrix is not None:
        source = batch.matrix
        if source.ndim != 2 or source.shape[1] != plan.num_features:
            raise InputShapeError(
                f"{batch.source}: rows have {source.shape[-1]} values; the model expects "
                f"{plan.num_features} features"
            )
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused
            matrix = source if source.dtype == np.float32 else source.astype(np.float32)
    else:
        assert plan.features is not None, "a batch of named columns needs plan.features"
        matrix = np.empty((batch.num_rows, plan.num_features), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for j, name in enumerate(plan.features):
                matrix[:, j] = _column_floats(batch.columns[name])
    if _all_finite(matrix):
        return matrix, []
    bad = ~np.isfinite(matrix)
    problems: list[_Problem] = []
    for i in np.flatnonzero(bad.any(axis=1)).tolist():
        j = int(np.argmax(bad[i]))
        if batch.matrix is not None:
            name, cell = str(j), batch.matrix[i, j].item()
        else:
            name = plan.features[j]  # type: ignore[index]
            cell = _cells(batch.columns[name], [i])[0]
        problems.append((i, name, _cell_reason(cell)))
    return matrix, problems


def _all_finite(matrix: np.ndarray) -> bool:
    """Whether every value is finite: one BLAS dot product (half the time of
    ``np.isfinite(m).all()``, measured), the exact check only when it overflows."""
    flat = matrix.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.dot(flat, flat)) or np.isfinite(matrix).all())


def _column_floats(values: Any) -> np.ndarray:
    """One column (numpy or pyarrow) as ``(n,)`` numbers: NaN where a cell is missing or
    no number, so the finiteness check finds its row and :func:`_cell_reason` says why."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values
    try:
        if isinstance(values, np.ndarray):
            return values.astype(np.float64)
        import pyarrow as pa

        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False))
    except (TypeError, ValueError, NotImplementedError, OverflowError):  # Arrow's derive from these
        cells = values.tolist() if isinstance(values, np.ndarray) else values.to_pylist()
        return np.array([_as_number(cell) for cell in cells], dtype=np.float64)


def _as_number(cell: Any) -> float | None:
    try:
        return (
            float(cell) if isinstance(cell, bool | int | float | np.number | str | bytes) else None
        )
    except OverflowError:  # an int beyond every float
        return math.inf if cell > 0 else -math.inf
    except ValueError:
        return None


def _cell_reason(cell: Any) -> str:
    """Why a cell is not a usable feature value."""
    if cell is None:
        return "missing value (null)"
    text = isinstance(cell, str | bytes)
    if text and not cell.strip():
        return "empty cell"
    number = _as_number(cell.strip() if text else cell)
    if number is None and text:
        return f"cannot parse {rio.quote_value(cell)} as a number"
    if number is None:
        return f"not a number: {rio.quote_value(cell)} ({type(cell).__name__})"
    if math.isnan(number):
        return "NaN (features must be finite)"
    if math.isinf(number) and not isinstance(cell, int):
        return f"{'-' if number < 0 else ''}Inf (features must be finite)"
    return f"{rio.quote_value(cell)} is beyond float32's range"


def _records(
    batch: InputBatch, plan: ScorePlan, problems: list[_Problem], raw: bool
) -> list[tuple[float, RejectedRow]]:
    """Malformed rows and bad values as rejected rows, each with its place in the input
    (the batch index where rows are not numbered), in that order; ``raw``: with the row
    as read, a JSON array (a matrix row) or object (named columns)."""
    indices = [index for index, _, _ in problems]
    raws = [""] * len(indices)
    if raw and batch.matrix is not None:
        raws = [json.dumps(row) for row in batch.matrix[indices].tolist()]
    elif raw and indices:
        picked = {name: _cells(batch.columns[name], indices) for name in plan.read_columns}
        raws = [
            json.dumps(dict(zip(picked, cells, strict=True)), default=str, ensure_ascii=False)
            for cells in zip(*picked.values(), strict=True)
        ]
    out = [(math.inf if bad.row is None else bad.row, bad) for bad in batch.malformed]
    for (index, column, reason), text in zip(problems, raws, strict=True):
        row = int(batch.rows[index]) if batch.rows is not None else None
        line = int(batch.lines[index]) if batch.lines is not None else None
        out.append((index if row is None else row, RejectedRow(row, line, column, reason, text)))
    return sorted(out, key=lambda pair: pair[0])


def _first_error(batch: InputBatch, plan: ScorePlan, problems: list[_Problem]) -> BadRowError:
    order, bad = _records(batch, plan, problems[:1], raw=False)[0]
    if bad.row is None and bad.line is None:  # an engine that does not number rows (Ray)
        where = f"row {int(order)} of the batch (0-based)" if math.isfinite(order) else "a row"
    else:
        where = rio.describe_location(
            batch.location, row=bad.row, line=bad.line, header=batch.header
        )
    if bad.column is not None:
        where += f", column {bad.column if batch.matrix is not None else repr(bad.column)}"
    message = f"{batch.source}: {where}: {bad.reason}"
    return BadRowError(message, batch.source, bad.row, bad.line, bad.column, bad.reason)


# --- the local engine --------------------------------------------------------------------


@dataclass
class ScoreSummary:
    """What one run did: ``model``, ``input``, ``output``, ``rejected_output`` (None unless
    ``skip``), ``input_format``, ``output_format``, ``rows_scored``, ``rows_skipped``,
    ``seconds`` (wall time, end to end), ``rows_per_second`` (rows read), ``provider``,
    ``batch_size``, ``features`` (None for NPY) and the output's ``columns``."""

    model: str
    input: str
    output: str
    rejected_output: str | None
    input_format: str
    output_format: str
    rows_scored: int
    rows_skipped: int
    seconds: float
    provider: str
    batch_size: int
    features: list[str] | None = None
    columns: list[str] = field(default_factory=list)
    rows_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        rows = self.rows_scored + self.rows_skipped
        self.rows_per_second = rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for a person: rows, skipped rows, time, speed, provider."""
        text = (
            f"scored {self.rows_scored:,} rows, skipped {self.rows_skipped:,}, in "
            f"{self.seconds:.2f} s ({self.rows_per_second:,.0f} rows/s) on {self.provider} "
            f"-> {self.output}"
        )
        if self.rejected_output is not None:
            text += f" (rejected rows: {self.rejected_output})"
        return text


def score_file(
    model: str | os.PathLike[str] | bytes | Predictor,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "auto",
    threads: int | None = None,
    id_column: str | None = None,
    features: str | Sequence[str] | None = None,
    keep_columns: str | Sequence[str] | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    probabilities: bool = True,
    overwrite: bool = False,
    on_bad_row: str = "fail",
    progress: bool | None = None,
    chunk_rows: int | None = None,
) -> ScoreSummary:
    """Score every row of ``input`` with ``model`` and write the predictions to ``output``.

    At most ``chunk_rows`` rows (default :func:`chunk_rows_for`) are held at a time; a
    thread writes one chunk to a temp file beside ``output`` while the next is scored;
    the temp is renamed at the end, so after an error nothing is at ``output``.

    Args:
        model: an ``.onnx`` path, its bytes, or a :class:`Predictor` (which then ignores
            ``provider``, ``auto`` / ``cpu`` / ``cuda``, and ``threads``).
        input: NPY, IDX, CSV (``.csv[.gz]``), Parquet (file or folder) or JSONL.
        output: a ``.csv[.gz]``, ``.parquet`` or ``.jsonl`` path; ``input_format`` /
            ``output_format`` override what the names tell.
        overwrite: replace an existing output (and rejected-rows file).
        features: feature columns (a list or comma-separated text); default: the model's
            feature names, else the numeric columns. ``id_column`` and ``keep_columns``
            are copied as read; ``probabilities``: one ``prob_<class>`` column per class.
        on_bad_row: ``fail`` stops at the first bad row; ``skip`` writes bad rows, with
            the reason, to the rejected-rows file and scores the rest.
        progress: a progress bar on stderr; None: when stderr is a terminal.

    Raises:
        DataError: the input is missing, unreadable or lacks columns; the output folder
            does not exist; an option is invalid; a write failed.
        OutputExistsError: the output exists and ``overwrite`` is false.
        InputShapeError: the input's feature count is not the model's.
        BadRowError: a bad row under ``on_bad_row="fail"``.
        ModelLoadError, ProviderUnavailableError: from the Predictor.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    check_options(on_bad_row, batch_size, chunk_rows=chunk_rows)
    input_path = Path(input)
    if not input_path.exists():
        raise DataError(f"input {input_path} does not exist")
    in_format = rio.input_format_of(input_path, input_format)
    out_format = rio.output_format_of(output, output_format)
    paths = [rio.check_output_path(output, overwrite=overwrite, inputs=[input_path])]
    if on_bad_row == "skip":
        rejected_path = rio.rejected_path_for(paths[0], out_format)
        paths.append(rio.check_output_path(rejected_path, overwrite=overwrite, inputs=[input_path]))
    with ExitStack() as stack:
        reader = stack.enter_context(rio.open_input(input_path, in_format))
        predictor = scoring_predictor(model, provider=provider, threads=threads)
        plan = plan_scoring(
            predictor,
            source=reader.name,
            columns=reader.columns,
            numeric_columns=reader.numeric_columns,
            num_columns=reader.num_columns,
            row_shape=reader.row_shape,
            features=features,
            id_column=id_column,
            keep_columns=keep_columns,
            probabilities=probabilities,
            on_bad_row=on_bad_row,
            batch_size=batch_size,
        )
        outputs = [
            stack.enter_context(AtomicOutput(path, out_format, types=types, overwrite=overwrite))
            for path, types in zip(paths, (None, REJECTED_TYPES), strict=False)
        ]
        bar = tqdm(
            total=reader.total_rows,
            disable=not (sys.stderr.isatty() if progress is None else progress),
            unit=" rows",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            desc="scoring",
            leave=False,
        )
        stack.enter_context(bar)
        # Entered last: on an error the queued write is dropped before the outputs go.
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="onnxedge-write"))
        stack.callback(pool.shutdown, cancel_futures=True)
        pending: Future[None] | None = None
        scored = skipped = 0
        rows = chunk_rows or chunk_rows_for(batch_size)
        for batch in reader.batches(
            features=plan.features or (), carry=plan.carry, batch_rows=rows
        ):
            result = score_batch(predictor, batch, plan)
            if pending is not None:
                pending.result()  # one chunk behind at most: memory stays bounded
            pending = pool.submit(_write, outputs, result)
            scored += result.num_scored
            skipped += result.num_rejected
            bar.update(result.num_scored + result.num_rejected)
        if pending is not None:
            pending.result()
        if len(outputs) > 1 and skipped == 0:  # the rejected-rows file, with its header
            outputs[1].write({name: np.empty(0, dtype=object) for name in REJECTED_COLUMNS})
        for out in outputs:
            out.finish()
        for out in reversed(outputs):  # the output appears last, once all else is in place
            out.commit()
    return ScoreSummary(
        model=predictor.model_label,
        input=str(input_path),
        output=str(paths[0]),
        rejected_output=str(paths[1]) if len(paths) > 1 else None,
        input_format=in_format,
        output_format=out_format,
        rows_scored=scored,
        rows_skipped=skipped,
        seconds=time.perf_counter() - started,
        provider=predictor.provider,
        batch_size=batch_size,
        features=list(plan.features) if plan.features is not None else None,
        columns=list(plan.output_columns),
    )


def _write(outputs: list[AtomicOutput], result: ScoredBatch) -> None:
    outputs[0].write(result.columns)
    if result.rejected is not None and len(outputs) > 1:
        outputs[1].write(result.rejected)
    # Flush to disk here, beside the next chunk's inference: the commit's fsync (0.1 s of
    # 0.87 s for 1M NPY rows, bench-score) then finds almost nothing left to write.
    try:  # ENOSPC / EIO can surface only here, at the flush
        with open(outputs[0].temp_path, "rb") as file:
            os.fdatasync(file.fileno())
    except OSError as exc:
        raise DataError(f"cannot write {outputs[0].path}: {exc.strerror or exc}") from None


def chunk_rows_for(batch_size: int) -> int:
    """Rows read, scored and written at once: a multiple of ``batch_size`` near
    :data:`DEFAULT_CHUNK_ROWS`."""
    return batch_size * max(1, DEFAULT_CHUNK_ROWS // batch_size)


def scoring_predictor(
    model: str | os.PathLike[str] | bytes | Predictor,
    *,
    provider: str = "auto",
    threads: int | None = None,
) -> Predictor:
    """The Predictor an engine scores with (``model`` itself when it is one): without its
    own NaN / Inf pass (:func:`score_batch` checks rows), and with workers that do not spin
    between runs, holding the cores the writer needs (~1.6x slower on 1M NPY rows, 2 cores).

    Raises:
        ModelLoadError, ProviderUnavailableError: as the Predictor raises them.
    """
    from onnxedge.runtime.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    return Predictor(
        model,
        provider=provider,
        threads=threads,
        nonfinite="allow",
        session_config={"session.intra_op.allow_spinning": "0"},
    )
