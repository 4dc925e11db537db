"""The deploy bundle: its files, atomic writing, and a run in a torch-free virtualenv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnxedge.runtime import ModelLoadError, OnnxEdgeError, OutputExistsError, Predictor
from onnxedge.runtime import edge_infer as edge
from onnxedge.runtime.bundle import NUMPY_MIN, ONNXRUNTIME_MIN, write_bundle
from onnxedge.runtime.tolerances import PROBABILITY_ATOL

from tests.runtime.onnx_models import (
    ModelCase,
    build_cnn,
    build_foreign,
    build_multiclass,
    save,
    with_golden,
)

EXPECTED_FILES = {
    "README.md",
    "edge_infer.py",
    "requirements.txt",
    "sample.csv",
    "sample_expected.txt",
}


def _sample(folder: Path) -> np.ndarray:
    return np.loadtxt(folder / "sample.csv", delimiter=",", skiprows=1, ndmin=2)


def test_bundle_files(multiclass: ModelCase, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    bundle = write_bundle(multiclass.path, out)
    assert bundle.path == out
    assert set(bundle.files) == EXPECTED_FILES | {"multiclass.onnx"}
    assert {p.name for p in out.iterdir()} == set(bundle.files)
    assert (out / "multiclass.onnx").read_bytes() == multiclass.data
    assert (out / "edge_infer.py").read_bytes() == Path(edge.__file__).read_bytes()
    requirements = (out / "requirements.txt").read_text().splitlines()
    major, minor = (int(v) for v in ort.__version__.split(".")[:2])
    np_major, np_minor = (int(v) for v in np.__version__.split(".")[:2])
    assert [line.split("  #")[0] for line in requirements if not line.startswith("#")] == [
        f"onnxruntime>=1.18,<{major}.{minor + 1}",
        f"numpy>=1.26,<{np_major}.{np_minor + 1}",
    ]
    # sample rows: the normalization mean, then mean -/+ std, under the feature names
    assert (out / "sample.csv").read_text().splitlines()[0] == "f0,f1,f2,f3,f4"
    mean, std = multiclass.weights["mean"], multiclass.weights["std"]
    expected_rows = np.stack([mean, mean - std, mean + std]).astype(np.float32)
    np.testing.assert_array_equal(_sample(out).astype(np.float32), expected_rows)
    assert bundle.sample_rows == 3
    readme = (out / "README.md").read_text()
    for command in (
        "pip install -r requirements.txt",
        "python edge_infer.py multiclass.onnx sample.csv",
        "python edge_infer.py multiclass.onnx sample.csv > got.txt "
        "&& diff got.txt sample_expected.txt",
    ):
        assert command in readme
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left"


def test_expected_output_is_what_the_script_prints(
    binary: ModelCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_bundle(binary.path, tmp_path / "deploy").path
    code = edge.main([str(out / "binary.onnx"), str(out / "sample.csv")])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed == (out / "sample_expected.txt").read_text()


def test_plain_model_gets_a_sample_of_zeros(plain: ModelCase, tmp_path: Path) -> None:
    out = write_bundle(plain.path, tmp_path / "deploy").path
    rows = (out / "sample.csv").read_text().splitlines()
    assert rows == ["0.0,0.0,0.0"]  # no feature names: no header


def test_existing_folder_is_refused_then_replaced(multiclass: ModelCase, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless asked")
    with pytest.raises(OutputExistsError) as info:
        write_bundle(multiclass.path, out)
    assert str(info.value) == f"{out} already exists; pass --overwrite to replace it"
    assert (out / "old.txt").exists()
    write_bundle(multiclass.path, out, overwrite=True)
    assert not (out / "old.txt").exists()
    assert (out / "multiclass.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]


def test_a_file_is_never_replaced(multiclass: ModelCase, tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    target.write_text("a file")
    for overwrite in (False, True):  # the same advice either way: --overwrite cannot help
        with pytest.raises(OutputExistsError, match="exists and is not a folder"):
            write_bundle(multiclass.path, target, overwrite=overwrite)
    assert target.read_text() == "a file"


def test_bad_model_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError):
        write_bundle(bad, tmp_path / "deploy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_failure_while_writing_leaves_nothing(
    multiclass: ModelCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxedge.runtime import bundle as bundle_module

    def broken(*args: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module, "_readme", broken)
    with pytest.raises(OSError, match="No space left"):
        write_bundle(multiclass.path, tmp_path / "deploy")
    assert list(tmp_path.iterdir()) == []


def test_external_data_travels_with_the_model(multiclass: ModelCase, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    path = source / "ext.onnx"
    onnx.save_model(
        onnx.load(str(multiclass.path)),
        str(path),
        save_as_external_data=True,
        location="weights/ext.bin",
        size_threshold=0,
    )
    out = write_bundle(path, tmp_path / "deploy").path
    assert "weights/ext.bin" in {
        str(Path(p)) for p in write_bundle(path, out, overwrite=True).files
    }
    x = multiclass.rows(4)
    np.testing.assert_array_equal(
        Predictor(out / "ext.onnx").predict(x).probabilities,
        Predictor(multiclass.path).predict(x).probabilities,
    )


# --- a virtualenv with only onnxruntime and numpy --------------------------------------


#: pip may need this long to install onnxruntime from its cache (or PyPI).
PIP_TIMEOUT_S = 900
#: a hang (a FIFO opened) fails after this long; a model loads in well under a second.
RUN_TIMEOUT_S = 120


def _venv(root: Path, *packages: str) -> Path:
    """A venv holding ``packages`` (pinned) and nothing of ours; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        capture_output=True,
        text=True,
        check=False,
        timeout=PIP_TIMEOUT_S,
    )
    assert done.returncode == 0, f"pip could not install {packages}:\n{done.stderr}"
    return python


