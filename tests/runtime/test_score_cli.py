"""``onnxedge score`` through the CLI group: output, summary, and every bad input's error."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from onnxedge.runtime.atomic import TEMP_SUFFIX
from onnxedge.runtime.cli import cli

from tests.runtime.onnx_models import ModelCase
from tests.runtime.test_score import assert_matches_predictor, read_output, write_input

HEADER = "id,f0,f1,f2,f3,f4\n"
HINT = " (--on-bad-row skip scores the other rows and writes bad ones aside)"


def _score(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["score", *map(str, args)])


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_scores_and_prints_one_summary_line(tmp_path: Path, multiclass: ModelCase) -> None:
    x = multiclass.rows(21)
    source = write_input(tmp_path, "csv", x, multiclass.feature_names or [])
    result = _score(multiclass.path, source, "-o", tmp_path / "o.parquet", "--id-column", "id")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("scored 21 rows, skipped 0, in ")
    assert lines[0].endswith(f"on CPUExecutionProvider -> {tmp_path / 'o.parquet'}")
    assert result.stderr == ""  # not a terminal: no progress bar
    out = read_output(tmp_path / "o.parquet")
    assert out["id"] == [f"row-{i}" for i in range(21)]
    assert_matches_predictor(out, multiclass, x, multiclass.class_names or [])


def test_json_summary_and_quiet(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(8), [])
    result = _score(
        multiclass.path, source, "-o", tmp_path / "o.jsonl", "--json", "--batch-size", "3"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows_scored"] == 8 and summary["rows_skipped"] == 0
    assert summary["batch_size"] == 3 and summary["output_format"] == "jsonl"
    assert summary["columns"] == [
        "label",
        "class_name",
        "prob_class_0",
        "prob_class_1",
        "prob_class_2",
    ]
    quiet = _score(multiclass.path, source, "-o", tmp_path / "q.csv", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""
    assert len(read_output(tmp_path / "q.csv")["label"]) == 8


def test_formats_can_be_named_whatever_the_file_names(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    x = multiclass.rows(6)
    source = write_input(tmp_path, "csv", x, multiclass.feature_names or [])
    renamed = source.rename(tmp_path / "rows.txt")
    result = _score(
        multiclass.path,
        renamed,
        "-o",
        tmp_path / "scores.out",
        "--input-format",
        "csv",
        "--output-format",
        "parquet",
        "--no-probabilities",
        "--keep-columns",
        "id",
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "scores.out")
    assert table.column_names == ["id", "label", "class_name"]


def test_skip_reports_the_count_and_writes_rejected_rows(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(HEADER + "a,1,2,3,4,5\nb,1,2,3,x,5\nc,1,2\nd,0,0,0,0,0\n")
    result = _score(multiclass.path, source, "-o", tmp_path / "o.csv", "--on-bad-row", "skip")
    assert result.exit_code == 0, result.output
    assert "scored 2 rows, skipped 2, in " in result.stdout
    assert result.stdout.rstrip().endswith(f"(rejected rows: {tmp_path / 'o.rejected.csv'})")
    rejected = read_output(tmp_path / "o.rejected.csv")
    assert rejected["line"] == ["3", "4"]
    assert rejected["reason"] == ["cannot parse 'x' as a number", "has 3 fields, the header has 6"]
    assert _only(tmp_path) == ["in.csv", "o.csv", "o.rejected.csv"]


# Each case: (name, build(tmp_path) -> (input path, extra args), expected error with {src}/{dir}).
Case = tuple[str, Callable[[Path], tuple[Path, list[str]]], str]


def _text_file(name: str, content: str | bytes) -> Callable[[Path], tuple[Path, list[str]]]:
    def build(folder: Path) -> tuple[Path, list[str]]:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path, []

    return build


def _npy(shape: tuple[int, int]) -> Callable[[Path], tuple[Path, list[str]]]:
    def build(folder: Path) -> tuple[Path, list[str]]:
        path = folder / "in.npy"
        np.save(path, np.ones(shape, dtype=np.float32))
        return path, []

    return build


def _with_args(
    build: Callable[[Path], tuple[Path, list[str]]], *args: str
) -> Callable[[Path], tuple[Path, list[str]]]:
    def wrapped(folder: Path) -> tuple[Path, list[str]]:
        path, extra = build(folder)
        return path, [*extra, *args]

    return wrapped


def _corrupt_parquet(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "in.parquet"
    pq.write_table(pa.table({"f0": [1.0, 2.0]}), path)
    path.write_bytes(path.read_bytes()[:-12])  # the footer is gone
    return path, []


def _missing(folder: Path) -> tuple[Path, list[str]]:
    return folder / "absent.csv", []


GOOD_ROW = "a,1,2,3,4,5\n"
_ROWS = "".join(f"r{i},{i},{i * 3},{i % 7},{i / 3},{i * i}\n" for i in range(5000))
_GZIPPED = gzip.compress((HEADER + _ROWS).encode())
_TRUNCATED_GZIP = _GZIPPED[: len(_GZIPPED) // 2]
CASES: list[Case] = [
    (
        "missing-columns",
        _text_file("in.csv", "id,f0,f1,f2,f3\na,1,2,3,4\n"),
        "{src}: missing feature columns 'f4' (named by the model); the input has 'id', 'f0', "
        "'f1', 'f2', 'f3'",
    ),
    (
        "wrong-feature-count",
        _npy((3, 4)),
        "{src}: rows have 4 values; model {model} expects 5 features",
    ),
    (
        "non-numeric",
        _text_file("in.csv", HEADER + GOOD_ROW + "b,1,abc,3,4,5\n"),
        "{src}: line 3 (line 1 is the header), column 'f1': cannot parse 'abc' as a number" + HINT,
    ),
    (
        "nan",
        _text_file("in.csv", HEADER + GOOD_ROW + GOOD_ROW + "c,1,2,NaN,4,5\n"),
        "{src}: line 4 (line 1 is the header), column 'f2': NaN (features must be finite)" + HINT,
    ),
    (
        "inf",
        _text_file(
            "in.jsonl",
            '{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": 5}\n{"f0": 1, "f1": 2, '
            '"f2": 3, "f3": "inf", "f4": 5}\n',
        ),
        "{src}: line 2, column 'f3': Inf (features must be finite)" + HINT,
    ),
    (
        "field-count",
        _text_file("in.csv", HEADER + GOOD_ROW + "b,1,2,3,4,5,6\n"),
        "{src}: line 3 (line 1 is the header): has 7 fields, the header has 6" + HINT,
    ),
    ("empty-file", _text_file("in.csv", ""), "{src}: empty file (no header row)"),
    ("header-only", _text_file("in.csv", HEADER), "{src}: header only, no data rows"),
    (
        "not-utf8",
        _text_file("in.csv", HEADER.encode() + b"a,1,2,3,4,\xe9\n"),
        "{src}: line 2: not UTF-8 text (byte b'\\xe9'); save the file as UTF-8",
    ),
    (
        "corrupt-parquet",
        _corrupt_parquet,
        "{src}: not a readable Parquet file: Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.",
    ),
    (
        "corrupt-gzip",
        _text_file("in.csv.gz", _TRUNCATED_GZIP),
        "{src}: cannot read: Compressed file ended before the end-of-stream marker was reached",
    ),
    (
        "unknown-extension",
        _text_file("in.xlsx", "whatever"),
        "{src}: cannot tell the input format from the name (known endings: .csv.gz, .jsonl.gz, "
        ".ndjson.gz, .npy, .csv, .parquet, .pq, .jsonl, .ndjson, or a folder of .parquet files); "
        "name it with --input-format",
    ),
    ("input-missing", _missing, "input {src} does not exist"),
    (
        "missing-id-column",
        _with_args(_text_file("in.csv", HEADER + GOOD_ROW), "--id-column", "key"),
        "{src}: missing columns 'key' (asked by --id-column / --keep-columns); the input has "
        "'id', 'f0', 'f1', 'f2', 'f3', 'f4'",
    ),
    (
        "npy-with-id-column",
        _with_args(_npy((2, 5)), "--id-column", "id"),
        "{src}: an NPY array has no column names; --features, --id-column and --keep-columns "
        "need CSV, Parquet or JSONL input",
    ),
    (
        "bad-first-json-line",
        _text_file("in.jsonl", "{oops}\n"),
        "{src}: line 1: invalid JSON (Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)); the first record names the columns",
    ),
]


@pytest.mark.parametrize(("name", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_no_output(
    tmp_path: Path,
    multiclass: ModelCase,
    name: str,
    build: Callable[[Path], tuple[Path, list[str]]],
    expected: str,
) -> None:
    source, extra = build(tmp_path)
    before = _only(tmp_path)
    target = tmp_path / "scores.parquet"
    result = _score(multiclass.path, source, "-o", target, *extra)
    assert result.exit_code == 1, result.output
    message = expected.format(src=source, model=multiclass.path)
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""
    assert _only(tmp_path) == before  # no output, no temp file


def test_output_folder_must_exist(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(3), [])
    target = tmp_path / "nowhere" / "o.csv"
    result = _score(multiclass.path, source, "-o", target)
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: output folder '{tmp_path / 'nowhere'}' does not exist (for {target})\n"
    )
    assert _only(tmp_path) == ["in.npy"]


def test_unknown_output_extension(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(3), [])
    target = tmp_path / "o.xlsx"
    result = _score(multiclass.path, source, "-o", target)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {target}: cannot tell the output format from the name (known endings: .csv.gz, "
        ".csv, .parquet, .pq, .jsonl, .ndjson); name it with --output-format\n"
    )


def test_refuses_to_overwrite_without_the_flag(tmp_path: Path, multiclass: ModelCase) -> None:
    source = write_input(tmp_path, "npy", multiclass.rows(3), [])
    target = tmp_path / "o.csv"
    target.write_text("old")
    result = _score(multiclass.path, source, "-o", target)
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: output {target} already exists; pass --overwrite to replace it\n"
    )
    assert target.read_text() == "old"
    assert _score(multiclass.path, source, "-o", target, "--overwrite").exit_code == 0
    assert len(read_output(target)["label"]) == 3


def test_missing_model_is_one_error_line(tmp_path: Path) -> None:
    source = tmp_path / "in.npy"
    np.save(source, np.ones((2, 5), np.float32))
    result = _score(tmp_path / "none.onnx", source, "-o", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "none.onnx" in result.stderr
    assert _only(tmp_path) == ["in.npy"]


def test_usage_errors_exit_2(tmp_path: Path, multiclass: ModelCase) -> None:
    result = _score(multiclass.path, tmp_path / "x.npy")
    assert result.exit_code == 2 and "Missing option '-o' / '--output'" in result.stderr
    result = _score(multiclass.path, "x.npy", "-o", "o.csv", "--on-bad-row", "drop")
    assert result.exit_code == 2 and "'drop' is not one of 'fail', 'skip'" in result.stderr


def _onnxedge(*args: str | Path) -> subprocess.Popen[str]:
    """``onnxedge ARGS`` in a fresh process (as a batch scheduler would start it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "onnxedge.runtime", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_run_cleans_up_and_exits_128_plus_signum(
    tmp_path: Path, multiclass: ModelCase, signum: int, existing: bool
) -> None:
    source = tmp_path / "big.npy"
    np.save(source, np.ones((2_000_000, multiclass.num_features), np.float32))
    target = tmp_path / "o.csv"
    if existing:
        target.write_text("old")
    args = ["--overwrite"] if existing else []
    run = _onnxedge("score", multiclass.path, source, "-o", target, *args)
    # Signalled once its temporary output exists: scoring is under way.
    while run.poll() is None and not any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir()):
        time.sleep(0.01)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=120)
    assert (run.returncode, stdout, stderr) == (128 + signum, "", "")
    assert _only(tmp_path) == (["big.npy", "o.csv"] if existing else ["big.npy"])
    if existing:
        assert target.read_text() == "old"


