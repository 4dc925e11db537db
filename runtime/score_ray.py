"""Scale-out scoring on Ray Data: ``onnxedge score --engine ray``.

Every Ray batch goes through :func:`onnxedge.runtime.score.score_batch` under the local
engine's plan, in a fixed pool of actors (:class:`RayBatchScorer`) that leaves one CPU to
Ray Data's read and write tasks. The output is a folder of shards ``part-000000.<ext>`` in
input order, staged and renamed at the end; rejected rows (``skip``) have no ``row`` or
``line`` (Ray Data does not number rows). Where the input is local, a worker's bad row is
located again by the local reader, so the message is ``--engine local``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.runtime import io as rio
from onnxedge.runtime.atomic import Staged, exists_message
from onnxedge.runtime.errors import (
    DataError,
    MissingDependencyError,
    ModelLoadError,
    OnnxEdgeError,
    OutputExistsError,
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
    scoring_predictor,
)

RAY_INSTALL_HINT = "--engine ray needs ray: pip install 'onnxedge[ray]'"
RAY_FORMATS: tuple[str, ...] = ("parquet", "csv", "npy")
#: Logical CPUs left free for Ray Data's list / read / write tasks.
IO_CPUS = 1
_PATH_COLUMN = "path"  # what include_paths=True adds: each row's file
_NPY_COLUMN = "data"  # Ray Data's column for the rows of an NPY file
_EXTENSIONS = {"parquet": ["parquet", "pq"], "csv": ["csv", "csv.gz"], "npy": ["npy"]}


@dataclass(frozen=True)
class _Input:
    name: str  # the input as messages name it
    format: str
    ray_path: str  # one path for Ray (several are listed in racing threads in Ray 2.60)
    names: dict[str, str]  # Ray's path of each file -> the local engine's name for it
    first: str | None  # what the plan is read from locally (None: a URI)


@dataclass(frozen=True)
class _Job:
    """What every worker is told: input, plan, session, rejected rows' folder and format."""

    source: _Input
    plan: ScorePlan
    provider: str
    threads: int
    rejected_dir: str | None
    rejected_format: str


# --- the worker ----------------------------------------------------------------------------


class RayBatchScorer:
    """The callable class ``map_batches`` runs in each worker: one Predictor (``model``
    is its bytes, or a path every worker can read), and every batch through
    :func:`score_batch`, file by file so messages and rejected rows name their file."""

    def __init__(self, model: bytes | str, job: _Job) -> None:
        self.predictor = scoring_predictor(model, provider=job.provider, threads=job.threads)
        self.job, self.plan = job, job.plan
        self.order = {name: index for index, name in enumerate(job.source.names.values())}

    def __call__(self, batch: Any) -> Any:
        """Score one Ray batch (a ``pyarrow.Table``, or for NPY a dict of numpy arrays)
        into a ``pyarrow.Table`` of the plan's output columns."""
        import pyarrow as pa

        tables = []
        for part in self._split_by_file(batch):
            result = score_batch(self.predictor, part, self.plan)
            tables.append(_arrow(result.columns))
            if result.rejected is not None and self.job.rejected_dir is not None:
                self._write_rejected(part.source, result.rejected)
        return pa.concat_tables(tables, promote_options="default")

    def _split_by_file(self, batch: Any) -> Iterator[rio.InputBatch]:
        source = self.job.source
        if isinstance(batch, dict):  # NPY: {"data": (n, f), "path": (n,)}
            matrix = np.asarray(batch[_NPY_COLUMN])
            for start, stop, name in _runs(batch.get(_PATH_COLUMN), matrix.shape[0], source):
                yield rio.InputBatch(name, matrix=matrix[start:stop])
            return
        paths = batch.column(_PATH_COLUMN) if _PATH_COLUMN in batch.column_names else None
        text = source.format == "csv"
        for start, stop, name in _runs(paths, batch.num_rows, source):
            part = batch.slice(start, stop - start)
            yield rio.InputBatch(
                source=name,
                columns={name: part.column(name) for name in self.plan.read_columns},
                location="line" if text else "row",
                header=text,
            )

    def _write_rejected(self, source: str, rejected: dict[str, np.ndarray]) -> None:
        # A unique name per batch: batches with the same bad rows are all kept (a task
        # that Ray retries may write its rejected rows twice; none are lost).
        order, fmt = self.order.get(source, len(self.order)), self.job.rejected_format
        folder = Path(self.job.rejected_dir or ".")
        path = folder / f"part-{order:06d}-{uuid.uuid4().hex[:16]}.{fmt}"
        with rio.AtomicOutput(path, fmt, types=REJECTED_TYPES) as out:
            out.write(rejected)
            out.finish()
            out.commit()


