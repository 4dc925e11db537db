"""The embedded script: same numbers as Predictor, its inputs, its one-line errors."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from onnxedge.runtime import Predictor
from onnxedge.runtime import edge_infer as edge

from tests.runtime.onnx_models import (
    ModelCase,
    build_cnn,
    build_foreign,
    build_multiclass,
    build_sklearn_linear,
    save,
    with_golden,
)

SCRIPT = Path(edge.__file__).resolve()
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = edge.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _json_rows(text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rows = [json.loads(line) for line in text.splitlines()]
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    # JSON holds each float32 as the double it equals: the cast back is exact
    probs = np.array([r["probabilities"] for r in rows], dtype=np.float64).astype(np.float32)
    return labels, probs, [r["class"] for r in rows]


def _write_csv(path: Path, header: list[str] | None, rows: np.ndarray) -> Path:
    lines = [",".join(header)] if header is not None else []
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- numerics ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_score_is_identical_to_predictor(any_model: ModelCase, batch_size: int | None) -> None:
    x = any_model.rows(100, seed=21)
    want = Predictor(any_model.path).predict(x)
    labels, probabilities = edge.score(any_model.path, x, batch_size=batch_size)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probabilities, want.probabilities)
    assert labels.dtype == np.int64 and probabilities.dtype == np.float32


def test_score_from_a_path(binary: ModelCase) -> None:
    x = binary.rows(10)
    labels, probabilities = edge.score(binary.path, x)
    want = Predictor(binary.path).predict(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probabilities, want.probabilities)


def test_cli_json_equals_predictor(
    any_model: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = any_model.rows(40, seed=8)
    np.save(tmp_path / "rows.npy", x)
    code, out, err = _run_main(
        [str(any_model.path), str(tmp_path / "rows.npy"), "--json", "--batch-size", "16"], capsys
    )
    assert (code, err) == (0, "")
    labels, probs, classes = _json_rows(out)
    want = Predictor(any_model.path).predict(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probs, want.probabilities)
    assert classes == want.names


def test_cli_text_lines(
    binary: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = binary.rows(12, seed=4)
    np.save(tmp_path / "rows.npy", x)
    code, out, _ = _run_main([str(binary.path), str(tmp_path / "rows.npy")], capsys)
    assert code == 0
    want = Predictor(binary.path).predict(x)
    expected = [
        f"{label}\t{name}\t{p:.6f}"
        for label, name, p in zip(want.labels, want.names, want.top_probabilities, strict=True)
    ]
    assert out.splitlines() == expected


# --- inputs -----------------------------------------------------------------------------


def test_csv_header_selects_the_model_features(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = multiclass.rows(9, seed=3)
    # columns shuffled, plus a label column the model does not read
    order = [4, 0, 2, 1, 3]
    table = np.column_stack([x[:, order], np.arange(9)])
    header = [f"f{i}" for i in order] + ["label"]
    path = _write_csv(tmp_path / "rows.csv", header, table)
    code, out, _ = _run_main([str(multiclass.path), str(path), "--json"], capsys)
    assert code == 0
    labels, probs, _ = _json_rows(out)
    want = Predictor(multiclass.path).predict(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probs, want.probabilities)


def test_csv_without_header_and_stdin(
    plain: ModelCase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = plain.rows(6, seed=9)
    path = _write_csv(tmp_path / "rows.csv", None, x)
    code, from_file, _ = _run_main([str(plain.path), str(path), "--json"], capsys)
    assert code == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(path.read_text()))
    code, from_stdin, _ = _run_main([str(plain.path), "-", "--json"], capsys)
    assert code == 0
    assert from_stdin == from_file
    labels, probs, _ = _json_rows(from_file)
    want = Predictor(plain.path).predict(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probs, want.probabilities)


def test_a_numeric_first_line_is_a_row(
    plain: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = plain.rows(2)
    path = _write_csv(tmp_path / "rows.csv", ["0", "1", "2"], x)
    code, out, _ = _run_main([str(plain.path), str(path), "--json"], capsys)
    assert code == 0
    labels, probs, _ = _json_rows(out)
    want = Predictor(plain.path).predict(np.vstack([[0.0, 1.0, 2.0], x]))
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probs, want.probabilities)


def test_one_dimensional_npy_is_one_row(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "row.npy", multiclass.rows(1)[0])
    code, out, _ = _run_main([str(multiclass.path), str(tmp_path / "row.npy")], capsys)
    assert code == 0 and len(out.splitlines()) == 1


def test_empty_csv_prints_nothing(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("f0,f1,f2,f3,f4\n")
    assert _run_main([str(multiclass.path), str(path)], capsys) == (0, "", "")


# --- errors: one line, exit 1 -----------------------------------------------------------


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = _run_main(argv, capsys)
    assert code == 1
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("Error: ")
    return err[len("Error: ") : -1]


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_provider_cuda_on_a_cpu_machine(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "rows.npy", multiclass.rows(2))
    message = _error(
        [str(multiclass.path), str(tmp_path / "rows.npy"), "--provider", "cuda"], capsys
    )
    assert message == "CUDAExecutionProvider requested; available: CPUExecutionProvider"


def test_bad_models(
    tmp_path: Path, multiclass: ModelCase, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.npy"
    np.save(rows, multiclass.rows(2))
    missing = tmp_path / "missing.onnx"
    assert _error([str(missing), str(rows)], capsys) == f"model file not found: {missing}"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert (
        _error([str(empty), str(rows)], capsys)
        == f"not a valid ONNX model: {empty}: the file is empty"
    )
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    assert _error([str(junk), str(rows)], capsys).startswith(f"not a valid ONNX model: {junk}: ")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(multiclass.data[:300])
    assert _error([str(truncated), str(rows)], capsys).startswith(
        f"not a valid ONNX model: {truncated}: "
    )


def test_bad_inputs(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(multiclass.path)
    missing = tmp_path / "missing.csv"
    assert _error([model, str(missing)], capsys) == f"input file not found: {missing}"
    assert _error([model, str(tmp_path / "rows.parquet")], capsys) == (
        f"input must be a .npy or .csv file or - for stdin; got '{tmp_path / 'rows.parquet'}'"
    )
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((3, 6)))
    assert _error([model, str(wide)], capsys) == "model expects 5 features, input has 6"
    text = tmp_path / "text.npy"
    np.save(text, np.array([["a"] * 5]))
    assert _error([model, str(text)], capsys) == (
        "input has dtype <U1; expected numbers (bool, int, uint or float, cast to float32)"
    )
    nan = tmp_path / "nan.npy"
    bad = np.zeros((3, 5))
    bad[2, 4] = np.nan
    np.save(nan, bad)
    assert (
        _error([model, str(nan)], capsys)
        == "input row 2, column 4 ('f4') is nan; NaN / Inf are rejected"
    )
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert _error([model, str(pickled)], capsys).startswith(f"cannot read {pickled} as .npy: ")


def test_bad_csv_cells(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(multiclass.path)
    cell = tmp_path / "cell.csv"
    cell.write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n1,2,oops,4,5\n")
    assert (
        _error([model, str(cell)], capsys)
        == f"{cell}: line 3, column 2 ('f2'): 'oops' is not a number"
    )
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3,4,5\n1,2,3,4\n")
    assert _error([model, str(ragged)], capsys) == f"{ragged}: line 2 has 4 values, expected 5"
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("1,2,x,4,5\n")
    assert _error([model, str(mixed)], capsys) == (
        f"{mixed}: line 1 mixes numbers and text; a header holds only names, a row only numbers"
    )
    header = tmp_path / "header.csv"
    header.write_text("a,b,c\n1,2,3\n")
    assert _error([model, str(header)], capsys) == (
        f"{header}: header has 3 columns, model expects 5 features; the model's features are "
        "named f0, f1, f2, f3, f4"
    )


def test_bad_options(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.npy"
    np.save(rows, multiclass.rows(1))
    assert (
        _error([str(multiclass.path), str(rows), "--threads", "0"], capsys)
        == "--threads must be >= 1; got 0"
    )
    assert _error([str(multiclass.path), str(rows), "--batch-size", "0"], capsys) == (
        "--batch-size must be >= 1; got 0"
    )
    with pytest.raises(SystemExit) as info:
        edge.main([str(multiclass.path), str(rows), "--provider", "tpu"])
    assert info.value.code == 2


# --- a self-contained file -------------------------------------------------------------


def test_imports_only_stdlib_numpy_and_onnxruntime() -> None:
    tree = ast.parse(SCRIPT.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            roots.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    assert roots <= allowed, roots - allowed


def test_copied_script_runs_alone(
    multiclass: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Copied into an empty folder and run in isolated mode (-I: no cwd, no user site),
    # as a device engineer would run it.
    script = tmp_path / "edge_infer.py"
    script.write_bytes(SCRIPT.read_bytes())
    x = multiclass.rows(5, seed=1)
    np.save(tmp_path / "rows.npy", x)
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(multiclass.path), "rows.npy", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    code, in_process, _ = _run_main(
        [str(multiclass.path), str(tmp_path / "rows.npy"), "--json"], capsys
    )
    assert code == 0
    assert result.stdout == in_process


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_console_script_cuda_error_exit_1(multiclass: ModelCase, tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", multiclass.rows(1))
    console = Path(sys.executable).parent / "onnxedge-edge"
    command = (
        [str(console)]
        if console.exists()
        else [sys.executable, "-m", "onnxedge.runtime.edge_infer"]
    )
    result = subprocess.run(
        [*command, str(multiclass.path), str(tmp_path / "rows.npy"), "--provider", "cuda"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr == "Error: CUDAExecutionProvider requested; available: CPUExecutionProvider\n"
    )


def test_huge_finite_values_pass_and_float32_overflow_is_refused(multiclass: ModelCase) -> None:
    model = edge.EdgeModel(multiclass.path)
    # x.x overflows float32 here, yet every value is finite: the exact test lets it through
    labels, _ = model.score(np.full((2, 5), 3e38, dtype=np.float32))
    assert labels.shape == (2,)
    beyond = np.zeros((2, 5))
    beyond[1, 3] = 1e39  # finite float64, inf as float32
    with pytest.raises(
        edge.EdgeError, match=r"^input row 1, column 3 \('f3'\) is inf; NaN / Inf are rejected$"
    ):
        model.score(beyond)


# --- only probabilities are scored ------------------------------------------------------


def test_logits_are_refused_with_the_wrap_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save(build_foreign("dynamo"), tmp_path / "model.onnx")
    np.save(tmp_path / "rows.npy", np.zeros((2, 5), dtype=np.float32))
    assert _error(["model.onnx", "rows.npy"], capsys) == (
        "model.onnx: output 'linear_1' is not known to hold probabilities (the model has no "
        "onnxedge head in its metadata and is not a known converter's probability output) -- "
        "add a head with: onnxedge wrap model.onnx -o wrapped.onnx"
    )
    lying = build_foreign("dynamo")
    helper.set_model_props(lying, {"onnxedge.head": "softmax"})
    save(lying, tmp_path / "model.onnx")
    np.save(tmp_path / "rows.npy", np.full((2, 5), 40.0, dtype=np.float32))
    assert _error(["model.onnx", "rows.npy"], capsys) == (
        "model.onnx: output 'linear_1' is not known to hold probabilities (its values are not "
        "in [0, 1]) -- add a head with: onnxedge wrap model.onnx -o wrapped.onnx"
    )


def test_skl2onnx_class_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(build_sklearn_linear()[0], tmp_path / "logreg.onnx")
    x = np.random.default_rng(5).normal(0, 1, (6, 4)).astype(np.float32)
    np.save(tmp_path / "rows.npy", x)
    code, out, _ = _run_main([str(path), str(tmp_path / "rows.npy"), "--json"], capsys)
    assert code == 0
    labels, probs, classes = _json_rows(out)
    want = Predictor(path).predict(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_array_equal(probs, want.probabilities)
    assert classes == want.names and set(classes) <= {"setosa", "versicolor", "virginica"}


# --- image inputs -----------------------------------------------------------------------


def test_image_rows_from_npy_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(build_cnn()[0], tmp_path / "cnn.onnx")
    x = np.random.default_rng(6).uniform(0, 1, (7, 1, 8, 8)).astype(np.float32)
    want = Predictor(path).predict(x)
    np.save(tmp_path / "rows.npy", x)
    _write_csv(tmp_path / "rows.csv", None, x.reshape(7, 64))
    np.save(tmp_path / "row.npy", x[0])
    for rows, n in (("rows.npy", 7), ("rows.csv", 7), ("row.npy", 1)):
        code, out, err = _run_main([str(path), str(tmp_path / rows), "--json"], capsys)
        assert (code, err) == (0, ""), rows
        labels, probs, _ = _json_rows(out)
        np.testing.assert_array_equal(labels, want.labels[:n])
        np.testing.assert_array_equal(probs, want.probabilities[:n])
    np.save(tmp_path / "bad.npy", np.zeros((3, 1, 7, 8), dtype=np.float32))
    assert _error([str(path), str(tmp_path / "bad.npy")], capsys) == (
        "model expects rows of shape (1, 8, 8), input has (1, 7, 8)"
    )


# --- the self-test ----------------------------------------------------------------------


def test_self_test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_multiclass()[0]
    x = np.random.default_rng(8).normal(0, 2, (6, 5)).astype(np.float32)
    path = save(with_golden(model, x), tmp_path / "golden.onnx")
    code, out, err = _run_main([str(path), "--self-test", "--json"], capsys)
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report == Predictor(path).self_test() | {"max_abs_error": report["max_abs_error"]}
    assert report["passed"] and report["labels_agreeing"] == 6
    code, text, _ = _run_main([str(path), "--self-test"], capsys)
    assert code == 0 and text.startswith(f"self-test PASSED: {path}, 6 golden rows\n")
    assert _error([str(multiclass_path(tmp_path))], capsys) == (
        "give an INPUT file (or - for stdin), or --self-test"
    )
    assert _error([str(multiclass_path(tmp_path)), "--self-test"], capsys).endswith(
        "has no golden set (metadata onnxedge.golden) to self-test with; onnxedge export and "
        "onnxedge wrap store one in the model"
    )


def multiclass_path(tmp_path: Path) -> Path:
    return save(build_multiclass()[0], tmp_path / "plain_multiclass.onnx")
