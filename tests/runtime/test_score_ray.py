"""``score_ray`` (``onnxedge score --engine ray``) against the local engine, on a local Ray runtime.

One Ray runtime serves the whole module (starting one costs seconds). It has 3
logical CPUs on a 2-core machine: the engine leaves one logical CPU to Ray Data's
read and write tasks (a pool of scoring actors that holds every CPU starves them), so
two scoring workers need three.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from onnxedge.runtime.errors import (
    DataError,
    MissingDependencyError,
    ModelLoadError,
    OutputExistsError,
)
from onnxedge.runtime.score import BadRowError, probability_column_names, score_file
from onnxedge.runtime.score_ray import RAY_INSTALL_HINT, score_ray
from onnxedge.runtime.tolerances import ENGINE_PROBABILITY_ATOL

from tests.runtime.onnx_models import ModelCase, with_external_data

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """One local Ray runtime for the module: 2 scoring workers + 1 CPU for Ray Data's I/O."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=WORKERS + 1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


# --- inputs and outputs -----------------------------------------------------------------


def rows(case: ModelCase, n: int, seed: int) -> np.ndarray:
    return case.rows(n, seed=seed)


def write_parquet_folder(folder: Path, x: np.ndarray, names: list[str], files: int) -> Path:
    """``x`` split over ``files`` Parquet files (several row groups each), with an ``id``."""
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(x.shape[0]), files)):
        columns: dict[str, Any] = {"id": [f"row-{i}" for i in part]}
        columns.update({name: x[part, j] for j, name in enumerate(names)})
        pq.write_table(pa.table(columns), folder / f"part-{k:02d}.parquet", row_group_size=17)
    return folder