def _runs(paths: Any, n: int, source: _Input) -> Iterator[tuple[int, int, str]]:
    """``(start, stop, the file's name)`` per run of rows of one file (a file's rows are
    contiguous); one empty run for an empty batch, so it still gives a typed table."""
    if paths is None or n == 0:
        yield 0, n, source.name
        return
    values = paths if isinstance(paths, np.ndarray) else paths.to_numpy(zero_copy_only=False)
    bounds = [0, *(np.flatnonzero(values[1:] != values[:-1]) + 1).tolist(), n]
    for start, stop in itertools.pairwise(bounds):
        path = str(values[start])
        yield start, stop, source.names.get(path, path)


def _arrow(columns: dict[str, Any]) -> Any:
    """Output columns as a ``pyarrow.Table``, class names dictionary-encoded (as the local
    engine's Parquet writer stores them)."""
    import pyarrow as pa

    return pa.table(
        {
            name: pa.DictionaryArray.from_arrays(
                pa.array(values.codes, pa.int32()), pa.array(values.categories, pa.string())
            )
            if isinstance(values, rio.CategoricalColumn)
            else values
            for name, values in columns.items()
        }
    )


# --- the driver ----------------------------------------------------------------------------


@dataclass
class RayScoreSummary(ScoreSummary):
    """The local engine's summary (``output`` and ``rejected_output`` are folders) and the
    Ray facts: ``engine``, ``address`` (the cluster, ``local`` or ``existing``),
    ``workers``, ``threads_per_worker``, ``startup_seconds`` and output ``shards``."""

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
        output: the folder to create (Parquet shards unless ``output_format`` or the
            name's ending says ``csv`` / ``jsonl``).
        address: None starts (and stops) a local runtime; ``auto`` / ``host:port`` joins
            a cluster; ``ray://host:port`` runs the whole call as one task on the cluster
            (Ray Data does not run through Ray Client; paths are then the cluster's). An
            initialized runtime is used as it is.
        workers: scoring actors; None: ``(CPUs - 1) // threads_per_worker``.
        threads_per_worker: intra-op threads, and logical CPUs, per actor.
        provider: ``cpu``, ``auto`` or ``cuda`` (each actor then asks for a GPU).
        progress: Ray Data's progress bars; None: when stderr is a terminal.
        The other options are :func:`~onnxedge.runtime.score.score_file`'s.

    Raises:
        MissingDependencyError: ray is not installed.
        DataError: the input is missing or not Parquet / CSV / NPY, a column is missing,
            the output's folder does not exist, an option is invalid, the cluster lacks
            the CPUs asked for, or Ray Data failed.
        OutputExistsError: ``output`` exists and ``overwrite`` is false.
        InputShapeError, BadRowError, ModelLoadError, ProviderUnavailableError: as
            :func:`~onnxedge.runtime.score.score_file` raises them.
    """
    started = time.perf_counter()
    check_options(on_bad_row, batch_size, workers=workers, threads_per_worker=threads_per_worker)
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(RAY_INSTALL_HINT) from None
    options = {
        "features": features,
        "id_column": id_column,
        "keep_columns": keep_columns,
        "probabilities": probabilities,
        "on_bad_row": on_bad_row,
        "batch_size": batch_size,
    }
    client = address is not None and address.startswith("ray://") and not ray.is_initialized()
    if not client:  # paths are the cluster's over ray://; here they are checked before the model
        source = _resolve_input(input, input_format)
        try:
            out_format = rio.output_format_of(output, output_format)
        except DataError:
            if output_format is not None:
                raise
            out_format = "parquet"  # a plain folder name
        paths = [_check_output(output, overwrite, source)]
    # The driver's predictor checks the model, plans and locates bad rows.
    predictor = scoring_predictor(model, provider="cpu", threads=1)
    payload = _model_payload(model, predictor)
    if client:
        if isinstance(payload, str):  # a path the cluster may not hold, or hold another model at
            raise ModelLoadError(
                f"{predictor.model_label} keeps its weights in separate files, which a ray:// "
                "client does not ship; save it as one file, or run from a node of the cluster "
                "(--ray-address auto)"
            )
        options |= {
            "workers": workers,
            "threads_per_worker": threads_per_worker,
            "provider": provider,
            "input_format": input_format,
            "output_format": output_format,
            "overwrite": overwrite,
        }
        with _ray_runtime(ray, address, None, 1) as (_, startup):
            task = ray.remote(num_cpus=0, max_retries=0)(score_ray)
            try:
                summary = ray.get(
                    task.remote(payload, os.fspath(input), os.fspath(output), **options)
                )
            except Exception as exc:
                found = _unwrap(exc)
                raise found or DataError(
                    f"{os.fspath(input)}: scoring failed on the Ray cluster at {address}: "
                    f"{_root_message(exc)}"
                ) from (None if found is not None else exc)
        return dataclasses.replace(
            summary,
            model=predictor.model_label,
            address=str(address),
            startup_seconds=startup,
            seconds=time.perf_counter() - started,
        )
    if on_bad_row == "skip":
        paths.append(_check_output(rio.rejected_path_for(paths[0], out_format), overwrite, source))
    plan = _plan_local(predictor, source, options) if source.first is not None else None
    gpus = 1 if provider.lower() == "cuda" else 0
    with (
        _ray_runtime(ray, address, workers, threads_per_worker) as (label, startup),
        _quiet_ray_data(),
    ):
        size = _size_pool(ray, label, workers, threads_per_worker, gpus)
        plan = plan or _plan_remote(ray, predictor, source, options)
        show = sys.stderr.isatty() if progress is None else progress
        dataset = _read(ray, source, plan, show)
        with contextlib.ExitStack() as stack:
            staged = [
                stack.enter_context(Staged(path, overwrite=overwrite, folder=True, error=DataError))
                for path in paths
            ]
            rejected_dir = str(staged[1].path) if len(staged) > 1 else None
            job = _Job(source, plan, provider.lower(), threads_per_worker, rejected_dir, out_format)
            scored = dataset.map_batches(
                RayBatchScorer,
                fn_constructor_args=(payload, job),
                batch_size=chunk_rows_for(batch_size),
                batch_format="numpy" if source.format == "npy" else "pyarrow",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=threads_per_worker,
                num_gpus=gpus,
                udf_modifying_row_count=on_bad_row == "skip",
            )
            try:
                write = {"parquet": scored.write_parquet, "csv": scored.write_csv}
                write.get(out_format, scored.write_json)(
                    str(staged[0].path),
                    filename_provider=_part_names(out_format),
                    mode=ray.data.SaveMode.OVERWRITE,  # our own empty folder; no write id
                )
            except Exception as exc:
                found = _unwrap(exc)
                # Ray's own failures keep their traceback; onnxedge's are complete as they are.
                raise _driver_error(exc, found, source, plan, predictor) from (
                    None if found is not None else exc
                )
            scored_rows, shards = _count_rows(staged[0].path, out_format, "label")
            skipped = _count_rows(staged[1].path, out_format, "reason")[0] if rejected_dir else 0
            for folder in reversed(staged):  # the output appears last, once all else is in place
                folder.commit()
    return RayScoreSummary(
        model=predictor.model_label,
        input=source.name,
        output=str(paths[0]),
        rejected_output=str(paths[1]) if len(paths) > 1 else None,
        input_format=source.format,
        output_format=out_format,
        rows_scored=scored_rows,
        rows_skipped=skipped,
        seconds=time.perf_counter() - started,
        # Actors without a GPU see none, so "auto" runs on the CPU (and "cuda" is strict).
        provider="CUDAExecutionProvider" if gpus else "CPUExecutionProvider",
        batch_size=batch_size,
        features=list(plan.features) if plan.features is not None else None,
        columns=list(plan.output_columns),
        address=label,
        workers=size,
        threads_per_worker=threads_per_worker,
        startup_seconds=startup,
        shards=shards,
    )


@contextlib.contextmanager
def _ray_runtime(
    ray: Any, address: str | None, workers: int | None, threads: int
) -> Iterator[tuple[str, float]]:
    """``(label, start-up seconds)`` of a new local runtime, a cluster joined, or the
    runtime already initialized (left running)."""
    if ray.is_initialized():
        yield "existing", 0.0
        return
    begin = time.perf_counter()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address is None:
            count = workers or max(1, len(os.sched_getaffinity(0)) // threads)
            # "local": always a new runtime, never a cluster `ray start` left running here.
            cpus = count * threads + IO_CPUS
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise DataError(f"cannot start a local Ray runtime: {_root_message(exc)}") from None
        raise DataError(
            f"cannot join the Ray cluster at {address!r}: {_root_message(exc)} (start one "
            "with `ray start --head`, or leave out --ray-address for a local runtime)"
        ) from None
    try:
        yield address or "local", time.perf_counter() - begin
    finally:
        ray.shutdown()


def _size_pool(ray: Any, label: str, workers: int | None, threads: int, gpus: int) -> int:
    """The actor count, checked against the cluster's CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    cpus, have_gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    size = workers if workers is not None else max(1, (cpus - IO_CPUS) // threads)
    need = size * threads + IO_CPUS
    if need > cpus:
        raise DataError(
            f"{size} workers x {threads} threads need {need} CPUs ({size * threads} for the "
            f"workers + {IO_CPUS} for Ray Data's read and write tasks); the Ray cluster "
            f"({label}) has {cpus}: lower --workers or --threads-per-worker"
        )
    if gpus and size * gpus > have_gpus:
        raise DataError(
            f"--provider cuda gives each of {size} workers a GPU; the Ray cluster "
            f"({label}) has {have_gpus}"
        )
    return size


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's console log (plans, warnings, worker tracebacks) off stderr: the run's
    outcome is the summary or one error (the full log stays in the session folder)."""
    consoles = {
        handler: handler.level
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    }
    for handler in consoles:
        handler.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            # A small input has fewer blocks than workers; Ray Data warns on every run.
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            yield
    finally:
        for handler, level in consoles.items():
            handler.setLevel(level)


# --- input ---------------------------------------------------------------------------------


def _name_format(name: str) -> str | None:
    try:
        return rio.input_format_of(name)
    except DataError:
        return None


def _resolve_input(input: str | os.PathLike[str], override: str | None) -> _Input:
    """The input's format, and the name the local engine gives each of its files."""
    text, path = os.fspath(input), Path(input)
    uri = "://" in text
    if not uri and not path.exists():
        raise DataError(f"input {path} does not exist")
    folder = not uri and path.is_dir()
    files = [path]
    if folder:  # as Ray Data lists a folder: no ".name" or "_name" at any level
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(s.startswith((".", "_")) for s in p.relative_to(path).parts)
        )
    if override is not None:
        fmt = rio.input_format_of(text, override)
    elif uri:  # a URI without a known ending: a folder of Parquet files
        fmt = _name_format(text) or "parquet"
    elif folder:
        found = sorted(set(RAY_FORMATS).intersection(_name_format(f.name) for f in files))
        if len(found) != 1:
            what = f"mixes formats ({', '.join(found)}); name one with --input-format"
            none = "holds no .parquet, .csv or .npy files"
            raise DataError(f"{path}: folder {what if found else none}")
        fmt = found[0]
    else:
        fmt = rio.input_format_of(path)
    if fmt not in RAY_FORMATS:
        raise DataError(
            f"{text}: --engine ray reads Parquet, CSV or NPY input; {fmt} input needs "
            "--engine local"
        )
    if uri:
        return _Input(name=text, format=fmt, ray_path=text, names={}, first=None)
    files = [f for f in files if not folder or _name_format(f.name) == fmt]
    if not files:
        raise DataError(f"{path}: folder holds no {fmt} files")
    # The local engine opens a Parquet folder as one input; a CSV or NPY folder (which it
    # does not read) is planned from its first file.
    return _Input(
        name=str(path),
        format=fmt,
        ray_path=str(path.resolve()),
        names={str(f.resolve()): str(f) for f in files},
        first=str(path) if fmt == "parquet" else str(files[0]),
    )


def _plan_local(predictor: Any, source: _Input, options: dict[str, Any]) -> ScorePlan:
    """The plan the local engine would build, from its own reader."""
    with rio.open_input(source.first or source.name, source.format) as reader:
        return plan_scoring(
            predictor,
            source=reader.name,
            columns=reader.columns,
            numeric_columns=reader.numeric_columns,
            num_columns=reader.num_columns,
            **options,
        )


def _plan_remote(ray: Any, predictor: Any, source: _Input, options: dict[str, Any]) -> ScorePlan:
    """A plan from the schema Ray Data reads from a URI."""
    import pyarrow as pa

    read = getattr(ray.data, f"read_{'numpy' if source.format == 'npy' else source.format}")
    try:
        schema = read(source.ray_path).schema()
    except Exception as exc:
        raise DataError(f"{source.name}: Ray Data cannot read it: {_root_message(exc)}") from None
    if source.format == "npy":
        shape = tuple(getattr(schema.types[schema.names.index(_NPY_COLUMN)], "shape", ()))
        width = int(shape[-1]) if shape else 1
        return plan_scoring(
            predictor, source=source.name, columns=None, num_columns=width, **options
        )
    numeric = [
        str(name)
        for name, kind in zip(schema.names, schema.types, strict=True)
        if isinstance(kind, pa.DataType)
        and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))
    ]
    names = [str(name) for name in schema.names]
    return plan_scoring(
        predictor, source=source.name, columns=names, numeric_columns=numeric, **options
    )


