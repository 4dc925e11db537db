"""Scale-out scoring on Ray Data: ``onnxedge score --engine ray``.

A thin layer over the local engine's per-batch function: every batch a Ray worker
sees goes through :func:`onnxedge.runtime.score.score_batch` under the same
:class:`~onnxedge.runtime.score.ScorePlan` the local engine would build, so the two
engines validate, reject and compute rows with one piece of code. What this module
adds is the Ray part:

* **Runtime.** Without an address a local Ray runtime is started (and stopped at the
  end) with ``workers * threads_per_worker + 1`` logical CPUs; with one (``auto``,
  ``host:port``) the driver joins that cluster. Ray Data does not run through Ray
  Client, so with a ``ray://host:port`` address the whole call runs as one task on
  the cluster (paths are then the cluster's). An already initialized runtime is used
  as it is. One logical CPU is always left to Ray Data's
  own list / read / write tasks: a fixed actor pool that holds every CPU starves
  them, and the job never finishes.
* **Workers.** ``map_batches`` with a callable class in a fixed pool of ``workers``
  actors, each asking for ``threads_per_worker`` CPUs and building its own
  onnxruntime session once, with that many intra-op threads (sessions cannot be
  pickled; the model's bytes travel through the object store, or its path when the
  model keeps weights in external files, which every node must then be able to read).
* **Input.** Parquet, CSV or NPY: a file, a folder of files, or a URI Ray Data reads
  (``s3://...``). Local inputs are planned by the local engine's own readers (same
  feature columns, same checks) and read by Ray in the local engine's file order.
  Ray Data reads NPY files whole, one file per task: split a large array into
  several files.
* **Output.** ``OUTPUT`` is a folder of shards ``part-000000.<ext>`` (Parquet by
  default, or CSV / JSONL from ``--output-format`` or the name's ending) with the
  local engine's columns, in input order (``preserve_order``): reading the shards in
  name order gives the local engine's rows. Shards are written to a temporary folder
  beside ``OUTPUT`` and renamed at the end; after a failure nothing is left at
  ``OUTPUT``. On a multi-node cluster ``OUTPUT`` must be on a file system that
  every node shares.
* **Bad rows.** ``fail`` raises the worker's
  :class:`~onnxedge.runtime.score.BadRowError` on the driver (Ray's wrapping removed);
  for a local input the failing file is then scanned by the local reader so that
  the message names the line or row exactly as ``--engine local`` does. ``skip``
  writes rejected rows to the folder ``<OUTPUT stem>.rejected.<ext>`` (the local
  engine's name, as a folder), one shard per batch that had any, with the local
  engine's columns; ``row`` and ``line`` are empty there because Ray Data does not
  number rows. A CSV row that cannot be split into fields stops the job under
  either policy: Ray Data's CSV reader cannot set it aside.

``ray`` is imported only inside the functions that need it; without it,
:class:`~onnxedge.runtime.errors.MissingDependencyError` carries the install hint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.runtime.atomic import Staged
from onnxedge.runtime.errors import (
    DataError,
    MissingDependencyError,
    ModelLoadError,
    OnnxEdgeError,
    OutputExistsError,
)
from onnxedge.runtime.io import (
    AtomicOutput,
    CategoricalColumn,
    InputBatch,
    input_format_of,
    open_input,
    output_format_of,
    rejected_path_for,
)
from onnxedge.runtime.score import (
    DEFAULT_BATCH_SIZE,
    REJECTED_TYPES,
    BadRowError,
    ScorePlan,
    ScoreSummary,
    check_options,
    chunk_rows_for,
    plan_scoring,
    score_batch,
)

__all__ = [
    "IO_CPUS",
    "RAY_FORMATS",
    "RAY_INSTALL_HINT",
    "RayBatchScorer",
    "RayScoreSummary",
    "score_ray",
]

RAY_INSTALL_HINT = "--engine ray needs ray: pip install 'onnxedge[ray]'"
#: Input formats the Ray engine reads (JSONL needs ``--engine local``).
RAY_FORMATS: tuple[str, ...] = ("parquet", "csv", "npy")
#: Logical CPUs left free for Ray Data's list / read / write tasks.
IO_CPUS = 1
#: The column ``include_paths=True`` adds: the file each row came from.
_PATH_COLUMN = "path"
#: Ray Data's column for the rows of an NPY file.
_NPY_COLUMN = "data"
_SHARD_ENDINGS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


def _import_ray() -> Any:
    """``ray`` with Ray Data, or the install hint."""
    try:
        import ray
        import ray.data  # the ``data`` extra is what is needed
    except ImportError:
        raise MissingDependencyError(RAY_INSTALL_HINT) from None
    return ray


# --------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------


class _ShippedError(Exception):
    """An :class:`OnnxEdgeError` on its way from a Ray worker to the driver.

    Ray pickles a worker's exception; some onnxedge errors take keyword-only
    arguments (:class:`BadRowError`), which unpickling cannot supply, and Ray Data
    appends its retry note to ``args``. This carries the class, the message and the
    attributes on their own (``__reduce__`` ignores ``args``), and :meth:`rebuild`
    makes the original error again on the driver.
    """

    def __init__(self, kind: type[OnnxEdgeError], message: str, attrs: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.attrs = attrs

    @classmethod
    def of(cls, exc: OnnxEdgeError) -> _ShippedError:
        return cls(type(exc), str(exc), dict(vars(exc)))

    def rebuild(self) -> OnnxEdgeError:
        exc = self.kind.__new__(self.kind)
        Exception.__init__(exc, self.message)
        exc.__dict__.update(self.attrs)
        return exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ShippedError, (self.kind, self.message, self.attrs))


class RayBatchScorer:
    """The callable class Ray Data's ``map_batches`` runs in each worker.

    Each instance builds one :class:`~onnxedge.runtime.predictor.Predictor` (its own
    onnxruntime session) and turns every batch into output columns with
    :func:`~onnxedge.runtime.score.score_batch`. A batch may hold rows of several
    files; they are scored file by file so that messages and rejected rows name
    their file.

    Args:
        model: the model's bytes, or a path every worker can read.
        plan: from :func:`~onnxedge.runtime.score.plan_scoring` on the driver.
        provider: ``auto``, ``cpu`` or ``cuda``.
        threads: onnxruntime intra-op threads.
        input_format: ``parquet``, ``csv`` or ``npy`` (how rows are located).
        source: the input as messages name it, for rows whose file is unknown.
        names: Ray's path of each file -> the name the local engine gives it.
        rejected_dir: folder for rejected-row shards (``on_bad_row="skip"``), or None.
        rejected_format: the shards' format (``parquet``, ``csv``, ``jsonl``).

    Raises:
        OnnxEdgeError: as :func:`score_batch` and ``Predictor`` raise them; they
            reach the driver through Ray and :func:`score_ray` raises them again.
    """

    def __init__(
        self,
        model: bytes | str,
        plan: ScorePlan,
        *,
        provider: str,
        threads: int,
        input_format: str,
        source: str,
        names: dict[str, str],
        rejected_dir: str | None,
        rejected_format: str,
    ) -> None:
        from onnxedge.runtime.predictor import Predictor

        try:
            # Rows are checked for NaN / Inf by score_batch; no second pass.
            self.predictor = Predictor(model, provider=provider, threads=threads, nonfinite="allow")
        except OnnxEdgeError as exc:
            raise _ShippedError.of(exc) from None
        self.plan = plan
        self.input_format = input_format
        self.source = source
        self.names = names
        self.rejected_dir = Path(rejected_dir) if rejected_dir is not None else None
        self.rejected_format = rejected_format
        # Rejected shards are named by their file's place in the input, then at random.
        self._file_order = {name: index for index, name in enumerate(names.values())}

    def __call__(self, batch: Any) -> Any:
        """Score one Ray batch (a ``pyarrow.Table``, or for NPY a dict of numpy arrays).

        Returns:
            A ``pyarrow.Table`` of the scored rows, in the plan's output columns.
        """
        try:
            return self._score(batch)
        except OnnxEdgeError as exc:
            raise _ShippedError.of(exc) from None

    def _score(self, batch: Any) -> Any:
        import pyarrow as pa

        tables = []
        for part in self._split_by_file(batch):
            result = score_batch(self.predictor, part, self.plan)
            tables.append(_output_table(result.columns))
            if result.rejected is not None:
                self._write_rejected(part.source, result.rejected)
        if not tables:
            return _empty_output(self.plan)
        return (
            tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        )

    def _split_by_file(self, batch: Any) -> Iterator[InputBatch]:
        """One :class:`InputBatch` per run of rows from the same file."""
        if isinstance(batch, dict):  # NPY: {"data": (n, f), "path": (n,)}
            matrix = np.asarray(batch[_NPY_COLUMN])
            paths = batch.get(_PATH_COLUMN)
            for start, stop, path in _runs(paths, matrix.shape[0]):
                yield InputBatch(source=self._name(path), matrix=matrix[start:stop])
            return
        paths = batch.column(_PATH_COLUMN) if _PATH_COLUMN in batch.column_names else None
        text = self.input_format == "csv"
        wanted = list(dict.fromkeys([*(self.plan.features or ()), *self.plan.carry]))
        for start, stop, path in _runs(paths, batch.num_rows):
            part = batch.slice(start, stop - start)
            yield InputBatch(
                source=self._name(path),
                columns={name: part.column(name) for name in wanted},
                location="line" if text else "row",
                header=text,
            )

    def _name(self, path: str | None) -> str:
        if path is None:
            return self.source
        return self.names.get(path, path)

    def _write_rejected(self, source: str, rejected: dict[str, np.ndarray]) -> None:
        if self.rejected_dir is None:
            return
        # A unique name per batch: two batches with the same bad rows (a file of
        # repeated rows) are both kept. If Ray retries a task after a worker dies, the
        # retried batches' rejected rows may be written twice; none are ever lost.
        order = self._file_order.get(source, len(self._file_order))
        ending = _SHARD_ENDINGS[self.rejected_format]
        path = self.rejected_dir / f"part-{order:06d}-{uuid.uuid4().hex[:16]}.{ending}"
        with AtomicOutput(path, self.rejected_format, types=REJECTED_TYPES) as out:
            out.write(rejected)
            out.finish()
            out.commit()


def _runs(paths: Any, n: int) -> Iterator[tuple[int, int, str | None]]:
    """``(start, stop, path)`` for each run of equal paths (rows of one file are contiguous)."""
    if n == 0:
        return
    if paths is None:
        yield 0, n, None
        return
    if isinstance(paths, np.ndarray):  # (n,) str
        codes, names = paths, paths
    else:  # a pyarrow string column: compare small integer codes, not strings
        encoded = paths.combine_chunks() if hasattr(paths, "combine_chunks") else paths
        encoded = encoded.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    bounds = [0, *change.tolist(), n]
    for start, stop in itertools.pairwise(bounds):
        name = names[start] if isinstance(paths, np.ndarray) else names[int(codes[start])]
        yield start, stop, str(name)


def _output_table(columns: dict[str, Any]) -> Any:
    """Output columns (numpy, pyarrow or categorical) as one ``pyarrow.Table``."""
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        if isinstance(values, CategoricalColumn):
            # Dictionary-encoded, as the local engine's Parquet writer stores it.
            arrays[name] = pa.DictionaryArray.from_arrays(
                pa.array(values.codes, type=pa.int32()),
                pa.array(list(values.categories), type=pa.string()),
            )
        elif isinstance(values, pa.Array | pa.ChunkedArray):
            arrays[name] = values
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _empty_output(plan: ScorePlan) -> Any:
    import pyarrow as pa

    types = {"label": pa.int64(), "class_name": pa.dictionary(pa.int32(), pa.string())}
    types.update({name: pa.float32() for name in plan.probability_columns})
    return pa.table(
        {name: pa.array([], type=types.get(name, pa.string())) for name in plan.output_columns}
    )


# --------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------


@dataclass
class RayScoreSummary(ScoreSummary):
    """What one :func:`score_ray` run did: the local engine's summary and the Ray facts.

    ``output`` and ``rejected_output`` are folders of shards. ``seconds`` is the wall
    time of the whole call, start-up included.

    Attributes:
        engine: ``ray``.
        address: the cluster joined, ``local`` for a runtime started here, or
            ``existing`` for one that was already initialized.
        workers: scoring actors.
        threads_per_worker: onnxruntime intra-op threads (and logical CPUs) per actor.
        startup_seconds: time to start or join the Ray runtime.
        shards: files written to ``output``.
    """

    engine: str = "ray"
    address: str = "local"
    workers: int = 0
    threads_per_worker: int = 0
    startup_seconds: float = 0.0
    shards: int = 0

    def line(self) -> str:
        """One line for a person, with the workers and the start-up time."""
        return (
            f"{super().line()} [ray {self.address}: {self.workers} workers x "
            f"{self.threads_per_worker} threads, start-up {self.startup_seconds:.1f} s]"
        )


@dataclass(frozen=True)
class _Input:
    """What Ray reads, and how the local engine would name it.

    Ray is given one path (the input itself): Ray Data 2.60 lists several paths in
    parallel threads, which then race on an optional import (fsspec's HTTP file
    system, when aiohttp is not installed) and fail at random.
    """

    name: str  # the input as messages name it
    format: str
    ray_path: str  # an absolute local path, or the URI as given
    names: dict[str, str]  # Ray's path of each file -> the local engine's name for it
    first: str | None  # the local file (or Parquet input) the plan is read from
    local: bool


def score_ray(
    model: str | os.PathLike[str] | bytes,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "cpu",
    id_column: str | None = None,
    features: str | Sequence[str] | None = None,
    keep_columns: str | Sequence[str] | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    probabilities: bool = True,
    overwrite: bool = False,
    on_bad_row: str = "fail",
    progress: bool | None = None,
) -> RayScoreSummary:
    """Score every row of ``input`` on Ray Data and write a folder of shards to ``output``.

    Args:
        model: an ``.onnx`` path or the model's bytes.
        input: a Parquet, CSV or NPY file, a folder of them, or a URI Ray Data reads.
        output: the folder to create (it must not exist unless ``overwrite``).
        address: a Ray cluster (``auto``, ``host:port``, or ``ray://host:port``
            through Ray Client: the call then runs as a task on the cluster, and
            ``input`` and ``output`` are paths there); None starts a local runtime
            sized to ``workers`` (and stops it at the end). A runtime already
            initialized in this process is used as it is.
        workers: scoring actors; None: as many as the CPUs allow
            (``(CPUs - 1) // threads_per_worker``; all the machine's CPUs for a local
            runtime started here).
        threads_per_worker: onnxruntime intra-op threads per actor; each actor asks
            Ray for that many CPUs, so ``workers * threads_per_worker`` stays within
            the cores.
        batch_size: rows per ``session.run``.
        provider: ``cpu``, ``auto`` or ``cuda`` (each actor then asks for one GPU).
        id_column: a column copied first into the output.
        features: feature columns (a list or comma-separated text).
        keep_columns: more columns copied into the output.
        input_format: ``parquet``, ``csv`` or ``npy`` whatever the name says.
        output_format: ``parquet`` (default), ``csv`` or ``jsonl``; default from
            ``output``'s ending.
        probabilities: write one ``prob_<class>`` column per class.
        overwrite: replace an existing ``output`` (and rejected-rows folder).
        on_bad_row: ``fail`` or ``skip`` (as the local engine).
        progress: Ray Data's progress bars; None shows them when stderr is a terminal.

    Returns:
        A :class:`RayScoreSummary`.

    Raises:
        MissingDependencyError: ray (or pyarrow) is not installed.
        DataError: the input is missing or not Parquet / CSV / NPY, a column is
            missing, the output folder's parent does not exist, an option is invalid,
            the cluster lacks the CPUs asked for, or Ray Data failed to read or write.
        OutputExistsError: ``output`` exists and ``overwrite`` is false.
        InputShapeError: the input's feature count is not the model's.
        BadRowError: a bad row under ``on_bad_row="fail"``.
        ModelLoadError, ProviderUnavailableError: from the Predictor.
    """
    started = time.perf_counter()
    _check_options(on_bad_row, batch_size, workers, threads_per_worker)
    ray = _import_ray()
    if address is not None and address.startswith("ray://") and not ray.is_initialized():
        return _score_through_client(
            ray,
            address,
            model,
            input,
            output,
            workers=workers,
            threads_per_worker=threads_per_worker,
            batch_size=batch_size,
            provider=provider,
            id_column=id_column,
            features=features,
            keep_columns=keep_columns,
            input_format=input_format,
            output_format=output_format,
            probabilities=probabilities,
            overwrite=overwrite,
            on_bad_row=on_bad_row,
        )
    source = _resolve_input(input, input_format)
    out_format = _output_format(output, output_format)
    out_path = _check_output_folder(output, overwrite=overwrite, source=source)
    rejected_path = (
        _check_output_folder(
            rejected_path_for(out_path, out_format), overwrite=overwrite, source=source
        )
        if on_bad_row == "skip"
        else None
    )
    from onnxedge.runtime.predictor import Predictor

    # The driver's predictor only plans (feature columns, class names) and, after a
    # failure, locates a bad row; the workers build their own.
    predictor = Predictor(model, provider="cpu", threads=1, nonfinite="allow")
    payload = _model_payload(model, predictor)
    options = {
        "features": features,
        "id_column": id_column,
        "keep_columns": keep_columns,
        "probabilities": probabilities,
        "on_bad_row": on_bad_row,
        "batch_size": batch_size,
    }
    plan = _plan_local(predictor, source, options) if source.local else None
    gpus = 1 if provider.lower() == "cuda" else 0

    with _ray_runtime(ray, address, workers, threads_per_worker) as runtime, _quiet_ray_data():
        size = _size_pool(ray, runtime, workers, threads_per_worker, gpus)
        if plan is None:
            plan = _plan_remote(ray, predictor, source, options)
        show = _show_progress(progress)
        dataset = _read(ray, source, plan, progress=show)
        context = dataset.context  # this dataset's own copy: the caller's is not changed
        context.execution_options.preserve_order = True  # shards line up with the input
        context.enable_progress_bars = show
        context.print_on_execution_start = False
        # A worker's error reaches the driver as raised (not as Ray's UserCodeException,
        # which keeps only its text): _driver_error finds the onnxedge error in it.
        context.raise_original_map_exception = True
        with (
            _staging(out_path, overwrite) as out_tmp,
            _staging(rejected_path, overwrite) as rej_tmp,
        ):
            scored = dataset.map_batches(
                RayBatchScorer,
                fn_constructor_args=(payload, plan),
                fn_constructor_kwargs={
                    "provider": provider.lower(),
                    "threads": threads_per_worker,
                    "input_format": source.format,
                    "source": source.name,
                    "names": source.names,
                    "rejected_dir": str(rej_tmp.path) if rej_tmp is not None else None,
                    "rejected_format": out_format,
                },
                batch_size=chunk_rows_for(batch_size),
                batch_format="numpy" if source.format == "npy" else "pyarrow",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=threads_per_worker,
                num_gpus=gpus,
                udf_modifying_row_count=on_bad_row == "skip",
            )
            try:
                _write(ray, scored, out_tmp.path, out_format)
            except Exception as exc:
                error = _driver_error(exc, source, plan, predictor)
                # Ray's own failures keep their traceback as the cause; onnxedge's errors
                # are complete as they are.
                raise error from (None if isinstance(_unwrap(exc), OnnxEdgeError) else exc)
            shards = _shards(out_tmp.path)
            rows_scored = _count_rows(shards, out_format)
            rows_skipped = (
                _count_rows(_shards(rej_tmp.path), out_format) if rej_tmp is not None else 0
            )
            # Rejected rows first: the output appears only once everything else is in place.
            if rej_tmp is not None:
                rej_tmp.commit()
            out_tmp.commit()
    seconds = time.perf_counter() - started
    return RayScoreSummary(
        model=predictor.model_label,
        input=source.name,
        output=str(out_path),
        rejected_output=str(rejected_path) if rejected_path is not None else None,
        input_format=source.format,
        output_format=out_format,
        rows_scored=rows_scored,
        rows_skipped=rows_skipped,
        seconds=seconds,
        rows_per_second=(rows_scored + rows_skipped) / seconds if seconds > 0 else 0.0,
        # Actors without a GPU see none (Ray hides them), so "auto" runs on the CPU;
        # "cuda" is strict and would have failed in a worker otherwise.
        provider="CUDAExecutionProvider" if gpus else "CPUExecutionProvider",
        batch_size=batch_size,
        features=list(plan.features) if plan.features is not None else None,
        columns=list(plan.output_columns),
        address=runtime.address,
        workers=size,
        threads_per_worker=threads_per_worker,
        startup_seconds=runtime.startup_seconds,
        shards=len(shards),
    )


def _score_through_client(
    ray: Any,
    address: str,
    model: str | os.PathLike[str] | bytes,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    **options: Any,
) -> RayScoreSummary:
    """``score_ray`` run as one task on the cluster, for a Ray Client (``ray://``) address.

    Ray Data cannot run its executor through Ray Client, so the whole call runs in a
    task on the cluster (asking for no CPU), where Ray is already up; input and output
    are then paths of the cluster's nodes. The model's bytes are sent from here.
    """
    started = time.perf_counter()
    if isinstance(model, bytes | bytearray | memoryview):
        payload, label = bytes(model), "<bytes>"
    else:
        try:
            payload, label = Path(model).read_bytes(), os.fspath(model)
        except OSError as exc:
            raise ModelLoadError(
                f"cannot read model file: {model}: {exc.strerror or exc}"
            ) from None
    with _ray_runtime(ray, address, None, 1) as runtime:
        task = ray.remote(num_cpus=0, max_retries=0)(_score_in_cluster)
        try:
            summary = ray.get(task.remote(payload, os.fspath(input), os.fspath(output), options))
        except Exception as exc:
            found = _unwrap(exc)
            if found is not None:
                raise found from None
            raise DataError(
                f"{os.fspath(input)}: scoring failed on the Ray cluster at {address}: "
                f"{_root_message(exc)}"
            ) from exc
    seconds = time.perf_counter() - started
    rows = summary.rows_scored + summary.rows_skipped
    return dataclasses.replace(
        summary,
        model=label,
        address=address,
        startup_seconds=runtime.startup_seconds,
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else 0.0,
    )


def _score_in_cluster(
    model: bytes, input: str, output: str, options: dict[str, Any]
) -> RayScoreSummary:
    """The task :func:`_score_through_client` runs on the cluster."""
    try:
        return score_ray(model, input, output, **options)
    except OnnxEdgeError as exc:
        raise _ShippedError.of(exc) from None


def _check_options(
    on_bad_row: str, batch_size: int, workers: int | None, threads_per_worker: int
) -> None:
    check_options(on_bad_row, batch_size)  # the local engine's rules, then Ray's own
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if name == "workers" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be an integer >= 1; got {value!r}")


def _show_progress(progress: bool | None) -> bool:
    if progress is None:
        import sys

        return sys.stderr.isatty()
    return bool(progress)


# --- input ------------------------------------------------------------------------------


def _is_uri(text: str) -> bool:
    return "://" in text


def _resolve_input(input: str | os.PathLike[str], override: str | None) -> _Input:
    """The input's format, and the name the local engine gives each of its files."""
    text = os.fspath(input)
    if _is_uri(text):
        if override is not None:
            fmt = input_format_of(text, override)
        else:
            try:
                fmt = input_format_of(text)
            except DataError:
                fmt = "parquet"  # a URI without a known ending: a folder of Parquet files
        _check_ray_format(text, fmt)
        return _Input(name=text, format=fmt, ray_path=text, names={}, first=None, local=False)
    path = Path(text)
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    if path.is_dir():
        fmt = input_format_of(path, override) if override is not None else _folder_format(path)
        _check_ray_format(text, fmt)
        files = _folder_files(path, fmt)
    else:
        fmt = input_format_of(path, override)
        _check_ray_format(text, fmt)
        files = [path]
    # The local engine opens a Parquet folder as one input; a CSV or NPY folder (which
    # it does not read) is planned from its first file.
    first = str(path) if fmt == "parquet" else str(files[0])
    return _Input(
        name=str(path),
        format=fmt,
        ray_path=str(path.resolve()),
        names={str(f.resolve()): str(f) for f in files},
        first=first,
        local=True,
    )


def _check_ray_format(text: str, fmt: str) -> None:
    if fmt not in RAY_FORMATS:
        raise DataError(
            f"{text}: --engine ray reads Parquet, CSV or NPY input; {fmt} input needs "
            "--engine local"
        )


def _file_format(path: Path) -> str | None:
    try:
        return input_format_of(path.name)
    except DataError:
        return None


def _folder_format(folder: Path) -> str:
    found = {
        fmt
        for p in folder.rglob("*")
        if p.is_file() and not _hidden(p, folder) and (fmt := _file_format(p)) is not None
    }
    found &= set(RAY_FORMATS)
    if len(found) == 1:
        return found.pop()
    if not found:
        raise DataError(f"{folder}: folder holds no .parquet, .csv or .npy files")
    listing = ", ".join(sorted(found))
    raise DataError(f"{folder}: folder mixes formats ({listing}); name one with --input-format")


def _hidden(path: Path, root: Path) -> bool:
    """Files Ray Data leaves out when it lists a folder (``.name``, ``_name``); the local
    Parquet reader leaves out the same ones."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _folder_files(folder: Path, fmt: str) -> list[Path]:
    if fmt == "parquet":
        # The local engine's own list, in its order.
        with open_input(folder, "parquet") as reader:
            return list(reader.files)  # type: ignore[attr-defined]
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not _hidden(p, folder) and _file_format(p) == fmt
    )
    if not files:
        raise DataError(f"{folder}: folder holds no {fmt} files")
    return files


def _plan_local(predictor: Any, source: _Input, options: dict[str, Any]) -> ScorePlan:
    """The plan the local engine would build, from the local engine's reader."""
    assert source.first is not None
    with open_input(source.first, source.format) as reader:
        return plan_scoring(
            predictor,
            source=reader.name,
            columns=reader.columns,
            numeric_columns=reader.numeric_columns,
            num_columns=reader.num_columns,
            **options,
        )


def _plan_remote(ray: Any, predictor: Any, source: _Input, options: dict[str, Any]) -> ScorePlan:
    """A plan from the schema Ray Data reads from the first file of a URI."""
    import pyarrow as pa

    reader = {
        "parquet": ray.data.read_parquet,
        "csv": ray.data.read_csv,
        "npy": ray.data.read_numpy,
    }
    try:
        schema = reader[source.format](source.ray_path).schema()
    except Exception as exc:
        raise DataError(f"{source.name}: Ray Data cannot read it: {_last_line(exc)}") from None
    if source.format == "npy":
        kind = schema.types[schema.names.index(_NPY_COLUMN)]
        shape = tuple(getattr(kind, "shape", ()))
        return plan_scoring(
            predictor,
            source=source.name,
            columns=None,
            num_columns=int(shape[-1]) if shape else 1,
            **options,
        )
    names = [str(n) for n in schema.names]
    numeric = [
        name
        for name, kind in zip(names, schema.types, strict=True)
        if isinstance(kind, pa.DataType)
        and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))
    ]
    return plan_scoring(
        predictor, source=source.name, columns=names, numeric_columns=numeric, **options
    )


