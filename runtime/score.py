"""Batch scoring: a file of rows in, a file of predictions out, in constant memory.

Two layers, so that every engine computes a batch the same way:

* :func:`score_batch` scores one :class:`~onnxedge.runtime.io.InputBatch` under a
  :class:`ScorePlan`: it checks every feature value (numbers only; no NaN / Inf),
  applies the bad-row policy, runs the :class:`~onnxedge.runtime.predictor.Predictor`
  and returns the output columns and the rejected rows. It knows nothing of files:
  the local engine (:func:`score_file`) and a distributed one (Ray Data's
  ``map_batches``) both call it, after building the plan once with
  :func:`plan_scoring`.
* :func:`score_file` is the local engine: it opens the input
  (:func:`~onnxedge.runtime.io.open_input`), streams it chunk by chunk through
  :func:`score_batch`, and writes the output (and, under ``on_bad_row="skip"``, the
  rejected rows) atomically.

Output columns, in order: the id column and kept columns as read, ``label`` (int64,
the class index), ``class_name`` (text; in Parquet a dictionary column of the model's
class names) and one ``prob_<class name>`` float32 column per class (names made safe:
runs of characters other than letters, digits and ``_`` become ``_``), unless
probabilities are turned off.

Speed: the output is written by a worker thread (a ``ThreadPoolExecutor``) while the
next chunk is read and scored, and the Predictor is built without spinning workers so
that thread gets the cores between runs (``benchmarks/bench_score.py`` measures it).

Rejected rows (``on_bad_row="skip"``) go to ``<output stem>.rejected.<ending>`` with
the columns ``source``, ``row`` (0-based data row in ``source``), ``line`` (text
formats), ``column``, ``reason`` and ``raw`` (the row as read). Every row of the input
is either scored or rejected; the summary counts both.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.runtime.errors import DataError, InputShapeError, InputValueError
from onnxedge.runtime.io import (
    AtomicOutput,
    CategoricalColumn,
    InputBatch,
    InputReader,
    RejectedRow,
    check_output_path,
    describe_location,
    input_format_of,
    open_input,
    output_format_of,
    quote_value,
    rejected_path_for,
)

if TYPE_CHECKING:  # pragma: no cover
    from onnxedge.runtime.predictor import Predictor

__all__ = [
    "BAD_ROW_POLICIES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_ROWS",
    "REJECTED_COLUMNS",
    "BadRowError",
    "ScorePlan",
    "ScoreSummary",
    "ScoredBatch",
    "check_options",
    "chunk_rows_for",
    "plan_scoring",
    "probability_column_names",
    "score_batch",
    "score_file",
]

#: Rows per ``session.run``: past a few thousand rows the per-call overhead of these
#: MLPs is negligible, and the activations stay in cache.
DEFAULT_BATCH_SIZE = 8192
#: Chunks whose output may wait to be written while the next ones are scored.
WRITE_BEHIND = 2
#: Rows read, checked and written at once (a multiple of the batch size): enough to
#: make the per-chunk Python work small next to inference, small enough that a chunk
#: of 64 float32 features is 16 MiB.
DEFAULT_CHUNK_ROWS = 65536

BAD_ROW_POLICIES: tuple[str, ...] = ("fail", "skip")
REJECTED_COLUMNS: tuple[str, ...] = ("source", "row", "line", "column", "reason", "raw")
#: Arrow types of the rejected-rows table (its object columns may be all null).
REJECTED_TYPES = {
    "source": "string",
    "row": "int64",
    "line": "int64",
    "column": "string",
    "reason": "string",
    "raw": "string",
}
RESERVED_COLUMNS = ("label", "class_name")
_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


class BadRowError(InputValueError):
    """A row that cannot be scored, under ``on_bad_row="fail"``.

    Attributes:
        source: the file.
        row: 0-based data row index (None when unknown).
        line: 1-based line for text formats, else None.
        column: the offending column, or None for the row as a whole.
        reason: what is wrong with it.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        row: int | None,
        line: int | None,
        column: str | None,
        reason: str,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.row = row
        self.line = line
        self.column = column
        self.reason = reason


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorePlan:
    """What to compute for every batch of one input: resolved once, shared by engines.

    Attributes:
        features: feature columns in the order the model reads them; None when the
            batches carry a numeric matrix (NPY).
        carry: columns copied to the output as read (id column first).
        class_names: one name per class (the label's digits when the model has none).
        probability_columns: one output column per class, or empty for none.
        num_features: features per row.
        on_bad_row: ``fail`` or ``skip``.
        batch_size: rows per ``session.run``.
    """

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