@pytest.mark.slow
def test_two_concurrent_runs_into_one_new_output_one_wins(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    x = multiclass.rows(200_000)
    sources = [tmp_path / "a.npy", tmp_path / "b.npy"]
    np.save(sources[0], x)
    np.save(sources[1], x[::-1].copy())
    target = tmp_path / "o.parquet"
    runs = [_onnxedge("score", multiclass.path, s, "-o", target) for s in sources]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    errors = [err for code, _, err in results if code == 1]
    assert codes == [0, 1], results
    assert errors[0].endswith(f"{target} already exists; pass --overwrite to replace it\n")
    assert errors[0].startswith("Error: ") and errors[0].count("\n") == 1
    winner = sources[[code for code, _, _ in results].index(0)]
    assert_matches_predictor(
        read_output(target), multiclass, np.load(winner), multiclass.class_names or []
    )
    assert _only(tmp_path) == ["a.npy", "b.npy", "o.parquet"]


def test_json_errors_are_one_object_on_stdout(tmp_path: Path, multiclass: ModelCase) -> None:
    result = _score(multiclass.path, tmp_path / "none.npy", "-o", tmp_path / "o.csv", "--json")
    assert result.exit_code == 1
    message = f"input {tmp_path / 'none.npy'} does not exist"
    assert json.loads(result.stdout) == {"error": message}
    assert result.stderr == f"Error: {message}\n"


def test_python_dash_m_runs_the_cli() -> None:
    for module in ("onnxedge", "onnxedge.runtime"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Usage: onnxedge [OPTIONS] COMMAND")