#: File endings Ray Data lists for each format (the local engine's endings).
_RAY_EXTENSIONS = {"parquet": ["parquet", "pq"], "csv": ["csv", "csv.gz"], "npy": ["npy"]}


def _read(ray: Any, source: _Input, plan: ScorePlan, *, progress: bool) -> Any:
    """The Ray dataset of the input: the wanted columns, and each row's file, in order."""
    with _read_context(ray, progress=progress):
        return _read_dataset(ray, source, plan)


@contextlib.contextmanager
def _read_context(ray: Any, *, progress: bool) -> Iterator[None]:
    """Ray Data settings that its readers take from the global context when created.

    * ``preserve_order``: the CSV / NPY readers read a task's files one at a time.
    * ``use_datasource_v2 = False``: Ray Data 2.60's new Parquet reader bins files
      and row groups into read tasks by size and does not keep their order (a row
      group of one file may come after the next file's first), so the shards would
      not line up with the input; the previous reader splits the file list in order.
    * ``enable_progress_bars``: that reader samples files on the driver with a bar.
    """
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    saved_v2 = getattr(context, "use_datasource_v2", None)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    if saved_v2 is not None:
        context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if saved_v2 is not None:
            context.use_datasource_v2 = saved_v2


def _read_dataset(ray: Any, source: _Input, plan: ScorePlan) -> Any:
    wanted = list(dict.fromkeys([*(plan.features or ()), *plan.carry]))
    common: dict[str, Any] = {
        "include_paths": _PATH_COLUMN not in wanted,
        "file_extensions": _RAY_EXTENSIONS[source.format],
    }
    if source.format == "npy":
        return ray.data.read_numpy(source.ray_path, **common)
    if source.format == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # Every cell as text: score_batch parses and judges it (a float column would
        # make one bad cell a read error, with no row to name).
        convert = pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={name: pa.string() for name in wanted},
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        return ray.data.read_csv(
            source.ray_path, partitioning=None, convert_options=convert, **common
        )
    dataset = ray.data.read_parquet(source.ray_path, partitioning=None, **common)
    # Projection is pushed down into the read: only these columns are decoded.
    return dataset.select_columns([*wanted, _PATH_COLUMN] if common["include_paths"] else wanted)