@pytest.fixture(scope="session")
def edge_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding onnxruntime and numpy (the installed versions) and nothing of ours."""
    return _venv(
        tmp_path_factory.mktemp("edge-venv"),
        f"onnxruntime=={ort.__version__}",
        f"numpy=={np.__version__}",
    )


@pytest.fixture(scope="session")
def oldest_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the oldest onnxruntime the project declares (and the numpy it needs)."""
    return _venv(
        tmp_path_factory.mktemp("oldest-venv"),
        f"onnxruntime=={ONNXRUNTIME_MIN}.0",
        f"numpy=={NUMPY_MIN}.4",
    )


def _device_run(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: no user site, no cwd on sys.path, PYTHON* variables ignored
    try:
        return subprocess.run(
            [str(python), "-I", *args],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {RUN_TIMEOUT_S} s: {args}")


@pytest.mark.slow
def test_edge_script_on_the_oldest_declared_onnxruntime(
    oldest_python: Path, multiclass: ModelCase, binary: ModelCase, tmp_path: Path
) -> None:
    version = _device_run(
        oldest_python, tmp_path, "-c", "import onnxruntime; print(onnxruntime.__version__)"
    )
    assert version.stdout.strip() == f"{ONNXRUNTIME_MIN}.0"
    cnn = save(build_cnn()[0], tmp_path / "cnn.onnx")
    for path in (multiclass.path, binary.path, cnn):
        device = write_bundle(path, tmp_path / f"made-{path.stem}").path
        run = _device_run(oldest_python, device, "edge_infer.py", path.name, "sample.csv", "--json")
        assert (run.returncode, run.stderr) == (0, ""), path
        rows = [json.loads(line) for line in run.stdout.splitlines()]
        sample = np.loadtxt(
            device / "sample.csv",
            delimiter=",",
            ndmin=2,
            comments=None,
            skiprows=1 if path != cnn else 0,
        )
        want = Predictor(path).predict(sample)
        np.testing.assert_array_equal([r["label"] for r in rows], want.labels)
        got = np.array([r["probabilities"] for r in rows], dtype=np.float64)
        np.testing.assert_allclose(got, want.probabilities, rtol=0, atol=PROBABILITY_ATOL)
    # what onnxruntime 1.18 would read (a FIFO hangs it, ../ reads any file) is refused first
    folder = tmp_path / "hostile"
    folder.mkdir()
    model = onnx.load(str(multiclass.path))
    onnx.save_model(
        model,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        location="m.bin",
        size_threshold=0,
    )
    os.mkfifo(folder / "pipe.bin")
    for location, why in (
        ("pipe.bin", "reads external data from 'pipe.bin', which is not a regular file"),
        ("*/_ORT_MEM_ADDR_/*", "has an invalid external data location '*/_ORT_MEM_ADDR_/*'"),
    ):
        hostile = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for tensor in onnx.external_data_helper._get_all_tensors(hostile):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(hostile, str(folder / "h.onnx"))
        np.save(folder / "rows.npy", multiclass.rows(2))
        script = str(Path(edge.__file__))
        run = _device_run(oldest_python, folder, script, "h.onnx", "rows.npy")
        assert (run.returncode, run.stdout) == (1, "")
        assert run.stderr == f"Error: refusing model h.onnx: tensor 'mean' {why}\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multiclass", "binary"])