def _read(ray: Any, source: _Input, plan: ScorePlan, progress: bool) -> Any:
    """The Ray dataset of the input: the wanted columns and each row's file, in order.

    Readers take ``preserve_order`` and ``use_datasource_v2 = False`` (Ray Data 2.60's
    new Parquet reader does not keep row-group order) from the global context when
    created; the dataset's own context, which the run uses, gets them too.
    """
    wanted = plan.read_columns
    common = {
        "include_paths": _PATH_COLUMN not in wanted,
        "file_extensions": _EXTENSIONS[source.format],
    }
    context = ray.data.DataContext.get_current()
    saved = (
        context.execution_options.preserve_order,
        context.enable_progress_bars,
        context.use_datasource_v2,
    )
    context.execution_options.preserve_order, context.enable_progress_bars = True, progress
    context.use_datasource_v2 = False
    try:
        if source.format == "npy":
            dataset = ray.data.read_numpy(source.ray_path, **common)
        elif source.format == "csv":
            import pyarrow as pa
            import pyarrow.csv as pacsv

            # Every cell as text: score_batch judges it (a float column would make one
            # bad cell a read error, with no row to name).
            convert = pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={name: pa.string() for name in wanted},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
            dataset = ray.data.read_csv(
                source.ray_path, partitioning=None, convert_options=convert, **common
            )
        else:
            dataset = ray.data.read_parquet(source.ray_path, partitioning=None, **common)
            paths = [_PATH_COLUMN] if common["include_paths"] else []
            dataset = dataset.select_columns([*wanted, *paths])  # pushed down into the read
    finally:
        (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            context.use_datasource_v2,
        ) = saved
    own = dataset.context  # this dataset's copy: the caller's context is not changed
    own.execution_options.preserve_order = True  # shards line up with the input
    own.enable_progress_bars = progress
    own.print_on_execution_start = False
    # A worker's error reaches the driver as raised, not as Ray's UserCodeException.
    own.raise_original_map_exception = True
    return dataset


