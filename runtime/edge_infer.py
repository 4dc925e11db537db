#!/usr/bin/env python3
"""Score rows with an ONNX classifier, using only onnxruntime and numpy.

This file is self-contained (standard library + numpy + onnxruntime): copy it to a
device next to a model exported by onnxedge and run

    pip install onnxruntime numpy
    python edge_infer.py model.onnx rows.csv            # label<TAB>class<TAB>probability
    python edge_infer.py model.onnx rows.npy --json     # one JSON object per row
    some-sensor | python edge_infer.py model.onnx -     # CSV rows on stdin, answered as they come

INPUT is a ``.npy`` file (2-D, or 1-D for one row), a ``.csv`` file, or ``-`` for
CSV on stdin. A CSV header is optional: the first row is a header when none of its
cells is a number (``--header yes|no`` decides for headers like ``0,1,2``). When the
model's metadata names its features and the header holds all of them, those columns
are used, in the model's order (other columns, a label for instance, are ignored);
otherwise every column is a feature.

Output, one line per row, in input order: ``label<TAB>class_name<TAB>probability``
(the probability of that label; the class name is the label's digits when the model
names no classes), or with ``--json``:
``{"label": 3, "class": "3", "probabilities": [...]}`` with one probability per
class (a binary model's single sigmoid output ``p`` becomes ``[1 - p, p]``).

Exit status: 0 on success, 1 with one line ``Error: ...`` on stderr for a bad model,
bad input or an unavailable provider, 2 for bad arguments. ``--provider cuda`` is
strict: it fails when onnxruntime cannot run the model on CUDA instead of falling
back to the CPU.

Runs on Python 3.9 or later. The same functions serve as a library: ``EdgeModel(path).score(x)`` and
``score(session_or_path, x)`` return ``(labels, probabilities)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np

__all__ = ["EdgeError", "EdgeModel", "load_session", "main", "score"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: onnxruntime lists it, but it only calls remote endpoints; never named as available.
_NOT_LOCAL = ("AzureExecutionProvider",)
#: Rows per session.run for files; stdin is answered row by row unless --batch-size.
FILE_BATCH_SIZE = 1024
MAX_DEFAULT_THREADS = 4
_PROBABILITY_NAMES = ("probabilities", "probability", "probs", "proba", "output_probability")
_LOGIT_NAMES = ("logits", "logit", "scores")
_LABEL_NAMES = ("label", "labels", "output_label", "predicted_label")
_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")


class EdgeError(Exception):
    """Bad model, bad input or unavailable provider: printed as one line, exit 1."""


# --- the model --------------------------------------------------------------------------


def default_threads() -> int:
    """CPUs this process may use (``os.sched_getaffinity``), at most 4."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_DEFAULT_THREADS))


