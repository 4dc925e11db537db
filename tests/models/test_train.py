"""Training: determinism, the run folder, loading it back, and the errors a user can hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnxedge.models.checkpoint import (
    CONFIG_FILE,
    CURVES_FILE,
    METRICS_FILE,
    NORMALIZATION_FILE,
    VALIDATION_FILE,
    WEIGHTS_FILE,
    load_run,
)
from onnxedge.models.train import TrainOptions, compute_normalization, train
from onnxedge.runtime.cli import cli
from onnxedge.runtime.errors import CheckpointError, DataError, OutputExistsError
from safetensors.numpy import load_file, save_file

FAST = TrainOptions(hidden_sizes=(16,), epochs=4, patience=10, seed=3)


def _csv(path: Path, rows: int = 120, features: int = 5, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    x = rng.normal(size=(rows, features)) + labels[:, None]
    header = ",".join([f"f{i}" for i in range(features)] + ["label"])
    lines = [header] + [
        ",".join([*map(str, row), str(lab)]) for row, lab in zip(x, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    train("digits", out, FAST, progress=False)
    return out


def test_run_folder_holds_every_artifact(run_dir: Path) -> None:
    for name in (
        CONFIG_FILE,
        WEIGHTS_FILE,
        NORMALIZATION_FILE,
        METRICS_FILE,
        CURVES_FILE,
        VALIDATION_FILE,
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    assert len(metrics["history"]) == metrics["epochs_run"] == 4
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(
        metrics["history"][0]
    )
    # No temporary folder is left beside the run.
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"]


def test_loaded_run_rebuilds_the_trained_net(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.config.task == "multiclass"
    assert run.config.input_size == 64 and run.config.num_classes == 10
    assert run.class_names == [str(i) for i in range(10)]
    assert len(run.feature_names) == 64
    x_val, y_val = run.validation()
    assert x_val.shape[1] == 64 and len(x_val) == len(y_val)
    saved = load_file(str(run_dir / WEIGHTS_FILE))
    for name, value in run.weights().items():
        np.testing.assert_array_equal(value, saved[name])


def test_training_is_deterministic_for_a_seed(tmp_path: Path, run_dir: Path) -> None:
    train("digits", tmp_path / "again", FAST, progress=False)
    train(
        "digits", tmp_path / "other", TrainOptions(**{**FAST.__dict__, "seed": 4}), progress=False
    )
    first = load_file(str(run_dir / WEIGHTS_FILE))
    again = load_file(str(tmp_path / "again" / WEIGHTS_FILE))
    other = load_file(str(tmp_path / "other" / WEIGHTS_FILE))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[n], other[n]) for n in first)


def test_normalization_is_computed_on_the_training_split() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    norm = compute_normalization(x)
    np.testing.assert_allclose(norm.mean, [2.0, 5.0])
    # A constant feature gets std 1 so it standardizes to 0 instead of dividing by 0.
    np.testing.assert_allclose(norm.std, [1.0, 1.0])
    np.testing.assert_allclose(norm.apply(x), [[-1.0, 0.0], [1.0, 0.0]])


def test_binary_task_is_inferred_from_two_classes(tmp_path: Path) -> None:
    result = train("breast-cancer", tmp_path / "bc", FAST, progress=False)
    assert result.task == "binary"
    run = load_run(tmp_path / "bc")
    assert run.config.output_size == 1
    assert run.class_names == ["malignant", "benign"]


def test_trains_on_a_csv_file(tmp_path: Path) -> None:
    result = train(_csv(tmp_path / "data.csv"), tmp_path / "csv", FAST, progress=False)
    assert result.task == "multiclass"
    assert load_run(tmp_path / "csv").feature_names == [f"f{i}" for i in range(5)]


def test_existing_run_folder_is_refused(run_dir: Path) -> None:
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        train("digits", run_dir, FAST, progress=False)


def test_binary_task_on_ten_classes_is_refused(tmp_path: Path) -> None:
    options = TrainOptions(**{**FAST.__dict__, "task": "binary"})
    with pytest.raises(DataError, match="--task binary needs 2 classes; digits has 10"):
        train("digits", tmp_path / "x", options, progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("break_run", "message"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), "is missing weights.safetensors"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes(b"not safetensors"), "cannot read"),
        (lambda d: (d / CONFIG_FILE).write_text("{"), "cannot read"),
    ],
)
def test_broken_run_folder_is_a_checkpoint_error(
    run_dir: Path, tmp_path: Path, break_run, message: str
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    break_run(copy)
    with pytest.raises(CheckpointError, match=message):
        load_run(copy)


def test_config_that_does_not_match_the_weights_is_refused(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    weights = load_file(str(copy / WEIGHTS_FILE))
    weights["hidden.0.weight"] = weights["hidden.0.weight"][:8]
    save_file(weights, str(copy / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"hidden.0.weight: config expects \(16, 64\)"):
        load_run(copy)


def test_train_cli_reports_and_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "2", "--quiet"]
    ok = runner.invoke(cli, [*args, "-o", str(tmp_path / "r"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["task"] == "multiclass"
    again = runner.invoke(cli, [*args, "-o", str(tmp_path / "r")])
    assert again.exit_code == 1
    assert again.output.strip() == (
        f"Error: {tmp_path / 'r'} already exists; pass --overwrite to replace it"
    )
    bad = runner.invoke(cli, [*args, "-o", str(tmp_path / "s"), "--val-fraction", "1.5"])
    assert bad.exit_code == 1
    assert bad.output.strip() == "Error: val fraction must be in (0, 1), got 1.5"
    usage = runner.invoke(cli, ["train", "--dataset", "digits", "-o", "x", "--hidden", "a"])
    assert usage.exit_code == 2