def _model_payload(model: str | os.PathLike[str] | bytes, predictor: Any) -> bytes | str:
    """What workers open: the bytes, or the path when weights live in other files."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    path = Path(model)
    return str(path.resolve()) if predictor.file_info.external else path.read_bytes()


# --- output --------------------------------------------------------------------------------


def _check_output(output: str | os.PathLike[str], overwrite: bool, source: _Input) -> Path:
    """Check that the folder ``output`` can be created, before Ray starts."""
    path = Path(output)
    if "://" in os.fspath(output):
        raise DataError(
            f"output {os.fspath(output)}: --engine ray writes a folder on a file system "
            "(shared by every node on a cluster), not an object-store URI"
        )
    if not path.parent.is_dir():
        raise DataError(f"output folder {str(path.parent)!r} does not exist (for {path})")
    if source.first is not None:
        root, resolved = Path(source.name).resolve(), path.resolve()
        if resolved == root or root in resolved.parents or resolved in root.parents:
            raise DataError(f"output {path} overlaps the input {source.name}; write elsewhere")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {exists_message(path)}")
    return path


def _part_names(ending: str) -> Any:
    """Shard names ``part-<task>.<ending>``: name order is write order (the input's)."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}.{ending}"

    return PartNames(file_format=ending)


def _count_rows(folder: Path, fmt: str, column: str) -> tuple[int, int]:
    """``(rows, shards)`` of a folder of written shards, counted by one ``column`` that
    every row holds (Parquet: from the footers)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds
    import pyarrow.json as pajson

    one = {column: pa.string()}
    kind = {
        "parquet": ds.ParquetFileFormat(),
        "csv": ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(include_columns=[column], column_types=one)
        ),
        "jsonl": ds.JsonFileFormat(
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema(one), unexpected_field_behavior="ignore"
            )
        ),
    }[fmt]
    shards = ds.dataset(folder, format=kind)  # ".name" and "_name" files are left out
    return int(shards.count_rows()), len(shards.files)


# --- errors --------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: Ray's ``cause`` (``RayTaskError``), else Python's."""
    seen: set[int] = set()
    current: Any = exc
    while isinstance(current, BaseException) and id(current) not in seen:
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        current = getattr(current, "cause", None) or current.__cause__ or context


def _unwrap(exc: BaseException) -> OnnxEdgeError | None:
    """The innermost onnxedge error inside Ray's wrappers, if any (a ``RayTaskError`` that
    also subclasses the error's class prints Ray's traceback, not the message)."""
    return next((e for e in reversed(list(_chain(exc))) if isinstance(e, OnnxEdgeError)), None)


def _root_message(exc: BaseException) -> str:
    """The first line of the innermost error under Ray's wrappers."""
    current = list(_chain(exc))[-1]
    first = next((line.strip() for line in str(current).splitlines() if line.strip()), "")
    return f"{type(current).__name__}: {first}" if first else type(current).__name__


def _driver_error(
    exc: BaseException, found: OnnxEdgeError | None, source: _Input, plan: ScorePlan, predictor: Any
) -> BaseException:
    """The error a failed Ray job raises: the worker's own, located as the local engine
    locates it where the input is local."""
    if isinstance(found, BadRowError) and found.row is None and found.line is None:
        local = source.first is not None and Path(found.source).is_file()
        return (_scan(found.source, source, plan, predictor) if local else None) or found
    if found is not None or isinstance(exc, KeyboardInterrupt):
        return found or exc
    if source.first is not None and source.format == "csv":
        # A row Ray's CSV reader cannot split: the local reader names its line.
        for path, name in source.names.items():
            if path in str(exc) and (located := _scan(name, source, plan, predictor)):
                return DataError(
                    f"{' '.join(str(located).split())} (Ray Data's CSV reader cannot set "
                    "this row aside; fix it, or score with --engine local)"
                )
    return DataError(f"{source.name}: Ray Data failed: {_root_message(exc)}")


def _scan(name: str, source: _Input, plan: ScorePlan, predictor: Any) -> BadRowError | None:
    """One file through the local reader under ``fail``: its first bad row's error."""
    strict = dataclasses.replace(plan, on_bad_row="fail")
    rows = chunk_rows_for(plan.batch_size)
    try:
        with rio.open_input(name, source.format) as reader:
            for batch in reader.batches(
                features=plan.features or (), carry=plan.carry, batch_rows=rows
            ):
                score_batch(predictor, batch, strict)
    except OnnxEdgeError as exc:
        return exc if isinstance(exc, BadRowError) else None
    return None