def _model_payload(model: str | os.PathLike[str] | bytes, predictor: Any) -> bytes | str:
    """What workers open: the bytes, or the path when weights live in other files."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    path = Path(model)
    if predictor.file_info.external:
        return str(path.resolve())  # external data is found beside the model file
    return path.read_bytes()


# --- the runtime ------------------------------------------------------------------------


@dataclass
class _Runtime:
    address: str
    startup_seconds: float


@contextlib.contextmanager
def _ray_runtime(
    ray: Any, address: str | None, workers: int | None, threads: int
) -> Iterator[_Runtime]:
    """Start a local runtime, join a cluster, or use the one already initialized."""
    if ray.is_initialized():
        yield _Runtime(address="existing", startup_seconds=0.0)
        return
    begin = time.perf_counter()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        count = workers if workers is not None else max(1, _machine_cpus() // threads)
        try:
            # "local": always a new runtime, never a cluster `ray start` left running here.
            ray.init(
                address="local",
                num_cpus=count * threads + IO_CPUS,
                include_dashboard=False,
                **quiet,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DataError(f"cannot start a local Ray runtime: {_last_line(exc)}") from None
        label = "local"
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DataError(
                f"cannot join the Ray cluster at {address!r}: {_last_line(exc)} (start one "
                "with `ray start --head`, or leave out --ray-address for a local runtime)"
            ) from None
        label = address
    try:
        yield _Runtime(address=label, startup_seconds=time.perf_counter() - begin)
    finally:
        ray.shutdown()


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _size_pool(ray: Any, runtime: _Runtime, workers: int | None, threads: int, gpus: int) -> int:
    """The actor count, checked against the cluster's CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 0))
    size = workers if workers is not None else max(1, (cpus - IO_CPUS) // threads)
    need = size * threads + IO_CPUS
    if need > cpus:
        raise DataError(
            f"{size} workers x {threads} threads need {need} CPUs ({size * threads} for the "
            f"workers + {IO_CPUS} for Ray Data's read and write tasks); the Ray cluster "
            f"({runtime.address}) has {cpus}: lower --workers or --threads-per-worker"
        )
    if gpus and size * gpus > int(resources.get("GPU", 0)):
        raise DataError(
            f"--provider cuda gives each of {size} workers a GPU; the Ray cluster "
            f"({runtime.address}) has {int(resources.get('GPU', 0))}"
        )
    return size


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Keep Ray Data's console log (plans, warnings, worker tracebacks) off stderr.

    The run's outcome is the summary or one error; Ray Data still writes its full log
    to the session's log folder.
    """
    logger = logging.getLogger("ray.data")
    consoles = [
        h
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in consoles]
    for handler in consoles:
        handler.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            # A small input has fewer blocks than workers; Ray Data warns on every run.
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            yield
    finally:
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)


# --- output -----------------------------------------------------------------------------


def _output_format(output: str | os.PathLike[str], override: str | None) -> str:
    if override is not None:
        return output_format_of(output, override)
    try:
        return output_format_of(output)
    except DataError:
        return "parquet"  # a plain folder name


def _check_output_folder(
    output: str | os.PathLike[str], *, overwrite: bool, source: _Input
) -> Path:
    """Check that ``output`` can be created before Ray starts."""
    text = os.fspath(output)
    if _is_uri(text):
        raise DataError(
            f"output {text}: --engine ray writes a folder on a file system (shared by "
            "every node on a cluster), not an object-store URI"
        )
    path = Path(text)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"output folder {str(folder)!r} does not exist (for {path})")
    resolved = path.resolve()
    if source.local:
        root = Path(source.name).resolve()
        if resolved == root or root in resolved.parents or resolved in root.parents:
            raise DataError(f"output {path} overlaps the input {source.name}; write elsewhere")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; pass --overwrite to replace it")
    return path


def _staging(target: Path | None, overwrite: bool) -> Any:
    """The one writer's temp folder for ``target``, or nothing when there is none."""
    if target is None:
        return contextlib.nullcontext(None)
    return Staged(target, overwrite=overwrite, folder=True, error=DataError)


def _part_names(ending: str) -> Any:
    """Shard names ``part-<task>.<ending>``: name order is write order (the input's)."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}.{ending}"

    return PartNames(file_format=ending)


def _write(ray: Any, dataset: Any, folder: Path | None, fmt: str) -> None:
    assert folder is not None
    names = _part_names(_SHARD_ENDINGS[fmt])
    # The folder is this run's own (empty) staging folder; OVERWRITE lets the shard
    # names leave out Ray's write id.
    options = {"filename_provider": names, "mode": ray.data.SaveMode.OVERWRITE}
    if fmt == "parquet":
        dataset.write_parquet(str(folder), **options)
    elif fmt == "csv":
        dataset.write_csv(str(folder), **options)
    else:
        dataset.write_json(str(folder), **options)


def _shards(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _count_rows(files: list[Path], fmt: str) -> int:
    """Rows in written shards (Parquet footers; CSV and JSONL are read)."""
    total = 0
    for file in files:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            total += int(pq.ParquetFile(file).metadata.num_rows)
        elif fmt == "csv":
            import pyarrow as pa
            import pyarrow.csv as pacsv

            # Past the header, one text column is enough to count records.
            with pacsv.open_csv(
                file,
                read_options=pacsv.ReadOptions(skip_rows=1, autogenerate_column_names=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=["f0"], column_types={"f0": pa.string()}
                ),
            ) as reader:
                total += sum(batch.num_rows for batch in reader)
        else:
            with file.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


# --- errors -----------------------------------------------------------------------------


def _driver_error(
    exc: BaseException, source: _Input, plan: ScorePlan, predictor: Any
) -> BaseException:
    """The error to raise for a failed Ray job: the worker's own, located when possible."""
    found = _unwrap(exc)
    if isinstance(found, BadRowError) and found.row is None and found.line is None:
        return _locate(found, source, plan, predictor)
    if found is not None:
        return found
    if isinstance(exc, OnnxEdgeError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return exc
    if source.local and source.format == "csv":
        # A row Ray's CSV reader cannot split: the local reader names its line.
        for path, name in source.names.items():
            if path in str(exc):
                located = _scan(name, source, plan, predictor)
                if located is not None:
                    return DataError(
                        f"{' '.join(str(located).split())} (Ray Data's CSV reader cannot set "
                        "this row aside; fix it, or score with --engine local)"
                    )
    return DataError(f"{source.name}: Ray Data failed: {_root_message(exc)}")


def _unwrap(exc: BaseException) -> OnnxEdgeError | None:
    """The onnxedge error inside Ray's wrappers (RayTaskError, UserCodeException)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _ShippedError):
            return current.rebuild()
        if isinstance(current, OnnxEdgeError):
            return current
        for nxt in (getattr(current, "cause", None), current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                pending.append(nxt)
    return None


def _locate(error: BadRowError, source: _Input, plan: ScorePlan, predictor: Any) -> BaseException:
    """The same bad row's error as the local engine gives it (file, line or row)."""
    if not source.local or not Path(error.source).is_file():
        return error
    located = _scan(error.source, source, plan, predictor)
    return located if located is not None else error


def _scan(name: str, source: _Input, plan: ScorePlan, predictor: Any) -> BadRowError | None:
    """Run one file through the local reader under ``fail``: its first bad row's error."""
    strict = dataclasses.replace(plan, on_bad_row="fail")
    try:
        with open_input(name, source.format) as reader:
            for batch in reader.batches(
                features=strict.features or (),
                carry=strict.carry,
                batch_rows=chunk_rows_for(strict.batch_size),
            ):
                score_batch(predictor, batch, strict)
    except BadRowError as exc:
        return exc
    except OnnxEdgeError:
        return None
    return None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _root_message(exc: BaseException) -> str:
    """The first line of the innermost error under Ray's wrappers (``RayTaskError.cause``)."""
    current = exc
    seen = {id(current)}
    while True:
        nxt = getattr(current, "cause", None) or current.__cause__
        if not isinstance(nxt, BaseException) or id(nxt) in seen:
            break
        seen.add(id(nxt))
        current = nxt
    for line in str(current).splitlines():
        if line.strip():
            return f"{type(current).__name__}: {line.strip()}"
    return type(current).__name__