def probability_column_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """``prob_<name>`` per class, with names made safe and unique.

    Runs of characters other than ASCII letters, digits and ``_`` become one ``_``;
    a name with nothing left uses its index; a repeat gets ``_<index>`` appended.
    """
    out: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(class_names):
        safe = _UNSAFE.sub("_", str(name)).strip("_") or str(index)
        column = f"prob_{safe}"
        if column in seen:
            column = f"{column}_{index}"
        seen.add(column)
        out.append(column)
    return tuple(out)


def _split_names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def _listing(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


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
    """Decide the feature columns and the output columns for one input.

    Feature columns, in this order of preference: ``features`` as given; the model's
    ``feature_names`` metadata; every numeric column of the input in file order,
    leaving out the id and kept columns.

    Args:
        predictor: the model.
        source: the input as messages name it.
        columns: the input's column names, or None for a matrix without names (NPY).
        numeric_columns: the columns whose values look numeric.
        num_columns: values per row of a matrix input (NPY, IDX), flattened.
        row_shape: one row's shape in a matrix input (``(64,)``, ``(1, 8, 8)``).
        features: feature column names (a list or comma-separated text).
        id_column: a column to copy first into the output.
        keep_columns: more columns to copy (a list or comma-separated text).
        probabilities: whether to write one probability column per class.
        on_bad_row: ``fail`` or ``skip``.
        batch_size: rows per ``session.run``.

    Raises:
        DataError: a named column is missing, names are asked of a matrix input, an
            output column would appear twice, or an option is invalid.
        InputShapeError: the feature count differs from the model's, or image rows have
            another shape than the model's input.
    """
    check_options(on_bad_row, batch_size)
    wanted_features = _split_names(features)
    keep = _split_names(keep_columns)
    carry = list(dict.fromkeys(([id_column] if id_column else []) + keep))
    expected = predictor.num_features

    if columns is None:
        if wanted_features or carry:
            raise DataError(
                f"{source}: an NPY array has no column names; --features, --id-column and "
                "--keep-columns need CSV, Parquet or JSONL input"
            )
        width = int(num_columns or 0)
        # The Predictor takes rows of its input shape or flattened; an image of another
        # shape with the same number of values is still refused.
        shape = tuple(getattr(predictor, "input_shape", None) or (expected,))
        given = tuple(row_shape or (width,))
        if len(given) > 1 and len(shape) > 1 and given != shape:
            raise InputShapeError(
                f"{source}: rows of shape {given}; model {predictor.model_label} expects rows "
                f"of shape {shape} (or {expected} values each)"
            )
        if expected is not None and width != expected:
            raise InputShapeError(
                f"{source}: rows have {width} values; model {predictor.model_label} expects "
                f"{expected} features"
            )
        feature_list: tuple[str, ...] | None = None
        num_features = width
    else:
        present = set(columns)
        missing_carry = [name for name in carry if name not in present]
        if missing_carry:
            what = "--id-column / --keep-columns"
            raise DataError(
                f"{source}: missing columns {_listing(missing_carry)} (asked by {what}); "
                f"the input has {_listing(columns)}"
            )
        if wanted_features:
            chosen, origin = wanted_features, "asked by --features"
        elif predictor.contract.feature_names:
            chosen, origin = list(predictor.contract.feature_names), "named by the model"
        else:
            skip = set(carry)
            chosen = [name for name in numeric_columns if name not in skip]
            origin = "numeric columns of the input"
            if expected is not None and len(chosen) != expected:
                raise InputShapeError(
                    f"{source}: the model expects {expected} features but the input has "
                    f"{len(chosen)} numeric columns besides the id / kept columns "
                    f"({_listing(chosen)}); name the features with --features"
                )
            if not chosen:
                raise DataError(f"{source}: no numeric columns to use as features")
        missing = [name for name in chosen if name not in present]
        if missing:
            raise DataError(
                f"{source}: missing feature columns {_listing(missing)} ({origin}); "
                f"the input has {_listing(columns)}"
            )
        if len(set(chosen)) != len(chosen):
            twice = next(name for name in chosen if chosen.count(name) > 1)
            raise DataError(f"{source}: feature column {twice!r} is named twice ({origin})")
        if expected is not None and len(chosen) != expected:
            raise InputShapeError(
                f"{source}: {len(chosen)} feature columns ({origin}); model "
                f"{predictor.model_label} expects {expected} features"
            )
        feature_list = tuple(chosen)
        num_features = len(chosen)

    class_names = _class_names(predictor, num_features)
    prob_columns = probability_column_names(class_names) if probabilities else ()
    output = [*carry, *RESERVED_COLUMNS, *prob_columns]
    if len(set(output)) != len(output):
        twice = next(name for name in output if output.count(name) > 1)
        raise DataError(
            f"{source}: output column {twice!r} would appear twice; leave it out of "
            "--id-column / --keep-columns (or rename it in the input)"
        )
    return ScorePlan(
        features=feature_list,
        carry=tuple(carry),
        class_names=class_names,
        probability_columns=prob_columns,
        num_features=num_features,
        on_bad_row=on_bad_row,
        batch_size=batch_size,
    )


def check_options(on_bad_row: str, batch_size: int) -> None:
    """Check the options every engine shares.

    Raises:
        DataError: ``on_bad_row`` is not a policy, or ``batch_size`` is not an int >= 1.
    """
    if on_bad_row not in BAD_ROW_POLICIES:
        policies = ", ".join(BAD_ROW_POLICIES)
        raise DataError(f"on_bad_row must be one of {policies}; got {on_bad_row!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1; got {batch_size!r}")


def _class_names(predictor: Predictor, num_features: int) -> tuple[str, ...]:
    if predictor.class_names:
        return tuple(str(name) for name in predictor.class_names)
    count = predictor.num_classes
    if count is None:
        # Neither metadata nor the graph says: one row of zeros tells the width.
        probe = predictor.predict(np.zeros((1, num_features), dtype=np.float32))
        count = int(probe.probabilities.shape[1])
    return tuple(str(k) for k in range(count))


# --------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------


@dataclass
class ScoredBatch:
    """What :func:`score_batch` returns for one batch.

    Attributes:
        columns: output column name -> ``(n_scored,)`` values, in
            :attr:`ScorePlan.output_columns` order (``class_name`` is a
            :class:`~onnxedge.runtime.io.CategoricalColumn`; carried columns keep
            the reader's array type).
        rejected: :data:`REJECTED_COLUMNS` -> ``(n_rejected,)`` object arrays, or None
            when no row was rejected.
        num_scored: rows scored.
        num_rejected: rows set aside (``on_bad_row="skip"``).
    """

    columns: dict[str, Any]
    rejected: dict[str, np.ndarray] | None
    num_scored: int
    num_rejected: int


@dataclass
class _Problem:
    """A bad cell found in batch row ``index`` (``column`` None: the whole row)."""

    index: int
    column: str | None
    reason: str


#: the reason recorded for a row whose finite values overflow the model's arithmetic.
OUTPUT_OVERFLOW = (
    "the model's probabilities are NaN or Inf for this row (its values overflow float32 arithmetic)"
)


def score_batch(predictor: Predictor, batch: InputBatch, plan: ScorePlan) -> ScoredBatch:
    """Check, score and shape one batch of input rows.

    Every feature value must be a finite number (text that parses as one is
    accepted; float64 values beyond float32's range are refused). Under
    ``plan.on_bad_row == "fail"`` the first bad row (in input order; malformed rows
    included) raises; under ``skip`` the bad rows are returned in
    :attr:`ScoredBatch.rejected` and the others are scored.

    Args:
        predictor: the model (any provider); built with ``nonfinite="allow"`` it skips
            a second finiteness pass over rows checked here.
        batch: rows as a reader (or an engine's adapter) produced them.
        plan: from :func:`plan_scoring`.

    Raises:
        BadRowError: a bad row under ``fail``.
        InputShapeError: a matrix batch of the wrong width.
    """
    matrix, problems = _feature_matrix(batch, plan)
    n = matrix.shape[0]
    if plan.on_bad_row == "fail" and (problems or batch.malformed):
        raise _first_error(batch, problems)

    carried = {name: batch.columns[name] for name in plan.carry}
    kept = np.arange(n)
    if problems:
        good = np.ones(n, dtype=bool)
        good[[p.index for p in problems]] = False
        matrix, kept = matrix[good], kept[good]
        carried = {name: _take(values, good) for name, values in carried.items()}
    prediction = predictor.predict(matrix, batch_size=plan.batch_size)
    probabilities, labels = prediction.probabilities, prediction.labels
    # Finite inputs can still overflow the model's float32 arithmetic; such a row's output
    # is no probability, so it is a bad row like any other and never written as one.
    # One reduction proves every value finite (probabilities cannot overflow a sum); the
    # per-row mask is built only when it fails.
    if not np.isfinite(probabilities.sum()):
        finite = np.isfinite(probabilities).all(axis=1)
        overflow = [_Problem(int(kept[i]), None, OUTPUT_OVERFLOW) for i in np.flatnonzero(~finite)]
        problems = sorted(problems + overflow, key=lambda p: p.index)
        if plan.on_bad_row == "fail":
            raise _first_error(batch, problems)
        probabilities, labels = probabilities[finite], labels[finite]
        carried = {name: _take(values, finite) for name, values in carried.items()}
    # Every batch that is written is proven to hold probabilities, not only the first.
    predictor.check_probabilities(probabilities)
    columns: dict[str, Any] = dict(carried)
    columns["label"] = labels
    columns["class_name"] = CategoricalColumn(_checked_codes(labels, plan), plan.class_names)
    # Column views of the (n, classes) probabilities; writers copy what they need.
    for k, name in enumerate(plan.probability_columns):
        columns[name] = probabilities[:, k]
    num_rejected = len(problems) + len(batch.malformed)
    rejected = _rejected_table(batch, plan, problems) if num_rejected else None
    return ScoredBatch(
        columns=columns,
        rejected=rejected,
        num_scored=int(labels.shape[0]),
        num_rejected=num_rejected,
    )


def _checked_codes(labels: np.ndarray, plan: ScorePlan) -> np.ndarray:
    count = len(plan.class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        bad = int(labels[(labels < 0) | (labels >= count)][0])
        raise InputValueError(f"the model predicted label {bad}, outside its {count} classes")
    return labels


def _take(values: Any, mask: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[mask]
    import pyarrow as pa  # an arrow column comes from a pyarrow reader

    return values.filter(pa.array(mask))


def _feature_matrix(batch: InputBatch, plan: ScorePlan) -> tuple[np.ndarray, list[_Problem]]:
    """``(n, f)`` float32 features and the bad cells (first per row), in row order."""
    if batch.matrix is not None:
        return _matrix_features(batch, plan)
    assert plan.features is not None, "a batch of named columns needs plan.features"
    n = batch.num_rows
    columns = []
    unparsed: dict[int, np.ndarray] = {}  # column index -> (n,) bool cells that are not numbers
    for j, name in enumerate(plan.features):
        values, invalid = _column_floats(batch.columns[name])
        columns.append(values)
        if invalid is not None:
            unparsed[j] = invalid
    matrix = _rows_from_columns(columns, n)
    if not unparsed and _all_finite(matrix):
        return matrix, []
    bad = ~np.isfinite(matrix)
    for j, invalid in unparsed.items():
        bad[:, j] |= invalid
    problems = []
    for i in np.flatnonzero(bad.any(axis=1)).tolist():
        j = int(np.argmax(bad[i]))
        name = plan.features[j]
        problems.append(_Problem(i, name, _cell_reason(_cell(batch.columns[name], i))))
    return matrix, problems


def _matrix_features(batch: InputBatch, plan: ScorePlan) -> tuple[np.ndarray, list[_Problem]]:
    source = batch.matrix
    assert source is not None
    if source.ndim != 2 or source.shape[1] != plan.num_features:
        raise InputShapeError(
            f"{batch.source}: rows have {source.shape[-1]} values; the model expects "
            f"{plan.num_features} features"
        )
    if source.dtype == np.float32:
        matrix = source  # a view of the memory map: no copy on the common path
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = source.astype(np.float32)
    if _all_finite(matrix):
        return matrix, []
    bad = ~np.isfinite(matrix)
    problems = []
    for i in np.flatnonzero(bad.any(axis=1)).tolist():
        j = int(np.argmax(bad[i]))
        problems.append(_Problem(i, str(j), _cell_reason(source[i, j].item())))
    return matrix, problems


def _rows_from_columns(columns: list[np.ndarray], n: int) -> np.ndarray:
    """``(n, f)`` float32 from ``f`` columns of ``n`` values each."""
    matrix = np.empty((n, len(columns)), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        # float64 beyond float32's range becomes inf here; the finiteness check refuses it
        for j, values in enumerate(columns):
            matrix[:, j] = values
    return matrix


def _all_finite(matrix: np.ndarray) -> bool:
    """Whether every value is finite: one BLAS pass (x . x), the exact check only if not.

    NaN or Inf makes the dot product non-finite; so may large finite values (the squares
    overflow), which the exact check then clears. ``make bench-score`` measured the
    plain ``np.isfinite(matrix).all()`` at 12% of NPY scoring time (0.094 of 0.78 s for
    1M x 64 rows); the dot product is a fraction of that.
    """
    if matrix.size == 0:
        return True
    flat = matrix.reshape(-1) if matrix.flags.c_contiguous else np.ravel(matrix)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.isfinite(matrix).all())


def _column_floats(values: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """One column as ``(n,)`` floats (NaN where missing) and a mask of non-numbers.

    The mask is None when every cell is a number (NaN / Inf / null included: the
    finiteness check finds those, and the reason is read from the cell itself).
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "biuf":
            return values, None
        try:
            return values.astype(np.float64), None
        except (TypeError, ValueError):
            return _parse_cells(values.tolist())
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        # Zero-copy for a float column without nulls; nulls become NaN (found below).
        return np.asarray(values.to_numpy(zero_copy_only=False)), None
    if pa.types.is_decimal(kind):
        return np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            cast = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _parse_cells(values.to_pylist())
        return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64), None
    return _parse_cells(values.to_pylist())


def _parse_cells(cells: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Cell by cell: floats (NaN for non-numbers) and the mask of non-numbers."""
    floats = np.full(len(cells), np.nan, dtype=np.float64)
    invalid = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        number = _as_number(cell)
        if number is None:
            invalid[i] = cell is not None  # a null is missing, not malformed; NaN flags it
        else:
            floats[i] = number
    return floats, invalid


def _as_number(cell: Any) -> float | None:
    if cell is None:
        return None
    if isinstance(cell, bool | int | float | np.number):
        return float(cell)
    if isinstance(cell, str | bytes):
        try:
            return float(cell)
        except ValueError:
            return None
    return None


def _cell(values: Any, index: int) -> Any:
    if isinstance(values, np.ndarray):
        return values[index].item() if values.dtype.kind in "biuf" else values[index]
    return values[index].as_py()


def _cell_reason(cell: Any) -> str:
    """Why a cell is not a usable feature value."""
    if cell is None:
        return "missing value (null)"
    if isinstance(cell, str | bytes):
        text = cell.strip()
        if not text:
            return "empty cell"
        number = _as_number(text)
        if number is None:
            return f"cannot parse {quote_value(cell)} as a number"
        return _number_reason(number, cell)
    number = _as_number(cell)
    if number is None:
        return f"not a number: {quote_value(cell)} ({type(cell).__name__})"
    return _number_reason(number, cell)


def _number_reason(number: float, cell: Any) -> str:
    if math.isnan(number):
        return "NaN (features must be finite)"
    if math.isinf(number):
        return f"{'-' if number < 0 else ''}Inf (features must be finite)"
    return f"{quote_value(cell)} is beyond float32's range"


def _location(batch: InputBatch, index: int) -> tuple[int | None, int | None]:
    row = int(batch.rows[index]) if batch.rows is not None else None
    line = int(batch.lines[index]) if batch.lines is not None else None
    return row, line


def _first_error(batch: InputBatch, problems: list[_Problem]) -> BadRowError:
    """The earliest bad row of the batch (value problems and malformed rows)."""
    candidates: list[tuple[float, int | None, int | None, str | None, str]] = []
    for problem in problems[:1]:  # problems are in row order
        row, line = _location(batch, problem.index)
        order = float(row if row is not None else problem.index)
        candidates.append((order, row, line, problem.column, problem.reason))
    for bad in batch.malformed[:1]:  # so are malformed rows
        order = float(bad.row) if bad.row is not None else math.inf
        candidates.append((order, bad.row, bad.line, bad.column, bad.reason))
    order, row, line, column, reason = min(candidates, key=lambda c: c[0])
    if row is None and line is None:
        # An engine that does not number rows (a Ray shard): the index in the batch.
        where = f"row {int(order)} of the batch (0-based)" if math.isfinite(order) else "a row"
    else:
        where = describe_location(batch.location, row=row, line=line, header=batch.header)
    what = f", {_column_text(batch, column)}" if column is not None else ""
    return BadRowError(
        f"{batch.source}: {where}{what}: {reason}",
        source=batch.source,
        row=row,
        line=line,
        column=column,
        reason=reason,
    )


def _column_text(batch: InputBatch, column: str) -> str:
    return f"column {column}" if batch.matrix is not None else f"column {column!r}"


def _rejected_table(
    batch: InputBatch, plan: ScorePlan, problems: list[_Problem]
) -> dict[str, np.ndarray]:
    records: list[RejectedRow] = list(batch.malformed)
    if problems:
        raws = _raw_rows(batch, plan, [p.index for p in problems])
        for problem, raw in zip(problems, raws, strict=True):
            row, line = _location(batch, problem.index)
            records.append(RejectedRow(row, line, problem.column, problem.reason, raw))
    records.sort(key=lambda r: r.row if r.row is not None else -1)
    table: dict[str, np.ndarray] = {}
    table["source"] = _objects([batch.source] * len(records))
    table["row"] = _objects([r.row for r in records])
    table["line"] = _objects([r.line for r in records])
    table["column"] = _objects([r.column for r in records])
    table["reason"] = _objects([r.reason for r in records])
    table["raw"] = _objects([r.raw for r in records])
    return table


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _raw_rows(batch: InputBatch, plan: ScorePlan, indices: list[int]) -> list[str]:
    """The rejected rows as read: a JSON array (NPY) or object (named columns)."""
    if batch.matrix is not None:
        values = batch.matrix[indices].tolist()
        return [json.dumps(row) for row in values]
    names = list(dict.fromkeys([*(plan.features or ()), *plan.carry]))
    picked: dict[str, list[Any]] = {}
    for name in names:
        column = batch.columns[name]
        if isinstance(column, np.ndarray):
            picked[name] = column[indices].tolist()
        else:
            picked[name] = column.take(indices).to_pylist()
    return [
        json.dumps({name: picked[name][k] for name in names}, default=str, ensure_ascii=False)
        for k in range(len(indices))
    ]


# --------------------------------------------------------------------------------------
# The local engine
# --------------------------------------------------------------------------------------


@dataclass
class ScoreSummary:
    """What one :func:`score_file` run did.

    Attributes:
        model: the model as the predictor names it.
        input: the input path.
        output: the output path.
        rejected_output: where rejected rows went (``on_bad_row="skip"``), else None.
        input_format: ``npy``, ``csv``, ``parquet`` or ``jsonl``.
        output_format: ``csv``, ``parquet`` or ``jsonl``.
        rows_scored: rows written to ``output``.
        rows_skipped: rows written to ``rejected_output``.
        seconds: wall time from opening the input to the renamed output.
        rows_per_second: rows read (scored + skipped) per second.
        provider: the execution provider that ran the model.
        batch_size: rows per ``session.run``.
        features: the feature columns used (None for NPY).
        columns: the output's columns.
    """

    model: str
    input: str
    output: str
    rejected_output: str | None
    input_format: str
    output_format: str
    rows_scored: int
    rows_skipped: int
    seconds: float
    rows_per_second: float
    provider: str
    batch_size: int
    features: list[str] | None = None
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (the CLI's ``--json``)."""
        return asdict(self)

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

    The input is streamed: at most ``chunk_rows`` rows are held at a time, whatever
    its size. The output is written to a temporary file beside ``output`` and renamed
    over it at the end; on any error (or KeyboardInterrupt) nothing is left at
    ``output`` and a file already there is untouched.

    Args:
        model: an ``.onnx`` path, the model's bytes, or a ready :class:`Predictor`
            (then ``provider`` and ``threads`` are not used).
        input: NPY, CSV (``.csv`` / ``.csv.gz``), Parquet (file or folder) or JSONL.
        output: a ``.csv`` / ``.csv.gz``, ``.parquet`` or ``.jsonl`` path.
        batch_size: rows per ``session.run``.
        provider: ``auto``, ``cpu`` or ``cuda``.
        threads: onnxruntime intra-op threads (None: the Predictor's default).
        id_column: a column copied first into the output.
        features: feature columns (a list or comma-separated text); default: the
            model's feature names, else the input's numeric columns.
        keep_columns: more columns copied into the output.
        input_format: overrides the format told by the input's name.
        output_format: overrides the format told by the output's name.
        probabilities: write one ``prob_<class>`` column per class.
        overwrite: replace an existing output (and rejected-rows file).
        on_bad_row: ``fail`` stops at the first bad row; ``skip`` scores the others
            and writes the bad ones, with the reason, to the rejected-rows file.
        progress: show a progress bar on stderr; None shows it when stderr is a
            terminal.
        chunk_rows: rows read, scored and written at once (default: the batch size
            rounded up to a multiple near :data:`DEFAULT_CHUNK_ROWS`).

    Returns:
        A :class:`ScoreSummary`.

    Raises:
        DataError: the input is missing, empty, unreadable, lacks columns, or the
            output folder does not exist; an option is invalid.
        OutputExistsError: the output exists and ``overwrite`` is false.
        InputShapeError: the input's feature count is not the model's.
        BadRowError: a bad row under ``on_bad_row="fail"``.
        ModelLoadError, ProviderUnavailableError: from the Predictor.
        MissingDependencyError: Parquet without pyarrow.
    """
    started = time.perf_counter()
    check_options(on_bad_row, batch_size)
    input_path = Path(input)
    if not input_path.exists():
        raise DataError(f"input {input_path} does not exist")
    in_format = input_format_of(input_path, input_format)
    out_format = output_format_of(output, output_format)
    out_path = check_output_path(output, overwrite=overwrite, inputs=[input_path])
    rejected_path: Path | None = None
    if on_bad_row == "skip":
        rejected_path = check_output_path(
            rejected_path_for(out_path, out_format), overwrite=overwrite, inputs=[input_path]
        )
    rows = chunk_rows if chunk_rows is not None else chunk_rows_for(batch_size)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise DataError(f"chunk_rows must be an integer >= 1; got {chunk_rows!r}")

    with ExitStack() as stack:
        reader: InputReader = stack.enter_context(open_input(input_path, in_format))
        predictor = _predictor(model, provider=provider, threads=threads)
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
        out = stack.enter_context(AtomicOutput(out_path, out_format, overwrite=overwrite))
        rejected_out = (
            stack.enter_context(
                AtomicOutput(rejected_path, out_format, types=REJECTED_TYPES, overwrite=overwrite)
            )
            if rejected_path is not None
            else None
        )
        bar = stack.enter_context(_progress(progress, reader.total_rows))
        # Entered last, so that on an error the writer stops (queued writes dropped)
        # before the outputs are discarded.
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="onnxedge-write"))
        stack.callback(pool.shutdown, cancel_futures=True)
        writes = _WriteBehind(pool)
        scored = skipped = 0
        for batch in reader.batches(
            features=plan.features or (), carry=plan.carry, batch_rows=rows
        ):
            result = score_batch(predictor, batch, plan)
            writes.submit(out.write, result.columns)
            if result.rejected is not None and rejected_out is not None:
                writes.submit(rejected_out.write, result.rejected)
            scored += result.num_scored
            skipped += result.num_rejected
            bar.update(result.num_scored + result.num_rejected)
        if rejected_out is not None and skipped == 0:
            writes.submit(rejected_out.write, _empty_rejected())  # the file, with its header
        writes.finish()
        out.finish()
        if rejected_out is not None:
            rejected_out.finish()
        # Rejected rows first: the output appears only once everything else is in place.
        if rejected_out is not None:
            rejected_out.commit()
        out.commit()
    seconds = time.perf_counter() - started
    return ScoreSummary(
        model=predictor.model_label,
        input=str(input_path),
        output=str(out_path),
        rejected_output=str(rejected_path) if rejected_path is not None else None,
        input_format=in_format,
        output_format=out_format,
        rows_scored=scored,
        rows_skipped=skipped,
        seconds=seconds,
        rows_per_second=(scored + skipped) / seconds if seconds > 0 else 0.0,
        provider=predictor.provider,
        batch_size=batch_size,
        features=list(plan.features) if plan.features is not None else None,
        columns=list(plan.output_columns),
    )


def chunk_rows_for(batch_size: int) -> int:
    """Rows read, scored and written at once: the batch size rounded to a multiple near
    :data:`DEFAULT_CHUNK_ROWS`."""
    return batch_size * max(1, DEFAULT_CHUNK_ROWS // batch_size)


def _empty_rejected() -> dict[str, np.ndarray]:
    return {name: np.empty(0, dtype=object) for name in REJECTED_COLUMNS}


def _predictor(
    model: str | os.PathLike[str] | bytes | Predictor, *, provider: str, threads: int | None
) -> Predictor:
    from onnxedge.runtime.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    # Rows are checked for NaN / Inf before they reach the model; no second pass.
    # onnxruntime's workers spin between runs by default, holding the cores that the
    # writer thread needs: measured on 1M NPY rows, 2 cores, that made scoring ~1.6x
    # slower.
    return Predictor(
        model,
        provider=provider,
        threads=threads,
        nonfinite="allow",
        session_config={"session.intra_op.allow_spinning": "0"},
    )


class _WriteBehind:
    """Output writes on one worker thread, at most :data:`WRITE_BEHIND` chunks behind.

    Turning a chunk into Arrow and encoding it (pyarrow releases the GIL) then overlaps
    the next chunk's reading and inference; memory stays bounded by the queue. An
    error in a write is raised in the caller at the next :meth:`submit` or at
    :meth:`finish`.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.pending: deque[Future[None]] = deque()
        self.failed = False

    def submit(self, task: Callable[..., None], *args: Any) -> None:
        """Queue ``task(*args)``; waits while :data:`WRITE_BEHIND` writes are queued."""
        while len(self.pending) >= WRITE_BEHIND:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._run, task, *args))

    def _run(self, task: Callable[..., None], *args: Any) -> None:
        if self.failed:
            return  # the run is failing: nothing more goes to the doomed outputs
        try:
            task(*args)
        except BaseException:
            self.failed = True
            raise

    def finish(self) -> None:
        """Wait for every queued write; raise the first error one of them met."""
        while self.pending:
            self.pending.popleft().result()


def _progress(show: bool | None, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        disable=not (sys.stderr.isatty() if show is None else show),
        unit=" rows",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        desc="scoring",
        leave=False,
    )