def write_csv(path: Path, x: np.ndarray, names: list[str], bad: dict[int, tuple[int, str]]) -> Path:
    """``x`` as CSV with an ``id`` column; ``bad`` maps a row to (feature index, cell text)."""
    lines = [",".join(["id", *names])]
    for i, values in enumerate(x.tolist()):
        cells = [repr(v) for v in values]
        if i in bad:
            j, text = bad[i]
            cells[j] = text
        lines.append(",".join([f"row-{i}", *cells]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_local(path: Path) -> dict[str, list[Any]]:
    """The local engine's output file (Parquet, CSV) as column -> values."""
    if path.name.endswith(".csv"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path).to_pydict()
    return pq.read_table(path).to_pydict()


def read_shards(folder: Path) -> dict[str, list[Any]]:
    """The Ray engine's folder of shards, read in name order, as column -> values."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert files, f"no shards in {folder}"
    if files[0].suffix == ".csv":
        import pyarrow.csv as pacsv

        tables = [pacsv.read_csv(f) for f in files]
    elif files[0].suffix == ".jsonl":
        import pyarrow.json as pajson

        tables = [pajson.read_json(f) for f in files]
    else:
        tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive").to_pydict()


def assert_same_scores(
    ray_out: dict[str, list[Any]], local_out: dict[str, list[Any]], case: ModelCase
) -> None:
    """Same columns and rows in the same order: ids and labels equal, probabilities close."""
    assert list(ray_out) == list(local_out)
    assert ray_out.get("id") == local_out.get("id")
    assert ray_out["label"] == local_out["label"]
    assert ray_out["class_name"] == local_out["class_name"]
    assert case.class_names is not None
    for column in probability_column_names(case.class_names):
        np.testing.assert_allclose(
            np.asarray(ray_out[column], dtype=np.float32),
            np.asarray(local_out[column], dtype=np.float32),
            rtol=0,
            atol=ENGINE_PROBABILITY_ATOL,
        )


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders either engine might leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- without Ray, and before Ray starts (first: the runtime is not up yet) ----------------


def test_missing_ray_gives_the_install_hint(
    multiclass: ModelCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import ray` raise ImportError, as when it is not installed.
    # (These tests come first: the module's Ray runtime is not started yet.)
    monkeypatch.setitem(sys.modules, "ray", None)
    np.save(tmp_path / "in.npy", rows(multiclass, 3, seed=7))
    with pytest.raises(MissingDependencyError) as caught:
        score_ray(multiclass.path, tmp_path / "in.npy", tmp_path / "out")
    assert str(caught.value) == RAY_INSTALL_HINT
    assert RAY_INSTALL_HINT == "--engine ray needs ray: pip install 'onnxedge[ray]'"


def test_existing_output_is_refused_before_ray_starts(
    multiclass: ModelCase, tmp_path: Path
) -> None:
    np.save(tmp_path / "in.npy", rows(multiclass, 3, seed=8))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        score_ray(multiclass.path, tmp_path / "in.npy", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_ray_client_refuses_a_model_with_external_data(
    multiclass: ModelCase, tmp_path: Path
) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path, "ext")
    np.save(tmp_path / "in.npy", rows(multiclass, 3, seed=8))
    with pytest.raises(ModelLoadError) as info:  # before any connection is tried
        score_ray(path, tmp_path / "in.npy", tmp_path / "o.parquet", address="ray://nowhere:1")
    assert str(info.value) == (
        f"{path} keeps its weights in separate files, which a ray:// client does not ship; "
        "save it as one file, or run from a node of the cluster (--ray-address auto)"
    )


def test_ray_options_need_engine_ray(multiclass: ModelCase, tmp_path: Path) -> None:
    from onnxedge.runtime.cli import cli

    np.save(tmp_path / "in.npy", rows(multiclass, 3, seed=9))
    args = ["score", str(multiclass.path), str(tmp_path / "in.npy"), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers need --engine ray" in result.output
    assert not (tmp_path / "o").exists()


# --- equality with the local engine ------------------------------------------------------


def test_parquet_folder_matches_local(
    ray_runtime: None, multiclass: ModelCase, tmp_path: Path
) -> None:
    assert multiclass.feature_names is not None
    x = rows(multiclass, 300, seed=1)
    data = write_parquet_folder(tmp_path / "in", x, multiclass.feature_names, files=4)
    local = score_file(multiclass.path, data, tmp_path / "local.parquet", id_column="id")
    summary = score_ray(
        multiclass.path, data, tmp_path / "ray.parquet", id_column="id", workers=WORKERS
    )
    assert (summary.rows_scored, summary.rows_skipped) == (300, 0)
    assert (summary.workers, summary.threads_per_worker) == (WORKERS, 1)
    assert summary.columns == local.columns
    out = read_shards(tmp_path / "ray.parquet")
    assert out["id"] == [f"row-{i}" for i in range(300)]  # row count and order kept
    assert_same_scores(out, read_local(tmp_path / "local.parquet"), multiclass)
    assert leftovers(tmp_path) == []


def test_csv_matches_local_with_jsonl_shards(
    ray_runtime: None, binary: ModelCase, tmp_path: Path
) -> None:
    assert binary.feature_names is not None
    x = rows(binary, 150, seed=2)
    data = write_csv(tmp_path / "in.csv", x, binary.feature_names, bad={})
    score_file(binary.path, data, tmp_path / "local.parquet", id_column="id")
    summary = score_ray(binary.path, data, tmp_path / "ray.jsonl", id_column="id")
    assert summary.output_format == "jsonl"
    assert summary.rows_scored == 150
    out = read_shards(tmp_path / "ray.jsonl")
    assert_same_scores(out, read_local(tmp_path / "local.parquet"), binary)


def test_npy_matches_local(ray_runtime: None, plain: ModelCase, tmp_path: Path) -> None:
    x = rows(plain, 90, seed=3)
    np.save(tmp_path / "in.npy", x)
    score_file(plain.path, tmp_path / "in.npy", tmp_path / "local.parquet")
    summary = score_ray(plain.path, tmp_path / "in.npy", tmp_path / "ray")
    assert (summary.output_format, summary.rows_scored) == ("parquet", 90)
    local = read_local(tmp_path / "local.parquet")
    out = read_shards(tmp_path / "ray")
    assert out["label"] == local["label"]
    for column in probability_column_names([str(k) for k in range(plain.num_classes)]):
        np.testing.assert_allclose(out[column], local[column], rtol=0, atol=ENGINE_PROBABILITY_ATOL)


def test_more_workers_than_the_cluster_holds_is_refused(
    ray_runtime: None, multiclass: ModelCase, tmp_path: Path
) -> None:
    np.save(tmp_path / "in.npy", rows(multiclass, 3, seed=10))
    with pytest.raises(DataError) as caught:
        score_ray(
            multiclass.path, tmp_path / "in.npy", tmp_path / "out", workers=2, threads_per_worker=2
        )
    assert str(caught.value) == (
        "2 workers x 2 threads need 5 CPUs (4 for the workers + 1 for Ray Data's read and "
        "write tasks); the Ray cluster (existing) has 3: lower --workers or "
        "--threads-per-worker"
    )
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()


# --- bad rows -----------------------------------------------------------------------------


def test_bad_row_fails_with_the_local_error_and_leaves_no_output(
    ray_runtime: None, multiclass: ModelCase, tmp_path: Path
) -> None:
    assert multiclass.feature_names is not None
    x = rows(multiclass, 200, seed=4)
    x[123, 2] = np.nan  # in the third of four files, not in its first row group
    data = write_parquet_folder(tmp_path / "in", x, multiclass.feature_names, files=4)
    with pytest.raises(BadRowError) as local:
        score_file(multiclass.path, data, tmp_path / "local.parquet", id_column="id")
    with pytest.raises(BadRowError) as remote:
        score_ray(multiclass.path, data, tmp_path / "ray.parquet", id_column="id")
    assert str(remote.value) == str(local.value)
    assert "part-02.parquet: row 23 (0-based), column 'f2': NaN" in str(remote.value)
    assert not (tmp_path / "ray.parquet").exists()
    assert leftovers(tmp_path) == []


def test_skip_writes_the_same_rows_and_rejects_as_local(
    ray_runtime: None, multiclass: ModelCase, tmp_path: Path
) -> None:
    assert multiclass.feature_names is not None
    x = rows(multiclass, 120, seed=5)
    bad = {3: (0, "abc"), 64: (4, ""), 119: (2, "nan")}
    data = write_csv(tmp_path / "in.csv", x, multiclass.feature_names, bad=bad)
    local = score_file(
        multiclass.path, data, tmp_path / "local.csv", id_column="id", on_bad_row="skip"
    )
    summary = score_ray(
        multiclass.path, data, tmp_path / "ray.csv", id_column="id", on_bad_row="skip"
    )
    assert (summary.rows_scored, summary.rows_skipped) == (117, 3)
    assert (summary.rows_scored, summary.rows_skipped) == (local.rows_scored, local.rows_skipped)
    assert summary.rejected_output == str(tmp_path / "ray.rejected.csv")
    assert_same_scores(
        read_shards(tmp_path / "ray.csv"), read_local(tmp_path / "local.csv"), multiclass
    )
    local_rejected = read_local(tmp_path / "local.rejected.csv")
    ray_rejected = read_shards(tmp_path / "ray.rejected.csv")
    for column in ("source", "column", "reason", "raw"):
        assert ray_rejected[column] == local_rejected[column], column
    assert local_rejected["line"] == [5, 66, 121]  # Ray Data does not number rows:
    assert ray_rejected["line"] == [None] * 3  # the rejected rows say where by content


def test_a_bad_row_comes_back_whole_from_a_ray_task(ray_runtime: None) -> None:
    """A BadRowError raised in a Ray task (as under ``ray://``, where the whole call is
    one) pickles by its fields and is found again inside Ray's wrapper."""
    import ray
    from onnxedge.runtime.score_ray import _unwrap

    sent = BadRowError("in.csv: line 3: empty cell", "in.csv", 1, 3, "f2", "empty cell")

    @ray.remote(num_cpus=0, max_retries=0)
    def fail() -> None:
        raise sent

    with pytest.raises(Exception) as caught:
        ray.get(fail.remote())
    found = _unwrap(caught.value)
    assert type(found) is BadRowError and str(found) == str(sent)
    assert vars(found) == vars(sent)


# --- the command line -------------------------------------------------------------------


def test_cli_engine_ray(ray_runtime: None, multiclass: ModelCase, tmp_path: Path) -> None:
    from onnxedge.runtime.cli import cli

    assert multiclass.feature_names is not None
    x = rows(multiclass, 40, seed=6)
    x[7, 1] = np.inf
    data = write_parquet_folder(tmp_path / "in", x, multiclass.feature_names, files=2)
    args = [
        "score",
        str(multiclass.path),
        str(data),
        "-o",
        str(tmp_path / "out"),
        "--engine",
        "ray",
        "--workers",
        "1",
        "--id-column",
        "id",
    ]
    failed = CliRunner().invoke(cli, args)
    assert failed.exit_code == 1
    assert failed.output.strip().splitlines()[-1] == (
        f"Error: {data / 'part-00.parquet'}: row 7 (0-based), column 'f1': Inf (features must "
        "be finite) (--on-bad-row skip scores the other rows and writes bad ones aside)"
    )
    done = CliRunner().invoke(cli, [*args, "--on-bad-row", "skip", "--json"])
    assert done.exit_code == 0, done.output
    summary = __import__("json").loads(done.output.strip().splitlines()[-1])
    assert (summary["engine"], summary["rows_scored"], summary["rows_skipped"]) == ("ray", 39, 1)


def test_failed_final_rename_puts_the_previous_output_back(tmp_path, monkeypatch) -> None:
    """--overwrite moves the old output aside; if the new one cannot take its place, the
    old one goes back, and no staging or aside folder is left."""
    import os

    from onnxedge.runtime import atomic
    from onnxedge.runtime.errors import DataError

    target = tmp_path / "scores.parquet"
    target.mkdir()
    (target / "part-000000.parquet").write_text("old")
    real_rename = os.rename
    failed: list[str] = []

    def rename(src, dst):
        if str(src).endswith(atomic.TEMP_SUFFIX) and not failed:  # the new folder's move
            failed.append(str(src))
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    # Without renameat2 the old folder is moved aside first, then must come back.
    monkeypatch.setattr(atomic, "_renameat2", lambda *args: False)
    monkeypatch.setattr(atomic.os, "rename", rename)
    with (
        pytest.raises(DataError, match="No space left on device"),
        atomic.Staged(target, overwrite=True, folder=True, error=DataError) as staging,
    ):
        (staging.path / "part-000000.parquet").write_text("new")
        staging.commit()
    assert (target / "part-000000.parquet").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]
