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
from onnxedge.models.data import load_dataset, write_idx
from onnxedge.models.nets import CNN
from onnxedge.models.preprocess import Rescale, Standardize
from onnxedge.models.train import TrainOptions, compute_normalization, train
from onnxedge.runtime.cli import cli
from onnxedge.runtime.errors import CheckpointError, DataError, OutputExistsError
from safetensors.numpy import load_file, save_file

FAST = TrainOptions(hidden_sizes=(16,), epochs=4, patience=10, seed=3)
FAST_CNN = TrainOptions(arch="cnn", hidden_sizes=(16,), channels=(4, 8), epochs=2, seed=3)


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


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "cnn"
    train("digits", out, FAST_CNN, progress=False)
    return out


def test_run_folder_holds_every_artifact(run_dir: Path) -> None:
    for name in (
        CONFIG_FILE,
        WEIGHTS_FILE,
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


def test_loaded_run_records_its_preprocessing_and_dataset(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.config.arch == "mlp" and run.input_shape == (64,)
    assert run.dataset == "digits"
    assert isinstance(run.preprocess, Standardize)
    # The standardization is the training split's: rebuilt here from the same split.
    from onnxedge.models.data import train_val_split

    train_ds, _ = train_val_split(load_dataset("digits"), FAST.val_fraction, FAST.seed)
    expected = compute_normalization(train_ds.features)
    np.testing.assert_array_equal(run.preprocess.mean, expected.mean)
    np.testing.assert_array_equal(run.preprocess.std, expected.std)
    assert json.loads((run_dir / CONFIG_FILE).read_text())["net"]["arch"] == "mlp"
    assert not (run_dir / NORMALIZATION_FILE).exists()


def test_cnn_run_keeps_raw_images_and_rescales_in_its_preprocessing(cnn_dir: Path) -> None:
    run = load_run(cnn_dir)
    assert isinstance(run.net, CNN)
    assert run.config.arch == "cnn" and run.config.channels == (4, 8)
    assert run.input_shape == (1, 8, 8) and run.preprocess == Rescale(1 / 16)
    x_val, y_val = run.validation()
    assert x_val.shape == (len(y_val), 1, 8, 8)
    assert run.calibration().shape[1:] == (1, 8, 8)
    # raw pixel counts, 0..16 as in the dataset: the scaling is the run's, not the data's
    assert x_val.max() == 16.0 and np.array_equal(x_val, np.round(x_val))
    saved = load_file(str(cnn_dir / WEIGHTS_FILE))
    assert saved["conv.0.weight"].shape == (4, 1, 3, 3)
    assert saved["hidden.0.weight"].shape == (16, 8 * 2 * 2)
    import torch

    # the loaded net computes the metrics' validation accuracy from the raw rows
    with torch.inference_mode():
        logits = run.net(torch.from_numpy(run.preprocess.apply(x_val)))
    accuracy = float((logits.argmax(1).numpy() == y_val).mean())
    metrics = json.loads((cnn_dir / METRICS_FILE).read_text())
    assert accuracy == pytest.approx(metrics["best"]["val_accuracy"], abs=0.5 / len(y_val))


def test_cnn_training_is_deterministic_for_a_seed(cnn_dir: Path, tmp_path: Path) -> None:
    train("digits", tmp_path / "again", FAST_CNN, progress=False)
    first = load_file(str(cnn_dir / WEIGHTS_FILE))
    again = load_file(str(tmp_path / "again" / WEIGHTS_FILE))
    assert set(first) == set(again)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


def test_cnn_trains_on_idx_images_with_raw_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    images[0, 0, 0] = 255
    write_idx(tmp_path / "x-idx3-ubyte", images)
    write_idx(tmp_path / "y-idx1-ubyte", (np.arange(12) % 3).astype(np.uint8))
    train(
        tmp_path / "x-idx3-ubyte",
        tmp_path / "run",
        FAST_CNN,
        labels_path=tmp_path / "y-idx1-ubyte",
        progress=False,
    )
    run = load_run(tmp_path / "run")
    assert run.input_shape == (1, 28, 28) and run.preprocess == Rescale(1 / 255)
    x_val, _ = run.validation()
    rows = np.concatenate([x_val, run.calibration()])
    np.testing.assert_array_equal(np.sort(rows[:, 0], axis=0), np.sort(images, axis=0))
    assert json.loads((tmp_path / "run" / CONFIG_FILE).read_text())["preprocess"] == {
        "kind": "rescale",
        "factor": 1 / 255,
    }


def test_cnn_on_tabular_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        train("breast-cancer", tmp_path / "x", FAST_CNN, progress=False)
    assert str(excinfo.value) == (
        "--arch cnn needs images (digits or an IDX file); breast-cancer has flat rows of 30 "
        "features (use --arch mlp)"
    )
    assert not (tmp_path / "x").exists()


def test_run_folder_of_an_older_onnxedge_still_loads(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = json.loads((old / CONFIG_FILE).read_text())
    preprocess = config.pop("preprocess")
    for key in ("arch", "input_shape", "channels"):
        del config["net"][key]
    (old / CONFIG_FILE).write_text(json.dumps(config))
    (old / NORMALIZATION_FILE).write_text(
        json.dumps({"mean": preprocess["mean"], "std": preprocess["std"]})
    )
    x, y = load_run(run_dir).validation()
    np.savez(old / VALIDATION_FILE, features=x.reshape(len(x), -1), labels=y)
    run, new = load_run(old), load_run(run_dir)
    assert run.config == new.config and run.input_shape == (64,)
    np.testing.assert_array_equal(run.preprocess.mean, new.preprocess.mean)
    np.testing.assert_array_equal(run.preprocess.std, new.preprocess.std)
    np.testing.assert_array_equal(run.validation()[0], x)
    (old / NORMALIZATION_FILE).unlink()
    with pytest.raises(CheckpointError) as excinfo:
        load_run(old)
    assert str(excinfo.value) == (
        f"run folder {old} is missing normalization.json (or a 'preprocess' entry in config.json)"
    )


def test_run_folder_checks_the_preprocessing_shape(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    config["preprocess"] = {"kind": "standardize", "mean": [0.0] * 3, "std": [1.0] * 3}
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as excinfo:
        load_run(copy)
    assert str(excinfo.value) == (
        f"the standardization in {copy} has shape (3,) but the net reads rows of shape (64,)"
    )


def test_a_file_given_as_run_folder_is_named(tmp_path: Path) -> None:
    file = tmp_path / "cnn.pt"
    file.write_bytes(b"")
    with pytest.raises(CheckpointError) as excinfo:
        load_run(file)
    assert str(excinfo.value) == f"{file} is a file; expected a run folder (onnxedge train -o)"


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


def test_train_cli_trains_a_cnn_and_refuses_it_on_tabular_data(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", "--arch", "cnn", "--channels", "4,8", "--hidden", "8", "--epochs", "1"]
    ok = runner.invoke(cli, [*args, "--dataset", "digits", "-o", str(tmp_path / "r"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["arch"] == "cnn"
    assert load_run(tmp_path / "r").config.channels == (4, 8)
    bad = runner.invoke(cli, [*args, "--dataset", "breast-cancer", "-o", str(tmp_path / "s")])
    assert bad.exit_code == 1
    assert bad.output.strip() == (
        "Error: --arch cnn needs images (digits or an IDX file); breast-cancer has flat rows "
        "of 30 features (use --arch mlp)"
    )
    assert not (tmp_path / "s").exists()
    usage = runner.invoke(cli, [*args, "--dataset", "digits", "-o", "x", "--channels", "0"])
    assert usage.exit_code == 2