def load_session(path: str, provider: str = "auto", threads: int | None = None) -> Any:
    """Open ``path`` with onnxruntime on the requested provider.

    Args:
        path: an ``.onnx`` or ``.ort`` file.
        provider: ``auto`` (CUDA when it really works, else CPU), ``cpu`` or ``cuda``
            (strict).
        threads: intra-op threads (default :func:`default_threads`).

    Raises:
        EdgeError: missing / empty / invalid model, or ``cuda`` unavailable.
    """
    import onnxruntime as ort

    request = provider.strip().lower()
    if request not in ("auto", "cpu", "cuda"):
        raise EdgeError(f"provider must be one of auto, cpu, cuda; got {provider!r}")
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise EdgeError(f"model path is a directory, not a file: {path}")
        raise EdgeError(f"model file not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise EdgeError(f"not a valid ONNX model: {path}: the file is empty")
    available = ort.get_available_providers()
    local = [name for name in available if name not in _NOT_LOCAL]
    if request == "cpu" or (request == "auto" and CUDA not in available):
        providers: list[Any] = [CPU]
    elif CUDA in available:
        providers = [(CUDA, {"device_id": 0}), CPU]
    else:
        raise EdgeError(f"{CUDA} requested; available: {', '.join(local) or 'none'}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    if head[4:8] == b"ORTM":
        options.add_session_config_entry("session.load_model_format", "ORT")
    try:
        session = ort.InferenceSession(
            path, sess_options=options, providers=providers, read_config_from_model=0
        )
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime") and not isinstance(
            exc, (ValueError, RuntimeError)
        ):
            raise
        raise EdgeError(f"not a valid ONNX model: {path}: {_ort_message(exc)}") from None
    session.disable_fallback()
    if request == "cuda" and CUDA not in session.get_providers():
        got = ", ".join(session.get_providers())
        raise EdgeError(f"{CUDA} requested; the session got: {got} (check CUDA / cuDNN)")
    return session


def _ort_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if text.startswith("[ONNXRuntimeError]"):
        parts = text.split(" : ", 3)
        text = parts[-1] if len(parts) == 4 else text
    if text.startswith("Load model from ") and " failed:" in text:
        text = text.split(" failed:", 1)[1].strip()
    return text or type(exc).__name__


class EdgeModel:
    """An onnxruntime session plus what the model's metadata says about it.

    Args:
        session_or_path: an ``onnxruntime.InferenceSession`` or a model path.
        provider: for a path: ``auto``, ``cpu`` or ``cuda``.
        threads: for a path: intra-op threads.

    Raises:
        EdgeError: the model cannot be opened, or is not a single-input classifier.
    """

    def __init__(
        self, session_or_path: Any, provider: str = "auto", threads: int | None = None
    ) -> None:
        if isinstance(session_or_path, (str, os.PathLike)):
            self.session = load_session(os.fspath(session_or_path), provider, threads)
        else:
            self.session = session_or_path
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in _FLOAT_TYPES:
            raise EdgeError("the model must have one float input (batch, features)")
        self.input_name: str = inputs[0].name
        self.input_dtype = {
            "tensor(float)": np.float32,
            "tensor(double)": np.float64,
            "tensor(float16)": np.float16,
        }[inputs[0].type]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.class_names: list[str] | None = _json_list(meta.get("onnxedge.class_names"))
        self.feature_names: list[str] | None = _json_list(meta.get("onnxedge.feature_names"))
        try:
            self.threshold = float(meta.get("onnxedge.threshold", 0.5))
        except ValueError:
            self.threshold = 0.5
        shape = inputs[0].shape
        width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        if width is None and meta.get("onnxedge.num_features", "").isdigit():
            width = int(meta["onnxedge.num_features"])
        self.num_features: int | None = width
        outputs = self.session.get_outputs()
        lowered = {o.name.lower(): o for o in outputs}
        prob = next((lowered[n] for n in _PROBABILITY_NAMES if n in lowered), None)
        logits = next((lowered[n].name for n in _LOGIT_NAMES if n in lowered), None)
        if prob is None:
            floats = [o for o in outputs if o.type in _FLOAT_TYPES and o.name != logits]
            if len(floats) != 1:
                raise EdgeError("cannot tell which model output holds the class probabilities")
            prob = floats[0]
        if prob.type not in _FLOAT_TYPES:
            raise EdgeError(f"output {prob.name!r} is {prob.type}, not a float tensor")
        label = next((lowered[n] for n in _LABEL_NAMES if n in lowered), None)
        if label is not None and not label.type.startswith(("tensor(int", "tensor(uint")):
            label = None
        self.fetch = [prob.name] + ([label.name] if label is not None else [])
        self.has_label = label is not None
        if self.class_names is not None:
            prob_shape = prob.shape
            columns = prob_shape[1] if len(prob_shape) == 2 else 1
            classes = 2 if columns == 1 else columns
            if isinstance(classes, int) and classes != len(self.class_names):
                self.class_names = None

    def check(self, x: Any) -> np.ndarray:
        """``x`` as a C-contiguous ``(n, features)`` array of the model's input type.

        Raises:
            EdgeError: not numeric, wrong rank or feature count, or NaN / Inf.
        """
        arr = x if type(x) is np.ndarray else np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise EdgeError(f"input has dtype {arr.dtype}; expected numbers")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise EdgeError(f"input must be 2-D (rows, features); got shape {tuple(arr.shape)}")
        if self.num_features is not None and arr.shape[1] != self.num_features:
            raise EdgeError(f"model expects {self.num_features} features, input has {arr.shape[1]}")
        if arr.dtype != self.input_dtype or not arr.flags.c_contiguous:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = np.ascontiguousarray(arr, dtype=self.input_dtype)
        # x.x is finite exactly when every value is (no cancellation among squares);
        # one BLAS call. On overflow of large finite values the exact test decides.
        if arr.size and not math.isfinite(np.vdot(arr, arr)) and not np.isfinite(arr).all():
            row, column = (int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise EdgeError(
                f"input row {row}, column {column} is {arr[row, column]}; NaN / Inf are rejected"
            )
        return arr

    def score(self, x: Any, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score rows.

        Args:
            x: ``(n, features)`` numbers, or one row.
            batch_size: rows per ``session.run`` (default: all at once).

        Returns:
            ``(labels, probabilities)``: ``(n,)`` int64 and ``(n, C)`` float32.

        Raises:
            EdgeError: bad input, or onnxruntime failed to run.
        """
        arr = self.check(x)
        n = arr.shape[0]
        if batch_size is None or batch_size >= n:
            return self._classes(self._run(arr))
        labels_out: list[np.ndarray] = []
        probs_out: list[np.ndarray] = []
        for start in range(0, n, max(1, batch_size)):
            labels, probs = self._classes(self._run(arr[start : start + batch_size]))
            labels_out.append(labels)
            probs_out.append(probs)
        return np.concatenate(labels_out), np.concatenate(probs_out)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self.session.run(self.fetch, {self.input_name: batch})
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            reason = _ort_message(exc)
            raise EdgeError(f"onnxruntime failed to run the model: {reason}") from None

    def _classes(self, result: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs = result[0]
        if probs.dtype != np.float32:
            probs = probs.astype(np.float32)
        if probs.ndim == 1:
            probs = probs.reshape(-1, 1)
        if probs.shape[1] == 1:
            # one sigmoid output p: the positive class; per class it is [1 - p, p]
            positive = probs[:, 0]
            per_class = np.empty((probs.shape[0], 2), dtype=np.float32)
            per_class[:, 1] = positive
            np.subtract(np.float32(1), positive, out=per_class[:, 0])
        else:
            per_class = probs
        if self.has_label:
            labels = result[1]
            if labels.ndim != 1 or labels.dtype != np.int64:
                labels = labels.reshape(-1).astype(np.int64)
        elif probs.shape[1] == 1:
            labels = (probs[:, 0] >= np.float32(self.threshold)).astype(np.int64)
        else:
            labels = per_class.argmax(axis=1).astype(np.int64, copy=False)
        return labels, per_class

    def name_of(self, label: int) -> str:
        """The class name of ``label`` (its digits when the model names no classes)."""
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else str(label)


def score(
    session_or_path: Any, x: Any, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Score ``x`` with a session or model path; return ``(labels, probabilities)``.

    Raises:
        EdgeError: bad model or bad input.
    """
    return EdgeModel(session_or_path).score(x, batch_size)


def _json_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    import json

    try:
        data = json.loads(value)
    except ValueError:
        return None
    return [str(item) for item in data] if isinstance(data, list) else None


# --- input ------------------------------------------------------------------------------


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv_batches(
    lines: Iterable[str], source: str, model: EdgeModel, batch_size: int, header: str = "auto"
) -> Iterator[np.ndarray]:
    """Yield float64 arrays of up to ``batch_size`` rows from CSV text.

    Args:
        header: ``auto`` (the first row is a header when none of its cells is a
            number, data when all are; a mix is an error), ``yes`` or ``no``.

    Raises:
        EdgeError: a row with the wrong number of values or a cell that is not a number
            (naming the line and column), or a header without the model's features.
    """
    import csv

    reader = csv.reader(lines)
    columns: list[int] | None = None
    names: list[str] | None = None
    pending: list[list[str]] = []
    lines_of: list[int] = []
    first = True
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if first:
            first = False
            numeric = [_is_number(cell) for cell in row]
            if header == "auto" and any(numeric) and not all(numeric):
                raise EdgeError(
                    f"{source}: line {reader.line_num} mixes numbers and text; is it a header? "
                    "say so with --header yes or --header no"
                )
            if header == "yes" or (header == "auto" and not any(numeric)):
                names = [cell.strip() for cell in row]
                columns = _select_columns(names, model, source)
                continue
        pending.append(row)
        lines_of.append(reader.line_num)
        if len(pending) >= batch_size:
            yield _parse_rows(pending, lines_of, columns, names, source)
            pending, lines_of = [], []
    if pending:
        yield _parse_rows(pending, lines_of, columns, names, source)


def _select_columns(header: list[str], model: EdgeModel, source: str) -> list[int] | None:
    wanted = model.feature_names
    if wanted and all(name in header for name in wanted):
        return [header.index(name) for name in wanted]
    expected = model.num_features
    if expected is not None and len(header) != expected:
        hint = ""
        if wanted:
            more = ", ..." if len(wanted) > 5 else ""
            hint = f"; the model's features are named {', '.join(wanted[:5])}{more}"
        raise EdgeError(
            f"{source}: header has {len(header)} columns, model expects {expected} features{hint}"
        )
    return None


def _parse_rows(
    rows: list[list[str]],
    lines: list[int],
    columns: list[int] | None,
    header: list[str] | None,
    source: str,
) -> np.ndarray:
    width = len(header) if header is not None else len(rows[0])
    for row, line in zip(rows, lines):  # noqa: B905 - Python 3.9
        if len(row) != width:
            raise EdgeError(f"{source}: line {line} has {len(row)} values, expected {width}")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):  # noqa: B905 - Python 3.9
            for index, cell in enumerate(row):
                if not _is_number(cell):
                    name = f" ({header[index]!r})" if header is not None else ""
                    raise EdgeError(
                        f"{source}: line {line}, column {index}{name}: {cell!r} is not a number"
                    ) from None
        raise
    return table[:, columns] if columns is not None else table


def _read_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise EdgeError(f"input file not found: {path}") from None
    except (ValueError, OSError) as exc:
        raise EdgeError(f"cannot read {path} as .npy: {' '.join(str(exc).split())}") from None


def input_batches(
    source: str,
    model: EdgeModel,
    batch_size: int | None,
    stdin: IO[str] | None = None,
    header: str = "auto",
) -> Iterator[np.ndarray]:
    """Yield batches of rows from ``source`` (``.npy``, ``.csv`` or ``-`` for stdin).

    Raises:
        EdgeError: unknown suffix, unreadable file, or bad rows.
    """
    if source == "-":
        stream = stdin if stdin is not None else sys.stdin
        yield from read_csv_batches(stream, "<stdin>", model, batch_size or 1, header)
        return
    suffix = os.path.splitext(source)[1].lower()
    step = batch_size or FILE_BATCH_SIZE
    if suffix == ".npy":
        data = _read_npy(source)
        if data.ndim == 1:
            data = data.reshape(1, -1)
        for start in range(0, data.shape[0], step):
            yield np.asarray(data[start : start + step])
        return
    if suffix in (".csv", ".txt"):
        try:
            with open(source, newline="", encoding="utf-8-sig") as handle:
                yield from read_csv_batches(handle, source, model, step, header)
        except FileNotFoundError:
            raise EdgeError(f"input file not found: {source}") from None
        except UnicodeDecodeError:
            raise EdgeError(f"{source}: not UTF-8 text") from None
        return
    raise EdgeError(f"input must be a .npy or .csv file or - for stdin; got {source!r}")


# --- output and the command line --------------------------------------------------------


def format_rows(
    model: EdgeModel, labels: np.ndarray, probabilities: np.ndarray, as_json: bool
) -> str:
    """The output lines for one batch (each ending in a newline)."""
    if as_json:
        import json

        return "".join(
            json.dumps({"label": label, "class": model.name_of(label), "probabilities": row}) + "\n"
            for label, row in zip(labels.tolist(), probabilities.tolist())  # noqa: B905
        )
    top = probabilities[np.arange(labels.shape[0]), labels] if labels.shape[0] else labels
    return "".join(
        f"{label}\t{model.name_of(label)}\t{p:.6f}\n"
        for label, p in zip(labels.tolist(), top.tolist())  # noqa: B905
    )


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="edge_infer.py",
        description="Score rows with an ONNX classifier (onnxruntime + numpy only).",
        epilog=(
            "examples:\n"
            "  python edge_infer.py model.onnx rows.csv\n"
            "  python edge_infer.py model.onnx rows.npy --json\n"
            "  cat rows.csv | python edge_infer.py model.onnx - --provider cpu"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="an .onnx (or .ort) model file")
    parser.add_argument("input", help=".npy file, .csv file, or - for CSV rows on stdin")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument(
        "--provider", default="auto", choices=("auto", "cpu", "cuda"), type=str.lower
    )
    parser.add_argument(
        "--header",
        default="auto",
        choices=("auto", "yes", "no"),
        type=str.lower,
        help="CSV header row (auto: a first row without numbers)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"rows per run (default {FILE_BATCH_SIZE} for files, 1 for stdin)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 bad arguments)."""
    args = _parser().parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise EdgeError(f"--threads must be >= 1; got {args.threads}")
        if args.batch_size is not None and args.batch_size < 1:
            raise EdgeError(f"--batch-size must be >= 1; got {args.batch_size}")
        model = EdgeModel(args.model, provider=args.provider, threads=args.threads)
        out = sys.stdout
        for batch in input_batches(args.input, model, args.batch_size, header=args.header):
            labels, probabilities = model.score(batch)
            out.write(format_rows(model, labels, probabilities, args.json))
            out.flush()
    except EdgeError as exc:
        print(f"Error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (| head): not an error; keep Python from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