def test_bundle_runs_in_a_torch_free_virtualenv(
    edge_python: Path, name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    case: ModelCase = request.getfixturevalue(name)
    bundle = write_bundle(case.path, tmp_path / "made").path
    device = tmp_path / "device"
    shutil.copytree(bundle, device)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _device_run(edge_python, device, *args)

    for module in ("torch", "onnxedge", "onnx"):
        missing = run("-c", f"import {module}")
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, module

    text = run("edge_infer.py", f"{name}.onnx", "sample.csv")
    assert (text.returncode, text.stderr) == (0, "")
    assert text.stdout == (device / "sample_expected.txt").read_text()

    as_json = run("edge_infer.py", f"{name}.onnx", "sample.csv", "--json")
    assert as_json.returncode == 0
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    want = Predictor(case.path).predict(_sample(device))
    np.testing.assert_array_equal([r["label"] for r in rows], want.labels)
    got = np.array([r["probabilities"] for r in rows], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(got, want.probabilities)

    cuda = run("edge_infer.py", f"{name}.onnx", "sample.csv", "--provider", "cuda")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert cuda.returncode == 1
        assert cuda.stderr == (
            "Error: CUDAExecutionProvider requested; available: CPUExecutionProvider\n"
        )


def test_models_that_are_not_probabilities_are_not_bundled(tmp_path: Path) -> None:
    path = save(build_foreign("logits"), tmp_path / "logits.onnx")
    with pytest.raises(ModelLoadError, match=r"output 'logits' is not known to hold probabilities"):
        write_bundle(path, tmp_path / "deploy")
    # a head the values deny fails on the sample rows, before the folder appears
    lying = build_foreign("dynamo")
    helper.set_model_props(lying, {"onnxedge.head": "softmax", "onnxedge.num_features": "5"})
    path = save(lying, tmp_path / "lying.onnx")
    with pytest.raises(ModelLoadError, match=r"\(its values are not in \[0, 1\]\)"):
        write_bundle(path, tmp_path / "deploy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.onnx", "lying.onnx"]


def test_image_model_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(build_cnn()[0], tmp_path / "cnn.onnx")
    out = write_bundle(path, tmp_path / "deploy").path
    assert (out / "sample.csv").read_text().count(",") == 63  # one row of 64 values
    assert edge.main([str(out / "cnn.onnx"), str(out / "sample.csv")]) == 0
    assert capsys.readouterr().out == (out / "sample_expected.txt").read_text()


def _golden_model(tmp_path: Path, tamper: bool = False) -> Path:
    model, weights, _ = build_multiclass()
    rows = np.random.default_rng(9).normal(0, 2, (8, 5)).astype(np.float32)
    golden = with_golden(model, rows)
    if tamper:
        w2 = next(t for t in golden.graph.initializer if t.name == "W2")
        w2.CopyFrom(numpy_helper.from_array(weights["W2"] * np.float32(1.5), "W2"))
    return save(golden, tmp_path / ("tampered.onnx" if tamper else "golden.onnx"))


def test_bundle_runs_the_self_test_and_writes_its_report(tmp_path: Path) -> None:
    bundle = write_bundle(_golden_model(tmp_path), tmp_path / "deploy")
    assert "selftest.json" in bundle.files
    report = json.loads((bundle.path / "selftest.json").read_text())
    assert report["passed"] is True and report["rows"] == 8
    assert "python edge_infer.py golden.onnx --self-test" in (bundle.path / "README.md").read_text()
    with pytest.raises(OnnxEdgeError, match=r"the self-test failed on the bundled copy"):
        write_bundle(_golden_model(tmp_path, tamper=True), tmp_path / "deploy2")
    assert not (tmp_path / "deploy2").exists()


@pytest.mark.slow
def test_self_test_in_a_torch_free_virtualenv(edge_python: Path, tmp_path: Path) -> None:
    for tamper, code in ((False, 0), (True, 1)):
        path = _golden_model(tmp_path, tamper)
        run = _device_run(
            edge_python, tmp_path, str(Path(edge.__file__)), path.name, "--self-test", "--json"
        )
        assert run.returncode == code, run.stderr
        assert json.loads(run.stdout)["passed"] is (not tamper)
